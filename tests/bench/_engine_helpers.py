"""Measurements behind ``bench_engine``; each runs in a fresh process and prints JSON.

``python -m tests.bench._engine_helpers MEASUREMENT [ARG ...]`` prints one JSON object as
the last line of stdout (arguments are read as JSON where they parse, else as text).
``bench_engine.run()`` starts one process per measurement, so no measurement sees the
threads, caches, heap or garbage another one left behind.

Every measurement works in its own temporary folder: a generated task package first on
``sys.path``, generated schedule files (100 files) and a fresh SQLite database.

For profiling by hand: ``cold_schedctl 10000 false true`` adds a cProfile of the start
(event-loop thread only), ``memory_schedctl 10000`` lists the biggest allocation sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import faulthandler
import gc
import io
import json
import math
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FILES = 100
PACKAGE = "schedctl_bench_engine_tasks"
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/-]*$")

Fields = dict[str, Any]
FileJobs = list[tuple[str, Fields]]


# -- generated code and schedules -----------------------------------------------------------


def make_package(root: Path) -> None:
    """An importable task package with async and sync no-ops, first on ``sys.path``."""
    package = root / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").touch()
    (package / "jobs.py").write_text(
        "async def noop(*args, **kwargs):\n    return None\n\n\n"
        "def sync_noop(*args, **kwargs):\n    return None\n"
    )
    sys.path.insert(0, str(root / "code"))


def job_id(n: int) -> str:
    return f"job-{n:06d}"


def job_fields(n: int) -> Fields:
    """Job number ``n`` of the cold-start mix: half cron, half interval, some options."""
    fields: Fields = {"task": f"{PACKAGE}.jobs:noop"}
    if n % 2 == 0:
        if n % 4 == 0:
            fields["cron"] = f"{n % 60} {n % 24} * * *"
        else:
            fields["cron"] = f"*/{n % 14 + 1} {n % 24} * * 1-5"
    else:
        fields["interval"] = f"{n % 59 + 1}m{n % 60}s"
    if n % 3 == 0:
        fields["args"] = [n, f"part-{n % 7}", True]
    if n % 5 == 0:
        fields["kwargs"] = {"target": f"host-{n % 17}", "limit": n % 100}
    if n % 7 == 0:
        fields["labels"] = {"team": f"team-{n % 9}", "tier": "gold"}
    if n % 11 == 0:
        fields["timezone"] = ZONES[n % len(ZONES)]
    return fields


def fire_fields(count: int) -> Callable[[int], Fields]:
    """Interval jobs of 1 s whose phases (``start``) are spread evenly over one second."""

    def fields(n: int) -> Fields:
        start = EPOCH + timedelta(microseconds=round(n * 1_000_000 / count))
        return {"task": f"{PACKAGE}.jobs:noop", "interval": "1s", "start": start.isoformat()}

    return fields


def _yaml_value(value: Any) -> str:
    """Plain scalars where YAML reads them back as the same string, else JSON (also YAML)."""
    if isinstance(value, str) and _PLAIN.match(value) and value not in ("true", "false", "null"):
        return value
    return json.dumps(value)


def render_file(jobs: FileJobs, header: str = "") -> str:
    lines = [f"# {header}", "jobs:"]
    for name, fields in jobs:
        lines.append(f"  {name}:")
        lines += [f"    {key}: {_yaml_value(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def file_path(schedules: Path, file_no: int) -> Path:
    return schedules / f"team-{file_no % 10}" / f"schedule-{file_no:03d}.yaml"


def write_schedules(
    root: Path, total: int, fields: Callable[[int], Fields] = job_fields
) -> tuple[Path, list[FileJobs]]:
    """``total`` jobs in ``FILES`` files under ``root/schedules``; the folder and the files."""
    schedules = root / "schedules"
    per_file = math.ceil(total / FILES)
    files: list[FileJobs] = []
    for file_no in range(FILES):
        numbers = range(file_no * per_file, min(total, (file_no + 1) * per_file))
        jobs = [(job_id(n), fields(n)) for n in numbers]
        files.append(jobs)
        path = file_path(schedules, file_no)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_file(jobs, f"schedule {file_no}"))
    return schedules, files


# -- small tools ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _nearest_rank(values: list[float], q: float) -> float:
    """Percentile without interpolation: stays finite unless that rank itself is infinite."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class GcPauses:
    """Collector pauses (any thread) while active: count and longest per generation."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        gen2 = [d for g, d in self.pauses if g == 2]
        return {
            "gc_total_ms": sum(d for _, d in self.pauses) * 1000,
            "gc_gen2_count": len(gen2),
            "gc_gen2_max_ms": max(gen2, default=0.0) * 1000,
        }


def _profile_text(profiler: cProfile.Profile, limit: int = 40) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit // 2)
    return out.getvalue()


# -- schedctl -------------------------------------------------------------------------------


def settings(root: Path, schedules: Path, watch: bool = False) -> Any:
    from engine.settings import Settings

    return Settings(
        schedules_dir=schedules,
        database_url=f"sqlite:///{root / 'state' / 'state.db'}",
        task_modules=(PACKAGE,),
        watch=watch,
        resync_interval=3600.0,
        shutdown_grace=1.0,
    )


@contextlib.asynccontextmanager
async def running_app(the_settings: Any) -> AsyncIterator[tuple[Any, float]]:
    """``create_app(settings)`` with its lifespan entered; yields (app, seconds to ready)."""
    from engine.app import create_app

    started = time.perf_counter()
    app = create_app(the_settings)
    async with app.router.lifespan_context(app):
        if not app.state.engine.ready:
            raise RuntimeError("the lifespan started but the engine is not ready")
        yield app, time.perf_counter() - started


async def persisted(engine: Any, timeout: float = 120.0) -> float:
    """Wait until the batch writer has nothing queued; return the seconds waited.

    Reads the writer's queues (private, so looked up defensively): if they are not where
    this expects them, waits a second instead and returns NaN.
    """
    started = time.perf_counter()
    persister = getattr(engine, "persister", None)
    names = ("_jobs", "_runs", "_facts")
    lock = getattr(persister, "_lock", None)
    db_lock = getattr(getattr(persister, "db", None), "_lock", None)
    if lock is None or db_lock is None or getattr(persister, "_jobs", None) is None:
        await asyncio.sleep(1.0)
        return math.nan
    while time.perf_counter() < started + timeout:
        with lock:
            queued = any(getattr(persister, name, None) for name in names)
        if not queued:
            # What the writer took last is written once it lets go of the database lock.
            await asyncio.to_thread(db_lock.acquire)
            db_lock.release()
            return time.perf_counter() - started
        await asyncio.sleep(0.01)
    raise TimeoutError("the batch writer did not catch up")


def _exit_now(found: dict[str, Any], tmp: str) -> None:
    """Print the result and leave without the engine's orderly stop (not measured here)."""
    print(json.dumps(found, default=str), flush=True)
    sys.stderr.flush()
    shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)


