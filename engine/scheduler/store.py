"""An in-memory APScheduler job store whose operations stay O(log N) at 100k jobs.

``MemoryJobStore`` keeps one sorted list (O(N) inserts, O(N^2) bulk loads). This store
keeps a dict of jobs and a heap of ``(timestamp, id)`` entries with lazy deletion: an
entry is live only while it matches the job's current key. Jobs due at the same time
come out in id order. Persistence is not its job: the engine writes job state to its
own tables in batches.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError

__all__ = ["HeapJobStore"]


class HeapJobStore(BaseJobStore):
    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, float | None] = {}
        self._heap: list[tuple[float, str]] = []
        self._on_change = on_change or (lambda job_id: None)

    # -- reads -------------------------------------------------------------------------

    def lookup_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        due = self.take_due(now.timestamp())
        for job in due:  # still scheduled until the scheduler updates or removes them
            self._index(job)
        return due

    def take_due(self, limit: float) -> list[Job]:
        """The jobs due at ``limit`` (a UTC timestamp) or before, in (time, id) order,
        their heap entries taken: the caller updates or removes each, or ``retry_at``."""
        heap, keys, jobs = self._heap, self._keys, self._jobs
        due: list[Job] = []
        while heap and heap[0][0] <= limit:
            when, job_id = heapq.heappop(heap)
            if keys.get(job_id) == when:
                job = jobs.get(job_id)
                if job is not None:
                    due.append(job)
                    keys[job_id] = None  # no entry left: its update pushes the next one
        return due

    def retry_at(self, job: Job, when: float) -> None:
        """Find ``job`` due again at ``when`` (a job whose pass failed), its next run time
        left as it is; nothing if the job has left the store meanwhile."""
        job_id = job.id
        if self._jobs.get(job_id) is job:
            self._keys[job_id] = when
            heapq.heappush(self._heap, (when, job_id))

    def next_timestamp(self) -> float | None:
        """The earliest time any job is due, as a UTC timestamp."""
        heap, keys, jobs = self._heap, self._keys, self._jobs
        while heap:
            when, job_id = heap[0]
            if keys.get(job_id) == when and job_id in jobs:
                return when
            heapq.heappop(heap)
        return None

    def get_next_run_time(self) -> datetime | None:
        when = self.next_timestamp()
        return None if when is None else datetime.fromtimestamp(when, UTC)

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
        when: datetime | None = job.next_run_time
        job_id = job.id
        key = when.timestamp() if when is not None else None
        if key is not None and self._keys.get(job_id, -1.0) == key:
            return
        self._keys[job_id] = key
        if key is not None:
            heapq.heappush(self._heap, (key, job_id))
            if len(self._heap) > 2 * len(self._jobs) + 1024:
                self._compact()

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._jobs) + 1024:
            self._heap = [
                entry
                for entry in self._heap
                if self._keys.get(entry[1]) == entry[0] and entry[1] in self._jobs
            ]
            heapq.heapify(self._heap)
