"""``schedctl serve`` settings: flags first, then ``ENGINE_*`` variables (contract 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServeFactory, free_port, wait_for, write

pytestmark = pytest.mark.e2e


def test_settings_from_flags_and_environment(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "jobs2" / "__init__.py", "")
    write(project / "jobs2" / "work.py", "def run():\n    return None\n")
    write(
        project / "schedules" / "a.yaml",
        """
        jobs:
          flagged:
            task: jobs2.work:run
            cron: "0 9 * * *"
        """,
    )
    write(
        tmp_path / "from-env" / "b.yaml",
        """
        jobs:
          from-env:
            task: tasks.e2e:noop
            cron: "0 9 * * *"
        """,
    )
    env = {
        "ENGINE_SCHEDULES_DIR": str(tmp_path / "from-env"),  # --schedules wins
        "ENGINE_TIMEZONE": "Europe/Berlin",
        "ENGINE_TASK_MODULES": "tasks,jobs2",
        "ENGINE_HOST": "127.0.0.1",
    }
    server = serve(env=env, database="")  # no --database: SQLite under .engine/
    jobs = server.jobs()
    assert sorted(jobs) == ["flagged"]
    assert jobs["flagged"]["trigger"]["timezone"] == "Europe/Berlin"
    assert server.status()["last_reconcile"]["errors"] == []
    assert any((project / ".engine").glob("*.db")), "the default database is under .engine/"


def schedctl(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,  # a serve that starts despite the bad setting fails here
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ENGINE_TIMEZONE", "Mars/Base", "unknown timezone 'Mars/Base'; write an IANA name"),
        ("ENGINE_PORT", "abc", "'abc' is not a port; write an integer from 1 to 65535"),
        ("ENGINE_EXTENSIONS", '{"x": ', "the value is not valid JSON"),
        ("ENGINE_EXTENSIONS", "no_such_extension", "no extension module named 'no_such_extension'"),
    ],
)
def test_serve_names_a_bad_setting_in_one_line_and_exits_2(
    project: Path, variable: str, value: str, says: str
) -> None:
    write(
        project / "schedules" / "a.yaml",
        """
        jobs:
          nightly:
            task: tasks.e2e:noop
            cron: "0 2 * * *"
        """,
    )
    done = schedctl(project, "serve", "--port", str(free_port()), env={variable: value})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {variable}: {says}")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and "a.yaml" not in done.stderr
    assert done.stdout == ""


def test_the_api_answers_only_allowed_hosts_hides_its_docs_and_logs_json(
    serve: ServeFactory, project: Path
) -> None:
    server = serve(env={"ENGINE_LOG_FORMAT": "json"})
    base = f"http://127.0.0.1:{server.port}"
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert httpx.get(f"{base}/jobs", headers={"Host": host}).status_code == 200, host
    refused = httpx.get(f"{base}/jobs", headers={"Host": "rebind.attacker.example"})
    assert refused.status_code == 400
    assert "rebind.attacker.example" in refused.json()["detail"]
    assert "ENGINE_ALLOWED_HOSTS" in refused.json()["detail"]
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{base}{path}").status_code == 404, path

    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/jobs?from=test").status_code == 200

    def logged_jobs() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if str(line.get("path", "")).startswith("/jobs?from")]

    wait_for(logged_jobs, what="the access line of GET /jobs")
    lines = [line for line in server.log().splitlines() if line and not line.startswith("=====")]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    keys = {"time", "level", "logger", "message", "job", "attempt", "run_id"}
    assert all(keys <= set(r) for r in records)
    assert not [r for r in records if r.get("path") in ("/healthz", "/readyz", "/metrics")]


def test_docs_and_more_hosts_are_served_when_asked(serve: ServeFactory) -> None:
    server = serve(env={"ENGINE_API_DOCS": "true", "ENGINE_ALLOWED_HOSTS": "status.example.com"})
    base = f"http://127.0.0.1:{server.port}"
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "schedctl"
    assert httpx.get(f"{base}/docs").status_code == 200
    named = httpx.get(f"{base}/status", headers={"Host": "status.example.com"})
    assert named.status_code == 200
    assert httpx.get(f"{base}/status", headers={"Host": "other.example.com"}).status_code == 400
