"""The event-loop watchdog names the run whose async task blocks the loop."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType

import pytest

from engine.execution.watch import LoopWatch, as_run, find_frame, holder
from tests.harness import eventually

Block = tuple[str | None, int | None, float, int]


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what an async def task doing blocking work does


@pytest.fixture
async def watched() -> AsyncIterator[Callable[..., tuple[LoopWatch, list[Block]]]]:
    """``watched(threshold=...)``: a started LoopWatch on this loop and its reported blocks."""
    watches: list[LoopWatch] = []

    def start(**options: float) -> tuple[LoopWatch, list[Block]]:
        blocks: list[Block] = []

        def on_block(job_id: str | None, attempt: int | None, seconds: float) -> None:
            blocks.append((job_id, attempt, seconds, threading.get_ident()))

        watch = LoopWatch(asyncio.get_running_loop(), on_block=on_block, **options)
        watch.start()
        watches.append(watch)
        return watch, blocks

    yield start
    for watch in watches:
        watch.stop()


async def beats_after(watch: LoopWatch, count: int = 2) -> None:
    """Wait until the heartbeat has run ``count`` more times (the loop answers again)."""
    target = watch.beats + count
    await eventually(lambda: watch.beats >= target, what="heartbeats")


async def test_an_async_task_blocking_the_loop_is_named_with_its_job_and_duration(
    watched: Callable[..., tuple[LoopWatch, list[Block]]],
) -> None:
    watch, blocks = watched(threshold=1.0)
    await beats_after(watch)

    async def report() -> str:
        block_the_loop(1.5)
        return "done"

    # wait_for runs the task in a Task of its own, as the runner does with a timeout
    assert await asyncio.wait_for(as_run(report(), "nightly", 2), timeout=10) == "done"
    await eventually(lambda: blocks, what="the block to be reported")
    [(job_id, attempt, seconds, thread)] = blocks
    assert (job_id, attempt) == ("nightly", 2)
    assert 1.4 <= seconds <= 2.0, seconds
    assert thread == threading.get_ident(), "on_block must run on the loop"


async def test_a_block_outside_any_run_is_reported_without_a_job(
    watched: Callable[..., tuple[LoopWatch, list[Block]]],
) -> None:
    watch, blocks = watched(threshold=0.3)
    await beats_after(watch)
    block_the_loop(0.6)
    await eventually(lambda: blocks, what="the block to be reported")
    [(job_id, attempt, seconds, _)] = blocks
    assert (job_id, attempt) == (None, None)
    assert 0.5 <= seconds <= 1.0, seconds


async def test_a_block_shorter_than_the_threshold_is_not_reported(
    watched: Callable[..., tuple[LoopWatch, list[Block]]],
) -> None:
    watch, blocks = watched(threshold=0.5)
    await beats_after(watch)
    await as_run(asyncio.to_thread(block_the_loop, 0.7), "threaded", 1)  # off the loop: fine
    block_the_loop(0.2)
    await beats_after(watch, 3)
    assert blocks == []


async def test_lag_ms_grows_while_the_loop_is_held_and_shows_the_last_lateness_after(
    watched: Callable[..., tuple[LoopWatch, list[Block]]],
) -> None:
    watch, blocks = watched(threshold=0.3)
    await beats_after(watch)
    assert watch.lag_ms < 100
    seen_while_held: list[float] = []

    def observe() -> None:  # another thread, as a probe or a metric scrape would
        deadline = time.monotonic() + 5
        while watch.lag_ms < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_while_held.append(watch.lag_ms)
        release.set()

    release = threading.Event()
    observer = threading.Thread(target=observe)
    observer.start()
    assert release.wait(5)  # the loop is held until the observer saw the lag grow
    observer.join()
    assert seen_while_held[0] >= 400
    await beats_after(watch, 1)
    await eventually(lambda: blocks, what="the block to be reported")
    await beats_after(watch, 3)
    assert watch.lag_ms < 100, "the lag settles once the loop runs freely again"


async def test_a_failing_on_block_callback_is_logged_and_the_watch_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_block(job_id: str | None, attempt: int | None, seconds: float) -> None:
        raise RuntimeError("engine bug")

    watch = LoopWatch(asyncio.get_running_loop(), threshold=0.2, on_block=on_block)
    watch.start()
    try:
        await beats_after(watch)
        block_the_loop(0.4)
        await eventually(lambda: "on_block callback failed" in caplog.text, what="the log")
        await beats_after(watch, 2)
    finally:
        watch.stop()


async def test_stop_leaves_no_thread_and_no_heartbeat_behind() -> None:
    watch = LoopWatch(asyncio.get_running_loop(), threshold=0.5)
    watch.start()
    await beats_after(watch)
    assert any(t.name == "schedctl-loop-watch" for t in threading.enumerate())
    watch.stop()
    assert not any(t.name == "schedctl-loop-watch" for t in threading.enumerate())
    beats = watch.beats
    await asyncio.sleep(3 * watch.interval)  # a window in which a live heartbeat would run
    assert watch.beats == beats


def test_find_frame_walks_the_stack_with_a_predicate() -> None:
    def inner() -> FrameType | None:
        return find_frame(sys._getframe(), lambda f: f.f_code.co_name == "outer")

    def outer() -> FrameType | None:
        return inner()

    found = outer()
    assert found is not None and found.f_code.co_name == "outer"
    assert find_frame(sys._getframe(), lambda f: f.f_code.co_name == "absent") is None
    assert find_frame(None, lambda f: True) is None


async def test_holder_reads_the_run_off_the_stack_of_its_task() -> None:
    async def task() -> tuple[str, int] | None:
        return holder(sys._getframe())

    assert await as_run(task(), "nightly", 3) == ("nightly", 3)
    assert holder(sys._getframe()) is None
