"""The ``def`` task threads: hung tasks never starve other jobs nor keep the process alive."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.errors import JobThreadsExhausted
from engine.execution import context
from engine.execution.threads import Abandoned, TaskThreads
from tests.harness import wait_until


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Tasks that 'hang' wait on this; set after the test so no thread outlives it."""
    event = threading.Event()
    yield event
    event.set()


def started_hang(pool: TaskThreads, job_id: str, release: threading.Event) -> Future[Any]:
    """Submit a task that hangs until ``release``; return once its code has started."""
    started = threading.Event()
    future = pool.submit(job_id, release.wait, on_start=started.set)
    assert started.wait(5), "the hanging task never started"
    return future


def task_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-pool")]


def test_a_task_runs_with_its_arguments_and_its_result_or_error_reaches_the_future() -> None:
    pool = TaskThreads(size=2, name="test-pool")
    try:
        assert pool.submit("j", divmod, 7, 2).result(5) == (3, 1)
        assert pool.submit("j", int, "ff", base=16).result(5) == 255
        with pytest.raises(ZeroDivisionError):
            pool.submit("j", divmod, 1, 0).result(5)
        with pytest.raises(SystemExit):  # a task's sys.exit() ends its run, not the thread
            pool.submit("j", sys.exit, 3).result(5)
        assert pool.submit("j", lambda: "still serving").result(5) == "still serving"
    finally:
        pool.shutdown()


def test_on_start_is_called_in_the_worker_when_the_code_starts_not_when_queued(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=1, name="test-pool")
    try:
        started_hang(pool, "busy", release)
        order: list[tuple[str, str]] = []

        def on_start() -> None:
            order.append(("on_start", threading.current_thread().name))

        def task() -> None:
            order.append(("task", threading.current_thread().name))

        queued = pool.submit("next", task, on_start=on_start)
        assert pool.stats().queued == 1
        assert order == [], "on_start ran while the task was only queued"
        release.set()
        queued.result(5)
        assert [what for what, _ in order] == ["on_start", "task"]
        assert order[0][1] == order[1][1] and order[0][1].startswith("test-pool")
    finally:
        pool.shutdown()


def test_a_task_sees_the_run_context_of_the_code_that_submitted_it() -> None:
    pool = TaskThreads(size=1, name="test-pool")
    run = context.RunContext("nightly", datetime(2025, 1, 1, tzinfo=UTC), 2, "nightly@1#2")
    token = context.enter(run)
    try:
        future = pool.submit("nightly", context.current_run)
    finally:
        context.leave(token)
    try:
        assert future.result(5) == run
        assert pool.submit("other", context.current_run).result(5) is None
    finally:
        pool.shutdown()


def test_an_abandoned_hung_thread_is_replaced_so_other_jobs_keep_running(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=1, name="test-pool")
    try:
        hung = started_hang(pool, "hangs", release)
        assert pool.abandon(hung) is Abandoned.STUCK
        assert pool.submit("healthy", lambda: "ran").result(5) == "ran"
        stats = pool.stats()
        assert (stats.stuck, stats.stuck_by_job, stats.capacity) == (1, {"hangs": 1}, 1)
        assert stats.threads == 1 and len(task_threads()) == 2  # one stuck, one serving

        release.set()  # the stuck thread returns: it leaves the count, the pool stays at size
        hung.result(5)
        wait_until(lambda: pool.stats().stuck == 0, what="stuck count back to 0")
        wait_until(lambda: len(task_threads()) == 1, what="the pool back to one thread")
    finally:
        pool.shutdown()


def test_a_job_past_its_share_of_stuck_threads_is_refused_until_one_returns() -> None:
    pool = TaskThreads(size=2, per_job_stuck=2, name="test-pool")
    gates = [threading.Event(), threading.Event()]
    try:
        for gate in gates:
            started = threading.Event()
            future = pool.submit("hangs", gate.wait, on_start=started.set)
            assert started.wait(5)
            assert pool.abandon(future) is Abandoned.STUCK

        with pytest.raises(JobThreadsExhausted) as refused:
            pool.submit("hangs", print)
        assert refused.value.job_id == "hangs" and refused.value.stuck == 2
        assert "2 earlier runs of this job are still stuck in their threads" in str(refused.value)
        assert pool.submit("healthy", lambda: 1).result(5) == 1  # only the offender pays

        gates[0].set()
        wait_until(lambda: pool.stats().stuck_by_job == {"hangs": 1}, what="one stuck left")
        assert pool.submit("hangs", lambda: "runs again").result(5) == "runs again"
    finally:
        for gate in gates:
            gate.set()
        pool.shutdown()


