"""Writes state to the database off the event loop, in batches.

The loop only appends to in-memory queues; a thread wakes every ``interval`` seconds
(or when told to flush) and writes everything queued in one transaction per table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from engine.history import Run
from engine.state import StateDB

__all__ = ["Persister"]

log = logging.getLogger("schedctl.persist")


class Persister:
    def __init__(
        self,
        db: StateDB,
        job_row: Callable[[str], dict[str, Any] | None],
        history_limit: int = 100,
        interval: float = 0.2,
    ) -> None:
        self.db = db
        self._job_row = job_row
        self._limit = history_limit
        self._interval = interval
        self._runs: dict[tuple[str, float, int], dict[str, Any]] = {}
        self._jobs: set[str] = set()
        self._facts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="schedctl-persist", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_changed(self, run: Run) -> None:
        row = run.as_row()
        with self._lock:
            self._runs[(row["job_id"], row["scheduled_at"], row["attempt"])] = row

    def job_changed(self, job_id: str) -> None:
        with self._lock:
            self._jobs.add(job_id)

    def fact_changed(self, key: str, value: Any) -> None:
        with self._lock:
            self._facts[key] = value

    def flush(self) -> None:
        """Write everything queued now, on the calling thread."""
        with self._lock:
            runs, self._runs = list(self._runs.values()), {}
            job_ids, self._jobs = self._jobs, set()
            facts, self._facts = self._facts, {}
        try:
            upserts, removals = [], []
            for job_id in job_ids:
                row = self._job_row(job_id)
                if row is None:
                    removals.append(job_id)
                else:
                    upserts.append(row)
            self.db.write_jobs(upserts, removals)
            job_ids = set()
            self.db.write_runs(runs, self._limit)
            runs = []
            for key in list(facts):
                self.db.put_fact(key, facts[key])
                del facts[key]
        except BaseException:
            self._requeue(runs, job_ids, facts)
            raise

    def _requeue(
        self, runs: list[dict[str, Any]], job_ids: set[str], facts: dict[str, Any]
    ) -> None:
        """Put back what a failed write did not save; anything queued since is newer and wins."""
        with self._lock:
            for row in runs:
                self._runs.setdefault((row["job_id"], row["scheduled_at"], row["attempt"]), row)
            self._jobs |= job_ids
            for key, value in facts.items():
                self._facts.setdefault(key, value)

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
