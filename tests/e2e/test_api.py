"""The read-only HTTP status API as a client sees it (contract section 5)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory, write
from tests.harness import JOB_FIELDS as JOB_KEYS

pytestmark = pytest.mark.e2e

SECRETS = ["hunter2", "sk-live-123", "tok-456", "pw-789", "deep-secret", "bearer-xyz", "pk-000"]


def test_status_api_shapes_and_methods(serve: ServeFactory, project: Path) -> None:
    write(
        project / "schedules" / "api.yaml",
        """
        jobs:
          report:
            task: tasks.e2e:noop
            cron: "0 2 * * *"
            timezone: Europe/Berlin
            args: [pdf]
            description: nightly report
            labels: {team: ops}
          paused-job:
            task: tasks.e2e:noop
            cron: "0 3 * * *"
            paused: true
        """,
    )
    server = serve()
    assert server.get("/healthz")["status"] == "ok"
    assert server.get("/readyz") == {"status": "ready"}

    body = server.get("/jobs")
    assert body["count"] == 2 and [j["id"] for j in body["jobs"]] == ["paused-job", "report"]
    report = server.jobs()["report"]
    assert set(report) == JOB_KEYS
    assert report["task"] == "tasks.e2e:noop"
    assert {k: v for k, v in report["trigger"].items() if k != "description"} == {
        "type": "cron",
        "expression": "0 2 * * *",
        "timezone": "Europe/Berlin",
    }
    when = datetime.fromisoformat(report["next_run_time"])
    assert when.utcoffset() is not None, "timestamps carry an offset"
    assert (report["description"], report["labels"]) == ("nightly report", {"team": "ops"})
    assert (report["source"], report["paused"], report["running"]) == ("declared", False, 0)
    assert report["line"] == 2 and report["file"].endswith("api.yaml")
    paused = server.jobs()["paused-job"]
    assert paused["paused"] is True and paused["next_run_time"] is None

    detail = server.job("report")
    assert set(detail) == JOB_KEYS | {"runs"}
    assert detail["runs"] == []

    status = server.status()
    assert set(status) == {
        "revision",
        "commit",
        "role",
        "scheduler",
        "database",
        "jobs",
        "pending_removal",
        "last_reconcile",
        "version",
    }
    assert (status["role"], status["scheduler"], status["jobs"]) == ("single", "running", 2)
    assert isinstance(status["revision"], str) and status["revision"]
    assert isinstance(status["version"], str) and status["version"]
    assert set(status["last_reconcile"]) == {
        "at",
        "reason",
        "duration_ms",
        "added",
        "updated",
        "removed",
        "unchanged",
        "errors",
    }
    assert datetime.fromisoformat(status["last_reconcile"]["at"]).utcoffset() is not None

    metrics = server.request("GET", "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text

    # 404 for an unknown id, with a detail message.
    missing = server.request("GET", "/jobs/no-such-job")
    assert missing.status_code == 404
    assert isinstance(missing.json()["detail"], str) and missing.json()["detail"]

    # Read-only: GET and HEAD answer, every other method is 405.
    paths = ["/jobs", "/jobs/report", "/status", "/healthz", "/readyz", "/metrics"]
    for path in paths:
        head = server.request("HEAD", path)
        assert head.status_code == 200, (path, head.status_code)
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            response = server.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
    # A refused DELETE removed nothing.
    assert server.get("/jobs")["count"] == 2


def test_secret_looking_kwargs_are_redacted(serve: ServeFactory, project: Path) -> None:
    write(
        project / "schedules" / "secrets.yaml",
        """
        jobs:
          sync:
            task: tasks.e2e:noop
            cron: "0 * * * *"
            kwargs:
              user: alice
              password: hunter2
              API_KEY: sk-live-123
              refresh_token: tok-456
              count: 3
              db:
                host: db.internal
                dbPasswd: pw-789
                options: {Client-Secret: deep-secret, timeout: 5}
              headers:
                - {Authorization: bearer-xyz, Accept: json}
              private_key: pk-000
              credentials: {user: bob, pass: x}
        """,
    )
    server = serve()
    expected = {
        "user": "alice",
        "password": "***",
        "API_KEY": "***",
        "refresh_token": "***",
        "count": 3,
        "db": {
            "host": "db.internal",
            "dbPasswd": "***",
            "options": {"Client-Secret": "***", "timeout": 5},
        },
        "headers": [{"Authorization": "***", "Accept": "json"}],
        "private_key": "***",
        "credentials": "***",
    }
    assert server.jobs()["sync"]["kwargs"] == expected
    assert server.job("sync")["kwargs"] == expected
    for path in ("/jobs", "/jobs/sync", "/status", "/metrics", "/specs"):
        response = server.request("GET", path)
        if path == "/specs" and response.status_code == 404:
            continue  # not part of the contract; checked while it exists
        text = response.text
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{path} shows {leaked}"


def test_large_answers_come_in_pieces_with_their_length_said_first(
    serve: ServeFactory, project: Path
) -> None:
    """Above 2,000 jobs /jobs, /specs and /metrics are sent piece by piece: the client
    gets the length first and exactly that many bytes, the same JSON as a job's own
    answer says, and HEAD and a conditional GET answer as for a small list."""
    lines = ["jobs:"]
    for n in range(2500):
        lines += [f"  job-{n:04d}:", "    task: tasks.e2e:noop", '    cron: "0 3 * * *"']
    write(project / "schedules" / "many.yaml", "\n".join(lines) + "\n")
    server = serve()
    for path in ("/jobs", "/specs", "/metrics"):
        response = server.request("GET", path)
        assert response.status_code == 200, path
        assert int(response.headers["content-length"]) == len(response.content) > 300_000, path
        assert "transfer-encoding" not in response.headers, path
    listed = server.get("/jobs")
    assert listed["count"] == 2500 == len(listed["jobs"])
    fresh = server.job("job-1234")
    fresh.pop("runs")
    assert listed["jobs"][1234] == fresh
    assert set(server.get("/specs")["jobs"]) == {job["id"] for job in listed["jobs"]}
    assert (
        server.request("GET", "/metrics").text.count(
            'schedctl_job_next_run_timestamp_seconds{job_id="job-'
        )
        == 2500
    )

    head = server.request("HEAD", "/jobs")
    whole = server.request("GET", "/jobs")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == whole.headers["content-length"]
    tag = whole.headers["etag"]
    assert server.client.get("/jobs", headers={"If-None-Match": tag}).status_code == 304
