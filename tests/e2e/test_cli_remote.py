"""`schedctl plan` and `schedctl jobs` against a running engine, as a deploy pipeline runs them."""

from __future__ import annotations

import json
import os
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


def schedctl(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def proposal(tmp_path: Path, name: str, text: str) -> str:
    """A schedules folder with one ``jobs.yaml``, as a pull request would change it."""
    folder = tmp_path / name
    write(folder / "jobs.yaml", text)
    return str(folder)


def test_plan_prints_what_applying_the_files_would_change(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    url = f"http://127.0.0.1:{server.port}"

    same = schedctl(project, "plan", "--url", url)
    assert (same.returncode, same.stdout) == (0, "No changes.\n")

    proposed = proposal(
        tmp_path,
        "proposed",
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
    changes = schedctl(project, "plan", "--schedules", proposed, "--url", url)
    assert changes.returncode == 2, changes.stderr
    lines = changes.stdout.splitlines()
    assert [line for line in lines if not line.startswith("    ")] == [
        "- heartbeat",
        '~ nightly cron: "0 2 * * *" -> "0 3 * * *"',
        "~ nightly kwargs: (secret values changed)",
        "+ report",
    ]
    assert "hunter2" not in changes.stdout and "changed-secret" not in changes.stdout
    # Added and rescheduled jobs show their next 3 fire times (before and after).
    nightly = lines.index("~ nightly kwargs: (secret values changed)")
    before, after = lines[nightly + 1], lines[nightly + 2]
    assert before.startswith("    next before: ") and after.startswith("    next after: ")
    assert [t[11:16] for t in before.split(": ", 1)[1].split(", ")] == ["02:00"] * 3
    assert [t[11:16] for t in after.split(": ", 1)[1].split(", ")] == ["03:00"] * 3
    assert lines[-1].startswith("    next: ") and len(lines[-1].split(", ")) == 3

    as_json = schedctl(project, "plan", "--schedules", proposed, "--url", url, "--format", "json")
    assert as_json.returncode == 2
    plan = json.loads(as_json.stdout)
    assert plan["changed"] is True
    assert [(job["id"], job["op"]) for job in plan["jobs"]] == [
        ("heartbeat", "remove"),
        ("nightly", "reschedule"),
        ("report", "add"),
    ]
    assert {"field": "kwargs", "secret_changed": True} in plan["jobs"][1]["changes"]
    assert len(plan["jobs"][2]["next_after"]) == 3
    assert "changed-secret" not in as_json.stdout and "hunter2" not in as_json.stdout

    broken = proposal(tmp_path, "broken", "jobs:\n  bad:\n    task: tasks.e2e:noop\n    crn: x\n")
    failed = schedctl(project, "plan", "--schedules", broken, "--url", url)
    assert failed.returncode == 1
    assert "unknown field 'crn'; did you mean 'cron'?" in failed.stderr

    unreachable = schedctl(project, "plan", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr


SECRETS = """
jobs:
  sync:
    task: tasks.e2e:noop
    cron: "0 2 * * *"
    args: ["postgresql://app:db-pass-1@db/prod"]
    kwargs: {target: db, api_token: token-1}
    labels: {team: data}
"""

KWARGS_CHANGED = (
    '~ sync kwargs: {"api_token": "***", "target": "db"} -> {"api_token": "***", "target": "dw"}'
)


def test_plan_reports_a_secret_change_only_when_a_secret_changed(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "schedules" / "jobs.yaml", SECRETS)
    url = f"http://127.0.0.1:{serve().port}"

    def plan_of(text: str) -> subprocess.CompletedProcess[str]:
        result = schedctl(
            project, "plan", "--schedules", proposal(tmp_path, "p", text), "--url", url
        )
        for secret in ("db-pass-1", "db-pass-2", "token-1", "token-2"):
            assert secret not in result.stdout + result.stderr
        return result

    unchanged = plan_of(SECRETS)
    assert (unchanged.returncode, unchanged.stdout) == (0, "No changes.\n")

    other_fields = plan_of(
        SECRETS.replace("team: data", "team: web").replace("target: db", "target: dw")
    )
    assert other_fields.returncode == 2
    assert other_fields.stdout.splitlines() == [
        KWARGS_CHANGED,
        '~ sync labels: {"team": "data"} -> {"team": "web"}',
    ]

    token = plan_of(SECRETS.replace("token-1", "token-2"))
    assert (token.returncode, token.stdout) == (2, "~ sync kwargs: (secret values changed)\n")

    url_password = plan_of(SECRETS.replace("db-pass-1", "db-pass-2"))
    assert (url_password.returncode, url_password.stdout) == (
        2,
        "~ sync args: (secret values changed)\n",
    )

    url_host = plan_of(SECRETS.replace("@db/prod", "@db2/prod"))
    assert url_host.stdout.splitlines() == [
        '~ sync args: ["postgresql://app:***@db/prod"] -> ["postgresql://app:***@db2/prod"]'
    ]

    both = plan_of(SECRETS.replace("token-1", "token-2").replace("target: db", "target: dw"))
    assert both.stdout.splitlines() == [KWARGS_CHANGED, "~ sync kwargs: (secret values changed)"]


def test_client_commands_find_the_engine_through_engine_url(
    serve: ServeFactory, project: Path
) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    env = {"ENGINE_URL": f"http://127.0.0.1:{server.port}"}
    listed = schedctl(project, "jobs", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "2 jobs"
    planned = schedctl(project, "plan", env=env)
    assert (planned.returncode, planned.stdout) == (0, "No changes.\n")
    # No --url and no ENGINE_URL: the default address, where nothing listens here.
    default = schedctl(project, "jobs", env={"ENGINE_URL": "http://127.0.0.1:9"})
    assert default.returncode == 1 and "http://127.0.0.1:9/jobs" in default.stderr


def test_jobs_lists_the_running_engines_jobs_as_a_table(serve: ServeFactory, project: Path) -> None:
    write(project / "schedules" / "jobs.yaml", JOBS)
    server = serve()
    listed = schedctl(project, "jobs", "--url", f"http://127.0.0.1:{server.port}")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN", "RUNNING", "SOURCE"]
    assert [line.split()[0] for line in lines[1:3]] == ["heartbeat", "nightly"]
    assert "02:00" in lines[2] or "0 2 * * *" in lines[2]  # the schedule in words
    assert lines[-1] == "2 jobs"
