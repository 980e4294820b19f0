"""Every run is recorded: failures, timeouts, retries, skips, one-shots (contract 2 and 5)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServeFactory, Server, wait_for, write
from tests.harness import RUN_FIELDS as RUN_KEYS

pytestmark = pytest.mark.e2e


def _ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"timestamp without offset: {value}"
    return parsed


def _runs(server: Server, job_id: str, status: str | None = None) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = server.job(job_id)["runs"]
    return [r for r in runs if status is None or r["status"] == status]


def test_runs_are_recorded(serve: ServeFactory, project: Path, tmp_path: Path) -> None:
    counter = tmp_path / "flaky-calls.txt"
    once_at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    write(
        project / "schedules" / "runs.yaml",
        f"""
        jobs:
          boom:
            task: tasks.e2e:boom
            interval: 1s
            kwargs: {{message: kaput}}
          exhausted:
            task: tasks.e2e:boom
            interval: 1s
            retries: 2
            retry_delay: 200ms
          flaky:
            task: tasks.e2e:flaky
            interval: 1s
            args: ["{counter}"]
            retries: 1
            retry_delay: 200ms
          sleepy:
            task: tasks.e2e:nap
            interval: 2s
            args: [5]
            timeout: 1s
          hog:
            task: tasks.e2e:nap
            interval: 1s
            args: [2.5]
            concurrency: forbid
          once:
            task: tasks.e2e:noop
            at: "{once_at.isoformat()}"
          replacer:
            task: tasks.e2e:nap
            interval: 1s
            args: [2.5]
            concurrency: replace
          parallel:
            task: tasks.e2e:nap
            interval: 1s
            args: [2.5]
            concurrency: allow
            max_instances: 2
          threaded:
            task: tasks.e2e:slow
            at: "{(once_at - timedelta(seconds=1)).isoformat()}"
            args: ["{tmp_path / "threaded.txt"}", 2]
            timeout: 1s
        """,
    )
    server = serve()
    hog = server.wait_job("hog", lambda j: j["running"] == 1, what="hog to be running")
    assert hog["last_run"] is None or hog["last_run"]["status"] != "running"

    # failed: the exception is the error; last_run is the newest finished run.
    [failed, *_] = wait_for(lambda: _runs(server, "boom", "failed"), what="a failed run")
    assert set(failed) == RUN_KEYS
    assert failed["attempt"] == 1
    assert "RuntimeError" in failed["error"] and "kaput" in failed["error"]
    assert _ts(failed["finished_at"]) >= _ts(failed["started_at"]) >= _ts(failed["scheduled_at"])
    assert failed["duration_s"] is not None and failed["duration_s"] >= 0
    assert server.jobs()["boom"]["last_run"]["status"] == "failed"

    # retried: attempt 1 failed, attempt 2 (after retry_delay) succeeded, same scheduled_at.
    runs = wait_for(
        lambda: (
            len(r := _runs(server, "flaky")) >= 2
            and r[-2]["status"] not in ("queued", "running")
            and r
        ),
        what="the first retry to finish",
    )
    first, second = runs[-1], runs[-2]
    assert (first["attempt"], first["status"]) == (1, "failed")
    assert (second["attempt"], second["status"]) == (2, "success")
    assert first["scheduled_at"] == second["scheduled_at"]
    assert "flaky failure on call 1" in first["error"]
    gap = (_ts(second["started_at"]) - _ts(first["finished_at"])).total_seconds()
    assert gap >= 0.19, f"retry started {gap:.3f}s after the failure; retry_delay is 200ms"

    # retries exhausted: every attempt is its own failed run; the delay doubles.
    runs = wait_for(
        lambda: (
            len(r := _runs(server, "exhausted")) >= 3
            and r[-3]["status"] not in ("queued", "running")
            and r
        ),
        what="three attempts",
    )
    attempts = runs[::-1][:3]
    assert [(r["attempt"], r["status"]) for r in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert len({r["scheduled_at"] for r in attempts}) == 1
    assert all("RuntimeError: boom" in r["error"] for r in attempts)
    gaps = [
        (_ts(b["started_at"]) - _ts(a["finished_at"])).total_seconds()
        for a, b in itertools.pairwise(attempts)
    ]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, f"retry delays {gaps}; want 200ms then 400ms"

    # timeout: cancelled at the deadline and recorded as such.
    [timed_out, *_] = wait_for(
        lambda: _runs(server, "sleepy", "timeout"), timeout=6, what="a timeout"
    )
    assert timed_out["error"]
    assert 0.9 <= timed_out["duration_s"] < 2.0, timed_out

    # skipped: the previous run was still going (concurrency: forbid).
    [skipped, *_] = wait_for(lambda: _runs(server, "hog", "skipped"), what="a skipped run")
    assert skipped["error"]
    assert _ts(skipped["scheduled_at"]) <= _ts(skipped["finished_at"])
    wait_for(lambda: _runs(server, "hog", "success"), timeout=6, what="hog to finish")
    executed = sorted(
        (r for r in _runs(server, "hog") if r["started_at"]), key=lambda r: _ts(r["started_at"])
    )
    for earlier, later in itertools.pairwise(executed):
        assert earlier["finished_at"] is not None, "forbid: two runs of hog at once"
        assert _ts(later["started_at"]) >= _ts(earlier["finished_at"]), "forbid: overlap"

    # replace: the running instance is cancelled and recorded so.
    [cancelled, *_] = wait_for(lambda: _runs(server, "replacer", "cancelled"), what="a cancel")
    assert cancelled["started_at"] and cancelled["finished_at"]
    assert server.jobs()["replacer"]["running"] == 1

    # allow + max_instances 2: two at once, the third is skipped.
    server.wait_job("parallel", lambda j: j["running"] == 2, what="two parallel runs")
    [skipped, *_] = wait_for(lambda: _runs(server, "parallel", "skipped"), what="a 3rd run")
    assert server.jobs()["parallel"]["running"] <= 2

    # A thread task past its timeout is recorded timeout and stops counting as running.
    [timed_out, *_] = wait_for(lambda: _runs(server, "threaded", "timeout"), what="a timeout")
    assert 0.9 <= timed_out["duration_s"] < 2.0, timed_out
    assert server.jobs()["threaded"]["running"] == 0

    # A one-shot that has run stays listed with next_run_time null.
    once = server.wait_job("once", lambda j: j["last_run"] is not None, timeout=8, what="once")
    assert once["next_run_time"] is None
    assert once["trigger"]["type"] == "date"
    assert _ts(once["trigger"]["expression"]) == once_at
    assert once["last_run"]["status"] == "success"
    assert _ts(once["last_run"]["scheduled_at"]) == once_at
    assert [r["status"] for r in server.job("once")["runs"]] == ["success"]

    # Runs are listed newest first.
    for job_id in ("boom", "hog"):
        started = [_ts(r["started_at"] or r["finished_at"]) for r in _runs(server, job_id)]
        assert started == sorted(started, reverse=True), job_id