def test_threads_stuck_past_max_stuck_are_not_replaced_and_their_jobs_are_refused(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=2, per_job_stuck=5, max_stuck=1, name="test-pool")
    try:
        pool.abandon(started_hang(pool, "a", release))
        assert pool.stats().capacity == 2  # the first stuck thread is replaced
        pool.abandon(started_hang(pool, "b", release))
        stats = pool.stats()
        assert (stats.stuck, stats.capacity) == (2, 1)  # the second is not: capacity shrinks
        assert len(task_threads()) <= pool.size + pool.max_stuck

        for job_id in ("a", "b"):  # past max_stuck, every job holding a stuck thread waits
            with pytest.raises(JobThreadsExhausted):
                pool.submit(job_id, print)
        assert pool.submit("c", lambda: "c ran").result(5) == "c ran"  # others still run

        release.set()
        wait_until(lambda: pool.stats().stuck == 0, what="no stuck threads")
        stats = pool.stats()
        assert stats.capacity == 2 and stats.threads <= 2
        assert pool.submit("a", lambda: "a ran").result(5) == "a ran"
        wait_until(lambda: len(task_threads()) <= 2, what="at most size threads")
    finally:
        pool.shutdown()


def test_abandoning_a_queued_task_cancels_it_so_its_code_never_runs(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=1, name="test-pool")
    try:
        busy = started_hang(pool, "busy", release)
        ran: list[str] = []
        queued = pool.submit("late", ran.append, "late ran", on_start=lambda: ran.append("x"))
        assert pool.abandon(queued) is Abandoned.NEVER_STARTED
        release.set()
        busy.result(5)
        assert pool.submit("j", lambda: 1).result(5) == 1  # the queue has moved past it
        assert ran == [] and queued.cancelled()
        assert pool.abandon(busy) is Abandoned.FINISHED
        assert pool.stats().stuck == 0
    finally:
        pool.shutdown()


def test_stats_show_busy_queued_and_how_long_the_oldest_task_waits(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=1, name="test-pool")
    try:
        assert pool.stats().oldest_queued_s == 0.0
        started_hang(pool, "busy", release)
        pool.submit("a", print)
        pool.submit("b", print)
        first = pool.stats()
        assert (first.busy, first.idle, first.queued, first.exhausted) == (1, 0, 2, True)
        wait_until(lambda: pool.stats().oldest_queued_s >= 0.05, what="the wait to grow")
        release.set()
        wait_until(lambda: pool.stats().queued == 0, what="the queue to drain")
        stats = pool.stats()
        assert (stats.oldest_queued_s, stats.exhausted) == (0.0, False)
    finally:
        pool.shutdown()


def test_shutdown_returns_at_once_while_a_task_hangs_and_cancels_queued_tasks(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=1, name="test-pool")
    hung = started_hang(pool, "hangs", release)
    queued = pool.submit("queued", print)
    began = time.monotonic()
    pool.shutdown()
    assert time.monotonic() - began < 0.1
    assert queued.cancelled() and not hung.done()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("late", print)
    with pytest.raises(CancelledError):
        queued.result(0)
    release.set()
    wait_until(lambda: not task_threads(), what="every pool thread to end")


def test_a_prestarted_pool_keeps_its_thread_count_through_bursts_of_tasks(
    release: threading.Event,
) -> None:
    pool = TaskThreads(size=3, name="test-pool")
    try:
        assert pool.prestart() == 3
        assert len(task_threads()) == 3
        wait_until(lambda: pool.stats().idle == 3, what="the three threads to wait for tasks")
        assert pool.prestart() == 0  # already full
        futures = [pool.submit("burst", time.sleep, 0.005) for _ in range(30)]
        for future in futures:
            future.result(5)
        assert len(task_threads()) == 3
        # A stuck thread is still replaced (capacity kept), prestarted or not.
        pool.abandon(started_hang(pool, "hangs", release))
        assert pool.prestart() == 1
        assert pool.stats().threads == 3 and len(task_threads()) == 4
    finally:
        pool.shutdown()
        release.set()
    wait_until(lambda: not task_threads(), what="every pool thread to end")


