"""Measurements behind ``bench_fire``; each runs in a fresh process and prints JSON.

``python -m tests.bench._fire_helpers MEASUREMENT [ARG ...]``, as
``tests.bench._engine_helpers`` (whose generated task package, schedule files and
settings these reuse). Raw APScheduler is always ``AsyncIOScheduler`` + ``MemoryJobStore``
with the same jobs, its lateness measured inside the job.

The reads are served by a real uvicorn server on the engine's own event loop (as
``schedctl serve`` does) and polled over TCP by client processes of their own, so a
client's work is not charged to the loop being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.bench._engine_helpers import (
    EPOCH,
    PACKAGE,
    Fields,
    GcPauses,
    _exit_now,
    _lateness,
    _rss,
    cold_raw,
    fire_fields,
    job_fields,
    job_id,
    main,
    make_package,
    percentile,
    running_app,
    write_schedules,
)
from tests.bench._engine_helpers import settings as _untuned


def settings(root: Path, schedules: Path) -> Any:
    """The engine as ``schedctl serve`` runs it: with its process tuning (GC, switch
    interval), which an embedded engine does not get."""
    import dataclasses

    return dataclasses.replace(_untuned(root, schedules), tune_process=True)


EVERY_SECOND = "* * * * * *"


def cron_fields(n: int) -> Fields:
    return {"task": f"{PACKAGE}.jobs:noop", "cron": EVERY_SECOND}


def hot_and_cold(hot: int) -> Callable[[int], Fields]:
    """The first ``hot`` jobs fire every second (phases spread), the rest are the usual mix."""
    spread = fire_fields(hot)
    return lambda n: spread(n) if n < hot else job_fields(n)


def _window_lateness(
    engine: Any, ids: list[str], start: datetime, end: datetime
) -> tuple[list[float], int]:
    late, missed = [], 0
    for name in ids:
        for run in engine.history.runs(name):
            if not start <= run.scheduled_at < end:
                continue
            if run.started_at is None:
                missed += 1
            else:
                late.append((run.started_at - run.scheduled_at).total_seconds())
    return late, missed


async def _until(when: datetime) -> None:
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


async def _collect(
    engine: Any, ids: list[str], start: datetime, end: datetime, wait: float = 10.0
) -> dict[str, Any]:
    """Lateness of the runs scheduled in [start, end), once all started (or ``wait`` s)."""
    expected = round(len(ids) * (end - start).total_seconds())
    give_up = time.perf_counter() + wait
    while True:
        late, missed = _window_lateness(engine, ids, start, end)
        if len(late) + missed >= expected or time.perf_counter() > give_up:
            break
        await asyncio.sleep(0.1)
    unstarted = max(0, expected - len(late) - missed)
    found = _lateness(late + [math.inf] * unstarted, len(late), missed, expected)
    found["unstarted"] = unstarted
    return found


# -- CPU per fire and lateness ---------------------------------------------------------------


def cpu_schedctl(kind: str, count: int, seconds: float) -> dict[str, Any]:
    """``count`` declared jobs firing every second (``interval: 1s`` with spread phases, or
    ``cron: '* * * * * *'``, all due in the same second): CPU per fire, lateness."""
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-fire-")
    root = Path(tmp)
    make_package(root)
    fields = cron_fields if kind == "cron" else fire_fields(count)
    schedules, _ = write_schedules(root, count, fields)

    async def main() -> dict[str, Any]:
        async with running_app(settings(root, schedules)) as (app, _):
            engine = app.state.engine
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
            end = start + timedelta(seconds=seconds)
            await _until(start - timedelta(milliseconds=500))
            cpu, wall, threads = time.process_time(), time.perf_counter(), _thread_cpu()
            with GcPauses() as pauses:
                await _until(end - timedelta(milliseconds=500))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            threads = _thread_cpu(threads)
            found = await _collect(engine, [job_id(n) for n in range(count)], start, end)
            found["cpu_us_per_fire"] = cpu / wall / count * 1e6
            for name, used in threads.items():  # where the CPU went
                found[f"cpu_us_per_fire:{name}"] = used / wall / count * 1e6
            _exit_now({**found, **pauses.summary()}, tmp)
            return found

    return asyncio.run(main())


def _thread_cpu(since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds used by the event loop's thread (``MainThread``), the writer
    (``schedctl-persist``) and all other threads (``other``), minus ``since``; empty where
    threads have no CPU clocks of their own."""
    import threading

    used: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(thread.ident or 0)
            seconds = time.clock_gettime(clock)
        except (AttributeError, OSError):
            return {}
        name = thread.name if thread.name in ("MainThread", "schedctl-persist") else "other"
        used[name] = used.get(name, 0.0) + seconds
    return {name: value - (since or {}).get(name, 0.0) for name, value in used.items()}


