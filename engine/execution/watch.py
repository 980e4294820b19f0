"""The event-loop watchdog: names the run whose ``async def`` task blocks the loop.

A heartbeat runs on the loop every ``interval`` (100 ms) and notes how late it ran
(``lag_ms``, for ``/healthz`` and ``schedctl_loop_lag_seconds``). A daemon thread checks
the heartbeat; once it is overdue by more than ``threshold`` (1 s), the loop is held,
and the thread looks at the loop thread's stack (``sys._current_frames()``) for the run
that holds it. When the loop runs again, the heartbeat calls ``on_block(job_id, attempt,
seconds)`` on the loop, so the engine can log "Job X held the event loop for 2.3 s" and
put the warning on the run. ``job_id`` and ``attempt`` are None when no run was found on
the stack: the engine's own code held the loop, or the whole process was paused
(SIGSTOP, a frozen VM), which looks the same from inside.

How the run is found: the runner awaits each ``async def`` task through
``as_run(awaitable, job_id, attempt)``, whose frame is on the loop thread's stack for as
long as the task's code runs, whichever asyncio Task runs it. (The runner's own
``execute`` frame is not enough: on Python 3.11 ``asyncio.wait_for`` runs the awaitable
in a Task of its own, so ``execute`` is not on the stack while the task blocks.)
``find_frame(frame, predicate)`` walks a stack; ``holder(frame)`` reads the run off the
first ``as_run`` frame.

``seconds`` is the time from the last heartbeat before the block to the one after it,
less half an interval: within 50 ms of the real duration. The cost is one timer callback
every 100 ms on the loop, and a thread that wakes about once per threshold while the
loop is healthy: 0.4M instructions a second (cachegrind), about 0.1 ms of CPU; timer
lateness p50 0.78 ms with and without the watch (``python -m tests.bench execution``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TypeVar

__all__ = ["LoopWatch", "as_run", "find_frame", "holder"]

log = logging.getLogger("schedctl.watch")

T = TypeVar("T")
OnBlock = Callable[[str | None, int | None, float], object]


async def as_run(awaitable: Awaitable[T], job_id: str, attempt: int) -> T:
    """Await ``awaitable`` under a frame that marks it as ``job_id``'s ``attempt``."""
    return await awaitable


_MARK = as_run.__code__


def find_frame(frame: FrameType | None, predicate: Callable[[FrameType], bool]) -> FrameType | None:
    """The innermost frame of ``frame``'s stack for which ``predicate`` holds, or None."""
    while frame is not None:
        if predicate(frame):
            return frame
        frame = frame.f_back
    return None


def holder(frame: FrameType | None) -> tuple[str, int] | None:
    """The ``(job_id, attempt)`` of the run whose ``as_run`` frame is on the stack."""
    found = find_frame(frame, lambda f: f.f_code is _MARK)
    if found is None:
        return None
    local = found.f_locals
    return local.get("job_id"), local.get("attempt")  # type: ignore[return-value]


class LoopWatch:
    """Heartbeat on ``loop`` plus a watching thread; ``start()`` and ``stop()`` on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float = 1.0,
        on_block: OnBlock | None = None,
        interval: float = 0.1,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.on_block = on_block
        self.interval = interval
        self._due = time.monotonic() + interval  # when the next heartbeat should run
        self._last = time.monotonic()  # when the last one ran
        self._late = 0.0  # how late the last one ran
        self.beats = 0  # heartbeats so far: the loop answers while this grows
        self._sample: tuple[float, tuple[str, int] | None] | None = None  # (due, holder)
        self._loop_thread: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lag_ms(self) -> float:
        """How late the loop runs, in ms: the last heartbeat's lateness, or, while the
        loop is held, how overdue the next one is (the last lateness once stopped)."""
        if self._thread is None:
            return self._late * 1000.0
        return max(self._late, time.monotonic() - self._due, 0.0) * 1000.0

    def start(self) -> None:
        """Start the heartbeat and the watching thread; call it on the loop's thread."""
        if self._thread is not None:
            return
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._last = time.monotonic()
        self._due = self._last + self.interval
        self._handle = self.loop.call_later(self.interval, self._beat)
        self._thread = threading.Thread(target=self._watch, name="schedctl-loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop both; the thread is gone when this returns. Call it on the loop's thread."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        now = time.monotonic()
        due, last = self._due, self._last
        self._late = max(0.0, now - due)
        self._last = now
        self.beats += 1
        self._due = now + self.interval
        self._handle = self.loop.call_later(self.interval, self._beat)
        held = now - last - self.interval / 2
        if held <= self.threshold:
            return
        sample, self._sample = self._sample, None
        run = sample[1] if sample is not None and sample[0] == due else None
        if self.on_block is None:
            return
        try:
            self.on_block(run[0] if run else None, run[1] if run else None, held)
        except Exception:
            log.exception("The loop watch's on_block callback failed")

    def _watch(self) -> None:
        # The loop is held once the next heartbeat is this late; until then, sleep: while
        # the loop is healthy this thread wakes about once per threshold, not per beat.
        notice = max(0.0, self.threshold - self.interval)
        wait = self.interval
        while not self._stop.wait(wait):
            due = self._due
            overdue = time.monotonic() - due
            if overdue <= notice:
                wait = max(self.interval, notice - overdue)
                continue
            wait = self.interval
            sample = self._sample
            if sample is not None and sample[0] == due and sample[1] is not None:
                continue  # this block's holder is known
            frame = sys._current_frames().get(self._loop_thread or 0)
            found = holder(frame)
            del frame
            self._sample = (due, found)