def test_idle_threads_end_after_shutdown() -> None:
    pool = TaskThreads(size=3, name="test-pool")
    futures = [pool.submit("j", time.sleep, 0.01) for _ in range(6)]
    for future in futures:
        future.result(5)
    assert task_threads()
    pool.shutdown()
    wait_until(lambda: not task_threads(), what="idle threads to end")


EXIT_SCRIPT = """
import sys, threading, time
from engine.execution.threads import TaskThreads

pool = TaskThreads(size=2)
started = threading.Event()
future = pool.submit("hangs", time.sleep, 1000, on_start=started.set)
assert started.wait(10)
if {abandon}:
    pool.abandon(future)
if {shutdown}:
    pool.shutdown()
print("started", flush=True)
"""


@pytest.mark.parametrize(
    ("abandon", "shutdown"), [(False, False), (True, False), (True, True)], ids=str
)
def test_a_process_with_a_hung_task_exits_promptly(abandon: bool, shutdown: bool) -> None:
    script = EXIT_SCRIPT.format(abandon=abandon, shutdown=shutdown)
    command = [sys.executable, "-c", textwrap.dedent(script)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "started"
            began = time.monotonic()
            child.wait(timeout=5)
            took = time.monotonic() - began
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == 0
    assert took < 1.0, f"the interpreter took {took:.2f}s to exit with a hung task"


async def test_hung_def_jobs_with_a_timeout_never_starve_a_healthy_job(
    release: threading.Event,
) -> None:
    """The issue's scenario scaled down: three jobs hang on every run (timeout 0.2 s, a run
    every 0.2 s) while a healthy job runs every 100 ms on a pool of 4 threads."""
    pool = TaskThreads(size=4, per_job_stuck=2, max_stuck=8, name="test-pool")
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    outcomes: Counter[tuple[str, str]] = Counter()
    most_threads = 0

    async def fire(job_id: str, fn: Callable[[], Any], timeout: float, due: float) -> None:
        def on_start() -> None:
            if job_id == "healthy":
                lateness.append(time.monotonic() - due)

        try:
            future = pool.submit(job_id, fn, on_start=on_start)
        except JobThreadsExhausted:
            outcomes[job_id, "refused"] += 1
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            outcomes[job_id, f"timeout, {pool.abandon(future)}"] += 1
        else:
            outcomes[job_id, "success"] += 1

    ticks, period = 20, 0.1
    start = time.monotonic() + 0.05
    runs: list[asyncio.Task[None]] = []
    for tick in range(ticks):
        due = start + tick * period
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # the schedule, not a sync
        if tick % 2 == 0:
            for job_id in ("hang-1", "hang-2", "hang-3"):
                runs.append(loop.create_task(fire(job_id, release.wait, 0.2, due)))
        runs.append(loop.create_task(fire("healthy", lambda: None, 1.0, due)))
        most_threads = max(most_threads, len(task_threads()))
    await asyncio.gather(*runs)

    try:
        assert outcomes["healthy", "success"] == ticks, outcomes
        assert max(lateness) < 0.15, f"the healthy job started up to {max(lateness):.3f}s late"
        for job_id in ("hang-1", "hang-2", "hang-3"):
            # Its share of stuck threads, plus the run that was still within its timeout
            # when the share filled; then its runs are refused.
            stuck = outcomes[job_id, "timeout, stuck"]
            assert pool.per_job_stuck <= stuck <= pool.per_job_stuck + 1, outcomes
            assert outcomes[job_id, "refused"] == ticks // 2 - stuck, outcomes
        assert most_threads <= pool.size + 3 * pool.per_job_stuck
    finally:
        release.set()
        await asyncio.to_thread(wait_until, lambda: pool.stats().stuck == 0)
        pool.shutdown()


def test_when_the_os_refuses_a_thread_submit_says_so_and_the_pool_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = TaskThreads(size=2, name="test-pool")
    try:
        with monkeypatch.context() as patched:

            def refuse(self: threading.Thread) -> None:
                raise RuntimeError("can't start new thread")

            patched.setattr(threading.Thread, "start", refuse)
            with pytest.raises(RuntimeError, match="could not start a thread"):
                pool.submit("j", print)
        stats = pool.stats()
        assert (stats.threads, stats.queued) == (0, 0)
        assert pool.submit("j", lambda: "ran").result(5) == "ran"
    finally:
        pool.shutdown()
