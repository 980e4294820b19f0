"""Threads for ``def`` tasks: daemon threads, a bounded share per job, lost capacity replaced.

A ``def`` task past its timeout keeps its thread (Python cannot stop a thread). The pool
then counts that thread as stuck and starts a replacement, so capacity stays ``size``;
one job may hold at most ``per_job_stuck`` stuck threads (its next runs fail at once,
saying so) and all jobs at most ``max_stuck``. Threads are daemons: a stop or an exit
never waits for a task.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

__all__ = ["DaemonExecutor", "JobThreadsExhausted", "TaskThreads"]

log = logging.getLogger("schedctl.threads")


class JobThreadsExhausted(RuntimeError):
    def __init__(self, job_id: str, stuck: int) -> None:
        super().__init__(
            f"{stuck} earlier runs of job {job_id!r} are still stuck in their threads "
            "(past their timeout); not starting another until one returns"
        )
        self.job_id, self.stuck = job_id, stuck


class _Item:
    __slots__ = ("args", "fn", "future", "job_id", "kwargs", "on_start", "queued_at")

    def __init__(self, job_id: str, fn: Callable[..., Any], args: Any, kwargs: Any, on_start: Any):
        self.job_id, self.fn, self.args, self.kwargs = job_id, fn, args, kwargs
        self.on_start = on_start
        self.future: Future[Any] = Future()
        self.queued_at = time.monotonic()


class TaskThreads:
    def __init__(
        self,
        size: int = 32,
        per_job_stuck: int = 2,
        max_stuck: int | None = None,
        name: str = "schedctl-task",
    ):
        self.size = size
        self.name = name
        self.per_job_stuck = per_job_stuck
        self.max_stuck = max_stuck if max_stuck is not None else 4 * size
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._busy: dict[Future[Any], str] = {}
        self._stuck: dict[Future[Any], str] = {}
        self._names = itertools.count(1)
        self._closed = False

    # -- stats ---------------------------------------------------------------------------

    def stuck(self, job_id: str | None = None) -> int:
        with self._lock:
            if job_id is None:
                return len(self._stuck)
            return sum(1 for j in self._stuck.values() if j == job_id)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def oldest_wait(self) -> float:
        """How long the oldest task waiting for a thread has waited (0 if none)."""
        return self._oldest

    _oldest = 0.0

    # -- use -----------------------------------------------------------------------------

    def submit(
        self,
        job_id: str,
        fn: Callable[..., Any],
        *args: Any,
        on_start: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> Future[Any]:
        if self.per_job_stuck and self.stuck(job_id) >= self.per_job_stuck:
            raise JobThreadsExhausted(job_id, self.stuck(job_id))
        item = _Item(job_id, fn, args, kwargs, on_start)
        with self._lock:
            if self._idle == 0 and self._threads - len(self._stuck) < self.size:
                self._spawn()
        self._queue.put(item)
        return item.future

    def abandon(self, future: Future[Any]) -> None:
        """The run gave up on this task (timeout, cancel): its thread counts as stuck."""
        with self._lock:
            job_id = self._busy.get(future)
            if job_id is None or future in self._stuck:
                return
            self._stuck[future] = job_id
            if len(self._stuck) <= self.max_stuck and not self._closed:
                self._spawn()  # capacity stays `size`
            else:
                log.error(
                    "%d task threads are stuck past their timeouts; no more replacements.",
                    len(self._stuck),
                )

    def shutdown(self) -> None:
        """Stop taking work; idle threads end; busy ones are daemons and never waited for."""
        with self._lock:
            self._closed = True
            count = self._threads
        for _ in range(count):
            self._queue.put(None)

    def _spawn(self) -> None:
        self._threads += 1
        self._idle += 1
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{next(self._names)}", daemon=True
        )
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                with self._lock:
                    self._threads -= 1
                    self._idle -= 1
                return
            with self._lock:
                self._idle -= 1
                self._busy[item.future] = item.job_id
            waited = time.monotonic() - item.queued_at
            self._oldest = waited if not self._queue.empty() else 0.0
            if item.future.set_running_or_notify_cancel():
                try:
                    if item.on_start is not None:
                        item.on_start()
                    result = item.fn(*item.args, **item.kwargs)
                except BaseException as exc:
                    item.future.set_exception(exc)
                else:
                    item.future.set_result(result)
            with self._lock:
                self._busy.pop(item.future, None)
                was_stuck = self._stuck.pop(item.future, None) is not None
                if was_stuck and self._threads - len(self._stuck) > self.size:
                    self._threads -= 1  # a replacement took this thread's place
                    return
                self._idle += 1


class DaemonExecutor(Executor):
    """A ``concurrent.futures`` executor on daemon threads, for blocking I/O that must
    never hold an exit (``ThreadPoolExecutor``'s threads are joined at interpreter exit)."""

    def __init__(self, size: int, name: str) -> None:
        self._threads = TaskThreads(size, per_job_stuck=0, name=name)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._threads.submit("io", fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown()
