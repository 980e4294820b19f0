"""The engine: wires leadership, reconciliation, execution and the read models.

One ``Engine`` per process (or per app). ``start()`` opens the state, then either leads
(restore, reconcile, fire, watch) or stands by (serve the leader's state from the
database); ``core.leadership`` moves it between the two for as long as it runs, through
lease losses, database outages and freezes. ``stop()`` stops firing, drains runs for the
grace period, records what is left, and gives the lease up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from engine import pacing
from engine._version import __version__
from engine.core.leadership import Leadership
from engine.core.memory import Trimmer
from engine.core.reconciling import Reconciling
from engine.core.samples import JobSamples
from engine.core.tuning import ProcessTuning
from engine.core.views import BIG, Views
from engine.errors import StateError
from engine.execution import capture
from engine.execution.celery_app import CeleryApp, celery_app_setting
from engine.execution.celery_executor import CeleryExecutor
from engine.execution.dispatch import Dispatcher
from engine.execution.runner import Runner
from engine.execution.task import Task
from engine.execution.threads import DaemonExecutor, TaskThreads
from engine.execution.watch import LoopWatch
from engine.files.preview import aware
from engine.files.tasks import ensure_cwd_on_path, resolve_task
from engine.metrics import JobSample, Metrics
from engine.scheduler.catalog import Entry
from engine.scheduler.facade import SchedulerFacade
from engine.scheduler.jobs import trigger_for
from engine.scheduler.runtime import RuntimeOps
from engine.settings import Settings
from engine.state.db import EVENTS_KEPT, Fence, StateDB
from engine.state.history import History, Run
from engine.state.lease import Lease
from engine.state.persist import Persister

__all__ = ["EVENT_FIELDS", "VERSION", "Body", "Engine", "event_of"]

# An answer's body: whole, or (when large) the pieces whose join it is.
Body = bytes | list[bytes]

log = logging.getLogger("schedctl")
VERSION = __version__
T = TypeVar("T")
DB_SILENCE_S = 8.0  # no answer from the database this long: it counts as unreachable
EVENT_FIELDS = (
    "revision",
    "commit",
    "reason",
    "added",
    "updated",
    "removed",
    "errors",
    "job",
    "action",
    "detail",
)


def event_of(at: float, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """An Event of the status API (contract section 5): fields that do not apply are null."""
    event: dict[str, Any] = {"at": datetime.fromtimestamp(at, UTC).isoformat(), "kind": kind}
    for name in EVENT_FIELDS:
        event[name] = data.get(name)
    return event


class Engine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.metrics = Metrics()
        self.samples = JobSamples()  # /metrics' per-job samples, kept until touched
        self.db = StateDB(self.settings.database_url, reset=self.settings.reset_state)
        self.lease = Lease(self.db, ttl=self.settings.lease_ttl)
        # Blocking database and file work runs here: daemon threads, never joined at exit.
        self.io = DaemonExecutor(4, "schedctl-io")
        # The lease's own thread: a renewal never queues behind reads that requests start.
        self.lease_io = DaemonExecutor(1, "schedctl-lease")
        self.threads = TaskThreads(self.settings.thread_pool_size)
        self.tuning = ProcessTuning(self.settings.tune_process)
        self.trimmer = Trimmer(self.settings.tune_process, self.io)  # after large answers
        self.history = History(self.settings.history_limit, on_change=self._run_changed)
        self.persister = Persister(
            self.db, history_limit=self.settings.history_limit, fence=self.fence_now
        )
        self.runner = Runner(
            self.history, self.threads, self._resolve, self.stopping, self.may_start
        )
        self.celery_app = CeleryApp(
            celery_app_setting(self.settings),
            lambda path: resolve_task(path, self.settings.task_modules, celery=True),
        )
        self.celery = CeleryExecutor(
            self.history, self.celery_app, self.db, self.blocking, self.fence_now, self.may_fire
        )
        self.celery.on_state = self._executor_state
        self.dispatcher = Dispatcher(
            self.history,
            self.runner,
            self.persister.claim,
            self.fence_now,
            self.may_fire,
            celery=self.celery,
        )
        self.reconciling = Reconciling(self)
        self.facade = self.new_facade()
        self.views = Views(
            lambda: self.facade, lambda: self.history, self.stale_files, lambda: self.revision
        )
        self.leadership = Leadership(self)
        self.leading = False  # the lease is ours (from the start of a takeover)
        # ... and the takeover is done: the restored scheduler fires. Until then /status
        # says standby, never a leader whose scheduler is stopped.
        self.in_charge = False
        self.ready = False
        self.started_at: float | None = None
        self._db_seen = time.monotonic()  # the last time the database answered
        self._db_failed = False
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        # a standby's copy of the leader's facts
        self.remote: dict[str, Any] = {}
        self.metrics.source = self._job_samples
        self.watch: LoopWatch | None = None
        self._bodies: dict[str, tuple[Any, str, bytes]] = {}  # cached answers by version
        self._jobs_building = asyncio.Lock()
        self._specs_building = asyncio.Lock()

    # -- wiring --------------------------------------------------------------------------

    def new_facade(self) -> SchedulerFacade:
        return SchedulerFacade(self.dispatcher, self._job_changed, self._time_changed)

    def facade_runtime(self) -> RuntimeOps:
        """The runtime API's operations on the live scheduler (the leader's)."""
        return RuntimeOps(self.facade)

    @property
    def database_ok(self) -> bool:
        """The database answered lately (a call that hangs counts against it too)."""
        silent = time.monotonic() - self._db_seen
        return not self._db_failed and silent < DB_SILENCE_S

    def database_answered(self) -> None:
        self._db_seen = time.monotonic()
        self._db_failed = False
        self.metrics.database_up.set(1)

    def database_failed(self) -> None:
        self._db_failed = True
        self.metrics.database_up.set(0)

    def fence_now(self) -> Fence | None:
        """The lease to write under, while this process may act as the leader."""
        return self.lease.fence if self.leading and self.lease.valid() else None

    def may_fire(self) -> bool:
        return self.leading and self.lease.valid() and not self._stopping

    def may_start(self) -> bool:
        """Whether a claimed run's code may start now: not once the lease has run out
        (a clean stop, which gives the lease up last, lets queued runs start)."""
        return self._stopping or (self.leading and self.lease.valid())

    def stopping(self) -> bool:
        return self._stopping

    async def blocking(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking work on the engine's own threads (never the loop's default pool,
        which the loop waits for at exit)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io, partial(func, *args))

    async def reading(self, func: Callable[..., T], *args: Any) -> T:
        """Build a large answer on the engine's own threads, giving way to the loop as it
        goes (``engine.pacing``): reads must not make jobs fire late."""
        return await self.blocking(pacing.paced, func, *args)

    async def leasing(self, func: Callable[..., T], *args: Any) -> T:
        """Run a lease call on the lease's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.lease_io, partial(func, *args))

    def _resolve(self, task: Task) -> Callable[..., Any]:
        # The one resolver: a declared task under the allowed prefixes, a runtime job's
        # function anywhere outside the standard library.
        prefixes = self.settings.task_modules if task.declared else None
        return resolve_task(task.ref, prefixes, celery=task.executor == "celery")

    def event(self, kind: str, **fields: Any) -> None:
        """An entry of the audit log (written by the writer thread)."""
        self.persister.event(kind, fields)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, then lead or stand by; the leadership loop runs from here on."""
        ensure_cwd_on_path()
        self.started_at = time.time()
        # Every pool starts full: the process's thread count is flat from here on, not a
        # staircase that each burst of tasks climbs, so a leak is plain to see (only a
        # stuck task's replacement adds a thread, at most ENGINE_THREAD_POOL_SIZE of them).
        for pool in (self.io, self.lease_io, self.threads):
            pool.prestart()
        self.dispatcher.bind(asyncio.get_running_loop())
        self.celery.bind(asyncio.get_running_loop())
        self.watch = LoopWatch(asyncio.get_running_loop(), on_block=self._loop_blocked)
        self.watch.start()
        capture.install()
        self.persister.start()
        try:
            await self.blocking(self.db.migrate)
        except StateError:
            self.persister.stop(flush=False)
            capture.uninstall()
            raise
        except Exception as exc:
            self.database_failed()
            log.error("Cannot reach the state database (%s); will keep trying.", exc)
        else:
            await self.leadership.first_try()
        self.event(
            "start",
            revision=self.revision,
            commit=self.reconciling.commit if self.leading else self.remote.get("commit"),
            detail=f"schedctl {VERSION}, {self.role}, {self.lease.holder}",
        )
        self._tasks.append(asyncio.create_task(self.leadership.run(), name="schedctl-leadership"))

    async def stop(self) -> None:
        """Stop firing, let runs finish up to the grace, record the rest, close the database."""
        self._stopping = True
        started = time.monotonic()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.leadership.stop_leading(
            "the engine is stopping", grace=self.settings.shutdown_grace
        )
        self.event("stop", action=self.role, detail=self.lease.holder)
        self.threads.shutdown()
        self.celery.close()
        # Whatever is left is written (still under the lease) within the rest of a second:
        # a database that does not answer must not hold the exit.
        budget = max(0.5, self.settings.shutdown_grace + 1.0 - (time.monotonic() - started))
        loop = asyncio.get_running_loop()
        stopper = loop.run_in_executor(self.io, self.persister.stop)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(stopper), timeout=min(budget, 3.0))
        self.leading = self.in_charge = False
        self.metrics.leader.set(0)
        release = loop.run_in_executor(self.lease_io, self.lease.release)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(release), timeout=1.0)
        self.reconciling.close()
        if self.watch is not None:
            self.watch.stop()
        capture.uninstall()
        self.trimmer.stop()
        self.io.shutdown(wait=False)
        self.lease_io.shutdown(wait=False)
        self.db.close()
        self.ready = False
        self.tuning.restore()

    # -- hooks -------------------------------------------------------------------------

    def _run_changed(self, run: Run) -> None:
        # A Celery run's row is written by its claim, its worker and the executor's
        # conditional verdicts, never overwritten from this process's copy.
        if run.worker is None or run.worker == "local":
            self.persister.run_changed(run)
        self.metrics.observe(run)
        self.views.touched(run.job_id)
        self.samples.touched(run.job_id)

    def _executor_state(self, state: str) -> None:
        if self.leading:
            self.persister.fact_changed("executors", {"celery": state})

    def uses_celery(self) -> bool:
        """Whether any job of the live catalog has ``executor: celery``."""
        facade = self.facade
        key = (id(facade), self.revision)  # only declared jobs can use Celery
        if self._celery_used[0] != key:
            used = any(
                e.task is not None and e.task.executor == "celery" for e in facade.catalog.values()
            )
            self._celery_used = (key, used)
        return self._celery_used[1]

    _celery_used: tuple[Any, bool] = (None, False)

    def celery_job(self, job_id: str) -> tuple[Task | None, float]:
        """A job's task and misfire grace, for following its Celery runs."""
        entry = self.facade.catalog.get(job_id)
        job = self.facade.store.lookup_job(job_id)
        grace = float(job.misfire_grace_time or 60) if job is not None else 60.0
        return (entry.task if entry is not None else None), grace

    def _job_changed(self, job_id: str) -> None:
        self.views.touched(job_id)
        self.samples.touched(job_id)
        if self.leading:
            self.persister.job_changed(job_id)

    def _time_changed(self, job_id: str) -> None:
        self.views.touched(job_id)
        self.samples.touched(job_id)
        if self.leading:
            self.persister.time_changed(job_id)

    def _job_samples(self) -> tuple[list[JobSample], list[int] | None]:
        """The per-job series of ``/metrics``, read at scrape time (kept while untouched)."""
        stale = self.stale_files()
        facade, history = self.facade, self.history

        def sample(entry: Entry) -> JobSample:
            job_id = entry.id
            last = history.last_finished(job_id)
            success = history.last_success_at(job_id)
            job = facade.store.lookup_job(job_id)
            return JobSample(
                job_id,
                success.timestamp() if success else None,
                last.finished_at.timestamp() if last and last.finished_at else None,
                last.status if last else None,
                job.next_run_time.timestamp() if job is not None and job.next_run_time else None,
                history.consecutive_failures(job_id),
                bool(entry.file and entry.file in stale),
            )

        found, changed = self.samples.samples(facade, history, stale, self.leading, sample)
        if changed is None:  # the entries may have changed: count them again
            declared = sum(
                1 for entry in list(facade.catalog.values()) if entry.source == "declared"
            )
            self.metrics.jobs.labels("declared").set(declared)
            self.metrics.jobs.labels("runtime").set(len(found) - declared)
        return found, changed

    def _loop_blocked(self, job_id: str | None, attempt: int | None, seconds: float) -> None:
        """The loop was held for ``seconds``: name the run, and put it on its record."""
        if job_id is None:
            log.warning("The event loop was held for %.1f s (not by a run).", seconds)
            return
        message = (
            f"this run held the event loop for {seconds:.1f} s (an async def task doing "
            "blocking work? use a def task, or await asyncio.to_thread(...))"
        )
        log.warning("Job %s (attempt %s) held the event loop for %.1f s.", job_id, attempt, seconds)
        for run in self.history.runs(job_id):
            if run.attempt == attempt:
                note = logging.LogRecord("schedctl", logging.WARNING, "", 0, message, None, None)
                if not capture.note(run.run_id, note):  # the run has ended: amend its record
                    run.logs = [*(run.logs or []), capture.as_record(note, run.scheduled_at.tzinfo)]
                    self.history.amend(run)
                return

    # -- reconcile ---------------------------------------------------------------------

    def request_reconcile(self) -> None:
        self.reconciling.request_for("signal")

    async def reconcile(self, reason: str = "request") -> dict[str, Any] | None:
        """Scan the files and apply them now; return the report (None on a standby)."""
        return await self.reconciling.reconcile(reason)

    @property
    def loader(self) -> Any:
        return self.reconciling.loader

    @property
    def revision(self) -> str | None:
        if self.leading:
            return self.reconciling.revision
        return self.remote.get("revision")

    @property
    def last_reconcile(self) -> dict[str, Any] | None:
        if self.leading:
            return self.reconciling.last_reconcile
        return self.remote.get("last_reconcile")

    def stale_files(self) -> frozenset[str]:
        errors = self.reconciling.errors if self.leading else self.remote.get("errors") or []
        return frozenset(str(e.get("file")) for e in errors if isinstance(e, dict))

    # -- read models -------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        cached = self.views.jobs_cached()
        if cached is not None:
            return cached
        version = self.views.version()
        jobs = self.views.build_jobs(self.views.snapshot())
        self.views.remember_jobs(version, jobs)
        return jobs

    async def jobs_async(self) -> list[dict[str, Any]]:
        """``jobs()``, built off the loop when the catalog is large."""
        cached = self.views.jobs_cached()
        if cached is not None:
            return cached
        version = self.views.version()
        entries = self.views.snapshot()
        if len(entries) > BIG:
            jobs = await self.reading(self.views.build_jobs, entries)
        else:
            jobs = self.views.build_jobs(entries)
        self.views.remember_jobs(version, jobs)
        return jobs

    async def jobs_body(self) -> tuple[str, Body]:
        """(ETag, JSON body) of ``GET /jobs``: built off the loop, kept until a job, a run
        or the revision changes. A large body is the pieces whose join it is (sent one
        after the other: joined, 50 MB at 100,000 jobs, it held the loop 50 ms)."""
        version = self.views.version()
        cached = self._bodies.get("jobs")
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        async with self._jobs_building:  # one build at a time: each takes what was touched
            version = self.views.version()
            cached = self._bodies.get("jobs")
            if cached is not None and cached[0] == version:
                return cached[1], cached[2]
            plan = self.views.plan_jobs_body()
            tag = '"' + "-".join(str(part) for part in (*version, "jobs")) + '"'
            if len(self.facade.catalog) > BIG:
                # Not kept: the pieces are the jobs' kept parts, taken again next time.
                return tag, await self.reading(self.views.jobs_body, plan)
            body = b"".join(self.views.jobs_body(plan))
            self._bodies["jobs"] = (version, tag, body)
            return tag, body

    async def specs_body(self) -> Body:
        """The JSON body of ``GET /specs``: from each job's kept part, off the loop and
        in pieces when large (one build at a time)."""
        version = self.views.version()
        cached = self._bodies.get("specs")
        if cached is not None and cached[0] == version:
            return cached[2]
        async with self._specs_building:
            plan = self.views.plan_specs_body()
            if len(self.facade.catalog) > BIG:
                return await self.reading(self.views.specs_body, plan)
            body = b"".join(self.views.specs_body(plan))
            self._bodies["specs"] = (version, "", body)
            return body

    async def metrics_body(self) -> Body:
        """``/metrics``: per-job series are read at scrape time, off the loop and in
        pieces when many."""
        self.loop_lag_ms()  # the gauge follows the watch
        if len(self.facade.catalog) > BIG:
            return await self.reading(self.metrics.render_pieces)
        return self.metrics.render()

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.views.job(job_id)

    def specs(self) -> dict[str, Any]:
        return self.views.specs()

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The audit log, newest first (what the writer has written)."""
        await self.blocking(self.persister.flush_events)
        rows = await self.blocking(self.db.load_events, max(1, min(limit, EVENTS_KEPT)))
        return [event_of(at, kind, data) for _, at, kind, data in rows]

    async def explain(self, job_id: str, at: datetime) -> dict[str, Any] | None:
        """Why the job did or did not run at ``at`` (None: no such job, ever)."""
        from engine.core.explain import TOLERANCE, Facts, explain

        entry = self.facade.catalog.get(job_id)
        events = await self.events(EVENTS_KEPT)
        for event in events:
            event["at"] = datetime.fromisoformat(event["at"])
        known = entry is not None or any(
            job_id in (e.get("added") or ()) or e.get("job") == job_id for e in events
        )
        if not known:
            return None
        tz = (entry.tz if entry is not None else None) or UTC
        at = aware(at, tz)  # a naive instant is read in the job's zone
        job = self.facade.store.lookup_job(job_id)
        trigger = job.trigger if job is not None else None
        if trigger is None and entry is not None and entry.spec is not None:
            trigger = trigger_for(entry.spec, datetime.now(UTC))

        def fires_after(when: datetime) -> datetime | None:
            assert trigger is not None
            found: datetime | None = trigger.get_next_fire_time(None, when)
            return found

        kept = self.history.runs(job_id)
        near = [r.as_dict(tz) for r in reversed(kept) if abs(r.scheduled_at - at) <= TOLERANCE]
        spec = entry.spec if entry is not None else None
        zone = entry.tz if entry is not None and entry.tz else UTC
        facts = Facts(
            job_id=job_id,
            at=at,
            now=datetime.now(UTC),
            tz=tz,
            fires_after=fires_after if trigger is not None else None,
            runs=near,
            oldest_run=kept[-1].scheduled_at if kept else None,
            start=aware(spec.start, zone) if spec is not None and spec.start else None,
            end=aware(spec.end, zone) if spec is not None and spec.end else None,
            paused_now=bool(entry and (entry.runtime_paused or (spec and spec.paused))),
            declared_now=entry is not None,
            events=events,
        )
        return await self.blocking(explain, facts)  # fire times can take a while: off the loop

    @property
    def role(self) -> str:
        if not (self.leading and self.in_charge):
            return "standby"
        return "leader" if self.lease.shared else "single"

    def status(self) -> dict[str, Any]:
        pending = (
            self.reconciling.pending_removal if self.leading else self.remote.get("pending_removal")
        )
        commit = self.reconciling.commit if self.leading else self.remote.get("commit")
        return {
            "revision": self.revision,
            "commit": commit,
            "role": self.role,
            "scheduler": "running" if self.leading and self.facade.running else "stopped",
            "database": "ok" if self.database_ok else "unreachable",
            "jobs": len(self.facade.catalog),
            "pending_removal": pending,
            "last_reconcile": self.last_reconcile,
            "version": VERSION,
        } | self._executors()

    def _executors(self) -> dict[str, Any]:
        """``executors: {"celery": "ok" | "unreachable"}``, only when a job uses Celery."""
        if not self.leading:
            remote = self.remote.get("executors")
            return {"executors": remote} if isinstance(remote, dict) and remote else {}
        if not self.uses_celery():
            return {}
        self.celery.ensure_started()  # a job moved to Celery since the start: probe now
        return {"executors": {"celery": self.celery.state or "unreachable"}}

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not): for ``/readyz``."""
        if not self.ready:
            return False, "starting"
        if not self.database_ok:
            return False, "database unreachable"
        if self.leading:
            if not self.facade.running:
                return False, "stalled"
            pool = self.threads.stats()
            if pool.exhausted or pool.oldest_queued_s > self.settings.stall_after:
                return False, "stalled"
        elif not self.leadership.leader_seen_recently():
            return False, "no leader"
        return True, "ready"

    def loop_lag_ms(self) -> float:
        lag = self.watch.lag_ms if self.watch is not None else 0.0
        self.metrics.loop_lag.set(lag / 1000)
        return round(lag, 3)

    def stalled(self) -> bool:
        """A due run has waited more than ``stall_after`` without being dispatched."""
        if not self.leading:
            return False
        limit = self.settings.stall_after
        due = self.facade.store.get_next_run_time()
        if due is not None and (datetime.now(UTC) - due).total_seconds() > limit:
            return True
        if self.threads.stats().oldest_queued_s > limit:
            return True
        claims = self.dispatcher.claims_in_flight
        return bool(claims and time.monotonic() - self.dispatcher.oldest_claim > limit)
