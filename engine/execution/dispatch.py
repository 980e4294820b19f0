"""From "due" to "started": misfire grace, claims and concurrency, for every executor.

APScheduler decides *when*; the dispatcher decides *whether* and makes it stick:

1. a run later than ``misfire_grace`` becomes a ``missed`` record, a run whose previous
   one still goes becomes ``skipped`` (``concurrency: forbid``, or ``allow`` at its
   ``max_instances``), anything else is ``queued``;
2. every one of them is claimed in the database under the leader's lease (the writer's
   priority lane) before anything starts, so a scheduled time gets exactly one record
   and runs at most once, across restarts and replicas;
3. a claim won starts the run (``replace`` cancels the running one first) on the job's
   executor: the local runner here, or Celery's workers (``celery_executor``), whose runs
   in flight count for concurrency across the whole pool.

Nothing is claimed, and nothing starts, while this process cannot prove its lease.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.execution.celery_executor import CeleryExecutor
from engine.execution.runner import Runner
from engine.execution.task import Task
from engine.state.celery_rows import CELERY
from engine.state.db import Fence
from engine.state.history import History
from engine.state.persist import Claim

__all__ = ["Dispatcher"]

log = logging.getLogger("schedctl.dispatch")
ClaimSink = Callable[[list[Claim], Callable[[list[Claim]], None]], None]


class Dispatcher:
    def __init__(
        self,
        history: History,
        runner: Runner,
        claim: ClaimSink,
        fence: Callable[[], Fence | None],
        may_fire: Callable[[], bool],
        celery: CeleryExecutor | None = None,
    ) -> None:
        self.history = history
        self.runner = runner
        self.celery = celery
        if celery is not None:
            celery.claim = self.send
        self._claim = claim
        self._fence = fence
        self._may_fire = may_fire
        self.active: dict[str, set[asyncio.Task[str]]] = {}
        self._pending: dict[str, int] = {}  # Celery runs whose claim is on its way, per job
        # Runs created in this loop iteration whose task has not taken its first step: not
        # started, so not "still going" (a claim landing as the next time falls due).
        self._fresh: dict[str, int] = {}
        self.claims_in_flight = 0
        self.oldest_claim = 0.0  # monotonic time the oldest claim in flight was sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused_logged = 0.0
        # Claims answered by the writer thread, handed to the loop with one wake-up for
        # however many landed meanwhile (not one per job: thousands a second when busy).
        self._landed_queue: deque[tuple[Callable[[list[Claim]], None], list[Claim]]] = deque()
        self._wake_pending = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def busy(self, job_id: str) -> int:
        """Runs of the job in progress here (a run whose claim is still on its way is not:
        it starts behind them, see ``_start``)."""
        running = self.active.get(job_id)
        remote = self.celery.in_flight(job_id) if self.celery is not None else 0
        # A Celery run cannot wait behind another here: while its claim is on its way,
        # it counts as in progress on the pool.
        here = len(running) - self._fresh.get(job_id, 0) if running else 0
        return here + self._pending.get(job_id, 0) + remote

    # -- due runs ------------------------------------------------------------------------

    def due(self, job_id: str, task: Task, run_times: list[datetime], grace: float) -> None:
        """The runs of one job APScheduler found due now (several only without coalesce)."""
        fence = self._fence()
        if not self._may_fire():
            self._refuse(job_id, run_times)
            return
        now = time.time()
        claims: list[Claim] = []
        in_progress = self.busy(job_id)
        worker = CELERY if task.executor == "celery" else None
        for run_time in run_times:
            scheduled = run_time.timestamp()
            late = now - scheduled
            if late > grace:
                claims.append(
                    Claim(
                        job_id,
                        scheduled,
                        "missed",
                        f"could not start within misfire_grace ({grace:g}s); {late:.3f}s late",
                        fence=fence,
                    )
                )
            elif task.concurrency != "replace" and in_progress >= task.limit:
                claims.append(Claim(job_id, scheduled, "skipped", _busy(task), fence=fence))
            else:
                claims.append(
                    Claim(job_id, scheduled, deadline=scheduled + grace, fence=fence, worker=worker)
                )
        if worker is not None and any(c.status == "queued" for c in claims):
            self._pending[job_id] = self._pending.get(job_id, 0) + 1
        self.send(claims, functools.partial(self._claimed, job_id, task))

    def run_now(self, job_id: str, task: Task) -> None:
        """Start a run now, off-schedule (the runtime API's ``run_job``)."""
        # A whole number of microseconds, as every instant that comes from a datetime: the
        # run's record must name the very float its claim was made with.
        now = datetime.now(UTC).timestamp()
        worker = CELERY if task.executor == "celery" else None
        claim = Claim(job_id, now, deadline=now + 60, fence=self._fence(), worker=worker)
        if worker is not None:
            self._pending[job_id] = self._pending.get(job_id, 0) + 1
        self.send([claim], functools.partial(self._claimed, job_id, task))

    def send(self, claims: list[Claim], done: Callable[[list[Claim]], None]) -> None:
        assert self._loop is not None
        loop = self._loop
        if not self.claims_in_flight:
            self.oldest_claim = time.monotonic()
        self.claims_in_flight += 1

        def back(batch: list[Claim]) -> None:  # in the writer thread
            self._landed_queue.append((done, batch))  # first queued, then the flag read
            if not self._wake_pending:
                self._wake_pending = True
                loop.call_soon_threadsafe(self._land)

        self._claim(claims, back)

    def _land(self) -> None:
        """On the loop: every claim answered since the last wake-up, in order."""
        self._wake_pending = False  # first cleared, then drained: nothing is left behind
        queue = self._landed_queue
        while queue:
            done, batch = queue.popleft()
            self.claims_in_flight -= 1
            try:
                done(batch)
            except Exception:
                log.exception("Handling the claim of %s failed.", batch[0].job_id if batch else "?")

    def _claimed(self, job_id: str, task: Task, claims: list[Claim]) -> None:
        if task.executor == "celery" and any(
            c.status == "queued" or c.outcome == "missed" for c in claims
        ):
            _count_down(self._pending, job_id)
        start: list[datetime] = []
        deadlines: list[float] = []
        epoch = claims[0].fence.epoch if claims and claims[0].fence else None
        for claim in claims:
            when = datetime.fromtimestamp(claim.scheduled_at, UTC)
            if claim.outcome == "fenced":
                self._refuse(job_id, [when])
            elif claim.outcome == "taken":
                log.warning(
                    "Run of %s at %s was claimed before (another replica, or before a "
                    "restart); not running it again.",
                    job_id,
                    when.isoformat(),
                )
            elif claim.status == "queued":
                start.append(when)
                deadlines.append(claim.deadline or claim.scheduled_at + 60)
            else:  # a final record: missed or skipped (claimed as such)
                self.history.record(job_id, when, claim.status, claim.error, epoch)
        if not start:
            return
        if not self._may_fire():  # the lease ended while the claim was on its way
            self._refuse(job_id, start)
            for when in start:
                self.history.record(
                    job_id, when, "failed", "not started: this engine stopped leading", epoch
                )
            return
        if task.executor == "celery" and self.celery is not None:
            if task.concurrency == "replace":
                self.celery.cancel(job_id)
            for when, deadline in zip(start, deadlines, strict=True):
                grace = deadline - when.timestamp()
                self.celery.start(job_id, task, when, 1, epoch, deadline, grace)
            return
        self._start(job_id, task, start, epoch)

    def _start(self, job_id: str, task: Task, run_times: list[datetime], epoch: int | None) -> None:
        running = self.active.setdefault(job_id, set())
        assert self._loop is not None
        if len(run_times) == 1:  # the usual case: no extra coroutine in between
            work: Any = functools.partial(self.runner.execute, job_id, run_times[0], task, epoch)
        else:
            work = functools.partial(self._in_order, job_id, run_times, task, epoch)
        if running and task.concurrency == "replace":
            for other in list(running):
                other.cancel()
            coro = work()
        elif len(running) >= task.limit:
            # Due while another run's claim was on its way (after an outage, a takeover):
            # it starts once the runs before it end, as runs caught up do.
            coro = self._after(list(running), work)
        else:
            coro = work()
        started = self._loop.create_task(coro, name=f"schedctl-run:{job_id}")
        running.add(started)
        started.add_done_callback(functools.partial(self._done, job_id))
        # Its first step is the next callback of the loop's queue: once that has run, the
        # run has started (or waits behind the runs before it) and counts as going.
        self._fresh[job_id] = self._fresh.get(job_id, 0) + 1
        self._loop.call_soon(_count_down, self._fresh, job_id)

    async def _after(self, before: list[asyncio.Task[str]], work: Callable[[], Any]) -> str:
        await asyncio.wait(before)
        status: str = await work()
        return status

    async def _in_order(
        self, job_id: str, run_times: list[datetime], task: Task, epoch: int | None
    ) -> str:
        status = ""
        for run_time in run_times:
            status = await self.runner.execute(job_id, run_time, task, epoch)
        return status

    def _done(self, job_id: str, finished: asyncio.Task[str]) -> None:
        running = self.active.get(job_id)
        if running is not None:
            running.discard(finished)
            if not running:
                del self.active[job_id]
        if not finished.cancelled() and finished.exception() is not None:
            log.error("Run of %s crashed in the runner: %r", job_id, finished.exception())

    def _refuse(self, job_id: str, run_times: list[datetime]) -> None:
        now = time.monotonic()
        if now - self._refused_logged > 5:
            self._refused_logged = now
            log.warning(
                "Not firing %s at %s: this engine cannot prove its leader lease right now.",
                job_id,
                run_times[0].isoformat(),
            )

    # -- stopping ------------------------------------------------------------------------

    def tasks(self) -> list[asyncio.Task[str]]:
        return [t for running in self.active.values() for t in running]

    async def drain(self, grace: float) -> None:
        """Let runs finish for up to ``grace`` seconds, then cancel them (recorded)."""
        deadline = time.monotonic() + grace
        while self.claims_in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # claims land through call_soon_threadsafe
        tasks = self.tasks()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=0.5)


def _count_down(counts: dict[str, int], job_id: str) -> None:
    """One fewer for ``job_id``; a count that reaches zero leaves the map."""
    left = counts.get(job_id, 1) - 1
    if left > 0:
        counts[job_id] = left
    else:
        counts.pop(job_id, None)


def _busy(task: Task) -> str:
    if task.concurrency == "allow":
        return (
            "the previous run was still going (concurrency: allow, "
            f"max_instances: {task.max_instances})"
        )
    return f"the previous run was still going (concurrency: {task.concurrency})"
