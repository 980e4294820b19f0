"""The engine: files -> loader -> reconciler -> scheduler facade, and the read models.

One reconcile at a time; every trigger of a reconcile (start, file change, SIGHUP, the
periodic resync) goes through ``request_reconcile()``, which coalesces bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from engine._version import __version__
from engine.files.loader import Loader, Snapshot
from engine.files.spec import as_dict
from engine.files.tasks import ensure_cwd_on_path
from engine.files.watcher import watch
from engine.metrics import Metrics
from engine.reconciler import Desired, plan
from engine.redact import redact
from engine.scheduler.facade import SchedulerFacade
from engine.settings import Settings
from engine.state.db import StateDB
from engine.state.history import History, Run
from engine.state.lease import Lease, lease_for
from engine.state.persist import Persister

__all__ = ["Engine"]

log = logging.getLogger("schedctl")
VERSION = __version__
SWITCH_INTERVAL_S = 0.0005
FULL_GC_EVERY = 100  # middle-generation collections between full ones (Python's default: 10)
LEASE_RETRY_S = 2.0  # a standby tries the lease this often: takeover well within 15 s


def _runs(rows: Any) -> Any:
    return (
        Run(
            r.job_id,
            datetime.fromtimestamp(r.scheduled_at, UTC),
            r.attempt,
            r.status,
            datetime.fromtimestamp(r.started_at, UTC) if r.started_at else None,
            datetime.fromtimestamp(r.finished_at, UTC) if r.finished_at else None,
            r.error,
        )
        for r in rows
    )


class Engine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.metrics = Metrics()
        self.db = StateDB(self.settings.database_url)
        self.lease: Lease = lease_for(self.db.dialect, self.db.url.database, self.db.engine)
        self.threads = ThreadPoolExecutor(
            max_workers=self.settings.thread_pool_size, thread_name_prefix="schedctl-task"
        )
        self.loader = Loader(self.settings.task_modules, self.settings.timezone)
        self.history = History(self.settings.history_limit)
        self.facade = SchedulerFacade(self.history, self.threads)
        self.persister: Persister | None = None
        self.leading = False
        self.revision: str | None = None
        self.last_reconcile: dict[str, Any] | None = None
        self.ready = False
        self._specs: dict[str, Any] = {}  # parsed specs by fingerprint, for standby views
        self._desired_cache: dict[int, tuple[Any, Desired]] = {}
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._gc_threshold: tuple[int, int, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Take the lease and lead (restore, reconcile, fire, watch), or stand by."""
        ensure_cwd_on_path()
        await asyncio.to_thread(self.db.migrate)
        if await asyncio.to_thread(self.lease.try_acquire):
            await self._lead()
        else:
            log.info("Another process holds the leader lease; standing by.")
            await self._refresh_view()
            self._spawn(self._stand_by(), "schedctl-standby")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _lead(self) -> None:
        # Loading creates objects by the hundred thousand and frees few: no GC passes over
        # them while it runs; one collection, then a freeze, once it is done.
        gc.disable()
        try:
            await self._load_and_start()
        finally:
            gc.enable()

    async def _load_and_start(self) -> None:
        history = History(self.settings.history_limit, on_change=self._run_changed)
        facade = SchedulerFacade(
            history,
            self.threads,
            on_job_change=self._job_changed,
            db_claim=self._db_claim if self.lease.shared else None,
            on_time_change=self._time_changed,
        )
        self.persister = Persister(
            self.db, facade.job_row, self.settings.history_limit, next_run_of=facade.next_run_of
        )
        rows = await asyncio.to_thread(self.db.load_jobs)
        runs = await asyncio.to_thread(self.db.load_runs, self.settings.history_limit)
        history.load(_runs(runs), taking_over=True)
        snapshot = await asyncio.to_thread(self._scan)
        desired = self._desired(snapshot)
        facade.restore(rows, desired, self._specs)
        self.history, self.facade, self.leading = history, facade, True
        await self._reconcile_snapshot(snapshot, "start", time.perf_counter(), desired)
        self.persister.start()
        self.facade.start()
        self.metrics.leader.set(1)
        # What start loaded lives as long as the process: keep it out of every GC pass.
        gc.collect()
        gc.freeze()
        # After the freeze the oldest generation is small, so Python would run full
        # collections often; each one pauses the loop for every run record kept since.
        self._gc_threshold = gc.get_threshold()
        young, middle, old = self._gc_threshold
        gc.set_threshold(young, middle, max(old, FULL_GC_EVERY))
        # The writer thread must not hold the GIL for the default 5 ms while a run is due.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._leader_tasks = [
            asyncio.create_task(self._reconcile_loop(), name="schedctl-reconcile"),
            asyncio.create_task(self._resync_loop(), name="schedctl-resync"),
        ]
        if self.settings.watch:
            self._leader_tasks.append(
                asyncio.create_task(
                    watch(self.settings.schedules_dir, self.request_reconcile, self._stop),
                    name="schedctl-watch",
                )
            )
        self._tasks.extend(self._leader_tasks)
        if self.lease.shared:
            self._spawn(self._hold_lease(), "schedctl-lease")

    def _db_claim(self, job_id: str, run_time: datetime) -> bool:
        return self.db.claim_run(job_id, run_time.timestamp())

    async def _stand_by(self) -> None:
        """Serve the leader's state from the database; take over when the lease frees."""
        while not self._stop.is_set():
            await asyncio.sleep(LEASE_RETRY_S)
            try:
                if await asyncio.to_thread(self.lease.try_acquire):
                    log.info("Took the leader lease; this process fires jobs now.")
                    await self._lead()
                    return
                await self._refresh_view()
            except Exception:
                log.exception("Standby refresh failed; will retry.")

    async def _hold_lease(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(LEASE_RETRY_S)
            if not await asyncio.to_thread(self.lease.still_held):
                log.error("Lost the leader lease: stopping firing and standing by.")
                self.leading = False
                self.metrics.leader.set(0)
                for task in self._leader_tasks:
                    task.cancel()
                await self.facade.stop(0)
                if self.persister is not None:
                    # Another process may lead now: what is queued here is stale, not saved.
                    await asyncio.to_thread(self.persister.stop, False)
                    self.persister = None
                self._spawn(self._stand_by(), "schedctl-standby")
                return

    async def _refresh_view(self) -> None:
        rows, runs, revision, report = await asyncio.to_thread(self._read_view)
        history = History(self.settings.history_limit)
        history.load(_runs(runs), taking_over=False)
        facade = SchedulerFacade(history, self.threads)
        facade.restore(rows, {}, self._specs)
        self.history, self.facade = history, facade
        self.revision, self.last_reconcile = revision, report

    def _read_view(self) -> tuple[Any, Any, Any, Any]:
        return (
            self.db.load_jobs(),
            self.db.load_runs(self.settings.history_limit),
            self.db.get_fact("revision"),
            self.db.get_fact("last_reconcile"),
        )

    async def stop(self) -> None:
        """Stop firing, let runs finish up to the grace, record the rest, close the database."""
        self._stop.set()
        self._dirty.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.leading:
            await self.facade.stop(self.settings.shutdown_grace)
        self.metrics.leader.set(0)
        if self.persister is not None:
            await asyncio.to_thread(self.persister.stop)
        self.threads.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.lease.release)
        self.db.close()
        self.ready = False
        gc.unfreeze()  # what start froze may be garbage now
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)

    # -- hooks -------------------------------------------------------------------------

    def _run_changed(self, run: Run) -> None:
        if self.persister is not None:
            self.persister.run_changed(run)
        self.metrics.observe(run)

    def _job_changed(self, job_id: str) -> None:
        if self.persister is not None:
            self.persister.job_changed(job_id)

    def _time_changed(self, job_id: str) -> None:
        if self.persister is not None:
            self.persister.time_changed(job_id)

    # -- reconcile ---------------------------------------------------------------------

    def request_reconcile(self) -> None:
        self._dirty.set()

    async def reconcile(self, reason: str = "request") -> dict[str, Any] | None:
        """Scan the files and apply them now; return the report (None on a standby)."""
        if not self.leading:
            return None
        started = time.perf_counter()
        async with self._lock:
            snapshot = await asyncio.to_thread(self._scan)
            return await self._reconcile_snapshot(snapshot, reason, started)

    async def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            await self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                await self.reconcile("change")
            except Exception:
                log.exception("Reconcile failed; the live jobs are unchanged.")

    async def _resync_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.settings.resync_interval)
            self.request_reconcile()

    def _scan(self) -> Snapshot:
        return self.loader.scan([self.settings.schedules_dir])

    def _desired(self, snapshot: Snapshot) -> dict[str, Desired]:
        # The loader hands back the same Declared objects for files it did not re-parse;
        # their Desired twins are kept too, so an edit costs what changed, not all jobs.
        cache, fresh = self._desired_cache, {}
        desired = {}
        for job_id, job in snapshot.jobs.items():
            found = cache.get(id(job))
            if found is None or found[0] is not job:
                found = (
                    job,
                    Desired(job.essence, job.fingerprint, job.file, job.line, job.column, job.spec),
                )
            fresh[id(job)] = found
            desired[job_id] = found[1]
        self._desired_cache = fresh
        return desired

    async def _reconcile_snapshot(
        self,
        snapshot: Snapshot,
        reason: str,
        started: float,
        desired: dict[str, Desired] | None = None,
    ) -> dict[str, Any]:
        live = self.facade.live()
        invalid = snapshot.invalid_files
        if snapshot.missing:  # a folder mid-swap or unmounted says nothing: keep everything
            invalid = invalid | {job.file for job in live.values() if job.file}
        if desired is None:
            desired = self._desired(snapshot)
        the_plan = plan(desired, live, invalid, set(snapshot.duplicates))
        warnings = self.facade.apply(the_plan)
        problems = snapshot.problems
        counts = the_plan.counts()  # a job that only moved in its file is unchanged
        changed = sum(counts.values())
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        unchanged = len(the_plan.effective) - (changed - counts["remove"])
        report = {
            "at": datetime.now(UTC).isoformat(),
            "duration_ms": duration_ms,
            "added": counts["add"],
            "updated": counts["reschedule"] + counts["modify"] + counts["pause"] + counts["resume"],
            "removed": counts["remove"],
            "unchanged": max(unchanged, 0),
            "errors": [p.as_dict() for p in problems],
        }
        self.revision = the_plan.revision
        self.last_reconcile = report
        if self.persister is not None:
            self.persister.fact_changed("revision", self.revision)
            self.persister.fact_changed("last_reconcile", report)
        self.metrics.reconciles.labels("errors" if problems else "ok").inc()
        self.metrics.reconcile_seconds.observe(duration_ms / 1000)
        self._count_jobs()
        for warning in warnings:
            log.warning("%s", warning)
        for problem in problems:
            log.error("%s", problem)
        if changed or problems or reason == "start":
            log.info(
                "Reload applied: %d added, %d rescheduled, %d modified, %d removed, %d unchanged "
                "(revision %s, %.0f ms)%s.",
                counts["add"],
                counts["reschedule"],
                counts["modify"] + counts["pause"] + counts["resume"],
                counts["remove"],
                report["unchanged"],
                the_plan.revision,
                duration_ms,
                f"; {len(problems)} problem(s) keep their files' jobs as they were"
                if problems
                else "",
            )
        return report

    def _count_jobs(self) -> None:
        declared = sum(1 for e in self.facade.catalog.values() if e.source == "declared")
        self.metrics.jobs.labels("declared").set(declared)
        self.metrics.jobs.labels("runtime").set(len(self.facade.catalog) - declared)

    # -- read models -------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        infos = (self.facade.job_info(job_id) for job_id in sorted(self.facade.catalog))
        return [info for info in infos if info is not None]

    def job(self, job_id: str) -> dict[str, Any] | None:
        info = self.facade.job_info(job_id)
        if info is None:
            return None
        info["runs"] = [run.as_dict() for run in self.history.runs(job_id)]
        return info

    def specs(self) -> dict[str, Any]:
        """Every job's canonical spec (secrets redacted) and fingerprint: for ``schedctl plan``."""
        return {
            "revision": self.revision,
            "jobs": {
                job_id: {
                    "source": entry.source,
                    "file": entry.file,
                    "fingerprint": entry.fingerprint,
                    "runtime_paused": entry.runtime_paused,
                    "spec": redact(as_dict(entry.essence)) if entry.essence is not None else None,
                }
                for job_id, entry in sorted(self.facade.catalog.items())
            },
        }

    @property
    def role(self) -> str:
        if not self.leading:
            return "standby"
        return "leader" if self.lease.shared else "single"

    def status(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "role": self.role,
            "scheduler": "running" if self.leading and self.facade.running else "stopped",
            "jobs": len(self.facade.catalog),
            "last_reconcile": self.last_reconcile,
            "version": VERSION,
        }
