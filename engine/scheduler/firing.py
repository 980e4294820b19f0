"""APScheduler's ``AsyncIOScheduler``, its pass over due jobs cut to what the engine uses.

``BaseScheduler._process_jobs`` serves any number of job stores and executors, with
events for listeners. The engine has one store (``HeapJobStore``), one executor (the
dispatcher) and no listeners, and a pass runs for every fire time of every job: at 2,000
fires a second its generality was a fifth of the loop's time (an executor lookup, two
event objects, a second trigger call for the next run time, ``Job._modify``'s checks,
``timegm`` for every heap key, and a call through the loop's self-pipe to wake up).

Same decisions, same order: due jobs in (time, id) order, catch-up bounded by
``BoundedJob.due_times``, the latest time only when coalescing, the job updated with its
next run time or removed when it has none. One thing more: a job whose pass fails (its
trigger raised) is logged and tried again ``RETRY_S`` later, where APScheduler's pass
would end, taking every later job's firing with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from threading import TIMEOUT_MAX
from typing import Any

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED

from engine.scheduler.catalog import BoundedJob
from engine.scheduler.store import HeapJobStore

__all__ = ["FiringScheduler"]

log = logging.getLogger("schedctl.scheduler")
RETRY_S = 10.0  # APScheduler's own pause after a job store fails


class FiringScheduler(AsyncIOScheduler):
    def __init__(
        self, store: HeapJobStore, due: Callable[[Job, list[datetime]], None], **options: Any
    ) -> None:
        super().__init__(jobstores={"default": store}, **options)
        self._store = store
        self._due = due

    def _start_timer(self, wait_seconds: float | None) -> None:
        # The timer calls the pass itself: ``wakeup`` is for other threads (it goes
        # through the loop's self-pipe), and the timer fires on the loop already.
        self._stop_timer()
        if wait_seconds is not None:
            self._timeout = self._eventloop.call_later(wait_seconds, self._on_time)

    def _on_time(self) -> None:
        self._timeout = None
        self._start_timer(self._process_jobs())

    def _process_jobs(self) -> float | None:
        if self.state == STATE_PAUSED:
            return None
        store = self._store
        now = datetime.now(UTC)
        with self._jobstores_lock:
            for job in store.take_due(now.timestamp()):
                try:
                    self._fire(store, job, now)
                except Exception:
                    log.exception(
                        "Job %s could not be fired at %s; trying again in %gs.",
                        job.id,
                        job.next_run_time,
                        RETRY_S,
                    )
                    store.retry_at(job, now.timestamp() + RETRY_S)
            next_time = store.next_timestamp()
        if next_time is None or self.state == STATE_PAUSED:
            return None
        return min(max(next_time - time.time(), 0.0), TIMEOUT_MAX)

    def _fire(self, store: HeapJobStore, job: Job, now: datetime) -> None:
        if isinstance(job, BoundedJob):
            run_times, next_run = job.due_times(now)
        else:  # pragma: no cover - the engine builds only BoundedJobs
            run_times = job._get_run_times(now)
            next_run = job.trigger.get_next_fire_time(run_times[-1], now) if run_times else None
        if not run_times:  # pragma: no cover - due, so it has a time due
            store.retry_at(job, now.timestamp() + RETRY_S)
            return
        try:
            self._due(job, run_times[-1:] if job.coalesce else run_times)
        except Exception:  # as APScheduler does when an executor refuses: the schedule goes on
            log.exception("Handing the run of %s at %s on failed.", job.id, run_times[-1])
        if next_run is None:
            store.remove_job(job.id)  # a date job, or a trigger past its end
        else:
            job.next_run_time = next_run
            store.update_job(job)
