"""The one writer: claims first, then state, off the event loop.

The event loop only appends to lock-free queues (a ``deque`` append is atomic) and sets
an event. A daemon thread does every database write:

- **Claims** (a priority lane): the runs due now, inserted under the leader's lease in
  one transaction per batch, before any of them starts (``StateDB.claim_runs``). The
  outcome goes back to the loop through ``call_soon_threadsafe``. A batch the database
  cannot take now stays queued and is tried again; a claim whose ``misfire_grace`` passes
  meanwhile becomes a ``missed`` record, so a run never starts later than its grace.
- **State**: runs that changed, jobs whose rows or next run times changed, facts and
  audit events, written in chunks with ``executemany``, between which claims go first.
  A write that fails keeps its batch queued for the next try. Job rows and facts are
  written under the lease (``Fence``): a replaced leader overwrites nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from engine.state.db import Fence, Fenced, StateDB
from engine.state.history import Run

__all__ = ["Claim", "Persister"]

log = logging.getLogger("schedctl.persist")
_RunKey = tuple[str, datetime, int]
_Row = TypeVar("_Row")
_CHUNK = 500
# Next run times written in one transaction, at most: claims wait for the transaction
# under way (at 2,000 fires a second, one second's times written at once took 12 ms).
_TIMES_CHUNK = 500
# Job rows built and written at a time, claims between: a run due while a start's rows are
# saved waits for one chunk (at a start with 100,000 jobs, 2,000 a chunk made the jobs due
# meanwhile start 160 ms late at p99; 500, built and then claimed before written, 28-42 ms).
_JOBS_CHUNK = 500
# Seconds between two claim transactions while claims keep coming; see Persister.claim_now.
# At 2,000 interval fires a second, 4 ms (about 8 runs a transaction) cost a third less CPU
# per fire than 1 ms, for 2 ms more median lateness (p99: the same at 2,000 fires a second,
# 1.5 ms more at 1,000). A claim that comes alone is never held by it.
CLAIM_GAP = 0.004
# Seconds between two writes of the next run times of jobs that fired (runs, job rows and
# facts go every ``interval``). Each fire moves its job's next run time, and the rows of
# the jobs table are wide (a declared job's spec), so at 2,000 fires a second writing
# them every 0.2 s rewrote about 1,000 pages a second, then copied them again at each WAL
# checkpoint. Once a second, each page is written once: a quarter to a third fewer bytes
# and write calls for the process (docs/perf, stop 18). Nothing is lost by the wait: a run is
# claimed before its next run time moves, so after a crash the runs between the saved time
# and the claimed ones are found claimed.
NEXT_RUNS_EVERY = 1.0


@dataclass(slots=True)
class Claim:
    """One scheduled run to claim: ``queued`` (about to start) or a final record."""

    job_id: str
    scheduled_at: float
    status: str = "queued"
    error: str | None = None
    deadline: float | None = None  # wall clock: after it, a queued claim becomes missed
    outcome: str = ""  # won | taken (claimed before) | fenced | missed
    fence: Fence | None = field(default=None, repr=False)
    attempt: int = 1  # a Celery run's further attempts are claimed as rows of their own
    worker: str | None = None  # "celery": a worker will start it (see engine.state.celery_rows)

    def row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "scheduled_at": self.scheduled_at,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "worker": self.worker if self.status == "queued" else None,
            "finished_at": time.time() if self.status != "queued" else None,
        }


ClaimCallback = Callable[[list[Claim]], None]


class Persister:
    def __init__(
        self,
        db: StateDB,
        job_row: Callable[[str], dict[str, Any] | None] | None = None,
        history_limit: int = 100,
        interval: float = 0.2,
        next_run_of: Callable[[str], tuple[bool, bool, float | None]] | None = None,
        fence: Callable[[], Fence | None] | None = None,
    ) -> None:
        self.db = db
        self._job_row = job_row or (lambda job_id: None)
        self._next_run_of = next_run_of
        self._fence = fence  # None: a bare writer (tools, tests) writes job rows unfenced
        self._limit = history_limit
        self._interval = interval
        self._claim_queue: deque[tuple[list[Claim], ClaimCallback]] = deque()
        self._run_queue: deque[Run] = deque()
        self._job_queue: deque[str] = deque()
        self._time_queue: deque[str] = deque()
        self._event_queue: deque[tuple[float, str, dict[str, Any]]] = deque()
        self._facts: dict[str, Any] = {}
        # What a failed write left behind, retried first next time.
        self._claims: list[tuple[list[Claim], ClaimCallback]] = []
        # Each run once however often it changed since the last flush, its row built then.
        self._runs: dict[_RunKey, Run] = {}
        self._jobs: set[str] = set()
        self._times: set[str] = set()
        self._events: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()  # one flush at a time; guards the leftovers
        self._wake = threading.Event()
        self._last_claims = 0.0  # monotonic time of the last claim write (claim_now)
        self._times_due = 0.0  # monotonic time the next run times are written next
        self._stopping = False
        self.healthy = True  # False while the last write failed (the database is away)
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="schedctl-persist", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def bind(
        self,
        job_row: Callable[[str], dict[str, Any] | None],
        next_run_of: Callable[[str], tuple[bool, bool, float | None]] | None,
        fence: Callable[[], Fence | None] | None,
    ) -> None:
        """Point the writer at the scheduler of a new leadership term."""
        self._job_row, self._next_run_of, self._fence = job_row, next_run_of, fence

    # -- called on the event loop: appends only ----------------------------------------

    def claim(self, claims: list[Claim], done: ClaimCallback) -> None:
        """Claim runs before they start; ``done`` is called in the writer thread."""
        self._claim_queue.append((claims, done))
        if not self._wake.is_set():  # queued first: a writer that clears it next drains it
            self._wake.set()

    def run_changed(self, run: Run) -> None:
        self._run_queue.append(run)

    def job_changed(self, job_id: str) -> None:
        """The job's whole row changed (added, edited, paused, removed)."""
        self._job_queue.append(job_id)

    def time_changed(self, job_id: str) -> None:
        """Only the job's next run time moved (it fired)."""
        self._time_queue.append(job_id)

    def fact_changed(self, key: str, value: Any) -> None:
        self._facts[key] = value

    def event(self, kind: str, data: dict[str, Any], at: float | None = None) -> None:
        self._event_queue.append((at if at is not None else time.time(), kind, data))

    def flush_events(self) -> None:
        """Write the queued audit events now (a reader of ``/events`` sees its own)."""
        with self._lock:
            while self._event_queue:
                self._events.append(self._event_queue.popleft())
            events, self._events = self._events, []
            try:
                self.db.add_events(events)
            except BaseException:
                self._events = events + self._events
                raise

    def forget_leader_state(self) -> None:
        """A term ended: queued job rows and facts belong to it and are not written."""
        self._job_queue.clear()
        self._time_queue.clear()
        with self._lock:
            self._jobs.clear()
            self._times.clear()
            self._facts = {}

    # -- the writer ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything queued now, on the calling thread."""
        self._flush(with_times=True)

    def _flush(self, with_times: bool) -> None:
        """Write what is queued; the next run times of jobs that fired only if
        ``with_times`` (else they wait, see ``NEXT_RUNS_EVERY``)."""
        with self._lock:
            # Next run times first taken, then claims written: a job's next run time (T+1)
            # is queued after the claim of T, so every time taken here has its claim in the
            # claim queue already. The other order could persist T+1 while the claim of T
            # waits for the next flush: a leader killed in between loses T for good.
            self._drain()
            self._write_claims()
            runs, job_ids = self._runs, self._jobs
            times: set[str] = set()
            if with_times:
                times, self._times = self._times, set()
                self._times_due = time.monotonic() + NEXT_RUNS_EVERY
            facts, self._facts = self._facts, {}
            events, self._events = self._events, []
            self._runs, self._jobs = {}, set()
            try:
                self._write(runs, job_ids, times - job_ids, facts, events)
            except BaseException as exc:
                self._runs = {**runs, **self._runs}
                self._jobs |= job_ids
                self._times |= times
                self._facts = {**facts, **self._facts}
                self._events = events + self._events
                if isinstance(exc, Fenced):  # not ours to write any more
                    self._jobs.clear()
                    self._times.clear()
                    self._facts = {}
                raise

    def _drain(self) -> None:
        queue = self._run_queue
        while queue:
            run = queue.popleft()
            self._runs[(run.job_id, run.scheduled_at, run.attempt)] = run
        while self._job_queue:
            self._jobs.add(self._job_queue.popleft())
        while self._time_queue:
            self._times.add(self._time_queue.popleft())
        while self._event_queue:
            self._events.append(self._event_queue.popleft())

    def _write_claims(self) -> None:
        while self._claim_queue:
            self._claims.append(self._claim_queue.popleft())
        if not self._claims:
            return
        pending, self._claims = self._claims, []
        batches: dict[Fence | None, list[tuple[list[Claim], ClaimCallback]]] = {}
        for item in pending:
            fence = item[0][0].fence if item[0] else None
            batches.setdefault(fence, []).append(item)
        for fence, items in batches.items():
            claims = [c for batch, _ in items for c in batch]
            now = time.time()
            for c in claims:
                if c.status == "queued" and c.deadline is not None and now > c.deadline:
                    c.status, c.outcome = "missed", "missed"
                    c.error = (
                        f"could not be claimed within misfire_grace ({now - c.scheduled_at:.3f}s "
                        "late): the state database was unreachable"
                    )
            try:
                won = self.db.claim_runs([c.row() for c in claims], fence)
            except Fenced:
                for c in claims:
                    c.outcome = "fenced"
            except DBAPIError as exc:
                self._failed(exc)
                self._claims.extend(items)  # tried again until their grace passes
                continue
            else:
                for c in claims:
                    if (c.job_id, c.scheduled_at) in won:
                        c.outcome = c.outcome or "won"
                    else:
                        c.outcome = "taken"
                self._ok()
            for batch, done in items:
                try:
                    done(batch)
                except Exception:
                    log.exception("A claim callback failed.")

    def _write(
        self,
        runs: dict[_RunKey, Run],
        job_ids: set[str],
        times: set[str],
        facts: dict[str, Any],
        events: list[tuple[float, str, dict[str, Any]]],
    ) -> None:
        leading, fence = self._leader()
        removals: list[str] = []
        moved: list[tuple[float | None, bool, str]] = []
        if leading:
            for job_id in times if self._next_run_of is not None else ():
                kept, done, next_run = self._next_run_of(job_id)  # type: ignore[misc]
                if kept:  # still scheduled, or a declared one-shot that ran: done now
                    moved.append((next_run, done, job_id))
                else:  # a runtime job gone from the scheduler (a one-shot that ran)
                    removals.append(job_id)
        else:
            facts = {}  # a standby's view of the leader's state is not its to write
        # Due runs do not wait behind history: claims go in between the chunks of runs.
        # Rows are built a chunk at a time: at a start with 100,000 jobs, every job's row
        # (its spec as JSON) built at once held about 75 MB until the last was written.
        self._in_chunks(
            list(runs.values()),
            _CHUNK,
            lambda chunk: self.db.write_runs([run.as_row() for run in chunk], self._limit),
        )
        # Job rows too: 100,000 of them written at a start in one transaction held SQLite's
        # write lock for seconds, so claims waited and other writers timed out.
        if leading:
            self._in_chunks(
                list(job_ids), _JOBS_CHUNK, lambda chunk: self._write_jobs(chunk, removals, fence)
            )
        self.db.write_jobs((), removals, fence)
        # The claims queued until the next run times were read go first: a time read
        # here has the claim of the run before it queued already (see flush).
        self._write_claims()
        self._in_chunks(moved, _TIMES_CHUNK, lambda rows: self.db.write_next_runs(rows, fence))
        self.db.put_facts(facts, fence)
        self.db.add_events(events)
        self._ok()

    def _write_jobs(self, job_ids: list[str], removals: list[str], fence: Fence | None) -> None:
        """The rows of ``job_ids`` as they are now; a job gone joins ``removals``."""
        upserts = []
        for job_id in job_ids:
            row = self._job_row(job_id)
            if row is None:
                removals.append(job_id)
            else:
                upserts.append(row)
        # The claims that came while the rows were built go first: a row carries its job's
        # next run time, and the claim of the run before that time is queued already.
        self._write_claims()
        self.db.write_jobs(upserts, (), fence)

    def _in_chunks(self, rows: list[_Row], size: int, write: Callable[[list[_Row]], None]) -> None:
        """``write`` the rows a chunk a transaction, with the claims queued meanwhile
        written between chunks."""
        for start in range(0, len(rows), size):
            write(rows[start : start + size])
            self._write_claims()

    def _leader(self) -> tuple[bool, Fence | None]:
        """Whether job rows and facts may be written now, and under which lease."""
        if self._fence is None:
            return True, None
        fence = self._fence()
        return fence is not None, fence

    def _ok(self) -> None:
        if not self.healthy:
            log.info("The state database is reachable again; writes resumed.")
        self.healthy, self.last_error = True, None

    def _failed(self, exc: BaseException) -> None:
        if self.healthy:
            log.error("Cannot write to the state database (%s); will retry.", _short(exc))
        self.healthy, self.last_error = False, _short(exc)

    def stop(self, flush: bool = True) -> None:
        """Stop the writer thread; write what is queued unless ``flush`` is False."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if flush:
            try:
                self.flush()
            except Exception as exc:
                log.error("Could not write the last state before stopping: %s", _short(exc))

    def claim_now(self) -> None:
        """Write the queued claims (only them), on the calling thread.

        Group commit: claims that come less than ``CLAIM_GAP`` after the last claim write
        wait for the rest of that gap and go in one transaction with those that come
        meanwhile. A transaction per claim (its fence check, its commit) costs more than
        the run itself; a run waits at most ``CLAIM_GAP`` more, and only while claims come
        faster than one per gap.
        """
        wait = self._last_claims + CLAIM_GAP - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_claims = time.monotonic()
        with self._lock:
            self._write_claims()

    def _loop(self) -> None:
        # Claims wake the writer at once and are written alone; the rest of the state is
        # written every ``interval``. (Writing everything on every claim's wake-up made
        # one set of transactions per claim batch, thousands a second when busy.)
        next_state = time.monotonic() + self._interval
        while True:
            self._wake.wait(max(0.0, next_state - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            try:
                if time.monotonic() < next_state:
                    self.claim_now()
                    continue
                next_state = time.monotonic() + self._interval
                self._flush(with_times=time.monotonic() >= self._times_due)
            except Fenced:
                pass  # a replaced leader's job rows are dropped; its runs were written
            except Exception as exc:
                self._failed(exc)
                self._wake.wait(0.5)  # an unreachable database is not hammered


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