def idle_schedctl(count: int, seconds: float) -> dict[str, Any]:
    """``count`` declared jobs none of which is due (once a year): the engine's own CPU
    while nothing fires (heartbeat, lease, writer, command poll), in ms per second."""
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-fire-")
    root = Path(tmp)
    make_package(root)
    task = f"{PACKAGE}.jobs:noop"
    schedules, _ = write_schedules(root, count, lambda n: {"task": task, "cron": "0 3 1 1 *"})

    async def main() -> dict[str, Any]:
        async with running_app(settings(root, schedules)):
            await asyncio.sleep(3.0)  # past the start-up's own work (first flush, first trim)
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            found = {"cpu_ms_per_s": cpu / wall * 1e3}
            _exit_now(found, tmp)
            return found

    return asyncio.run(main())


def cpu_raw(kind: str, count: int, seconds: float) -> dict[str, Any]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    late: list[float] = []
    window = [math.inf, -math.inf]

    async def probe(phase: float) -> None:
        now = time.time()
        scheduled = phase + math.floor(now - phase)
        if window[0] <= scheduled < window[1]:
            late.append(now - scheduled)

    async def main() -> dict[str, Any]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for n in range(count):
            if kind == "cron":
                phase = 0.0
                trigger: Any = CronTrigger(second="*", timezone=UTC)
            else:
                start = EPOCH + timedelta(microseconds=round(n * 1_000_000 / count))
                phase = start.timestamp()
                trigger = IntervalTrigger(seconds=1, start_date=start, timezone=UTC)
            scheduler.add_job(
                probe,
                trigger,
                args=(phase,),
                id=job_id(n),
                misfire_grace_time=60,
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        start = math.floor(time.time()) + 3
        window[:] = [start, start + seconds]
        await asyncio.sleep(start - 0.5 - time.time())
        cpu, wall = time.process_time(), time.perf_counter()
        with GcPauses() as pauses:
            await asyncio.sleep(window[1] - 0.5 - time.time())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await asyncio.sleep(0.8)
        scheduler.shutdown(wait=False)
        found = _lateness(late, len(late), 0, round(count * seconds))
        found["cpu_us_per_fire"] = cpu / wall / count * 1e6
        return {**found, **pauses.summary()}

    return asyncio.run(main())


# -- many one-shot runs due at once -------------------------------------------------------


def burst_schedctl(count: int, sync: bool, lead: float = 60.0) -> dict[str, Any]:
    """``count`` declared ``at:`` jobs all due at one instant ``lead`` s after the files are
    written: seconds from that instant to the last start (from the history)."""
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-fire-")
    root = Path(tmp)
    make_package(root)
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
    task = f"{PACKAGE}.jobs:{'sync_noop' if sync else 'noop'}"
    schedules, _ = write_schedules(root, count, lambda n: {"task": task, "at": due.isoformat()})

    async def main() -> dict[str, Any]:
        async with running_app(settings(root, schedules)) as (app, ready):
            engine = app.state.engine
            if datetime.now(UTC) >= due:
                raise RuntimeError(f"not ready before the runs were due ({ready:.1f} s)")
            await _until(due)
            ids = [job_id(n) for n in range(count)]
            # Counted from the lateness histogram (one observation per first start): the
            # 50,000 histories are read once at the end, not on the engine's loop 4 times
            # a second while it starts the runs. Gives up after 90 s.
            for _ in range(1800):
                if _first_starts(engine) >= count:
                    break
                await asyncio.sleep(0.05)
            starts = [
                run.started_at
                for name in ids
                for run in engine.history.runs(name)
                if run.started_at is not None
            ]
            found = {
                "started": len(starts),
                "last_start_s": (max(starts) - due).total_seconds() if starts else math.nan,
                "ready_s": ready,
            }
            _exit_now(found, tmp)
            return found

    return asyncio.run(main())


def _first_starts(engine: Any) -> float:
    """How many runs have started (first attempts), from ``/metrics``' lateness count."""
    for metric in engine.metrics.lateness.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def burst_raw(count: int, sync: bool, lead: float = 6.0) -> dict[str, Any]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.date import DateTrigger

    starts: list[float] = []

    async def probe() -> None:
        starts.append(time.time())

    def sync_probe() -> None:
        starts.append(time.time())

    async def main() -> dict[str, Any]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
        for n in range(count):
            scheduler.add_job(
                sync_probe if sync else probe,
                DateTrigger(due, timezone=UTC),
                id=job_id(n),
                misfire_grace_time=60,
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        await _until(due)
        give_up = time.perf_counter() + 90
        while len(starts) < count and time.perf_counter() < give_up:  # noqa: ASYNC110 - polled with a deadline
            await asyncio.sleep(0.05)
        scheduler.shutdown(wait=False)
        return {
            "started": len(starts),
            "last_start_s": max(starts) - due.timestamp() if starts else math.nan,
        }

    return asyncio.run(main())


# -- reads while firing ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(the_settings: Any) -> Any:
    """The app under uvicorn on this loop, as ``schedctl serve``; yields (app, port)."""
    import uvicorn

    from engine.app import create_app

    app = create_app(the_settings)
    # IPPROTO_TCP named, as uvicorn's own bind does: asyncio sets TCP_NODELAY only on
    # sockets that say so, and without it every small answer waited 40 ms for Nagle and
    # the client's delayed ACK (all of /status's 43 ms p50 here; 0.7 ms under serve).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped")
            await asyncio.sleep(0.05)
        yield app, port
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        sock.close()


def _clients(port: int, paths: list[str], rate: float, seconds: float, n: int) -> list[Any]:
    command = [sys.executable, "-m", "tests.bench._fire_helpers", "poll_client"]
    args = [str(port), json.dumps(paths), str(rate), str(seconds)]
    return [
        subprocess.Popen([*command, *args], stdout=subprocess.PIPE, text=True) for _ in range(n)
    ]


async def _client_results(procs: list[Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for proc in procs:
        stdout, _ = await asyncio.to_thread(proc.communicate)
        for path, times in json.loads(stdout.strip().splitlines()[-1]).items():
            out.setdefault(path, []).extend(times)
    return out


def poll_client(port: int, paths: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """GET ``paths`` in turn, ``rate`` requests a second (0: back to back), for ``seconds``;
    each answer's seconds by path."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times: dict[str, list[float]] = {p: [] for p in paths}
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        path = paths[n % len(paths)]
        started = time.perf_counter()
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status}")
        times[path].append(time.perf_counter() - started)
        n += 1
        if rate:
            time.sleep(max(0.0, started + 1 / rate - time.perf_counter()))
    return times


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(values, 50) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "n": len(values),
    }


def polling(total: int, hot: int, seconds: float, rate: float) -> dict[str, Any]:
    """``total`` jobs, the first ``hot`` firing every second: the hot jobs' lateness in a
    window without reads, then in one with ``/jobs``, ``/jobs/{id}``, ``/status`` and
    ``/metrics`` polled ``rate`` requests a second in all. Then every job runs once and
    ``/metrics`` is rendered (off the loop): its time and the loop's longest stall."""
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-fire-")
    root = Path(tmp)
    make_package(root)
    schedules, _ = write_schedules(root, total, hot_and_cold(hot))
    ids = [job_id(n) for n in range(hot)]

    async def main() -> dict[str, Any]:
        async with served(settings(root, schedules)) as (app, port):
            engine = app.state.engine
            found: dict[str, Any] = {}
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            quiet_end = start + timedelta(seconds=seconds)
            polled_end = quiet_end + timedelta(seconds=seconds)
            await _until(quiet_end - timedelta(milliseconds=300))
            paths = ["/jobs", f"/jobs/{job_id(total - 1)}", "/status", "/metrics"]
            procs = _clients(port, paths, rate, seconds + 0.6, 1)
            await _until(polled_end)
            answers = await _client_results(procs)
            found["quiet"] = await _collect(engine, ids, start, quiet_end)
            found["polled"] = await _collect(engine, ids, quiet_end, polled_end)
            found["requests"] = {path: _stats(t) for path, t in answers.items()}
            # /metrics after every job ran once.
            for n in range(total):
                await app.state.scheduler.run_job(job_id(n))
                if n % 200 == 0:
                    await asyncio.sleep(0.001)
            give_up = time.perf_counter() + 60
            while time.perf_counter() < give_up:
                if all(engine.history.last_finished(job_id(n)) for n in range(hot, total)):
                    break
                await asyncio.sleep(0.1)
            renders, stalls = [], []
            for _ in range(5):
                stall = [0.0]
                beat = asyncio.create_task(_heartbeat(stall))
                await asyncio.sleep(0.01)  # the heartbeat ticks
                started = time.perf_counter()
                body = await engine.metrics_body()
                renders.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)  # a render on the loop shows as one long gap
                beat.cancel()
                stalls.append(stall[0])
                await asyncio.sleep(0.2)
            found["metrics_render"] = _stats(renders)
            found["metrics_stall_ms"] = max(stalls) * 1000
            # A large body comes as the pieces the server sends one after the other.
            found["metrics_bytes"] = len(body) if isinstance(body, bytes) else sum(map(len, body))
            _exit_now(found, tmp)
            return found

    return asyncio.run(main())


async def _heartbeat(stall: list[float], every: float = 0.001) -> None:
    """The loop's longest gap past ``every`` while running."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        now = time.perf_counter()
        stall[0] = max(stall[0], now - last - every)
        last = now


def big_reads(total: int, hot: int, seconds: float, clients: int) -> dict[str, Any]:
    """``total`` jobs, ``hot`` of them every second: RSS per job at ready and after reads;
    the hot jobs' lateness without reads, then with ``clients`` clients polling ``/jobs``
    and ``/specs`` back to back."""
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-fire-")
    root = Path(tmp)
    make_package(root)
    schedules, _ = write_schedules(root, total, hot_and_cold(hot))
    ids = [job_id(n) for n in range(hot)]
    import engine.app  # noqa: F401
    from engine.core.memory import GAP_S

    gc.collect()
    rss_before = _rss()

    async def main() -> dict[str, Any]:
        async with served(settings(root, schedules)) as (app, port):
            engine = app.state.engine
            found: dict[str, Any] = {"rss_per_job_ready": (_rss() - rss_before) / total}
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            quiet_end = start + timedelta(seconds=seconds)
            polled_end = quiet_end + timedelta(seconds=seconds)
            await _until(quiet_end - timedelta(milliseconds=300))
            procs = _clients(port, ["/jobs", "/specs"], 0, seconds + 0.6, clients)
            await _until(polled_end)
            answers = await _client_results(procs)
            found["quiet"] = await _collect(engine, ids, start, quiet_end)
            found["polled"] = await _collect(engine, ids, quiet_end, polled_end, 30)
            found["requests"] = {path: _stats(t) for path, t in answers.items()}
            # As a dashboard would see it: after the engine gave back what the last
            # answers freed (within memory.GAP_S of them, under `serve`).
            await asyncio.sleep(GAP_S + 1.0)
            gc.collect()
            found["rss_per_job_after"] = (_rss() - rss_before) / total
            _exit_now(found, tmp)
            return found

    return asyncio.run(main())


# -- entry point ---------------------------------------------------------------------------


MEASUREMENTS: dict[str, Callable[..., Any]] = {
    "cpu_schedctl": cpu_schedctl,
    "cpu_raw": cpu_raw,
    "idle_schedctl": idle_schedctl,
    "burst_schedctl": burst_schedctl,
    "burst_raw": burst_raw,
    "polling": polling,
    "big_reads": big_reads,
    "poll_client": poll_client,
    "cold_raw_memory": lambda total: cold_raw(total, "memory"),
}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], MEASUREMENTS))