def cold_schedctl(
    total: int, wait_persisted: bool = True, profile: bool = False, teardown: bool = True
) -> dict[str, Any]:
    """Seconds from ``create_app`` to ready; RSS growth at ready; then until state is saved.

    RSS is read the moment the app is ready: the scheduler has not had a loop turn yet, so
    nothing has fired, and the batch writer still sleeps its first interval.
    """
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-engine-")
    try:
        root = Path(tmp)
        make_package(root)
        schedules, _ = write_schedules(root, total)
        import engine.app  # noqa: F401 - imports are not part of the start

        the_settings = settings(root, schedules)
        gc.collect()
        rss_before = _rss()
        profiler = cProfile.Profile() if profile else None

        async def main() -> dict[str, Any]:
            from engine.app import create_app

            if profiler:
                profiler.enable()
            started = time.perf_counter()
            app = create_app(the_settings)
            lifespan = app.router.lifespan_context(app)
            await lifespan.__aenter__()
            ready = time.perf_counter() - started
            rss = _rss() - rss_before
            if profiler:
                profiler.disable()
            engine = app.state.engine
            found: dict[str, Any] = {"ready_s": ready, "jobs": len(engine.facade.catalog)}
            found["ready"] = bool(engine.ready)
            found["rss_per_job"] = rss / total
            if wait_persisted:
                found["persisted_after_ready_s"] = await persisted(engine)
            if profiler:
                found["profile"] = _profile_text(profiler)
            if not teardown:
                _exit_now(found, tmp)
            await lifespan.__aexit__(None, None, None)
            return found

        return asyncio.run(main())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _memory_report(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, total: int
) -> dict[str, Any]:
    diff = after.compare_to(before, "lineno")
    by_file: dict[str, int] = {}
    for d in diff:
        name = d.traceback[0].filename
        for marker in ("site-packages/", "/work/main/", "python3.11/"):
            name = name.split(marker, 1)[-1]
        by_file[name] = by_file.get(name, 0) + d.size_diff
    top_files = sorted(by_file.items(), key=lambda kv: -kv[1])[:15]
    return {
        "bytes_per_job": sum(d.size_diff for d in diff) / total,
        "top_lines": [
            f"{d.size_diff / total:7.0f} B/job  "
            f"{'/'.join(d.traceback[0].filename.rsplit('/', 2)[-2:])}:{d.traceback[0].lineno}"
            for d in diff[:25]
        ],
        "top_files": [f"{size / total:7.0f} B/job  {name}" for name, size in top_files],
    }


