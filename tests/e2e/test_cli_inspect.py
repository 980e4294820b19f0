"""`schedctl jobs`, `runs`, `why`, `run`, `next --url` and `--version`, as a user types them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import __version__
from tests.e2e.conftest import ServeFactory, wait_for, write
from tests.e2e.test_cli_remote import schedctl

pytestmark = pytest.mark.e2e

JOBS = """
jobs:
  boom:
    task: tasks.e2e:boom
    cron: "* * * * * *"
    args: ["no luck with hunter2"]
    kwargs: {}
  nightly:
    task: tasks.e2e:noop
    cron: "0 2 * * *"
  every-7s:
    task: tasks.e2e:noop
    interval: 7s
"""


def test_jobs_runs_and_why_read_a_running_engine(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    url = f"http://127.0.0.1:{server.port}"
    wait_for(
        lambda: (server.jobs()["boom"].get("last_run") or {}).get("status") == "failed",
        what="a failed run",
    )

    table = schedctl(project, "jobs", "--url", url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["ID", "SCHEDULE", "NEXT", "RUN"]
    boom = next(row for row in rows if row.startswith("boom"))
    assert "failed" in boom and "ago" in boom
    listed = json.loads(schedctl(project, "jobs", "--url", url, "--json").stdout)
    assert {job["id"] for job in listed} == {"boom", "nightly", "every-7s"}
    assert next(j for j in listed if j["id"] == "boom")["last_run"]["finished_at"]

    runs = schedctl(project, "runs", "boom", "--url", url, "-n", "2")
    assert runs.returncode == 0, runs.stderr
    assert "failed" in runs.stdout and "RuntimeError: no luck with" in runs.stdout
    as_json = json.loads(schedctl(project, "runs", "boom", "--url", url, "--json").stdout)
    assert as_json and as_json[0]["status"] in ("failed", "running", "queued")
    unknown = schedctl(project, "runs", "nope", "--url", url)
    assert unknown.returncode == 1 and "no job 'nope'" in unknown.stderr

    failed = next(r for r in as_json if r["status"] == "failed")
    why = schedctl(project, "why", "boom", "--at", failed["scheduled_at"], "--url", url)
    assert why.returncode == 0, why.stderr
    assert "it ran" in why.stdout and "failed" in why.stdout
    later = (datetime.now(UTC) + timedelta(days=2)).replace(hour=3, minute=0, second=0)
    not_then = schedctl(project, "why", "nightly", "--at", later.isoformat(), "--url", url)
    assert "not one of its fire times" in not_then.stdout
    assert "previous fire:" in not_then.stdout and "next fire:" in not_then.stdout

    # An interval job counts from the engine's next run, not from now.
    engine_next = datetime.fromisoformat(server.jobs()["every-7s"]["next_run_time"])
    upcoming = schedctl(project, "next", "every-7s", "--url", url, "-n", "3")
    assert upcoming.returncode == 0, upcoming.stderr
    times = [datetime.fromisoformat(line) for line in upcoming.stdout.split()]
    assert all((t - engine_next).total_seconds() % 7 == 0 for t in times), (times, engine_next)


def test_run_runs_a_declared_job_once_in_the_foreground(project: Path) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    ok = schedctl(project, "run", "nightly")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("attempt 1: success")
    bad = schedctl(project, "run", "boom")
    assert bad.returncode == 1
    assert "attempt 1: failed" in bad.stdout and "RuntimeError" in bad.stdout
    assert "Traceback" in bad.stdout and "| " in bad.stdout
    assert not (project / ".engine").exists()  # records nothing
    missing = schedctl(project, "run", "nope")
    assert missing.returncode == 1 and "no valid job 'nope'" in missing.stderr


def test_version_and_help_say_what_each_command_does(project: Path) -> None:
    version = schedctl(project, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"schedctl {__version__}")
    for command in ("serve", "validate", "next", "plan", "jobs", "runs", "why", "run", "schema"):
        shown = schedctl(project, command, "--help")
        assert shown.returncode == 0
        assert "exit codes:" in shown.stdout, command
    assert "ENGINE_URL" in schedctl(project, "runs", "--help").stdout
    assert "ENGINE_DATABASE_URL" in schedctl(project, "serve", "--help").stdout
