"""Writes state to the database off the event loop, in batches.

The loop only appends to lock-free queues (a ``deque`` append is atomic): a run that
changed, a job whose row changed, a job whose next run time moved. A thread wakes every
``interval`` seconds (or when told to flush) and writes everything queued in one
transaction per kind, with ``executemany`` so the database driver, not Python, does the
per-row work. A write that fails keeps its batch queued for the next try.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.state.db import StateDB
from engine.state.history import Run

__all__ = ["Persister"]

log = logging.getLogger("schedctl.persist")
_RunKey = tuple[str, float, int]


class Persister:
    def __init__(
        self,
        db: StateDB,
        job_row: Callable[[str], dict[str, Any] | None],
        history_limit: int = 100,
        interval: float = 0.2,
        next_run_of: Callable[[str], tuple[bool, float | None]] | None = None,
    ) -> None:
        self.db = db
        self._job_row = job_row
        self._next_run_of = next_run_of
        self._limit = history_limit
        self._interval = interval
        self._run_queue: deque[Run] = deque()
        self._job_queue: deque[str] = deque()
        self._time_queue: deque[str] = deque()
        self._facts: dict[str, Any] = {}
        # What a failed write left behind, retried first next time.
        self._runs: dict[_RunKey, dict[str, Any]] = {}
        self._jobs: set[str] = set()
        self._times: set[str] = set()
        self._lock = threading.Lock()  # one flush at a time; guards the leftovers
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="schedctl-persist", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- called on the event loop: appends only ----------------------------------------

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

    # -- the writer ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything queued now, on the calling thread."""
        with self._lock:
            self._drain()
            runs, job_ids, times = self._runs, self._jobs, self._times
            facts, self._facts = self._facts, {}
            self._runs, self._jobs, self._times = {}, set(), set()
            try:
                self._write(runs, job_ids, times - job_ids, facts)
            except BaseException:
                self._runs = {**runs, **self._runs}
                self._jobs |= job_ids
                self._times |= times
                self._facts = {**facts, **self._facts}
                raise

    def _drain(self) -> None:
        queue = self._run_queue
        while queue:
            run = queue.popleft()
            row = run.as_row()
            self._runs[(row["job_id"], row["scheduled_at"], row["attempt"])] = row
        while self._job_queue:
            self._jobs.add(self._job_queue.popleft())
        while self._time_queue:
            self._times.add(self._time_queue.popleft())

    def _write(
        self,
        runs: dict[_RunKey, dict[str, Any]],
        job_ids: set[str],
        times: set[str],
        facts: dict[str, Any],
    ) -> None:
        upserts, removals = [], []
        for job_id in job_ids:
            row = self._job_row(job_id)
            if row is None:
                removals.append(job_id)
            else:
                upserts.append(row)
        moved: list[tuple[float | None, str]] = []
        for job_id in times:
            if self._next_run_of is None:
                continue
            known, next_run = self._next_run_of(job_id)
            if known:
                moved.append((next_run, job_id))
            else:  # gone from the scheduler (a one-shot that ran): its whole row changes
                row = self._job_row(job_id)
                if row is None:
                    removals.append(job_id)
                else:
                    upserts.append(row)
        self.db.write_jobs(upserts, removals)
        self.db.write_next_runs(moved)
        self.db.write_runs(list(runs.values()), self._limit)
        for key, value in facts.items():
            self.db.put_fact(key, value)

    def stop(self, flush: bool = True) -> None:
        """Stop the writer thread; write what is queued unless ``flush`` is False."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if flush:
            self.flush()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
            except Exception:
                log.exception("Writing state to the database failed; will retry.")
