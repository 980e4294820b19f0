"""Validating 10,000 jobs in 100 files: cold scan, peak memory, re-validate after one edit.

Targets: a cold ``Loader().scan`` (task checking on) within 3 s, and a rescan after one file
changed within 50 ms. The raw comparison for the cold scan is plain ``yaml.safe_load`` of
the same files: the floor of any loader that reads YAML without a C extension.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import yaml

from engine.files.loader import Loader

FILES = 100
JOBS_PER_FILE = 100
RESCANS = 20
COLD_RUNS = 3
COLD_TARGET_S = 3.0
RESCAN_TARGET_S = 0.050
PACKAGE = "schedctl_bench_tasks"
FUNCTIONS = ("report", "ping", "sync", "cleanup", "export")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


def _job(file_no: int, job_no: int) -> str:
    """One job; the mix covers every trigger and most optional fields."""
    n = file_no * JOBS_PER_FILE + job_no
    lines = [f"  job-{file_no:03d}-{job_no:03d}:", f"    task: {PACKAGE}.jobs:{FUNCTIONS[n % 5]}"]
    kind = n % 4
    if kind == 0:
        lines.append(f'    cron: "{n % 60} {n % 24} * * *"')
    elif kind == 1:
        lines.append(f'    cron: "*/{n % 14 + 1} {n % 24} * * 1-5"')
    elif kind == 2:
        lines.append(f"    interval: {n % 59 + 1}m{n % 60}s")
    else:
        lines.append(f"    at: 2027-{n % 12 + 1:02d}-{n % 28 + 1:02d}T{n % 24:02d}:30:00")
    if n % 3 == 0:
        lines.append(f"    args: [{n}, part-{n % 7}, true]")
    if n % 5 == 0:
        lines.append(f"    kwargs: {{target: host-{n % 17}, limit: {n % 100}, tags: [a, b]}}")
    if n % 7 == 0:
        lines.append(f"    labels: {{team: team-{n % 9}, tier: gold}}")
    if n % 11 == 0:
        lines.append(f"    timezone: {ZONES[n % len(ZONES)]}")
    if n % 13 == 0:
        lines += ["    concurrency: allow", "    max_instances: 3"]
    if n % 17 == 0:
        lines += ["    retries: 2", "    retry_delay: 30s", "    timeout: 5m"]
    if n % 19 == 0:
        lines.append("    paused: true")
    if n % 23 == 0:
        lines.append(f"    description: Generated job number {n}.")
    return "\n".join(lines)


def _file(file_no: int, revision: int = 0) -> str:
    parts = [f"# generated schedule {file_no}, revision {revision}"]
    if file_no % 2 == 0:
        zone = ZONES[file_no % len(ZONES)]
        parts.append(f"defaults:\n  timezone: {zone}\n  timeout: 10m\n  misfire_grace: 2m")
    parts.append("jobs:")
    parts += [_job(file_no, job_no) for job_no in range(JOBS_PER_FILE)]
    return "\n".join(parts) + "\n"


def generate(root: Path) -> tuple[Path, list[Path]]:
    """Write the task package and the schedules under ``root``; return (schedules, files)."""
    package = root / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").touch()
    (package / "jobs.py").write_text(
        "".join(f"def {name}(*args, **kwargs):\n    return None\n\n\n" for name in FUNCTIONS)
    )
    schedules = root / "schedules"
    files = []
    for file_no in range(FILES):
        path = schedules / f"team-{file_no % 10}" / f"schedule-{file_no:03d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_file(file_no))
        files.append(path)
    return schedules, files


def _loader() -> Loader:
    return Loader(task_modules=(PACKAGE,), check_tasks=True)


def _timed(action: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def measure(schedules: Path, files: list[Path]) -> dict[str, Any]:
    cold = []
    for _ in range(COLD_RUNS):
        elapsed, snapshot = _timed(lambda: _loader().scan([schedules]))
        cold.append(elapsed)
    if snapshot.problems or len(snapshot.jobs) != FILES * JOBS_PER_FILE:
        raise RuntimeError(f"generated schedules are not valid: {snapshot.problems[:3]}")

    tracemalloc.start()
    _loader().scan([schedules])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    raw = []
    for _ in range(COLD_RUNS):
        elapsed, _ = _timed(lambda: [yaml.safe_load(p.read_text()) for p in files])
        raw.append(elapsed)

    loader = _loader()
    loader.scan([schedules])
    rescans, raw_one = [], []
    for revision in range(1, RESCANS + 1):
        file_no = (revision * 37) % FILES
        text = _file(file_no, revision)
        files[file_no].write_text(text)
        before = loader.parsed
        elapsed, snapshot = _timed(lambda: loader.scan([schedules]))
        if loader.parsed != before + 1 or snapshot.problems:
            raise RuntimeError("a rescan after one edit must re-parse exactly one valid file")
        rescans.append(elapsed)
        raw_one.append(_timed(lambda t=text: yaml.safe_load(t))[0])
    return {
        "cold": statistics.median(cold),
        "raw": statistics.median(raw),
        "peak": peak,
        "rescan": statistics.median(rescans),
        "raw_one": statistics.median(raw_one),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="schedctl-bench-") as tmp:
        schedules, files = generate(Path(tmp))
        sys.path.insert(0, str(Path(tmp) / "code"))
        try:
            found = measure(schedules, files)
        finally:
            sys.path.remove(str(Path(tmp) / "code"))
            for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[name]
    jobs = f"{FILES * JOBS_PER_FILE:,} jobs / {FILES} files"
    return [
        {
            "benchmark": f"validate cold scan, {jobs}",
            "schedctl": _ms(found["cold"]),
            "raw": _ms(found["raw"]),
            "ratio": found["cold"] / found["raw"],
            "target": f"<= {_ms(COLD_TARGET_S)}",
            "ok": found["cold"] <= COLD_TARGET_S,
            "note": "raw = yaml.safe_load only (no validation, no task import)",
        },
        {
            "benchmark": "validate cold scan, peak memory (tracemalloc)",
            "schedctl": f"{found['peak'] / 2**20:.1f} MiB",
        },
        {
            "benchmark": f"re-validate after 1 file changed (median of {RESCANS})",
            "schedctl": _ms(found["rescan"]),
            "raw": _ms(found["raw_one"]),
            "ratio": found["rescan"] / found["raw_one"],
            "target": f"<= {_ms(RESCAN_TARGET_S)}",
            "ok": found["rescan"] <= RESCAN_TARGET_S,
            "note": "raw = yaml.safe_load of the one changed file only",
        },
    ]