def memory_schedctl(total: int) -> dict[str, Any]:
    """tracemalloc of the loaded engine per job, with the biggest allocation sites.

    The first snapshot is taken the moment the app is ready (nothing has fired yet, the
    batch writer sleeps its first interval); a second one after every job ran once through
    the runtime API (``run_job``) and the batch writer caught up.
    """
    with tempfile.TemporaryDirectory(prefix="schedctl-bench-engine-") as tmp:
        root = Path(tmp)
        make_package(root)
        schedules, _ = write_schedules(root, total)
        import engine.app  # noqa: F401

        the_settings = settings(root, schedules)

        async def main() -> dict[str, Any]:
            gc.collect()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            async with running_app(the_settings) as (app, _):
                at_ready = tracemalloc.take_snapshot()
                engine = app.state.engine
                for n in range(total):
                    await app.state.scheduler.run_job(job_id(n))
                    if n % 200 == 0:
                        await asyncio.sleep(0.001)
                for _ in range(1200):  # up to a minute for every run to finish
                    if all(engine.history.last_finished(job_id(n)) for n in range(total)):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                await persisted(engine)
                gc.collect()
                settled = tracemalloc.take_snapshot()
                tracemalloc.stop()
                ran = sum(1 for n in range(total) if engine.history.last_finished(job_id(n)))
            found = _memory_report(before, at_ready, total)
            later = _memory_report(before, settled, total)
            found["settled_bytes_per_job"] = later["bytes_per_job"]
            found["settled_top_files"] = later["top_files"]
            found["settled_top_lines"] = later["top_lines"]
            found["jobs_run"] = ran
            return found

        return asyncio.run(main())


# -- raw APScheduler --------------------------------------------------------------------------


def raw_trigger(fields: Fields) -> Any:
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    zone = ZoneInfo(fields.get("timezone", "UTC"))
    if "cron" in fields:
        minute, hour, day, month, dow = fields["cron"].split()
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week="mon-fri" if dow == "1-5" else dow,
            timezone=zone,
        )
    minutes, _, seconds = fields["interval"].partition("m")
    # APScheduler's default phase: the first run one interval after the job is added.
    return IntervalTrigger(
        minutes=int(minutes), seconds=int(seconds.rstrip("s") or 0), timezone=zone
    )


