"""Execution building blocks: the ``def`` task threads, per-run log capture, the loop watch.

``python -m tests.bench execution``. The "raw" column is the plain alternative each one
replaces or adds to: ``ThreadPoolExecutor(32)``, a run with no capture installed, an
event loop with no watch.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.errors import JobThreadsExhausted
from engine.execution import capture, context
from engine.execution.logs import RunTags, TextFormatter
from engine.execution.runner import RunOptions, execute
from engine.execution.threads import TaskThreads
from engine.execution.watch import LoopWatch
from engine.state.history import History

BURST = 20_000
ROUND_TRIPS = 3_000
REPEATS = 7
CAPTURE_RUNS = 1_000
CAPTURE_ROUNDS = 30
CAPTURE_TARGET = 1.3
LATENESS_TARGET_S = 0.1
TASK = f"{__name__}:_log_one"


def _noop() -> None:
    return None


def _burst(submit: Callable[[], Future[Any]]) -> float:
    """CPU seconds per task to submit ``BURST`` no-op tasks and collect their results."""
    began = time.process_time()
    futures = [submit() for _ in range(BURST)]
    for future in futures:
        future.result()
    return (time.process_time() - began) / BURST


def _round_trip(submit: Callable[[], Future[Any]]) -> float:
    """Wall seconds for one submit-and-wait of a no-op task (median of batches)."""
    batches = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(ROUND_TRIPS // REPEATS):
            submit().result()
        batches.append((time.perf_counter() - began) / (ROUND_TRIPS // REPEATS))
    return statistics.median(batches)


def measure_threads() -> dict[str, float]:
    ours, raw = TaskThreads(32), ThreadPoolExecutor(32)
    submit_ours: Callable[[], Future[Any]] = lambda: ours.submit("bench", _noop)  # noqa: E731
    submit_raw: Callable[[], Future[Any]] = lambda: raw.submit(_noop)  # noqa: E731
    try:
        _burst(submit_ours), _burst(submit_raw)  # warm up: every thread started
        bursts: dict[str, list[float]] = {"ours": [], "raw": []}
        for _ in range(REPEATS):  # interleaved, so both see the same machine load
            bursts["ours"].append(_burst(submit_ours))
            bursts["raw"].append(_burst(submit_raw))
        return {
            "burst": statistics.median(bursts["ours"]),
            "burst_raw": statistics.median(bursts["raw"]),
            "trip": _round_trip(submit_ours),
            "trip_raw": _round_trip(submit_raw),
        }
    finally:
        ours.shutdown()
        raw.shutdown(wait=False)


async def _hang_scenario(pool: TaskThreads | ThreadPoolExecutor) -> tuple[int, float]:
    """Three jobs hang on every run (timeout 0.2 s, every 0.2 s), a healthy job runs every
    0.1 s, for 2 s on 4 threads: (healthy runs started, their worst lateness in s)."""
    release = threading.Event()
    lateness: list[float] = []
    loop = asyncio.get_running_loop()

    async def fire(job_id: str, fn: Callable[[], Any], timeout: float, due: float) -> None:
        def call() -> Any:
            if job_id == "healthy":
                lateness.append(time.monotonic() - due)
            return fn()

        try:
            if isinstance(pool, TaskThreads):
                future = pool.submit(job_id, call)
            else:
                future = pool.submit(call)
        except JobThreadsExhausted:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            if isinstance(pool, TaskThreads):
                pool.abandon(future)

    runs = []
    start = time.monotonic() + 0.05
    for tick in range(20):
        due = start + tick * 0.1
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if tick % 2 == 0:
            for job_id in ("hang-1", "hang-2", "hang-3"):
                runs.append(loop.create_task(fire(job_id, release.wait, 0.2, due)))
        runs.append(loop.create_task(fire("healthy", _noop, 1.0, due)))
    await asyncio.gather(*runs)
    release.set()
    if isinstance(pool, TaskThreads):
        pool.shutdown()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
    return len(lateness), max(lateness, default=float("inf"))


def measure_hangs() -> dict[str, tuple[int, float]]:
    return {
        "ours": asyncio.run(_hang_scenario(TaskThreads(4, per_job_stuck=2, max_stuck=8))),
        "raw": asyncio.run(_hang_scenario(ThreadPoolExecutor(4))),
    }


class _Null(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


async def _log_one(n: int) -> None:
    """The task of the capture benchmark: one INFO record."""
    logging.getLogger("bench.task").info("processed %d rows", n)


def measure_capture(through_runner: bool) -> dict[str, float]:
    """CPU per run of an async task that logs one INFO record through the process log's
    text handler (to a null stream), with the per-run capture installed and not. A run is
    either the runner's ``execute()`` (in-memory history, no database) or the bare minimum:
    the run's context and an asyncio task.

    Short rounds alternate between the two so both see the same machine; the least
    disturbed round of each counts (the machine is shared: other rounds only add noise).
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(_Null())
    handler.addFilter(RunTags())
    handler.setFormatter(TextFormatter())
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    base = datetime(2025, 1, 1, tzinfo=UTC)

    async def runs(captured: bool) -> float:
        loop = asyncio.get_running_loop()
        history = History(100)
        began = time.process_time()
        for n in range(CAPTURE_RUNS):
            at = base + timedelta(seconds=n)
            run_id = f"job@{at.timestamp():.6f}#1"  # the runner's run id
            if captured:
                capture.open(run_id)
            if through_runner:
                await execute("job", at, TASK, [n], {}, RunOptions(), history, None)
            else:
                token = context.enter(context.RunContext("job", at, 1, run_id))
                try:
                    await loop.create_task(_log_one(n))
                finally:
                    context.leave(token)
            if captured and not capture.close(run_id):
                raise AssertionError("the record was not captured")
        return (time.process_time() - began) / CAPTURE_RUNS

    async def both() -> dict[str, float]:
        plain, captured = [], []
        for _ in range(CAPTURE_ROUNDS):
            plain.append(await runs(False))
            capture.install()
            try:
                captured.append(await runs(True))
            finally:
                capture.uninstall()
        return {"plain": min(plain), "captured": min(captured)}

    try:
        return asyncio.run(both())
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


