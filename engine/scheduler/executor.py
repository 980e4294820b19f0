"""The APScheduler executor that hands every due run to the engine's runner.

APScheduler decides *when*; this executor decides *whether* and records the outcome:
runs later than ``misfire_grace`` are recorded ``missed``, a run claimed already is
dropped, and ``concurrency`` is applied (forbid: ``skipped``; allow: up to
``max_instances``; replace: the running one is cancelled).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job

from engine.execution.runner import RunOptions, execute
from engine.state.history import History

__all__ = ["RunnerExecutor"]

log = logging.getLogger("schedctl.executor")
_CLAIMS_KEPT = 100_000


class RunnerExecutor(BaseExecutor):
    def __init__(
        self,
        history: History,
        threads: Executor,
        db_claim: Callable[[str, datetime], bool] | None = None,
        payload_of: Callable[[Job], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.payload_of = payload_of or (lambda job: job.kwargs)
        self.history = history
        self.threads = threads
        self.db_claim = db_claim  # with replicas: claim each run in the shared database
        self.claiming: set[asyncio.Task[None]] = set()
        self.active: dict[str, set[asyncio.Task[str]]] = {}
        self._claimed: set[tuple[str, float]] = set()
        self._claim_order: deque[tuple[str, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def claim(self, job_id: str, run_time: datetime) -> bool:
        """True once per (job, scheduled instant): no run time fires twice."""
        key = (job_id, run_time.timestamp())
        if key in self._claimed:
            return False
        self._claimed.add(key)
        self._claim_order.append(key)
        if len(self._claim_order) > _CLAIMS_KEPT:
            self._claimed.discard(self._claim_order.popleft())
        return True

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        now = datetime.now(UTC)
        grace = job.misfire_grace_time
        due: list[datetime] = []
        for run_time in run_times:
            late = (now - run_time).total_seconds()
            if grace is not None and late > grace:
                self.history.record(
                    job.id,
                    run_time,
                    "missed",
                    f"could not start within misfire_grace ({grace:g}s); {late:.3f}s late",
                )
                continue
            if self.claim(job.id, run_time):
                due.append(run_time)
        if due:  # several only without coalesce: caught up one after another
            self.start_run(job, *due)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:  # pragma: no cover
        self.submit_job(job, run_times)

    def start_run(self, job: Job, *run_times: datetime) -> bool:
        """Claim the runs (in the database, with replicas), then start them in order as one
        instance; False if skipped."""
        if self.db_claim is None:
            return self._start(job, list(run_times))
        assert self._loop is not None
        claiming = self._loop.create_task(self._claim_then_start(job, run_times))
        self.claiming.add(claiming)
        claiming.add_done_callback(self.claiming.discard)
        return True

    async def _claim_then_start(self, job: Job, run_times: tuple[datetime, ...]) -> None:
        assert self.db_claim is not None
        mine = []
        for run_time in run_times:
            if await asyncio.to_thread(self.db_claim, job.id, run_time):
                mine.append(run_time)
            else:
                log.warning(
                    "Run of %s at %s is claimed by another replica; not running it here.",
                    job.id,
                    run_time.isoformat(),
                )
        if mine:
            self._start(job, mine)

    def _start(self, job: Job, run_times: list[datetime]) -> bool:
        """Apply the job's concurrency policy and start the run; False if skipped."""
        data = self.payload_of(job)
        concurrency = data.get("concurrency", "forbid")
        running = self.active.setdefault(job.id, set())
        limit = data.get("max_instances", 1) if concurrency == "allow" else 1
        if running and concurrency == "replace":
            for task in list(running):
                task.cancel()
        elif len(running) >= limit:
            reason = f"the previous run was still going (concurrency: {concurrency}" + (
                f", max_instances: {limit})" if concurrency == "allow" else ")"
            )
            for run_time in run_times:
                self.history.record(job.id, run_time, "skipped", reason)
            return False
        assert self._loop is not None
        if len(run_times) == 1:  # the usual case: no extra coroutine in between
            work: Any = self._execute(job.id, run_times[0], data)
        else:
            work = self._in_order(job.id, run_times, data)
        task = self._loop.create_task(work, name=f"schedctl-run:{job.id}")
        running.add(task)
        task.add_done_callback(functools.partial(self._done, job.id))
        return True

    async def _in_order(self, job_id: str, run_times: list[datetime], data: dict[str, Any]) -> str:
        status = ""
        for run_time in run_times:
            status = await self._execute(job_id, run_time, data)
        return status

    def _execute(self, job_id: str, run_time: datetime, data: dict[str, Any]) -> Any:
        """The runner's coroutine for one scheduled run of a job with this payload."""
        return execute(
            job_id,
            run_time,
            data["task"],
            list(data.get("args") or ()),
            dict(data.get("kwargs") or {}),
            RunOptions(**data.get("options", {})),
            self.history,
            self.threads,
        )

    def _done(self, job_id: str, task: asyncio.Task[str]) -> None:
        running = self.active.get(job_id)
        if running is not None:
            running.discard(task)
            if not running:
                del self.active[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("Run of %s crashed in the runner: %r", job_id, task.exception())

    async def drain(self, grace: float) -> None:
        """Let runs finish for up to ``grace`` seconds, then cancel (recorded cancelled)."""
        if self.claiming:
            await asyncio.wait(self.claiming, timeout=grace)
        tasks = [t for running in self.active.values() for t in running]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    def shutdown(self, wait: bool = True) -> None:
        pass  # drain() does the orderly part; nothing is left to stop here
