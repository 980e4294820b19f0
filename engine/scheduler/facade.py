"""The scheduler facade: the one place that drives APScheduler 3.

It applies reconcile plans with the fewest job-store calls (one per changed job, one
wakeup per plan), restores state saved by the previous process, and offers the runtime
API of the contract. ``catalog`` is the engine's list of jobs with their provenance;
the job store holds only what APScheduler needs to fire them.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import obj_to_ref, ref_to_obj

from engine.errors import JobRefused
from engine.execution.runner import run
from engine.files.spec import Essence, JobSpec, as_dict, fingerprint_text
from engine.reconciler import Desired, LiveJob, Op, Plan, Step
from engine.redact import redact
from engine.scheduler.executor import RunnerExecutor
from engine.scheduler.jobs import describe_trigger, payload, trigger_for
from engine.scheduler.store import HeapJobStore
from engine.scheduler.triggers import CrontabTrigger
from engine.state.db import JobRow
from engine.state.history import History

__all__ = ["Entry", "SchedulerFacade"]

log = logging.getLogger("schedctl.scheduler")
RUN_REF = "engine.execution.runner:run"
DECLARED: dict[str, Any] = {}  # the shared kwargs of every declared job (see payload_of)
DEFAULT_GRACE = 60  # seconds; APScheduler requires an int


@dataclass
class Entry:
    """One job the engine knows, with where it came from."""

    id: str
    source: str  # "declared" | "runtime"
    file: str | None = None
    line: int | None = None
    column: int | None = None
    essence: Mapping[str, Any] | None = None
    fingerprint: str | None = None
    spec: JobSpec | None = None
    runtime_paused: bool = False
    _live: LiveJob | None = field(default=None, repr=False, compare=False)

    def live(self) -> LiveJob:
        """The reconciler's view of this entry (kept while nothing in it changes)."""
        found = self._live
        if found is None or found.runtime_paused != self.runtime_paused:
            found = self._live = LiveJob(
                self.source,
                self.file,
                self.essence,
                self.fingerprint,
                self.runtime_paused,
                self.line,
                self.column,
            )
        return found


