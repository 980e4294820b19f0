"""Handing the memory a large answer freed back to the system.

glibc keeps what a process frees in its heap, for the process to use again; it gives it
back only from the heap's top. Building and sending ``/jobs`` and ``/specs`` at 100,000
jobs allocates and drops tens of megabytes in pieces: after a few polls the engine's RSS
held 2 KB per job of freed memory, a third of it, and a container's memory limit counts
RSS. ``malloc_trim(0)`` gives those pages back (6 ms at 100,000 jobs, the GIL let go
meanwhile: ctypes calls release it).

``Trimmer.soon()`` is called on the event loop after a large answer went out: a trim
runs on a thread, at most once every ``GAP_S`` seconds, and always after the last of a
burst of answers. Only a process tuned for the engine (``schedctl serve``) trims; where
there is no glibc (macOS, musl) nothing happens.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

__all__ = ["LARGE_ANSWER", "Trimmer", "release_freed"]

log = logging.getLogger("schedctl.memory")
LARGE_ANSWER = 1 << 20  # bytes: an answer this large was built from thousands of parts
GAP_S = 5.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the process's own symbols: libc's where it is glibc (no ldconfig run)
        trim: Any = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    found: Callable[[int], int] = trim
    return found


_TRIM = _malloc_trim()


def release_freed() -> bool:
    """Give the heap's free pages back to the system; False where that cannot be done."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    def __init__(self, enabled: bool, executor: Executor) -> None:
        self.enabled = enabled and _TRIM is not None
        self._executor = executor
        self._handle: asyncio.TimerHandle | None = None
        self._last = -GAP_S
        self.trims = 0  # trims done (for tests and the curious)

    def soon(self) -> None:
        """On the loop, after a large answer was sent: trim within ``GAP_S`` seconds."""
        if not self.enabled or self._handle is not None:
            return
        delay = max(0.0, self._last + GAP_S - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._handle = None
        self._last = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(self._executor, release_freed)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[bool]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("Could not give freed memory back: %r", future.exception())
            return
        self.trims += 1

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