async def _timer_lateness(watched: bool) -> tuple[float, float, float]:
    """p50 and p99 lateness (s) of 300 timers spread over 3 s, and CPU s per s."""
    loop = asyncio.get_running_loop()
    watch = LoopWatch(loop) if watched else None
    if watch is not None:
        watch.start()
    late: list[float] = []
    done = asyncio.Event()
    rng = random.Random(7)
    now = loop.time()
    whens = sorted(now + 0.05 + rng.random() * 3.0 for _ in range(300))

    def fire(when: float) -> None:
        late.append(loop.time() - when)
        if len(late) == len(whens):
            done.set()

    began = time.process_time()
    for when in whens:
        loop.call_at(when, fire, when)
    await done.wait()
    cpu = (time.process_time() - began) / 3.05
    if watch is not None:
        watch.stop()
    late.sort()
    return late[len(late) // 2], late[int(len(late) * 0.99)], cpu


def measure_watch() -> dict[str, tuple[float, float, float]]:
    return {"raw": asyncio.run(_timer_lateness(False)), "ours": asyncio.run(_timer_lateness(True))}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def run() -> list[dict[str, Any]]:
    threads = measure_threads()
    hangs = measure_hangs()
    in_runner = measure_capture(through_runner=True)
    bare = measure_capture(through_runner=False)
    watch = measure_watch()
    pool_note = "raw = concurrent.futures.ThreadPoolExecutor(32), the pool TaskThreads replaces"
    started, worst = hangs["ours"]
    raw_started, raw_worst = hangs["raw"]
    return [
        {
            "benchmark": f"def task threads: CPU per no-op task, burst of {BURST:,}",
            "schedctl": _us(threads["burst"]),
            "raw": _us(threads["burst_raw"]),
            "ratio": threads["burst"] / threads["burst_raw"],
            "note": pool_note,
        },
        {
            "benchmark": "def task threads: submit and wait one no-op task",
            "schedctl": _us(threads["trip"]),
            "raw": _us(threads["trip_raw"]),
            "ratio": threads["trip"] / threads["trip_raw"],
            "note": pool_note,
        },
        {
            "benchmark": "healthy def job every 0.1 s while 3 jobs hang (4 threads, 2 s)",
            "schedctl": f"{started}/20 started, worst {_ms(worst)} late",
            "raw": f"{raw_started}/20 started"
            + (f", worst {_ms(raw_worst)} late" if raw_started else ""),
            "target": f"20/20, <= {_ms(LATENESS_TARGET_S)}",
            "ok": started == 20 and worst <= LATENESS_TARGET_S,
            "note": "raw = ThreadPoolExecutor(4) with the same timeouts: hung threads are lost",
        },
        {
            "benchmark": "per-run log capture: CPU per run of a task logging 1 record",
            "schedctl": _us(in_runner["captured"]),
            "raw": _us(in_runner["plain"]),
            "ratio": in_runner["captured"] / in_runner["plain"],
            "target": f"<= {CAPTURE_TARGET}x",
            "ok": in_runner["captured"] / in_runner["plain"] <= CAPTURE_TARGET,
            "note": "a run = the runner's execute() of an async task logging 1 INFO record "
            "through the text log handler, in-memory history, no database; raw = no capture "
            f"installed; best of {CAPTURE_ROUNDS} alternating rounds",
        },
        {
            "benchmark": "per-run log capture: the same, bare run (context + asyncio task)",
            "schedctl": _us(bare["captured"]),
            "raw": _us(bare["plain"]),
            "ratio": bare["captured"] / bare["plain"],
            "note": "the least a run can cost: the capture's share is the largest here",
        },
        {
            "benchmark": "loop watch: timer lateness p50 / p99 (300 timers over 3 s)",
            "schedctl": f"{_ms(watch['ours'][0])} / {_ms(watch['ours'][1])}",
            "raw": f"{_ms(watch['raw'][0])} / {_ms(watch['raw'][1])}",
            "note": "raw = the same loop with no watch",
        },
        {
            "benchmark": "loop watch: CPU per second of an idle loop",
            "schedctl": _ms(watch["ours"][2]),
            "raw": _ms(watch["raw"][2]),
            "note": "raw = the same loop with no watch",
        },
    ]
