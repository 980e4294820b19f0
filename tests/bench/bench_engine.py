"""The engine against raw APScheduler 3: cold start, edits, scheduler calls, lateness, memory.

Each measurement runs in a fresh process (``tests/bench/_engine_helpers.py``), one after
the other, so numbers are not polluted by another measurement's threads, heap or garbage.

1. Cold start of 10k and 100k declared jobs (100 files, half cron, half interval) from
   ``create_app(settings)`` to ``engine.ready`` on a fresh SQLite database; raw is an
   ``AsyncIOScheduler`` given the same jobs as Python data (no YAML) with
   ``SQLAlchemyJobStore`` on SQLite in WAL mode, or with ``MemoryJobStore``.
2. One job's ``args`` edited in one file with 10k jobs loaded: write to visible in
   ``engine.job(id)`` (polled every 1 ms), with the real watcher and with an explicit
   ``await engine.reconcile()``.
3. ``engine.facade.calls`` (job-store mutations) for a one-job edit: args, then schedule.
4. Fire lateness at 1k and 10k fires/s: N declared interval jobs of 1 s whose ``start``
   phases are spread evenly over one second, async no-op task, the engine tuned as
   ``schedctl serve`` tunes it; ``started_at - scheduled_at`` from
   ``engine.state.history``. Raw: the same jobs on a bare AsyncIOScheduler (MemoryJobStore),
   lateness measured inside the job.
5. Memory per declared job at ready: tracemalloc at 10k, RSS growth at 100k.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMALL, LARGE = 10_000, 100_000
RAW_SQLITE_SAMPLE = 20_000  # raw SQLAlchemyJobStore at 100k takes minutes: extrapolated
COLD_RUNS = 3
EDITS = 30
FIRE_SECONDS = 3.0
RATES = (1_000, 10_000)

COLD_SMALL_TARGET_S = 2.0
COLD_LARGE_TARGET_S = 8.0
EDIT_P50_TARGET_S = 0.100
EDIT_P99_TARGET_S = 0.250
LATENESS_P99_TARGET_MS = 2.0
MEMORY_TARGET_B = 3 * 1024


def measure(
    name: str, *args: Any, timeout: float = 300.0, helpers: str = "tests.bench._engine_helpers"
) -> dict[str, Any]:
    """Run one measurement of module ``helpers`` in a fresh interpreter; its JSON result
    (or an ``error``)."""
    command = [sys.executable, "-m", helpers, name]
    command += [json.dumps(a) for a in args]
    label = " ".join(command[3:])
    print(f"  {label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    env = {**os.environ, "BENCH_HANG_S": str(timeout - 15)}  # stacks on stderr, then exit
    # Its temporary files go under a folder removed here, even if it dies or hangs.
    with tempfile.TemporaryDirectory(prefix="schedctl-bench-engine-") as scratch:
        env["TMPDIR"] = scratch
        try:
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"error": f"{label}: no answer within {timeout:.0f} s"}
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        print(tail, file=sys.stderr, flush=True)
        return {"error": f"{label}: exit code {done.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _lat(ms: float) -> str:
    if math.isnan(ms):
        return "n/a"
    if math.isinf(ms):
        return "not started (see note)"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _kb(size: float) -> str:
    return f"{size / 1024:.2f} KB"


def _ratio(ours: float | None, raw: float | None) -> float | None:
    if ours is None or raw is None or not raw or not math.isfinite(ours + raw):
        return None
    return ours / raw


def _failed(name: str, *found: dict[str, Any]) -> list[dict[str, Any]]:
    errors = "; ".join(f["error"] for f in found if "error" in f)
    return [{"benchmark": f"{name}: failed to run", "schedctl": errors, "ok": False}]


def cold_start() -> list[dict[str, Any]]:
    small_runs = [
        measure("cold_schedctl", SMALL, run == 0, False, True) for run in range(COLD_RUNS)
    ]
    large = measure("cold_schedctl", LARGE, False, False, False, timeout=400)
    raw_sqlite = measure("cold_raw", SMALL, "sqlite")
    raw_sample = measure("cold_raw", RAW_SQLITE_SAMPLE, "sqlite")
    raw_memory_small = measure("cold_raw", SMALL, "memory")
    raw_memory_large = measure("cold_raw", LARGE, "memory")
    rows: list[dict[str, Any]] = []
    if any("error" in r or r["jobs"] != SMALL for r in small_runs):
        rows += _failed("cold start 10k", *small_runs)
    else:
        ready = statistics.median(r["ready_s"] for r in small_runs)
        raw = raw_sqlite.get("ready_s")
        raw_mem = raw_memory_small.get("ready_s")
        rows += [
            {
                "benchmark": f"cold start to ready, {SMALL:,} jobs (median of {COLD_RUNS})",
                "schedctl": _ms(ready),
                "raw": _ms(raw) if raw else "failed",
                "ratio": _ratio(ready, raw),
                "target": f"<= {_ms(COLD_SMALL_TARGET_S)}",
                "ok": ready <= COLD_SMALL_TARGET_S,
                "note": "raw = AsyncIOScheduler + SQLAlchemyJobStore (SQLite, WAL), the same "
                "jobs as Python data (no YAML), add_job before start(), then start()",
            },
            {
                "benchmark": f"cold start to ready, {SMALL:,} jobs, vs MemoryJobStore",
                "schedctl": _ms(ready),
                "raw": _ms(raw_mem) if raw_mem else "failed",
                "ratio": _ratio(ready, raw_mem),
                "note": "raw = AsyncIOScheduler + MemoryJobStore, same jobs as Python data",
            },
            {
                "benchmark": f"state saved after ready, {SMALL:,} jobs",
                "schedctl": _ms(small_runs[0]["persisted_after_ready_s"]),
                "note": "from ready until the batch writer has nothing queued: the first write "
                "of every job row, off the event loop",
            },
        ]
    if "error" in large or large["jobs"] != LARGE:
        rows += _failed("cold start 100k", large)
    else:
        sample = raw_sample.get("ready_s")
        raw = sample * LARGE / RAW_SQLITE_SAMPLE if sample else None
        raw_mem = raw_memory_large.get("ready_s")
        rows += [
            {
                "benchmark": f"cold start to ready, {LARGE:,} jobs",
                "schedctl": _ms(large["ready_s"]),
                "raw": f"{_ms(raw)} (extrapolated from {RAW_SQLITE_SAMPLE // 1000}k)"
                if raw
                else "failed",
                "ratio": _ratio(large["ready_s"], raw),
                "target": f"<= {_ms(COLD_LARGE_TARGET_S)}",
                "ok": large["ready_s"] <= COLD_LARGE_TARGET_S,
                "note": "raw = AsyncIOScheduler + SQLAlchemyJobStore (SQLite, WAL), the same "
                "jobs as Python data (no YAML), add_job before start(), then start()",
            },
            {
                "benchmark": f"cold start to ready, {LARGE:,} jobs, vs MemoryJobStore",
                "schedctl": _ms(large["ready_s"]),
                "raw": _ms(raw_mem) if raw_mem else "failed",
                "ratio": _ratio(large["ready_s"], raw_mem),
                "note": "raw = AsyncIOScheduler + MemoryJobStore, same jobs as Python data",
            },
        ]
        raw_rss = raw_memory_large.get("rss_per_job")
        rows.append(
            {
                "benchmark": f"memory per job at ready, {LARGE:,} jobs (RSS growth)",
                "schedctl": _kb(large["rss_per_job"]),
                "raw": _kb(raw_rss) if raw_rss else "failed",
                "ratio": _ratio(large["rss_per_job"], raw_rss),
                "target": f"<= {_kb(MEMORY_TARGET_B)}",
                "ok": large["rss_per_job"] <= MEMORY_TARGET_B,
                "note": "RSS growth from before create_app to ready, in the cold-start process; "
                "raw = started AsyncIOScheduler + MemoryJobStore with the same jobs",
            }
        )
    return rows


def edits() -> list[dict[str, Any]]:
    found = measure("edits", SMALL, EDITS)
    if "error" in found:
        return _failed("edit to visible", found)
    calls = found["calls"]
    note = (
        f"{found['edits']} edits of one job's args in one file, {SMALL:,} jobs loaded; "
        "visible = engine.job(id) polled every 1 ms (checked once through GET /jobs/{id}); "
        f"scan alone (one file changed, worker thread) p50 {_ms(found['scan_p50'])}; "
        f"gen-2 GC pauses during the watched edits: {found['gc_gen2_count']}, "
        f"longest {found['gc_gen2_max_ms']:.0f} ms"
    )
    return [
        {
            "benchmark": "edit to visible, watched, p50",
            "schedctl": _ms(found["watch_p50"]),
            "target": f"<= {_ms(EDIT_P50_TARGET_S)}",
            "ok": found["watch_p50"] <= EDIT_P50_TARGET_S,
            "note": note,
        },
        {
            "benchmark": "edit to visible, watched, p99",
            "schedctl": _ms(found["watch_p99"]),
            "target": f"<= {_ms(EDIT_P99_TARGET_S)}",
            "ok": found["watch_p99"] <= EDIT_P99_TARGET_S,
            "note": note,
        },
        {
            "benchmark": "edit to visible, explicit reconcile(), p50",
            "schedctl": _ms(found["explicit_p50"]),
            "note": note,
        },
        {
            "benchmark": "edit to visible, explicit reconcile(), p99",
            "schedctl": _ms(found["explicit_p99"]),
            "note": note,
        },
        {
            "benchmark": "scheduler calls for a one-job args edit",
            "schedctl": calls["args"],
            "target": "1",
            "ok": calls["args"] == 1 and calls["args_updated"] == 1,
        },
        {
            "benchmark": "scheduler calls for a one-job schedule edit",
            "schedctl": calls["schedule"],
            "target": "1",
            "ok": calls["schedule"] == 1 and calls["schedule_updated"] == 1,
        },
    ]


def lateness() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for rate in RATES:
        ours = measure("fire_schedctl", rate, FIRE_SECONDS)
        raw = measure("fire_raw", rate, FIRE_SECONDS)
        if "error" in ours or "error" in raw:
            rows += _failed(f"fire lateness {rate:,}/s", ours, raw)
            continue
        unstarted = (
            f", {ours['unstarted']:,} not started {ours['backlog_wait_s']:g} s after the window"
            if ours["unstarted"]
            else ""
        )
        longest = f"max {_lat(ours['max_ms'])}, " if math.isfinite(ours["max_ms"]) else ""
        note = (
            f"{rate:,}/s for {FIRE_SECONDS:g} s: schedctl started {ours['fired']:,} of "
            f"{ours['expected']:,} runs ({ours['missed']} missed{unstarted}), {longest}"
            f"{ours['cpu_us_per_run']:.0f} us CPU per run, gen-2 GC pauses "
            f"{ours['gc_gen2_count']} (longest {ours['gc_gen2_max_ms']:.0f} ms); raw started "
            f"{raw['fired']:,}, max {_lat(raw['max_ms'])}, {raw['cpu_us_per_run']:.0f} us CPU "
            "per run"
        )
        for q in ("p50", "p99"):
            row: dict[str, Any] = {
                "benchmark": f"fire lateness {q}, {rate:,} fires/s, history recorded",
                "schedctl": _lat(ours[f"{q}_ms"]),
                "raw": _lat(raw[f"{q}_ms"]),
                "ratio": _ratio(ours[f"{q}_ms"], raw[f"{q}_ms"]),
                "note": note,
            }
            if q == "p99":
                row["target"] = f"<= {LATENESS_P99_TARGET_MS:g} ms"
                row["ok"] = ours["p99_ms"] <= LATENESS_P99_TARGET_MS
            rows.append(row)
    return rows


def memory() -> list[dict[str, Any]]:
    ours = measure("memory_schedctl", SMALL)
    raw = measure("memory_raw", SMALL)
    if "error" in ours or "error" in raw:
        return _failed("memory per job", ours, raw)
    return [
        {
            "benchmark": f"memory per job at ready, {SMALL:,} jobs (tracemalloc)",
            "schedctl": _kb(ours["bytes_per_job"]),
            "raw": _kb(raw["bytes_per_job"]),
            "ratio": _ratio(ours["bytes_per_job"], raw["bytes_per_job"]),
            "target": f"<= {_kb(MEMORY_TARGET_B)}",
            "ok": ours["bytes_per_job"] <= MEMORY_TARGET_B,
            "note": "Python allocations live at ready (before any run), per declared job; raw "
            "= started AsyncIOScheduler + MemoryJobStore with the same jobs",
        },
        {
            "benchmark": f"memory per job after each ran once, {SMALL:,} jobs (tracemalloc)",
            "schedctl": _kb(ours["settled_bytes_per_job"]),
            "target": f"<= {_kb(MEMORY_TARGET_B)}",
            "ok": ours["settled_bytes_per_job"] <= MEMORY_TARGET_B,
            "note": f"after {ours['jobs_run']:,} jobs each ran once (runtime API run_job) and "
            "the batch writer caught up: per-job run history and metrics included",
        },
    ]


def run() -> list[dict[str, Any]]:
    """Every part, or those named in ``BENCH_ENGINE_ONLY`` (e.g. ``lateness,memory``)."""
    parts = {"cold": cold_start, "edits": edits, "lateness": lateness, "memory": memory}
    only = [name for name in os.environ.get("BENCH_ENGINE_ONLY", "").split(",") if name]
    rows: list[dict[str, Any]] = []
    for name, part in parts.items():
        if not only or name in only:
            rows += part()
    return rows