def _sqlite_engine(path: Path) -> Any:
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    return engine


def _raw_scheduler(store: Any) -> Any:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    return AsyncIOScheduler(timezone=UTC, jobstores={"default": store})


def _raw_add_all(scheduler: Any, total: int) -> None:
    for n in range(total):
        fields = job_fields(n)
        scheduler.add_job(
            f"{PACKAGE}.jobs:noop",
            raw_trigger(fields),
            id=job_id(n),
            args=fields.get("args", ()),
            kwargs=fields.get("kwargs", {}),
            misfire_grace_time=60,
            coalesce=True,
            max_instances=1,
        )


def cold_raw(total: int, store: str) -> dict[str, Any]:
    """The same jobs as Python data: ``add_job`` each before ``start()``, then ``start()``."""
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    with tempfile.TemporaryDirectory(prefix="schedctl-bench-engine-raw-") as tmp:
        root = Path(tmp)
        make_package(root)
        gc.collect()
        rss_before = _rss()

        async def main() -> dict[str, Any]:
            started = time.perf_counter()
            if store == "sqlite":
                jobstore: Any = SQLAlchemyJobStore(engine=_sqlite_engine(root / "raw.db"))
            else:
                jobstore = MemoryJobStore()
            scheduler = _raw_scheduler(jobstore)
            _raw_add_all(scheduler, total)
            scheduler.start()
            ready = time.perf_counter() - started
            rss = _rss() - rss_before
            jobs = len(scheduler.get_jobs())
            scheduler.shutdown(wait=False)
            return {"ready_s": ready, "jobs": jobs, "rss_per_job": rss / total}

        return asyncio.run(main())


def memory_raw(total: int) -> dict[str, Any]:
    """tracemalloc of a started AsyncIOScheduler holding the same jobs in a MemoryJobStore."""
    from apscheduler.jobstores.memory import MemoryJobStore

    with tempfile.TemporaryDirectory(prefix="schedctl-bench-engine-raw-") as tmp:
        make_package(Path(tmp))

        async def main() -> dict[str, Any]:
            gc.collect()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            scheduler = _raw_scheduler(MemoryJobStore())
            _raw_add_all(scheduler, total)
            scheduler.start()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            found = _memory_report(before, after, total)
            scheduler.shutdown(wait=False)
            return found

        return asyncio.run(main())


# -- edits --------------------------------------------------------------------------------


