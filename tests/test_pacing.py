"""Reads built off the loop give way to it (``engine.pacing``).

The other thread stands for the event loop. The switch interval is made long, so that
a thread holding the GIL keeps it: the other thread runs during a build only if the
build itself gives way.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from engine import pacing

BUILD_S = 0.5  # how long the build would hold the GIL if it never gave way


@pytest.fixture
def greedy_threads() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _build_while_another_thread_waits(call: Callable[[Callable[[], float]], float]) -> float:
    """Run a CPU-bound build (one ``step()`` per item) through ``call`` in a thread, while
    this thread, as the loop would, waits for its turn to say it ran; return how long the
    build went on: it stops as soon as this thread has had its turn."""
    turn = threading.Event()
    took: list[float] = []

    def build() -> float:
        started = time.perf_counter()
        while not turn.is_set() and time.perf_counter() - started < BUILD_S:
            sum(range(200))  # one job's worth of work
            pacing.step()
        return time.perf_counter() - started

    worker = threading.Thread(target=lambda: took.append(call(build)))
    worker.start()
    turn.set()  # needs the GIL: runs once the build gives way, or once it ends
    worker.join(timeout=10)
    return took[0]


def test_a_paced_build_lets_the_loop_run_within_a_slice(greedy_threads: None) -> None:
    took = _build_while_another_thread_waits(lambda build: pacing.paced(build))
    assert took < BUILD_S / 5, f"the build held the GIL for {took:.3f}s"


def test_outside_paced_a_step_never_sleeps(greedy_threads: None) -> None:
    # On the loop (a small catalog's answer) sleeping would hold up the loop itself.
    took = _build_while_another_thread_waits(lambda build: build())
    assert took >= BUILD_S


def test_paced_returns_the_result_and_passes_on_an_error(greedy_threads: None) -> None:
    assert pacing.paced(lambda a, b: a + b, 2, 3) == 5

    def after_a_failed_build(build: Callable[[], float]) -> float:
        with pytest.raises(ZeroDivisionError):
            pacing.paced(lambda: 1 / 0)
        return build()  # the same thread, outside ``paced`` again: it gives no way

    assert _build_while_another_thread_waits(after_a_failed_build) >= BUILD_S
