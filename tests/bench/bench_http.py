"""Conditional reads: ``/status``, ``/jobs`` and ``/jobs/{id}`` with ``If-None-Match`` at
10,000 jobs, answered ``304 Not Modified`` (issue 8).

``python -m tests.bench http``. The engine runs under uvicorn on its own loop, as
``schedctl serve`` does, in a fresh process; one client process asks each path once for
its ``ETag``, then ``ROUNDS`` times with ``If-None-Match`` over one keep-alive connection.
The full ``200`` answer's p50 is shown beside it for scale.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench._engine_helpers import main
from tests.bench.bench_engine import _failed
from tests.bench.bench_engine import measure as _measure

JOBS = int(os.environ.get("BENCH_HTTP_JOBS", "10000"))
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "300"))
TARGET_MS = 1.0


def _client(port: int, paths: list[str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    found: dict[str, Any] = {}
    for path in paths:
        full, conditional = [], []
        etag = None
        for _ in range(20):
            started = time.perf_counter()
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            full.append(time.perf_counter() - started)
            etag = answer.getheader("ETag")
        if etag is None:
            raise RuntimeError(f"GET {path}: no ETag")
        statuses = set()
        for _ in range(ROUNDS):
            started = time.perf_counter()
            conn.request("GET", path, headers={"If-None-Match": etag})
            answer = conn.getresponse()
            answer.read()
            conditional.append(time.perf_counter() - started)
            statuses.add(answer.status)
        found[path] = {
            "full_ms": sorted(full)[len(full) // 2] * 1000,
            "p50_ms": sorted(conditional)[len(conditional) // 2] * 1000,
            "statuses": sorted(statuses),
        }
    return found


def measure() -> dict[str, Any]:
    """In a fresh process: serve ``JOBS`` jobs (the bench's usual mix, none due soon) and
    run the client in another process."""
    from tests.bench._engine_helpers import _exit_now, job_id, make_package, write_schedules
    from tests.bench._fire_helpers import served, settings

    root = Path(tempfile.mkdtemp(prefix="schedctl-bench-http-"))
    make_package(root)
    schedules, _ = write_schedules(root, JOBS)

    async def main() -> dict[str, Any]:
        async with served(settings(root, schedules)) as (_, port):
            paths = ["/status", "/jobs", f"/jobs/{job_id(JOBS - 1)}"]
            command = [sys.executable, "-m", "tests.bench.bench_http", "client"]
            proc = await asyncio.create_subprocess_exec(
                *command, str(port), json.dumps(paths), stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            found = dict(json.loads(out.strip().splitlines()[-1]))
            _exit_now(found, str(root))
            return found

    return asyncio.run(main())


def run() -> list[dict[str, Any]]:
    found = _measure("conditional", timeout=600, helpers="tests.bench.bench_http")
    if "error" in found:
        return _failed("conditional GET", found)
    note = (
        f"{JOBS:,} jobs under uvicorn, one keep-alive client process; {ROUNDS} requests "
        "with If-None-Match after the ETag was read; 200 = the full answer's p50"
    )
    rows = []
    for path, figures in found.items():
        shown = "/jobs/{id}" if path.startswith("/jobs/") else path
        ok = figures["statuses"] == [304] and figures["p50_ms"] <= TARGET_MS
        rows.append(
            {
                "benchmark": f"GET {shown} with If-None-Match at {JOBS // 1000}k jobs: 304 p50",
                "schedctl": f"{figures['p50_ms']:.2f} ms (200: {figures['full_ms']:.1f} ms)",
                "target": f"<= {TARGET_MS:g} ms",
                "ok": ok,
                "note": note,
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], {"conditional": measure, "client": _client}))
