"""An in-memory APScheduler job store whose operations stay O(log N) at 100k jobs.

``MemoryJobStore`` keeps one sorted list (O(N) inserts, O(N^2) bulk loads). This store
keeps a dict of jobs and a heap of ``(timestamp, sequence, id)`` entries with lazy
deletion: an entry is live only while it matches the job's current key. Persistence is
not its job: the engine writes job state to its own tables in batches.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

__all__ = ["HeapJobStore"]


class HeapJobStore(BaseJobStore):
    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, float | None] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._on_change = on_change or (lambda job_id: None)

    # -- reads -------------------------------------------------------------------------

    def lookup_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        limit = datetime_to_utc_timestamp(now)
        due: list[tuple[float, int, str]] = []
        while self._heap and self._heap[0][0] <= limit:
            entry = heapq.heappop(self._heap)
            if self._keys.get(entry[2]) == entry[0] and entry[2] in self._jobs:
                due.append(entry)
        for entry in due:  # still scheduled until the scheduler updates or removes them
            heapq.heappush(self._heap, entry)
        seen: set[str] = set()
        jobs = []
        for _, _, job_id in sorted(due, key=lambda entry: (entry[0], entry[2])):
            if job_id not in seen:
                seen.add(job_id)
                jobs.append(self._jobs[job_id])
        return jobs

    def get_next_run_time(self) -> datetime | None:
        while self._heap:
            when, _, job_id = self._heap[0]
            if self._keys.get(job_id) == when and job_id in self._jobs:
                return utc_timestamp_to_datetime(when)
            heapq.heappop(self._heap)
        return None

    def get_all_jobs(self) -> list[Job]:
        def order(job: Job) -> tuple[int, float, str]:
            key = self._keys.get(job.id)
            return (1, 0.0, job.id) if key is None else (0, key, job.id)

        return sorted(self._jobs.values(), key=order)

    def __len__(self) -> int:
        return len(self._jobs)

    # -- writes ------------------------------------------------------------------------

    def add_job(self, job: Job) -> None:
        if job.id in self._jobs:
            raise ConflictingIdError(job.id)
        self._jobs[job.id] = job
        self._index(job)
        self._on_change(job.id)

    def update_job(self, job: Job) -> None:
        if job.id not in self._jobs:
            raise JobLookupError(job.id)
        self._jobs[job.id] = job
        self._index(job)
        self._on_change(job.id)

    def remove_job(self, job_id: str) -> None:
        if self._jobs.pop(job_id, None) is None:
            raise JobLookupError(job_id)
        self._keys.pop(job_id, None)
        self._on_change(job_id)
        self._compact()

    def remove_all_jobs(self) -> None:
        removed = list(self._jobs)
        self._jobs.clear()
        self._keys.clear()
        self._heap.clear()
        for job_id in removed:
            self._on_change(job_id)

    def shutdown(self) -> None:
        pass

    def _index(self, job: Job) -> None:
        when: Any = job.next_run_time
        key = datetime_to_utc_timestamp(when) if when is not None else None
        if self._keys.get(job.id, -1.0) == key and key is not None:
            return
        self._keys[job.id] = key
        if key is not None:
            heapq.heappush(self._heap, (key, next(self._seq), job.id))
            self._compact()

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._jobs) + 1024:
            self._heap = [
                entry
                for entry in self._heap
                if self._keys.get(entry[2]) == entry[0] and entry[2] in self._jobs
            ]
            heapq.heapify(self._heap)
