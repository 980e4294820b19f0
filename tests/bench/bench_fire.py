"""Firing, and reads while firing, against raw APScheduler 3 in the same run.

Each measurement runs in a fresh process (``tests/bench/_fire_helpers.py``). Raw is an
``AsyncIOScheduler`` with ``MemoryJobStore`` and the same jobs; it records nothing.
schedctl records every run (claimed before it starts, then its outcome), with the
default settings of ``schedctl serve``.

1. CPU per fire and lateness: 2,000 ``interval: 1s`` jobs (phases spread over a second),
   and 2,000 ``cron: '* * * * * *'`` jobs (all due in the same second).
2. 50,000 one-shot (``at:``) runs due at one instant: seconds to the last start, async
   and sync tasks (raw: ``misfire_grace_time=60``).
3. Reads at 10k jobs (1,000 of them every second) under uvicorn, polled over TCP from
   another process: ``/jobs``, ``/jobs/{id}``, ``/status``, ``/metrics`` at 20 req/s;
   hot jobs' lateness p99 polled vs not; ``/jobs`` p50; ``/metrics`` render time after
   every job ran once.
4. Reads at 100k jobs (20 of them every second): 4 clients polling ``/jobs`` and
   ``/specs`` back to back; hot jobs' lateness p99 polled vs not; RSS per job before and
   after the reads, against raw's.

``python -m tests.bench fire`` runs this module alone (about 6 minutes);
``BENCH_FIRE_ONLY=cpu,burst,reads`` picks parts (``BENCH_ENGINE_ONLY`` likewise picks
``cold,edits,lateness,memory`` of ``bench_engine``).
"""

from __future__ import annotations

import os
from typing import Any

from tests.bench.bench_engine import _failed, _kb, _lat, _ms, _ratio
from tests.bench.bench_engine import measure as _measure

COUNT = 2_000
CPU_SECONDS = 5.0
BURST = 50_000
POLL_JOBS, POLL_HOT, POLL_RATE = 10_000, 1_000, 20
BIG_JOBS, BIG_HOT, BIG_CLIENTS = 100_000, 20, 4
READ_SECONDS = 8.0

CPU_RATIO_TARGET = 1.1
LATENESS_RATIO_TARGET = 1.2
JOBS_P50_TARGET_MS = 30.0
METRICS_TARGET_MS = 20.0
RSS_RATIO_TARGET = 1.1


def measure(name: str, *args: Any, timeout: float = 300.0) -> dict[str, Any]:
    """As ``bench_engine.measure``, for ``tests.bench._fire_helpers``."""
    return _measure(name, *args, timeout=timeout, helpers="tests.bench._fire_helpers")


def _us(value: float) -> str:
    return f"{value:.1f} us"


def _within(ours: float | None, raw: float | None, limit: float) -> bool:
    ratio = _ratio(ours, raw)
    return ratio is not None and ratio <= limit


def cpu() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind, label in (("interval", "interval jobs at 1 s"), ("cron", "'* * * * * *' cron jobs")):
        ours = measure("cpu_schedctl", kind, COUNT, CPU_SECONDS)
        raw = measure("cpu_raw", kind, COUNT, CPU_SECONDS)
        if "error" in ours or "error" in raw:
            rows += _failed(f"CPU per fire, {kind}", ours, raw)
            continue
        note = (
            f"{COUNT:,} {label} for {CPU_SECONDS:g} s; process CPU time / fires; schedctl "
            "records every run (claim, start, outcome) in SQLite"
        )
        extra = (
            f"; schedctl started {ours['fired']:,} of {ours['expected']:,} "
            f"({ours['missed']} missed, {ours['unstarted']} not started), raw {raw['fired']:,}"
        )
        split = {
            label: ours.get(f"cpu_us_per_fire:{name}")
            for name, label in (
                ("MainThread", "the event loop"),
                ("schedctl-persist", "the writer"),
                ("other", "other threads"),
            )
        }
        if all(value is not None for value in split.values()):
            extra += "; schedctl's CPU per fire by thread: " + ", ".join(
                f"{label} {_us(value)}" for label, value in split.items()
            )
        rows.append(
            {
                "benchmark": f"CPU per fire, {COUNT:,} {label}",
                "schedctl": _us(ours["cpu_us_per_fire"]),
                "raw": _us(raw["cpu_us_per_fire"]),
                "ratio": _ratio(ours["cpu_us_per_fire"], raw["cpu_us_per_fire"]),
                "target": f"<= {CPU_RATIO_TARGET:g}x raw",
                "ok": _within(ours["cpu_us_per_fire"], raw["cpu_us_per_fire"], CPU_RATIO_TARGET),
                "note": note + extra,
            }
        )
        if kind == "cron":
            rows.append(
                {
                    "benchmark": f"lateness p99, {COUNT:,} cron jobs due in the same second",
                    "schedctl": _lat(ours["p99_ms"]),
                    "raw": _lat(raw["p99_ms"]),
                    "ratio": _ratio(ours["p99_ms"], raw["p99_ms"]),
                    "target": f"<= {LATENESS_RATIO_TARGET:g}x raw",
                    "ok": _within(ours["p99_ms"], raw["p99_ms"], LATENESS_RATIO_TARGET),
                    "note": note + extra,
                }
            )
    return rows


