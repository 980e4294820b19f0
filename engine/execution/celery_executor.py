"""``executor: celery``: send each claimed run to the user's Celery workers, follow it to its end.

**Send.** A claimed run is ``queued`` (its row says ``worker: celery``) and goes to a
small pool of sender threads, never the event loop: each takes a batch and publishes it
through one producer, with the run's deterministic task id, its queue, ``expires`` at
the end of its misfire grace, the job's timeout as Celery's soft time limit (the hard
one follows ``HARD_GRACE`` later) and the ``schedctl`` header. A broker that refuses the
connection fails the rest of the batch at once, with the reason (recorded ``failed``,
retried as declared); a broker that hangs costs a sender a few seconds (short socket
timeouts), never the loop; a run whose grace passes before it could be sent is not sent
(``missed``). ``state`` says whether the broker answered last (``/status``), from the
sends and a probe every few seconds, so it comes back by itself.

**Follow.** The workers write the truth into the runs' rows (``engine.celery``): the
engine polls the rows of its in-flight runs every ``POLL_S``, off the loop, by key in
batches, and moves its records ``queued -> running (+ worker) -> final``. Rows, not
Celery events or the result backend: the rows are where "at most one start" is decided
anyway; they exist whatever the user's Celery configuration says (events off, no result
backend, ``ignore_result``); a poll is one indexed query per 300 runs in flight; and a
leader that takes over reads the same rows, so nothing sent by its predecessor goes
unfollowed (events are fire-and-forget: a leader that is down misses them for good).

**Settle.** What no worker will write, the engine does, under its lease: a run still
queued after its grace is ``missed`` (the worker would refuse it now too); a run whose
worker stopped beating for ``LOST_AFTER`` is ``failed`` ("worker lost"), or ``timeout``
when it had outlived the job's timeout. **Retries** are the engine's: after a failed or
timed-out attempt N, attempt N+1 is claimed as its own row after the delay and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from engine.execution.celery_app import CeleryApp
from engine.execution.celery_message import HEADER, RunHeader, task_id_for
from engine.execution.task import Task
from engine.redact import mask_text
from engine.state import celery_rows
from engine.state.celery_rows import CELERY, RunKey
from engine.state.db import Fence, Fenced, RunRow, StateDB
from engine.state.history import FINISHED, History, Run
from engine.state.persist import Claim

__all__ = ["CeleryExecutor"]

log = logging.getLogger("schedctl.celery")
POLL_S = 0.5  # how often the rows of runs in flight are read
LOST_AFTER = 30.0  # a running run whose worker has not beaten for this long is lost
MISSED_SLACK = 1.0  # a queued run is declared missed this long after its grace
HARD_GRACE = 2.0  # Celery's hard time limit comes this long after the soft one
PROBE_S = 5.0  # how often the broker is asked whether it is there
SENDERS = 8  # publishing waits on the broker's answer: threads overlap the waits
BATCH = 200
REPR_CHARS = 1024  # Celery's own limit on the arguments it shows
REPR_CACHE = 20_000  # tasks whose shown arguments are kept
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}

_Result = tuple["_Flight", str | None, str | None]  # a run; "missed" or "failed", and why
ClaimSink = Callable[[list[Claim], Callable[[list[Claim]], None]], None]


@dataclass(eq=False)
class _Flight:
    """One attempt handed to Celery and not finished yet."""

    run: Run
    task: Task
    grace: float
    deadline: float  # wall clock: a worker must have started it by then
    key: RunKey
    verdict: tuple[tuple[str, ...], str, str] | None = None  # (from statuses, status, error)


class CeleryExecutor:
    def __init__(
        self,
        history: History,
        app: CeleryApp,
        db: StateDB,
        blocking: Callable[..., Awaitable[Any]],
        fence: Callable[[], Fence | None],
        may_fire: Callable[[], bool],
    ) -> None:
        self.history = history
        self.app = app
        self.db = db
        self._blocking = blocking
        self._fence = fence
        self._may_fire = may_fire
        self.claim: ClaimSink | None = None  # the dispatcher's: claims of further attempts
        self.on_state: Callable[[str], None] = lambda state: None
        self.state: str | None = None  # "ok" | "unreachable"; None until first used
        self._flights: dict[RunKey, _Flight] = {}
        self._per_job: dict[str, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._outbox: queue.SimpleQueue[_Flight] = queue.SimpleQueue()
        self._repr_cache: dict[int, tuple[Task, str, str]] = {}  # read by the sender threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._started = threading.Lock()
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- what the dispatcher asks ----------------------------------------------------------

    def in_flight(self, job_id: str) -> int:
        """Runs of the job queued or running on any worker (or waiting for a retry)."""
        return self._per_job.get(job_id, 0)

    def start(
        self,
        job_id: str,
        task: Task,
        scheduled_at: datetime,
        attempt: int,
        epoch: int | None,
        deadline: float,
        grace: float,
    ) -> None:
        """A claimed attempt: recorded ``queued`` (its row already is) and sent."""
        run = self.history.start(
            job_id, scheduled_at, attempt, started=False, epoch=epoch, worker=CELERY
        )
        flight = _Flight(run, task, grace, deadline, (job_id, scheduled_at.timestamp(), attempt))
        self._flights[flight.key] = flight
        self._count(job_id, 1)
        self._ensure_senders()
        self._outbox.put(flight)

    def cancel(self, job_id: str) -> None:
        """``concurrency: replace``: the job's runs in flight are revoked and recorded
        cancelled (a worker that finishes one anyway cannot overwrite that)."""
        for flight in [f for f in self._flights.values() if f.run.job_id == job_id]:
            flight.verdict = (("queued", "running"), "cancelled", "replaced by a newer run")
            task_id = task_id_for(flight.run.job_id, flight.run.scheduled_at, flight.run.attempt)
            threading.Thread(target=self._revoke, args=(task_id,), daemon=True).start()

    def _revoke(self, task_id: str) -> None:
        try:
            self.app.app().control.revoke(task_id, terminate=True)
        except Exception as exc:
            log.warning("Could not revoke %s on the workers: %s", task_id, exc)

    # -- a new leadership term ----------------------------------------------------------------

    def adopt(self, rows: list[RunRow], job: Callable[[str], tuple[Task | None, float]]) -> int:
        """Follow the Celery runs an earlier leader left in flight; none is sent again."""
        adopted = 0
        now = time.time()
        for row in rows:
            key = (row.job_id, row.scheduled_at, row.attempt)
            if key in self._flights:
                continue
            when = datetime.fromtimestamp(row.scheduled_at, UTC)
            run = next(
                (r for r in self.history.runs_at(row.job_id, when) if r.attempt == row.attempt),
                None,
            )
            if run is None:
                continue
            task, grace = job(row.job_id)
            # The grace of a first attempt counts from its time; a later attempt's send time
            # is not kept, so it gets a grace from now (its worker still holds the real one).
            deadline = row.scheduled_at + grace if row.attempt == 1 else now + grace
            self._flights[key] = _Flight(run, task or Task(ref=""), grace, deadline, key)
            self._count(row.job_id, 1)
            adopted += 1
        return adopted

    def close(self) -> None:
        """The engine stops: the sender threads and the probe end (runs not sent yet stay
        claimed and queued: the next leader records them missed after their grace)."""
        self._closed = True
        for _ in range(SENDERS):
            self._outbox.put(None)  # type: ignore[arg-type]

    def stop(self) -> None:
        """The term ended: stop following (the next leader adopts what is in flight)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._flights.clear()
        self._per_job.clear()

    async def follow(self) -> None:
        """While leading: read the rows of the runs in flight, settle, apply."""
        while True:
            await asyncio.sleep(POLL_S)
            if not self._flights:
                continue
            now = time.time()
            flights = list(self._flights.values())
            verdicts = [(f.key, *f.verdict) for f in flights if f.verdict is not None]
            overdue = [
                (f.key, f.grace)
                for f in flights
                if f.verdict is None
                and f.run.status == "queued"
                and now > f.deadline + MISSED_SLACK
            ]
            timeouts = {f.key: f.task.timeout for f in flights}
            try:
                rows = await self._blocking(
                    self._poll, verdicts, overdue, [f.key for f in flights], timeouts
                )
            except Exception as exc:
                log.warning("Could not read the Celery runs' rows (%s); will retry.", exc)
                continue
            self._apply(rows)

    # -- off the loop: the database ---------------------------------------------------------

    def _poll(
        self,
        verdicts: list[tuple[RunKey, tuple[str, ...], str, str]],
        overdue: list[tuple[RunKey, float]],
        keys: list[RunKey],
        timeouts: dict[RunKey, float | None],
    ) -> list[tuple[RunRow, float | None]]:
        fence = self._fence()
        try:
            if fence is not None:
                for key, expects, status, error in verdicts:
                    for expect in expects:
                        if celery_rows.settle(self.db, key, expect, status, error, fence):
                            break
                if overdue:
                    celery_rows.settle_missed(
                        self.db,
                        [
                            (key, f"no Celery worker started it within misfire_grace ({grace:g}s)")
                            for key, grace in overdue
                        ],
                        fence,
                    )
        except Fenced:
            fence = None
        rows = celery_rows.read(self.db, keys)
        now = time.time()
        found = []
        for row, changed in rows:
            quiet = now - changed if changed is not None else 0.0
            if fence is not None and row.status == "running" and quiet > LOST_AFTER:
                status, error = _lost(row, timeouts.get(_key(row)), quiet, now)
                try:
                    settled = celery_rows.settle(
                        self.db, _key(row), "running", status, error, fence, quiet_since=changed
                    )
                except Fenced:
                    fence, settled = None, False
                if settled:
                    row = replace(row, status=status, error=error, finished_at=now)
            found.append((row, changed))
        return found

    # -- on the loop: the records -----------------------------------------------------------

    def _apply(self, rows: list[tuple[RunRow, float | None]]) -> None:
        for row, _ in rows:
            flight = self._flights.get(_key(row))
            if flight is None:
                continue
            run = flight.run
            if row.status in ("running", *FINISHED) and run.status == "queued" and row.started_at:
                self.history.begin(run, worker=row.worker, at=_time(row.started_at))
            if row.status in FINISHED:
                if row.worker and row.worker != CELERY:
                    run.worker = row.worker
                self.history.finish(
                    run,
                    row.status,
                    row.error,
                    traceback=row.traceback,
                    logs=row.logs,
                    at=_time(row.finished_at) if row.finished_at else None,
                )
                self._land(flight)

    def _land(self, flight: _Flight) -> None:
        del self._flights[flight.key]
        self._count(flight.run.job_id, -1)
        run, task = flight.run, flight.task
        if run.status == "success":
            log.debug("← %s success on %s", run.job_id, run.worker)
            return
        log.warning("← %s attempt %d %s: %s", run.job_id, run.attempt, run.status, run.error)
        if run.status not in ("failed", "timeout") or run.attempt > task.retries:
            return
        if not self._may_fire():
            log.info("↻ %s: no retry, this engine does not lead now", run.job_id)
            return
        delay = task.retry_delay * 2 ** (run.attempt - 1)
        log.info("↻ %s %s; retry %d in %gs", run.job_id, run.status, run.attempt, delay)
        assert self._loop is not None
        self._count(run.job_id, 1)  # the job stays busy until the retry is sent
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._retry(run.job_id, task, run.scheduled_at, run.attempt + 1, flight.grace)

        timer = self._loop.call_later(delay, fire)
        self._timers.add(timer)

    def _retry(
        self, job_id: str, task: Task, scheduled_at: datetime, attempt: int, grace: float
    ) -> None:
        fence = self._fence()
        if fence is None or not self._may_fire() or self.claim is None:
            self._count(job_id, -1)
            return
        claim = Claim(
            job_id,
            scheduled_at.timestamp(),
            attempt=attempt,
            worker=CELERY,
            deadline=time.time() + grace,
            fence=fence,
        )
        self.claim([claim], functools.partial(self._retry_claimed, task, grace))

    def _retry_claimed(self, task: Task, grace: float, claims: list[Claim]) -> None:
        claim = claims[0]
        self._count(claim.job_id, -1)
        when = datetime.fromtimestamp(claim.scheduled_at, UTC)
        epoch = claim.fence.epoch if claim.fence else None
        if claim.outcome == "won" and claim.status == "queued":
            self.start(claim.job_id, task, when, claim.attempt, epoch, time.time() + grace, grace)
        elif claim.outcome == "missed":
            self.history.record(claim.job_id, when, "missed", claim.error, epoch, claim.attempt)
        else:
            log.warning(
                "Attempt %d of %s at %s was not sent (%s).",
                claim.attempt,
                claim.job_id,
                when.isoformat(),
                claim.outcome,
            )

    def _count(self, job_id: str, delta: int) -> None:
        left = self._per_job.get(job_id, 0) + delta
        if left > 0:
            self._per_job[job_id] = left
        else:
            self._per_job.pop(job_id, None)

    # -- the sender threads -----------------------------------------------------------------

    def probe(self) -> str:
        """Ask the broker now (blocking, a few seconds at most); the state it gives."""
        try:
            app = self.app.app()
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        except Exception as exc:
            self._set_state("unreachable", f"{type(exc).__name__}: {exc}")
        else:
            self._set_state("ok")
        return self.state or "unreachable"

    def ensure_started(self) -> None:
        """Start the sender threads and the broker probe (once, when Celery is first used)."""
        self._ensure_senders()

    def _ensure_senders(self) -> None:
        if self._threads:
            return
        with self._started:
            if self._threads:
                return
            for index in range(SENDERS):
                thread = threading.Thread(
                    target=self._sender, name=f"schedctl-celery-send-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            probe = threading.Thread(target=self._prober, name="schedctl-celery-probe", daemon=True)
            probe.start()
            self._threads.append(probe)

    def _sender(self) -> None:
        while not self._closed:
            batch = [self._outbox.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            batch = [flight for flight in batch if flight is not None]
            if self._closed or not batch:
                return
            try:
                results = self._send(batch)
            except Exception as exc:  # never lose a batch to a bug: fail it, saying why
                log.exception("Sending %d run(s) to Celery failed.", len(batch))
                results = [(f, "failed", f"could not send to Celery: {exc!r}") for f in batch]
            self._call(self._sent, results)

    def _send(self, batch: list[_Flight]) -> list[_Result]:
        try:
            app = self.app.app()
        except Exception as exc:
            return [(f, "failed", str(exc)) for f in batch]
        results: list[_Result] = []
        buffered: list[_Flight] = []  # published into the batch, not flushed yet
        broken: str | None = None  # why the broker is unreachable, if it said so
        with app.producer_or_acquire() as producer:
            try:
                with _batch(producer):
                    broken = self._publish_all(app, producer, batch, results, buffered)
            except Exception as exc:
                # The batch's one round trip failed: some of its messages may have reached
                # the broker. Each is recorded failed (and retried as declared) only if its
                # row is still queued when the next poll writes that; a worker that got the
                # message first claimed the row, and its run goes on, at most once.
                cause = exc.__cause__ or exc
                results += [(f, "failed", _refusal(f, cause, uncertain=True)) for f in buffered]
                if buffered and _unreachable(cause, producer):
                    broken = results[-1][2]
                buffered = []
        results += [(flight, None, None) for flight in buffered]
        if broken is not None:
            self._set_state("unreachable", broken)
        elif buffered:
            self._set_state("ok")
        return results

    def _publish_all(
        self,
        app: Any,
        producer: Any,
        batch: list[_Flight],
        results: list[_Result],
        buffered: list[_Flight],
    ) -> str | None:
        """Publish what is still due (into ``buffered``), record what is not (into
        ``results``); the reason the broker is unreachable, if it said so."""
        broken: str | None = None
        declared: set[str | None] = set()  # queues declared through this producer
        for flight in batch:
            late = time.time() - flight.deadline
            if late > 0:
                reason = (
                    f"not sent: the broker did not take it within misfire_grace "
                    f"({flight.grace:g}s; {late:.3f}s late)"
                )
                results.append((flight, "missed", reason))
            elif broken is not None:
                results.append((flight, "failed", broken))
            elif self._fence() is None:
                continue  # this engine stopped leading: the next leader records it
            else:
                try:
                    self._publish(app, producer, flight, declared)
                except Exception as exc:
                    results.append((flight, "failed", _refusal(flight, exc)))
                    if _unreachable(exc, producer):
                        broken = results[-1][2]
                else:
                    buffered.append(flight)
        return broken

    def _publish(self, app: Any, producer: Any, flight: _Flight, declared: set[str | None]) -> None:
        task, run = flight.task, flight.run
        name = self.app.task_name(task.ref)
        header = RunHeader(
            run.job_id,
            flight.key[1],
            run.attempt,
            flight.deadline,
            getattr(task.tz, "key", None) or "UTC",
            task.timeout,
        )
        argsrepr, kwargsrepr = self._reprs(task)
        options: dict[str, Any] = {}
        if task.queue:
            options["queue"] = task.queue
        if task.queue in declared:
            options["declare"] = []  # once per producer is enough (kombu would copy it each time)
        if task.timeout:
            options["soft_time_limit"] = task.timeout
            options["time_limit"] = task.timeout + HARD_GRACE
        app.send_task(
            name,
            args=list(task.args),
            kwargs=dict(task.kwargs),
            task_id=task_id_for(run.job_id, run.scheduled_at, run.attempt),
            expires=datetime.fromtimestamp(flight.deadline, UTC),
            headers={HEADER: {**header.as_header(), "sent_at": time.time()}},
            producer=producer,
            retry=True,
            retry_policy=RETRY_POLICY,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
            **options,
        )
        declared.add(task.queue)

    def _reprs(self, task: Task) -> tuple[str, str]:
        """The arguments as Celery shows them (events, Flower, ``celery inspect``), with
        the job's secret values masked; worked out once per task, not once per send."""
        found = self._repr_cache.get(id(task))
        if found is None or found[0] is not task:  # the entry holds the task: ids stay unique
            from celery.utils.saferepr import saferepr

            if len(self._repr_cache) > REPR_CACHE:
                self._repr_cache.clear()
            found = (
                task,
                _mask(task, saferepr(list(task.args), REPR_CHARS)),
                _mask(task, saferepr(dict(task.kwargs), REPR_CHARS)),
            )
            self._repr_cache[id(task)] = found
        return found[1], found[2]

    def _sent(self, results: list[_Result]) -> None:
        for flight, status, error in results:
            if status is None or flight.key not in self._flights:
                continue
            # Written by the next poll, under the lease: the row decides, not this note.
            flight.verdict = (("queued",), status, error or status)

    def _prober(self) -> None:
        while not self._closed:
            self.probe()
            time.sleep(PROBE_S)

    def _set_state(self, state: str, why: str | None = None) -> None:
        if state == self.state:
            return
        before, self.state = self.state, state
        if state == "unreachable":
            log.error("Celery's broker is unreachable (%s); runs sent now fail.", why)
        elif before is not None:
            log.info("Celery's broker is reachable again.")
        self._call(self.on_state, state)

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        """Hand a result to the event loop from a thread (nothing, once the loop is gone)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(func, *args)


def _batch(producer: Any) -> contextlib.AbstractContextManager[Any]:
    """Publish a batch in one broker round trip where the transport can (kombu 5.7+'s
    ``Producer.batch``: a Redis pipeline), one message at a time where it cannot."""
    if getattr(producer, "supports_batch_publish", False):
        return producer.batch(max_size=4 * BATCH)  # a message is one or a few commands
    return contextlib.nullcontext()


def _key(row: RunRow) -> RunKey:
    return (row.job_id, row.scheduled_at, row.attempt)


def _time(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _lost(row: RunRow, timeout: float | None, quiet: float, now: float) -> tuple[str, str]:
    if timeout and row.started_at is not None and now - row.started_at >= timeout:
        return "timeout", (
            f"still running after {timeout:g}s; its worker {row.worker} stopped reporting "
            f"({quiet:.0f}s ago): its time limit or a crash ended it"
        )
    return "failed", (
        f"worker lost: {row.worker} stopped reporting on this run {quiet:.0f}s ago (the worker "
        "died or cannot reach the state database); not started again"
    )


def _unreachable(exc: BaseException, producer: Any = None) -> bool:
    """Whether the error says the broker is not there (rather than this one message)."""
    from kombu.exceptions import OperationalError

    transport = tuple(getattr(getattr(producer, "connection", None), "connection_errors", ()))
    return isinstance(exc, (OperationalError, OSError, TimeoutError, *transport))


def _refusal(flight: _Flight, exc: BaseException, uncertain: bool = False) -> str:
    how = " (delivery uncertain)" if uncertain else ""
    return _mask(
        flight.task,
        f"could not send the run to Celery's broker{how}: {type(exc).__name__}: {exc}",
    )


def _mask(task: Task, text: str) -> str:
    return mask_text(text, task.secrets)