def edits(total: int, count: int) -> dict[str, Any]:
    """Write-to-visible latency of one-job edits, watched and explicit; facade calls per edit."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="schedctl-bench-engine-") as tmp:
        root = Path(tmp)
        make_package(root)
        schedules, files = write_schedules(root, total)
        file_no, target_index = 37, 5
        target = files[file_no][target_index][0]
        path = file_path(schedules, file_no)
        revision = 0

        def edit(schedule: bool = False) -> list[int]:
            """Write the file with the target job's args (and maybe schedule) changed."""
            nonlocal revision
            revision += 1
            jobs = [(name, dict(fields)) for name, fields in files[file_no]]
            fields = jobs[target_index][1]
            fields["args"] = [revision]
            if schedule:
                fields.pop("cron", None)
                fields["interval"] = f"{revision % 50 + 1}m"
            path.write_text(render_file(jobs, f"revision {revision}"))
            return [revision]

        async def watched() -> dict[str, Any]:
            latencies = []
            async with running_app(settings(root, schedules, watch=True)) as (app, _):
                engine = app.state.engine
                await persisted(engine)
                await asyncio.sleep(0.5)  # the watcher is up
                with GcPauses() as pauses:
                    for _ in range(count + 2):
                        started = time.perf_counter()
                        want = edit()
                        while engine.job(target)["args"] != want:
                            if time.perf_counter() - started > 5:
                                raise TimeoutError("the edit never became visible")
                            await asyncio.sleep(0.001)
                        latencies.append(time.perf_counter() - started)
                        await asyncio.sleep(0.15)  # the writer and the watcher settle
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://localhost"
                ) as client:
                    answer = (await client.get(f"/jobs/{target}")).json()
                if answer.get("args") != want:
                    raise RuntimeError(f"/jobs/{target} disagrees with engine.job(): {answer}")
            return {"latencies": latencies[2:], **pauses.summary()}

        async def explicit() -> dict[str, Any]:
            latencies, scans = [], []
            async with running_app(settings(root, schedules, watch=False)) as (app, _):
                engine = app.state.engine
                await persisted(engine)
                for _ in range(count + 2):  # paced as the watched edits are
                    started = time.perf_counter()
                    want = edit()
                    await engine.reconcile()
                    latencies.append(time.perf_counter() - started)
                    if engine.job(target)["args"] != want:
                        raise RuntimeError("an explicit reconcile did not apply the edit")
                    await asyncio.sleep(0.15)
                for _ in range(count + 2):  # the scan alone: one file changed, worker thread
                    edit()
                    started = time.perf_counter()
                    await asyncio.to_thread(engine.loader.scan, [schedules])
                    scans.append(time.perf_counter() - started)
                    await engine.reconcile()
                    await asyncio.sleep(0.05)
                calls = {}
                for label, schedule in (("args", False), ("schedule", True)):
                    before = engine.facade.calls
                    edit(schedule)
                    report = await engine.reconcile()
                    calls[label] = engine.facade.calls - before
                    calls[label + "_updated"] = report["updated"] if report else None
                profiler = cProfile.Profile()
                edit()
                profiler.enable()
                await engine.reconcile()
                profiler.disable()
            return {
                "latencies": latencies[2:],
                "scans": scans[2:],
                "calls": calls,
                "profile": _profile_text(profiler, 30),
            }

        watch_found = asyncio.run(watched())
        found = asyncio.run(explicit())
        watch_latencies = watch_found.pop("latencies")
        return {
            "edits": len(watch_latencies),
            "watch_p50": percentile(watch_latencies, 50),
            "watch_p99": percentile(watch_latencies, 99),
            "explicit_p50": percentile(found["latencies"], 50),
            "explicit_p99": percentile(found["latencies"], 99),
            "scan_p50": statistics.median(found["scans"]),
            "calls": found["calls"],
            **watch_found,
            "profile": found["profile"],
        }


# -- fire lateness ---------------------------------------------------------------------------


def _lateness(late: list[float], fired: int, missed: int, expected: int) -> dict[str, Any]:
    return {
        "p50_ms": _nearest_rank(late, 50) * 1000,
        "p99_ms": _nearest_rank(late, 99) * 1000,
        "max_ms": max(late, default=math.nan) * 1000,
        "fired": fired,
        "missed": missed,
        "expected": expected,
    }


def _history_lateness(
    engine: Any, count: int, window_start: datetime, window_end: datetime
) -> tuple[list[float], int, int]:
    """Lateness of the runs scheduled in the window, from the engine's history."""
    late, fired, missed = [], 0, 0
    for n in range(count):
        for run in engine.history.runs(job_id(n)):
            if not window_start <= run.scheduled_at < window_end:
                continue
            if run.started_at is None:
                missed += 1
                continue
            fired += 1
            late.append((run.started_at - run.scheduled_at).total_seconds())
    return late, fired, missed


async def _until(when: datetime) -> None:
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