def burst() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sync in (False, True):
        kind = "sync" if sync else "async"
        ours = measure("burst_schedctl", BURST, sync)
        raw = measure("burst_raw", BURST, sync)
        if "error" in ours or "error" in raw:
            rows += _failed(f"{BURST:,} runs due at once, {kind}", ours, raw)
            continue
        all_started = ours["started"] == BURST and raw["started"] == BURST
        rows.append(
            {
                "benchmark": f"{BURST:,} one-shot runs due at once, last start ({kind} task)",
                "schedctl": f"{_ms(ours['last_start_s'])} ({ours['started']:,} started)",
                "raw": f"{_ms(raw['last_start_s'])} ({raw['started']:,} started)",
                "ratio": _ratio(ours["last_start_s"], raw["last_start_s"]),
                "target": "all start, <= 1.0x raw",
                "ok": all_started and _within(ours["last_start_s"], raw["last_start_s"], 1.0),
                "note": f"{BURST:,} declared 'at:' jobs due at one instant; seconds from it to "
                "the last run's start (schedctl: from the history; raw: misfire_grace_time=60, "
                "measured in the job)",
            }
        )
    return rows


def _lateness_row(found: dict[str, Any], label: str, note: str) -> dict[str, Any]:
    quiet, polled = found["quiet"]["p99_ms"], found["polled"]["p99_ms"]
    return {
        "benchmark": label,
        "schedctl": f"{_lat(polled)} (not polled: {_lat(quiet)})",
        "ratio": _ratio(polled, quiet),
        "target": f"<= {LATENESS_RATIO_TARGET:g}x not polled",
        "ok": _within(polled, quiet, LATENESS_RATIO_TARGET) and not found["polled"]["unstarted"],
        "note": note,
    }


def reads() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    found = measure("polling", POLL_JOBS, POLL_HOT, READ_SECONDS, POLL_RATE)
    if "error" in found:
        rows += _failed("reads at 10k jobs", found)
    else:
        asked = ", ".join(
            f"{path} p50 {_lat(s['p50_ms'])} ({s['n']})" for path, s in found["requests"].items()
        )
        note = (
            f"{POLL_JOBS:,} jobs, {POLL_HOT:,} of them every second, under uvicorn; one client "
            f"process polls /jobs, /jobs/{{id}}, /status, /metrics in turn at {POLL_RATE} "
            f"req/s for {READ_SECONDS:g} s, after {READ_SECONDS:g} s without reads: {asked}"
        )
        jobs_p50 = found["requests"]["/jobs"]["p50_ms"]
        rows += [
            _lateness_row(
                found, f"hot jobs' lateness p99, {POLL_JOBS // 1000}k jobs polled 20 req/s", note
            ),
            {
                "benchmark": f"GET /jobs at {POLL_JOBS // 1000}k jobs (1k firing), p50",
                "schedctl": _lat(jobs_p50),
                "target": f"<= {JOBS_P50_TARGET_MS:g} ms",
                "ok": jobs_p50 <= JOBS_P50_TARGET_MS,
                "note": note,
            },
            {
                "benchmark": f"/metrics at {POLL_JOBS // 1000}k jobs that all ran, render p50",
                "schedctl": f"{_lat(found['metrics_render']['p50_ms'])} "
                f"({found['metrics_bytes'] / 1e6:.2f} MB, loop stalled at most "
                f"{_lat(found['metrics_stall_ms'])})",
                "target": f"<= {METRICS_TARGET_MS:g} ms",
                "ok": found["metrics_render"]["p50_ms"] <= METRICS_TARGET_MS,
                "note": "engine.metrics_body() after every job ran once (runtime run_job), "
                "5 renders; stall = the loop's longest gap while rendering (1 ms heartbeat)",
            },
        ]
    big = measure("big_reads", BIG_JOBS, BIG_HOT, READ_SECONDS, BIG_CLIENTS, timeout=400)
    raw = measure("cold_raw_memory", BIG_JOBS)
    if "error" in big or "error" in raw:
        return rows + _failed("reads at 100k jobs", big, raw)
    asked = ", ".join(
        f"{path} p50 {_lat(s['p50_ms'])} ({s['n']})" for path, s in big["requests"].items()
    )
    note = (
        f"{BIG_JOBS:,} jobs, {BIG_HOT} of them every second, under uvicorn; {BIG_CLIENTS} client "
        f"processes poll /jobs and /specs back to back for {READ_SECONDS:g} s, after "
        f"{READ_SECONDS:g} s without reads: {asked}"
    )
    raw_rss = raw["rss_per_job"]
    rss_note = (
        "RSS growth per job from before create_app; raw = started AsyncIOScheduler + "
        "MemoryJobStore with the same jobs"
    )
    rows.append(
        _lateness_row(
            big,
            f"a 1 s job's lateness p99, /jobs and /specs at {BIG_JOBS // 1000}k jobs polled "
            f"by {BIG_CLIENTS} clients",
            note,
        )
    )
    for key, when in (("rss_per_job_ready", "at ready"), ("rss_per_job_after", "after reads")):
        rows.append(
            {
                "benchmark": f"RSS per job, {BIG_JOBS // 1000}k jobs, {when}",
                "schedctl": _kb(big[key]),
                "raw": _kb(raw_rss),
                "ratio": _ratio(big[key], raw_rss),
                "target": f"<= {RSS_RATIO_TARGET:g}x raw",
                "ok": _within(big[key], raw_rss, RSS_RATIO_TARGET),
                "note": rss_note,
            }
        )
    return rows


def run() -> list[dict[str, Any]]:
    only = os.environ.get("BENCH_FIRE_ONLY", "")
    parts = {"cpu": cpu, "burst": burst, "reads": reads}
    rows: list[dict[str, Any]] = []
    for name, part in parts.items():
        if not only or name in only.split(","):
            rows += part()
    return rows
