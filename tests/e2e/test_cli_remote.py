"""`schedctl plan` and `schedctl jobs` against a running engine, as a deploy pipeline runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory, write

pytestmark = pytest.mark.e2e

JOBS = """
jobs:
  nightly:
    task: tasks.e2e:noop
    cron: "0 2 * * *"
    kwargs: {target: db, password: hunter2}
  heartbeat:
    task: tasks.e2e:noop
    interval: 1h
"""


def schedctl(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plan_prints_what_applying_the_files_would_change(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    url = f"http://127.0.0.1:{server.port}"

    same = schedctl(project, "plan", "--url", url)
    assert (same.returncode, same.stdout) == (0, "")

    proposed = tmp_path / "proposed"
    shutil.copytree(project / "schedules", proposed)
    write(
        proposed / "jobs.yaml",
        """
        jobs:
          nightly:
            task: tasks.e2e:noop
            cron: "0 3 * * *"
            kwargs: {target: db, password: changed-secret}
          report:
            task: tasks.e2e:noop
            interval: 5m
        """,
    )
    changes = schedctl(project, "plan", "--schedules", str(proposed), "--url", url)
    assert changes.returncode == 2, changes.stderr
    assert changes.stdout.splitlines() == [
        "- heartbeat",
        '~ nightly cron: "0 2 * * *" -> "0 3 * * *"',
        "~ nightly kwargs: (secret values changed)",
        "+ report",
    ]
    assert "hunter2" not in changes.stdout and "changed-secret" not in changes.stdout

    write(proposed / "jobs.yaml", "jobs:\n  bad:\n    task: tasks.e2e:noop\n    crn: x\n")
    broken = schedctl(project, "plan", "--schedules", str(proposed), "--url", url)
    assert broken.returncode == 1
    assert "unknown field 'crn'; did you mean 'cron'?" in broken.stderr

    unreachable = schedctl(project, "plan", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr


def test_jobs_lists_the_running_engines_jobs_as_a_table(serve: ServeFactory, project: Path) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    listed = schedctl(project, "jobs", "--url", f"http://127.0.0.1:{server.port}")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "SOURCE",
        "TRIGGER",
        "NEXT",
        "RUN",
        "PAUSED",
        "RUNNING",
        "LAST",
        "RUN",
    ]
    assert [line.split()[0] for line in lines[1:3]] == ["heartbeat", "nightly"]
    assert "cron 0 2 * * *" in lines[2]
    assert lines[-1] == "2 jobs"
