"""Long reads built off the event loop give way to it.

A thread that holds the GIL slows the loop as surely as work on it: the first
``GET /jobs`` at 10,000 jobs encodes every job (half a second of CPU), and while it ran,
jobs due fired three times later than without reads (p99). A build run through
``paced`` works in slices of ``SLICE_S`` and sleeps ``GAP_S`` after each, in which the
loop has the GIL to itself; the build takes a quarter longer, the loop keeps its pace.

A builder calls ``step()`` once per job. Outside ``paced`` (on the loop: a small catalog
is answered there) it does nothing, as sleeping there would hold up the very loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["GAP_S", "SLICE_S", "paced", "step"]

T = TypeVar("T")

SLICE_S = 0.002  # work between two gaps
GAP_S = 0.0005  # the loop's turn

_local = threading.local()


def paced(func: Callable[..., T], *args: object) -> T:
    """``func(*args)``, its ``step()`` calls giving way to the loop (in a worker thread)."""
    _local.until = time.perf_counter() + SLICE_S
    try:
        return func(*args)
    finally:
        del _local.until


def step() -> None:
    """One job's worth of work done: sleep ``GAP_S`` if this slice is used up."""
    until: float | None = getattr(_local, "until", None)
    if until is not None and time.perf_counter() >= until:
        time.sleep(GAP_S)
        _local.until = time.perf_counter() + SLICE_S
