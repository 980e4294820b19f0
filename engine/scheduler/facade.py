"""The scheduler facade: the one place that drives APScheduler 3.

It applies reconcile plans with the fewest job-store calls (one per changed job, one
wakeup per plan) and hands every due run to the dispatcher. ``catalog`` is the engine's
list of jobs with their provenance; the job store holds only what APScheduler needs to
fire them. Restoring saved state lives in ``restore``, the runtime API in ``runtime``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger

from engine.execution.dispatch import Dispatcher
from engine.files.spec import JobSpec, as_dict
from engine.reconciler import Desired, LiveJob, Op, Plan, Step
from engine.scheduler.catalog import Catalog, Entry, build_job
from engine.scheduler.firing import FiringScheduler
from engine.scheduler.jobs import task_of, trigger_for
from engine.scheduler.store import HeapJobStore
from engine.scheduler.triggers import CrontabTrigger
from engine.state.db import JobRow

__all__ = ["SchedulerFacade"]

log = logging.getLogger("schedctl.scheduler")
DEFAULT_GRACE = 60  # seconds; APScheduler requires an int


class SchedulerFacade:
    def __init__(
        self,
        dispatcher: Dispatcher,
        on_job_change: Callable[[str], None] | None = None,
        on_time_change: Callable[[str], None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self._changed = on_job_change or (lambda job_id: None)
        self._time_changed = on_time_change or (lambda job_id: None)
        self.store = HeapJobStore(on_change=self._store_changed)
        self.scheduler = FiringScheduler(
            self.store,
            self.due,
            timezone=UTC,
            job_defaults={
                "misfire_grace_time": DEFAULT_GRACE,
                "coalesce": True,
                "max_instances": 1,
            },
        )
        self.catalog = Catalog()
        self._fire_cache: dict[tuple[Any, ...], datetime | None] = {}
        self.calls = 0  # job-store mutations made for plans and the runtime API
        self.changes = 0  # bumped on every change of a job: read models cache on it

    def _store_changed(self, job_id: str) -> None:
        # Every store write lands here, the scheduler's own after each fire included.
        # A runtime one-shot that has run is gone from the store: it is gone for good.
        self.changes += 1
        entry = self.catalog.get(job_id)
        if entry is not None and entry.source == "runtime" and job_id not in self.store._jobs:
            del self.catalog[job_id]
        self._time_changed(job_id)

    def due(self, job: Job, run_times: list[datetime]) -> None:
        entry = self.catalog.get(job.id)
        if entry is None or entry.task is None:
            log.error("Job %r fired but the engine has no declaration of it.", job.id)
            return
        self.dispatcher.due(job.id, entry.task, run_times, job.misfire_grace_time or 1)

    def next_run_of(self, job_id: str) -> tuple[bool, bool, float | None]:
        """(its row stays, it is done, its next run time as a UTC timestamp or None when
        paused or done): what ``job_row`` writes of them, without building the row. A
        declared job gone from the scheduler ran its last time, a runtime one is gone."""
        job = self.store.lookup_job(job_id)
        if job is not None:
            when = job.next_run_time
            return (True, False, when.timestamp() if when is not None else None)
        entry = self.catalog.get(job_id)
        if entry is not None and entry.source == "declared":
            return (True, True, None)
        return (False, False, None)

    def mark(self, job_id: str) -> None:
        """The job's row changed: the writer saves it, read models rebuild it."""
        self.changes += 1
        self._changed(job_id)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.scheduler.state == STATE_RUNNING

    def start(self) -> None:
        self.scheduler.start()

    def pause(self) -> None:
        """Stop firing at once (the lease is in doubt); runs in progress go on."""
        if self.scheduler.running:
            self.scheduler.pause()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def stop(self, grace: float) -> None:
        """Stop firing, let runs finish for up to ``grace`` seconds, cancel the rest."""
        self.pause()
        await self.dispatcher.drain(grace)
        self.shutdown()

    # -- reconcile ---------------------------------------------------------------------

    def live(self) -> dict[str, LiveJob]:
        return {job_id: entry.live() for job_id, entry in self.catalog.items()}

    def restore(
        self,
        rows: Iterable[JobRow],
        desired: Mapping[str, Desired],
        specs: dict[str, JobSpec] | None = None,
    ) -> list[str]:
        """Put back the jobs saved by the previous process; return what was skipped."""
        from engine.scheduler.restore import restore

        return restore(self, rows, desired, {} if specs is None else specs)

    def apply(self, plan: Plan) -> list[str]:
        """Apply every step; return the warnings worth logging."""
        now = datetime.now(UTC)
        warnings: list[str] = []
        touched = False
        for step in plan.steps:
            try:
                touched |= self._apply_step(step, now, warnings)
            except Exception as exc:  # one bad job never stops the rest of the plan
                warnings.append(f"could not apply {step.op.value} of job {step.job_id!r}: {exc}")
                log.exception("Applying %s of %s failed", step.op.value, step.job_id)
        if touched and self.scheduler.running:
            self.scheduler.wakeup()
        return warnings

    def declared_entry(self, job_id: str, want: Desired, spec: JobSpec) -> Entry:
        return Entry(
            job_id,
            "declared",
            want.file,
            want.line,
            want.column,
            want.essence,
            want.fingerprint,
            spec,
            task=(task := task_of(spec)),
            tz=task.tz,
        )

    def _apply_step(self, step: Step, now: datetime, warnings: list[str]) -> bool:
        job_id = step.job_id
        if step.op is Op.REMOVE:
            self.catalog.pop(job_id, None)
            if self.store.lookup_job(job_id) is not None:
                self._call(self.store.remove_job, job_id)
                return True
            self.mark(job_id)
            return False
        want = step.desired
        assert want is not None
        spec: JobSpec = want.spec or JobSpec.model_validate(as_dict(want.essence))
        old = self.catalog.get(job_id)
        entry = self.declared_entry(job_id, want, spec)
        if step.op is Op.ADD:
            if old is not None and old.source == "runtime":
                warnings.append(
                    f"job {job_id!r} is declared in {want.file}:{want.line}; the declaration "
                    "replaces the runtime job of the same id"
                )
                if self.store.lookup_job(job_id) is not None:
                    self.store.remove_job(job_id)
            job = self.new_job(job_id, spec, now)
            self.catalog[job_id] = entry
            self._call(self.store.add_job, job)
            return True
        if not step.changes:  # the same job, written somewhere else: provenance only
            entry.runtime_paused = bool(old and old.runtime_paused)
            self.catalog[job_id] = entry
            self.mark(job_id)
            return False
        job = self.store.lookup_job(job_id)
        if job is None:  # a one-shot that has run: only a new schedule brings it back
            self.catalog[job_id] = entry
            if step.op is Op.RESCHEDULE:
                self._call(self.store.add_job, self.new_job(job_id, spec, now))
                return True
            self.mark(job_id)
            return False
        changes = self.options(spec)
        if step.op is Op.RESCHEDULE:
            trigger = trigger_for(spec, now)
            changes["trigger"] = trigger
            changes["next_run_time"] = (
                None if spec.paused else trigger.get_next_fire_time(None, now)
            )
        elif spec.paused:
            changes["next_run_time"] = None
        elif job.next_run_time is None:  # resumed: from now, as APScheduler's resume does
            changes["next_run_time"] = job.trigger.get_next_fire_time(None, now)
        job._modify(**changes)
        self.catalog[job_id] = entry  # a changed declaration ends a runtime pause
        self._call(self.store.update_job, job)
        return True

    def _call(self, method: Callable[..., None], job: Job | str) -> None:
        """One job-store write made by us (counted), and the job's row marked changed."""
        self.calls += 1
        method(job)
        self.mark(job if isinstance(job, str) else job.id)

    def options(self, spec: JobSpec) -> dict[str, Any]:
        return {
            "name": spec.description or spec.task,
            # APScheduler wants whole seconds; the dispatcher applies the same limit.
            "misfire_grace_time": max(1, math.ceil(spec.misfire_grace.total_seconds())),
            "coalesce": spec.coalesce,
            "max_instances": spec.max_instances,
        }

    def new_job(
        self, job_id: str, spec: JobSpec, now: datetime, next_run: datetime | object | None = ...
    ) -> Job:
        trigger = trigger_for(spec, now)
        if next_run is ...:
            next_run = None if spec.paused else self._first_fire(trigger, now)
        return build_job(self.scheduler, job_id, trigger, next_run, **self.options(spec))  # type: ignore[arg-type]

    def _first_fire(self, trigger: BaseTrigger, now: datetime) -> datetime | None:
        """The first fire time from ``now``; the same crontab in many jobs is computed once."""
        if not isinstance(trigger, CrontabTrigger) or trigger.jitter:
            return trigger.get_next_fire_time(None, now)
        key = (trigger.expression, str(trigger.timezone), trigger.start_date, trigger.end_date, now)
        cache = self._fire_cache
        if key not in cache:
            if len(cache) > 10_000:
                cache.clear()
            cache[key] = trigger.get_next_fire_time(None, now)
        return cache[key]

    # -- rows for the database ---------------------------------------------------------

    def job_row(self, job_id: str) -> dict[str, Any] | None:
        """The database row of a job, or None when it is gone."""
        entry = self.catalog.get(job_id)
        if entry is None:
            return None
        kept, done, next_run = self.next_run_of(job_id)
        if entry.source == "runtime":
            if not kept or entry.runtime is None:
                return None
            return {
                "id": job_id,
                "source": "runtime",
                "file": None,
                "line": None,
                "col": None,
                "essence": None,
                "runtime": _json(entry.runtime),
                "next_run_time": next_run,
                "runtime_paused": entry.runtime_paused,
                "done": False,
            }
        return {
            "id": job_id,
            "source": "declared",
            "file": entry.file,
            "line": entry.line,
            "col": entry.column,
            "essence": entry.spec.canonical_json() if entry.spec else None,
            "runtime": None,
            "next_run_time": next_run,
            "runtime_paused": entry.runtime_paused,
            "done": done,
        }


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, separators=(",", ":"))