def fire_schedctl(count: int, seconds: float, backlog_wait: float = 10.0) -> dict[str, Any]:
    """``count`` declared 1 s interval jobs, phases spread over a second; history lateness.

    A loop that fell behind gets ``backlog_wait`` seconds after the window to start the
    window's runs; runs not started by then are reported as ``unstarted`` (they count as
    infinitely late in the percentiles). The engine's stop is not measured: the process
    prints its result and leaves (a writer far behind would take minutes to drain).
    """
    tmp = tempfile.mkdtemp(prefix="schedctl-bench-engine-")
    root = Path(tmp)
    make_package(root)
    schedules, _ = write_schedules(root, count, fire_fields(count))

    import dataclasses

    served = dataclasses.replace(settings(root, schedules), tune_process=True)  # as `serve`

    async def main() -> dict[str, Any]:
        async with running_app(served) as (app, _):
            engine = app.state.engine
            # A fixed window after a warm-up (first fires, first writes): a loop that
            # falls behind cannot stretch it.
            window_start = datetime.now(UTC) + timedelta(seconds=1.5)
            window_end = window_start + timedelta(seconds=seconds)
            await _until(window_start)
            cpu, wall = time.process_time(), time.perf_counter()
            with GcPauses() as pauses:
                await _until(window_end)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            expected = round(count * seconds)
            give_up = time.perf_counter() + backlog_wait
            while True:
                late, fired, missed = _history_lateness(engine, count, window_start, window_end)
                if fired + missed >= expected or time.perf_counter() > give_up:
                    break
                await asyncio.sleep(0.1)
            unstarted = max(0, expected - fired - missed)
            found = _lateness(late + [math.inf] * unstarted, fired, missed, expected)
            found["unstarted"] = unstarted
            found["backlog_wait_s"] = backlog_wait
            found["cpu_us_per_run"] = cpu / wall / count * 1e6
            _exit_now({**found, **pauses.summary()}, tmp)
            return found

    return asyncio.run(main())


def fire_raw(count: int, seconds: float) -> dict[str, Any]:
    """The same pattern on a bare AsyncIOScheduler; lateness measured in the job itself."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    late: list[float] = []
    window = [math.inf, -math.inf]

    async def probe(phase: float) -> None:
        now = time.time()
        scheduled = phase + math.floor(now - phase)  # the run this call is for
        if window[0] <= scheduled < window[1]:
            late.append(now - scheduled)

    async def main() -> dict[str, Any]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for n in range(count):
            start = EPOCH + timedelta(microseconds=round(n * 1_000_000 / count))
            scheduler.add_job(
                probe,
                IntervalTrigger(seconds=1, start_date=start, timezone=UTC),
                args=(start.timestamp(),),
                id=job_id(n),
                misfire_grace_time=60,
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        window[0] = time.time() + 1.5
        window[1] = window[0] + seconds
        await asyncio.sleep(1.5)
        cpu, wall = time.process_time(), time.perf_counter()
        with GcPauses() as pauses:
            await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await asyncio.sleep(0.3)
        scheduler.shutdown(wait=False)
        found = _lateness(late, len(late), 0, round(count * seconds))
        found["cpu_us_per_run"] = cpu / wall / count * 1e6
        return {**found, **pauses.summary()}

    return asyncio.run(main())


# -- entry point ---------------------------------------------------------------------------


MEASUREMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "cold_schedctl": cold_schedctl,
    "memory_schedctl": memory_schedctl,
    "cold_raw": cold_raw,
    "memory_raw": memory_raw,
    "edits": edits,
    "fire_schedctl": fire_schedctl,
    "fire_raw": fire_raw,
}


def _arg(text: str) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


def main(argv: list[str], measurements: dict[str, Callable[..., Any]] | None = None) -> int:
    """Run measurement ``argv[0]`` (of ``measurements``, default this module's) with the
    JSON arguments after it; print its JSON result."""
    name, *args = argv
    # A hang shows every thread's stack on stderr, and the process ends.
    faulthandler.dump_traceback_later(float(os.environ.get("BENCH_HANG_S", "600")), exit=True)
    found = (measurements or MEASUREMENTS)[name](*(_arg(a) for a in args))
    print(json.dumps(found, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
