"""The threads that run ``def`` tasks: a hung task may keep its thread, never the pool.

Python cannot stop a thread. A ``def`` task past its timeout keeps running, and with a
plain ``ThreadPoolExecutor(32)`` three jobs that hang with ``timeout: 2s`` held all 32
threads within 20 s: no ``def`` job ran again, and because the executor's threads are
joined at interpreter exit, SIGTERM never finished either. ``TaskThreads`` fixes both:

- **Daemon threads**, never joined: a hung task cannot delay exit, and ``shutdown()``
  returns at once (queued tasks are cancelled, running ones are left to the process).
- **Replacement threads.** When a run's timeout passes while its code still runs, the
  runner calls ``abandon(future)``: that thread is counted *stuck*, stops counting toward
  the pool's ``size``, and a new thread takes its place, so healthy jobs keep ``size``
  threads. A stuck thread that finally returns rejoins the pool if there is room, else
  ends.
- **A bounded share per job.** A job may hold at most ``per_job_stuck`` stuck threads;
  beyond that, ``submit`` for that job raises ``JobThreadsExhausted`` (the runner records
  the run ``failed``: "N earlier runs of this job are still stuck in their threads") until
  one returns. Only the offending job pays.
- **A bound on all stuck threads.** At most ``max_stuck`` stuck threads are replaced, so
  the process never holds more than ``size + max_stuck`` task threads. Past it, (1) every
  job that already holds a stuck thread is refused as above, and (2) a thread abandoned
  beyond the bound is not replaced: capacity shrinks by one until a stuck thread returns
  (``stats().capacity`` says so, for ``/readyz``).

Why not a pool per job (idle threads for every job, and a hang still stops that job's
own later runs) or a process per timed-out ``def`` task (a fork or spawn per run costs
milliseconds, and arguments and results must pickle): a shared pool with a bounded share
and replacements costs no more per task than ``ThreadPoolExecutor``. Measured on this
2-core machine, no-op tasks: 62k instructions per task against 67k for
``ThreadPoolExecutor(32)`` (cachegrind, a burst of 10,000); in CPU time 23-31 µs against
24-28 µs per task in a burst of 20,000; one submit-and-wait round trip, which is mostly
waking a thread, 0.98x-1.5x of it across runs, the ranges being the shared machine's
noise (``python -m tests.bench execution``). The issue's scenario scaled down (4 threads,
three jobs hanging on every run with a 0.2 s timeout, a healthy job every 0.1 s, 2 s):
the healthy job started 20 times of 20, at worst 5-17 ms late; with
``ThreadPoolExecutor(4)`` it started 2 times of 20. A process whose task sleeps 1,000 s
exits as soon as its main thread ends.

Each task runs in a copy of the submitter's ``contextvars`` context, so
``engine.current_run()`` and the per-run log capture work in ``def`` tasks.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

from engine.errors import JobThreadsExhausted

__all__ = [
    "Abandoned",
    "DaemonExecutor",
    "JobThreadsExhausted",
    "TaskThreads",
    "ThreadStats",
]

log = logging.getLogger("schedctl.threads")


class Abandoned(enum.StrEnum):
    """What ``TaskThreads.abandon`` found."""

    NEVER_STARTED = "never_started"  # still queued: cancelled, its code never ran
    FINISHED = "finished"  # it had just finished: nothing is stuck
    STUCK = "stuck"  # its code still runs: the thread is stuck and was replaced


@dataclass(frozen=True)
class ThreadStats:
    """A snapshot of the pool, for ``/healthz``, ``/readyz`` and metrics."""

    size: int  # the configured number of threads for tasks
    capacity: int  # threads tasks may have now: ``size`` less stuck threads not replaced
    threads: int  # live threads counting toward capacity (stuck ones excluded)
    busy: int  # of those, running a task
    idle: int  # of those, waiting for one
    queued: int  # tasks submitted and not started
    oldest_queued_s: float  # how long the oldest queued task has waited (0 when none)
    stuck: int  # threads still running a task whose run was abandoned
    stuck_by_job: dict[str, int]

    @property
    def exhausted(self) -> bool:
        """No thread can take a task now and tasks are waiting."""
        return self.queued > 0 and self.busy >= self.capacity


class _Task:
    __slots__ = (
        "abandoned",
        "call",
        "context",
        "finished",
        "future",
        "job_id",
        "on_start",
        "queued_at",
    )

    def __init__(
        self,
        job_id: str,
        call: Callable[[], Any],
        on_start: Callable[[], object] | None,
    ) -> None:
        self.job_id = job_id
        self.call = call
        self.on_start = on_start
        self.context = contextvars.copy_context()
        self.future: Future[Any] = Future()
        self.queued_at = time.monotonic()
        self.abandoned = False
        self.finished = False

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # cancelled while queued
        try:
            if self.on_start is not None:
                self.on_start()
            result = self.call()
        except BaseException as exc:  # a task's SystemExit ends its run, not the thread
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class TaskThreads:
    """A thread pool for ``def`` tasks that a hung task cannot starve or keep alive."""

    def __init__(
        self,
        size: int = 32,
        per_job_stuck: int = 4,
        max_stuck: int | None = None,
        name: str = "schedctl-task",
    ) -> None:
        if size < 1 or per_job_stuck < 1 or (max_stuck is not None and max_stuck < 0):
            raise ValueError("size and per_job_stuck must be >= 1, max_stuck >= 0")
        self.size = size
        self.per_job_stuck = per_job_stuck
        self.max_stuck = size if max_stuck is None else max_stuck
        self._name = name
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: SimpleQueue[_Task | None] = SimpleQueue()
        self._pending: deque[_Task] = deque()  # mirrors the queue, to see the oldest wait
        self._workers = 0  # live threads counting toward capacity
        self._idle = 0  # of those, blocked waiting for a task
        self._stuck: dict[str, int] = {}
        self._stuck_total = 0
        self._closed = False
        self._futures: dict[Future[Any], _Task] = {}

    def submit(
        self,
        job_id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        on_start: Callable[[], object] | None = None,
        **kwargs: Any,
    ) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)`` for ``job_id``; ``on_start`` is called in the
        worker thread just before the task's code starts (not when it is queued).

        Raises ``JobThreadsExhausted`` when the job holds too many stuck threads (see the
        module docstring), ``RuntimeError`` after ``shutdown()``. A task taking a keyword
        argument named ``on_start`` must be passed as a ``functools.partial``.
        """
        call = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
        task = _Task(job_id, call, on_start)
        spawn = False
        with self._lock:
            if self._closed:
                raise RuntimeError("the task threads are shut down")
            stuck = self._stuck.get(job_id, 0)
            if stuck and (stuck >= self.per_job_stuck or self._stuck_total >= self.max_stuck):
                raise JobThreadsExhausted(job_id, stuck)
            self._pending.append(task)
            self._futures[task.future] = task
            if len(self._pending) > self._idle and self._workers < self._capacity():
                self._workers += 1
                spawn = True
        if spawn and not self._spawn():
            with self._lock, contextlib.suppress(ValueError):
                del self._futures[task.future]
                self._pending.remove(task)
            raise RuntimeError("could not start a thread for the task")
        self._queue.put(task)
        return task.future

    def prestart(self) -> int:
        """Start every thread the pool may have now, idle until tasks come; return how
        many started. A small pool that is full from the start keeps the process's thread
        count flat: it does not step up whenever a burst of tasks finds no idle thread."""
        with self._lock:
            missing = 0 if self._closed else self._capacity() - self._workers
            self._workers += max(0, missing)
        return sum(self._spawn() for _ in range(missing))

    def abandon(self, future: Future[Any]) -> Abandoned:
        """The run of ``future`` gave up on it (timeout, cancellation): stop counting its
        thread toward the pool and start a replacement if the bounds allow.

        Call it whenever a run stops waiting for its task, whatever the reason.
        """
        if future.cancel():
            self._forget(future)
            return Abandoned.NEVER_STARTED
        spawn = False
        with self._lock:
            task = self._futures.pop(future, None)
            if task is None or task.finished:
                return Abandoned.FINISHED
            task.abandoned = True
            self._stuck[task.job_id] = self._stuck.get(task.job_id, 0) + 1
            self._stuck_total += 1
            self._workers -= 1
            # Replace now only if work is waiting; otherwise the next submit spawns one.
            if (
                not self._closed
                and self._workers < self._capacity()
                and len(self._pending) > self._idle
            ):
                self._workers += 1
                spawn = True
        if spawn and not self._spawn():
            log.warning("Could not start a thread to replace a stuck one; capacity is lower")
        return Abandoned.STUCK

    def stats(self) -> ThreadStats:
        """A consistent snapshot of the pool."""
        now = time.monotonic()
        with self._lock:
            waiting = [t for t in self._pending if not t.future.cancelled()]
            return ThreadStats(
                size=self.size,
                capacity=self._capacity(),
                threads=self._workers,
                busy=max(0, self._workers - self._idle),
                idle=self._idle,
                queued=len(waiting),
                oldest_queued_s=now - waiting[0].queued_at if waiting else 0.0,
                stuck=self._stuck_total,
                stuck_by_job=dict(self._stuck),
            )

    def shutdown(self, cancel_queued: bool = True) -> None:
        """Stop taking tasks and return at once: queued tasks are cancelled (unless
        ``cancel_queued`` is false), idle threads end, running tasks are not waited for."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = self._workers
            pending = list(self._pending)
        if cancel_queued:
            for task in pending:
                task.future.cancel()
        for _ in range(workers):
            self._queue.put(None)

    # -- internals -------------------------------------------------------------

    def _capacity(self) -> int:
        """Threads allowed to take tasks: stuck threads past ``max_stuck`` are not replaced."""
        return self.size - max(0, self._stuck_total - self.max_stuck)

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.pop(future, None)

    def _spawn(self) -> bool:
        """Start a thread whose slot the caller has counted in ``_workers``; give the slot
        back and return False if the OS refuses."""
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{next(self._ids)}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            with self._lock:
                self._workers -= 1
            return False
        return True

    def _work(self) -> None:
        lock, queue, pending = self._lock, self._queue, self._pending
        while True:
            with lock:
                self._idle += 1
            task = queue.get()
            with lock:
                self._idle -= 1
                if task is None:  # shutdown: one token per live thread
                    self._workers -= 1
                    return
                pending.popleft()
            task.context.run(task.run)
            with lock:
                task.finished = True
                self._futures.pop(task.future, None)
                if task.abandoned and not self._rejoin(task.job_id):
                    return
            del task  # do not hold the last task's result while waiting for the next

    def _rejoin(self, job_id: str) -> bool:
        """A stuck thread returned (under the lock): it leaves the stuck count and stays in
        the pool if there is room, else ends. Returns whether it stays."""
        left = self._stuck[job_id] - 1
        if left:
            self._stuck[job_id] = left
        else:
            del self._stuck[job_id]
        self._stuck_total -= 1
        if self._closed or self._workers >= self._capacity():
            return False
        self._workers += 1
        return True


class DaemonExecutor(Executor):
    """A ``concurrent.futures`` executor on daemon threads, for blocking I/O that must
    never hold an exit (``ThreadPoolExecutor``'s threads are joined at interpreter exit)."""

    def __init__(self, size: int, name: str) -> None:
        self._threads = TaskThreads(size, name=name)

    def prestart(self) -> int:
        """Start all its threads now (see ``TaskThreads.prestart``)."""
        return self._threads.prestart()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._threads.submit("io", functools.partial(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown(cancel_queued=cancel_futures)