class SchedulerFacade:
    def __init__(
        self,
        history: History,
        threads: Executor,
        on_job_change: Callable[[str], None] | None = None,
        db_claim: Callable[[str, datetime], bool] | None = None,
        on_time_change: Callable[[str], None] | None = None,
    ) -> None:
        self.history = history
        self._changed = on_job_change or (lambda job_id: None)
        self._time_changed = on_time_change or (lambda job_id: None)
        self.store = HeapJobStore(on_change=self._store_changed)
        self.executor = RunnerExecutor(history, threads, db_claim, self.payload_of)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            jobstores={"default": self.store},
            executors={"default": self.executor},
            job_defaults={
                "misfire_grace_time": DEFAULT_GRACE,
                "coalesce": True,
                "max_instances": 1,
            },
        )
        self.catalog: dict[str, Entry] = {}
        self._fire_cache: dict[tuple[Any, ...], datetime | None] = {}
        self.calls = 0  # job-store mutations made for plans and the runtime API

    def _store_changed(self, job_id: str) -> None:
        # Every store write lands here, the scheduler's own after each fire included.
        # A runtime one-shot that has run is gone from the store: it is gone for good.
        entry = self.catalog.get(job_id)
        gone = self.store.lookup_job(job_id) is None
        if entry is not None and entry.source == "runtime" and gone:
            del self.catalog[job_id]
        self._time_changed(job_id)

    def next_run_of(self, job_id: str) -> tuple[bool, float | None]:
        """(still scheduled, its next run time as a UTC timestamp or None when paused)."""
        job = self.store.lookup_job(job_id)
        if job is None:
            return (False, None)
        return (True, job.next_run_time.timestamp() if job.next_run_time else None)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self, grace: float) -> None:
        """Stop firing, let runs finish for up to ``grace`` seconds, cancel the rest."""
        if self.scheduler.running:
            self.scheduler.pause()
        await self.executor.drain(grace)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    # -- reconcile ---------------------------------------------------------------------

    def live(self) -> dict[str, LiveJob]:
        return {job_id: entry.live() for job_id, entry in self.catalog.items()}

    def restore(
        self,
        rows: Iterable[JobRow],
        desired: Mapping[str, Desired],
        specs: dict[str, JobSpec] | None = None,
    ) -> None:
        """Put back the jobs the previous process saved, with their next run times.

        ``specs`` caches parsed specs by fingerprint across calls (a standby's refresh).
        """
        now = datetime.now(UTC)
        specs = {} if specs is None else specs
        for row in rows:
            try:
                if row.source == "runtime":
                    self._restore_runtime(row)
                else:
                    self._restore_declared(row, desired.get(row.id), now, specs)
            except Exception as exc:
                log.warning(
                    "Could not restore job %r from the database (%s); skipping it.", row.id, exc
                )

    def _restore_runtime(self, row: JobRow) -> None:
        assert row.state is not None
        job = Job.__new__(Job)
        job.__setstate__(pickle.loads(row.state))
        job._scheduler = self.scheduler
        job._jobstore_alias = "default"
        if row.runtime_paused:
            job._modify(next_run_time=None)
        self.store.add_job(job)
        self.catalog[row.id] = Entry(row.id, "runtime", runtime_paused=row.runtime_paused)

    def _restore_declared(
        self, row: JobRow, want: Desired | None, now: datetime, specs: dict[str, JobSpec]
    ) -> None:
        assert row.essence_json is not None
        fp = fingerprint_text(row.essence_json)
        spec = want.spec if want is not None and want.fingerprint == fp else specs.get(fp)
        if spec is None:
            spec = specs[fp] = JobSpec.model_validate_json(row.essence_json)
        entry = Entry(
            row.id,
            "declared",
            row.file,
            row.line,
            row.column,
            Essence(spec),
            fp,
            spec,
            row.runtime_paused,
        )
        self.catalog[row.id] = entry
        if row.done:
            return
        next_run = (
            datetime.fromtimestamp(row.next_run_time, UTC)
            if row.next_run_time is not None
            else None
        )
        self.store.add_job(self._new_job(row.id, spec, now, next_run))

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

    def _apply_step(self, step: Step, now: datetime, warnings: list[str]) -> bool:
        job_id = step.job_id
        if step.op is Op.REMOVE:
            self.catalog.pop(job_id, None)
            if self.store.lookup_job(job_id) is not None:
                self._call(self.store.remove_job, job_id)
                return True
            self._changed(job_id)
            return False
        want = step.desired
        assert want is not None
        spec: JobSpec = want.spec or JobSpec.model_validate(as_dict(want.essence))
        old = self.catalog.get(job_id)
        entry = Entry(
            job_id,
            "declared",
            want.file,
            want.line,
            want.column,
            want.essence,
            want.fingerprint,
            spec,
        )
        if step.op is Op.ADD:
            if old is not None and old.source == "runtime":
                warnings.append(
                    f"job {job_id!r} is declared in {want.file}:{want.line}; the declaration "
                    "replaces the runtime job of the same id"
                )
                if self.store.lookup_job(job_id) is not None:
                    self.store.remove_job(job_id)
            job = self._new_job(job_id, spec, now)
            self.catalog[job_id] = entry
            self._call(self.store.add_job, job)
            return True
        if not step.changes:  # the same job, written somewhere else: provenance only
            entry.runtime_paused = bool(old and old.runtime_paused)
            self.catalog[job_id] = entry
            self._changed(job_id)
            return False
        job = self.store.lookup_job(job_id)
        if job is None:  # a one-shot that has run: only a new schedule brings it back
            if step.op is Op.RESCHEDULE:
                job = self._new_job(job_id, spec, now)
                self.catalog[job_id] = entry
                self._call(self.store.add_job, job)
                return True
            self.catalog[job_id] = entry
            self._changed(job_id)
            return False
        changes = self._options(spec)
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
        self._changed(job if isinstance(job, str) else job.id)

    def _options(self, spec: JobSpec) -> dict[str, Any]:
        return {
            "name": spec.description or spec.task,
            # APScheduler wants whole seconds; the executor applies the same limit.
            "misfire_grace_time": max(1, math.ceil(spec.misfire_grace.total_seconds())),
            "coalesce": spec.coalesce,
            "max_instances": spec.max_instances,
        }

    def _new_job(
        self, job_id: str, spec: JobSpec, now: datetime, next_run: datetime | object | None = ...
    ) -> Job:
        trigger = trigger_for(spec, now)
        if next_run is ...:
            next_run = None if spec.paused else self._first_fire(trigger, now)
        # Built from state, as a job store loads one: Job() would inspect the runner's
        # signature for every job, and a declared job's payload is its spec, not a copy.
        job = Job.__new__(Job)
        job.__setstate__(
            {
                "id": job_id,
                "func": RUN_REF,
                "trigger": trigger,
                "executor": "default",
                "args": (),
                "kwargs": DECLARED,
                "next_run_time": next_run,
                **self._options(spec),
            }
        )
        job._scheduler = self.scheduler
        job._jobstore_alias = "default"
        return job

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

    def payload_of(self, job: Job) -> dict[str, Any]:
        """What the runner needs: a runtime job carries it, a declared one has its spec."""
        if job.kwargs is not DECLARED and "task" in job.kwargs:
            return job.kwargs
        entry = self.catalog.get(job.id)
        if entry is None or entry.spec is None:
            raise LookupError(f"job {job.id!r} has no declaration")
        return payload(entry.spec)

    # -- runtime API (called on the event loop) ----------------------------------------

    def add_runtime(
        self,
        func: Callable[..., Any],
        job_id: str | None,
        trigger: BaseTrigger | str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        task = _reference(func)
        data = {
            "task": task,
            "args": list(args or ()),
            "kwargs": dict(kwargs or {}),
            "concurrency": "allow" if options.get("max_instances", 1) > 1 else "forbid",
            "max_instances": options.get("max_instances", 1),
            "options": {"timeout": None, "retries": 0, "retry_delay": 10.0},
        }
        try:
            pickle.dumps((data, trigger))
        except Exception as exc:
            raise JobRefused(
                f"the job's arguments or trigger cannot be saved ({type(exc).__name__}: {exc}); "
                "pass plain data (numbers, strings, lists, dicts, datetimes)"
            ) from None
        if job_id is not None and job_id in self.catalog:
            existing = self.catalog[job_id]
            if existing.source == "declared":
                raise JobRefused(
                    f"job id {job_id!r} is declared in {existing.file}:{existing.line}; "
                    "declared jobs change in the files; pick another id for a runtime job"
                )
        options.setdefault("misfire_grace_time", DEFAULT_GRACE)
        options.setdefault("coalesce", True)
        options.setdefault("name", task)
        job = self.scheduler.add_job(
            run,
            trigger=trigger,
            id=job_id,
            args=(),
            kwargs=data,
            replace_existing=True,
            jobstore="default",
            executor="default",
            **options,
        )
        self.calls += 1
        self.catalog[job.id] = Entry(job.id, "runtime")
        self._changed(job.id)
        return str(job.id)

    def remove_runtime(self, job_id: str) -> bool:
        entry = self.catalog.get(job_id)
        if entry is None:
            return False
        if entry.source == "declared":
            log.warning(
                "Refused to remove job %r at runtime: it is declared in %s:%s; remove it from "
                "the files instead.",
                job_id,
                entry.file,
                entry.line,
            )
            return False
        del self.catalog[job_id]
        if self.store.lookup_job(job_id) is not None:
            self._call(self.store.remove_job, job_id)
        self._changed(job_id)
        return True

    def pause(self, job_id: str) -> bool:
        entry = self.catalog.get(job_id)
        if entry is None:
            return False
        entry.runtime_paused = True
        job = self.store.lookup_job(job_id)
        if job is not None and job.next_run_time is not None:
            job._modify(next_run_time=None)
            self._call(self.store.update_job, job)
        self._changed(job_id)
        return True

    def resume(self, job_id: str) -> bool:
        entry = self.catalog.get(job_id)
        if entry is None:
            return False
        if entry.spec is not None and entry.spec.paused:
            log.warning(
                "Refused to resume job %r at runtime: it is paused in %s:%s; set paused: false "
                "there instead.",
                job_id,
                entry.file,
                entry.line,
            )
            return False
        entry.runtime_paused = False
        job = self.store.lookup_job(job_id)
        if job is not None and job.next_run_time is None:
            next_run = job.trigger.get_next_fire_time(None, datetime.now(UTC))
            if next_run is None:
                self._call(self.store.remove_job, job_id)  # a runtime job leaves the catalog
            else:
                job._modify(next_run_time=next_run)
                self._call(self.store.update_job, job)
            if self.scheduler.running:
                self.scheduler.wakeup()
        self._changed(job_id)
        return True

    def run_now(self, job_id: str) -> bool:
        """Start a run now; the schedule stays as it was."""
        entry = self.catalog.get(job_id)
        if entry is None:
            return False
        job = self.store.lookup_job(job_id)
        if job is None and entry.spec is not None:  # a one-shot that has run
            job = self._new_job(job_id, entry.spec, datetime.now(UTC), None)
        if job is None:
            return False
        now = datetime.now(UTC)
        self.executor.claim(job_id, now)
        return self.executor.start_run(job, now)

    # -- read model --------------------------------------------------------------------

    def job_row(self, job_id: str) -> dict[str, Any] | None:
        """The database row of a job, or None when it is gone."""
        entry = self.catalog.get(job_id)
        if entry is None:
            return None
        job = self.store.lookup_job(job_id)
        next_run = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
        if entry.source == "runtime":
            if job is None:
                return None
            return {
                "id": job_id,
                "source": "runtime",
                "file": None,
                "line": None,
                "col": None,
                "essence": None,
                "state": pickle.dumps(job.__getstate__()),
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
            "state": None,
            "next_run_time": next_run,
            "runtime_paused": entry.runtime_paused,
            "done": job is None,
        }

    def job_info(self, job_id: str) -> dict[str, Any] | None:
        entry = self.catalog.get(job_id)
        if entry is None:
            return None
        job = self.store.lookup_job(job_id)
        spec = entry.spec
        data = payload(spec) if spec is not None else job.kwargs if job is not None else {}
        if job is not None:
            trigger = describe_trigger(job.trigger)
        else:
            assert spec is not None
            trigger = describe_trigger(trigger_for(spec, datetime.now(UTC)))
        next_run = job.next_run_time if job is not None else None
        last = self.history.last_finished(job_id)
        return {
            "id": job_id,
            "task": data["task"],
            "args": list(data.get("args") or ()),
            "kwargs": redact(data.get("kwargs") or {}),
            "trigger": trigger,
            "next_run_time": next_run.isoformat() if next_run else None,
            "paused": entry.runtime_paused or bool(spec and spec.paused),
            "source": entry.source,
            "file": entry.file,
            "line": entry.line,
            "description": spec.description if spec else None,
            "labels": dict(spec.labels) if spec else {},
            "running": self.history.running(job_id),
            "last_run": last.as_dict() if last else None,
        }


def _reference(func: Callable[..., Any]) -> str:
    """``module:qualname`` of ``func``, or JobRefused if it cannot be found by name."""
    try:
        ref = obj_to_ref(func)
        found = ref_to_obj(ref)
    except Exception:
        found, ref = None, ""
    if found is not func and getattr(found, "__func__", None) is not func:
        name = getattr(func, "__qualname__", repr(func))
        raise JobRefused(
            f"cannot schedule {name}: the function must be importable by reference "
            "(a module-level function, not a lambda, a nested function or a bound method "
            "of a local object), so the job can be saved and run after a restart"
        )
    return ref
