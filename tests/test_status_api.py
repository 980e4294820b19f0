"""The read-only HTTP status API (contract section 5) over a real engine: what each path
answers, errors of invalid files, methods, secret masking and timestamps.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import socket
import textwrap
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI

from engine.api import router
from engine.app import create_app
from engine.settings import Settings
from engine.surfaces.http import dumps
from tests.conftest import MakePackage
from tests.harness import JOB_FIELDS, client_for, engine_settings, eventually, parse_time, running

TASKS = "st_tasks"

TASK_SOURCE = """
calls = []


def ping(*args, **kwargs):
    calls.append((args, kwargs))


async def aping(*args, **kwargs):
    calls.append((args, kwargs))
"""

REPORT_FIELDS = {
    "at",
    "reason",
    "duration_ms",
    "added",
    "updated",
    "removed",
    "unchanged",
    "errors",
}
PATHS = ("/healthz", "/readyz", "/jobs", "/jobs/hourly", "/status", "/metrics")
HOURLY = """
jobs:
  hourly:
    task: st_tasks.jobs:ping
    cron: "0 * * * *"
"""


# -- harness ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=1)


@pytest.fixture
def schedules(settings: Settings) -> Path:
    return settings.schedules_dir


@pytest.fixture
def jobs(make_package: MakePackage) -> ModuleType:
    make_package(TASKS, {"jobs": TASK_SOURCE})
    return importlib.import_module(f"{TASKS}.jobs")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def same_file(reported: str, path: Path) -> bool:
    return Path(reported).resolve() == path.resolve()


async def _with_last_run(job: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    found = await job
    return found if found["last_run"] is not None else None


# -- health and readiness -----------------------------------------------------------------


async def test_healthz_answers_ok(settings: Settings, jobs: ModuleType) -> None:
    async with running(settings) as engine:
        response = await engine.client.get("/healthz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert isinstance(body["loop_lag_ms"], int | float) and body["loop_lag_ms"] >= 0


async def test_readyz_is_starting_before_the_engine_runs_and_ready_once_it_does(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    app = create_app(settings)
    async with client_for(app) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "starting"}
        assert (await client.get("/healthz")).json()["status"] == "ok"

        async with app.router.lifespan_context(app):
            response = await client.get("/readyz")
            assert response.status_code == 200
            assert response.json() == {"status": "ready"}


# -- /jobs and /jobs/{id} -----------------------------------------------------------------


async def test_jobs_are_listed_sorted_by_id_with_a_count(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(
        schedules / "a.yaml",
        """
        jobs:
          zeta:
            task: st_tasks.jobs:ping
            cron: "0 2 * * *"
          alpha:
            task: st_tasks.jobs:ping
            interval: 5m
        """,
    )
    write(
        schedules / "team" / "b.yml",
        """
        jobs:
          mid:
            task: st_tasks.jobs:aping
            cron: "*/15 * * * *"
          beta-2:
            task: st_tasks.jobs:ping
            at: 2031-01-01T09:00:00
        """,
    )
    async with running(settings) as engine:
        await engine.app.state.scheduler.add_interval_job(jobs.ping, "delta", minutes=1)

        listed = await engine.get("/jobs")
        assert listed["count"] == 5
        assert [job["id"] for job in listed["jobs"]] == ["alpha", "beta-2", "delta", "mid", "zeta"]
        assert all(set(job) == JOB_FIELDS for job in listed["jobs"])
        sources = {job["id"]: job["source"] for job in listed["jobs"]}
        assert sources == {
            "alpha": "declared",
            "beta-2": "declared",
            "delta": "runtime",
            "mid": "declared",
            "zeta": "declared",
        }


async def test_a_declared_job_shows_every_field_of_its_declaration(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    path = write(
        schedules / "reports.yaml",
        """
        defaults:
          timezone: Europe/Berlin
        jobs:
          nightly-report:
            task: st_tasks.jobs:ping
            cron: "0 2 * * *"
            args: [pdf, 2]
            kwargs: {recipients: [ops@example.com]}
            description: The nightly report
            labels: {team: finance}
          launch:
            task: st_tasks.jobs.aping
            at: 2031-01-01T09:00:00
          held:
            task: st_tasks.jobs:ping
            interval: 10m
            paused: true
        """,
    )
    async with running(settings) as engine:
        job = await engine.get("/jobs/nightly-report")
        assert set(job) == JOB_FIELDS | {"runs"}
        assert job["id"] == "nightly-report"
        assert job["task"] == "st_tasks.jobs:ping"
        assert job["args"] == ["pdf", 2]
        assert job["kwargs"] == {"recipients": ["ops@example.com"]}
        assert {k: v for k, v in job["trigger"].items() if k != "description"} == {
            "type": "cron",
            "expression": "0 2 * * *",
            "timezone": "Europe/Berlin",
        }
        next_run = parse_time(job["next_run_time"])
        assert next_run > datetime.now(UTC)
        local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (2, 0)
        assert job["paused"] is False
        assert job["source"] == "declared"
        assert same_file(job["file"], path)
        assert job["line"] == 4
        assert job["description"] == "The nightly report"
        assert job["labels"] == {"team": "finance"}
        assert job["running"] == 0
        assert job["last_run"] is None
        assert job["runs"] == []

        launch = await engine.get("/jobs/launch")
        assert launch["task"] == "st_tasks.jobs:aping"
        assert launch["trigger"]["type"] == "date"
        assert parse_time(launch["trigger"]["expression"]) == datetime(2031, 1, 1, 8, tzinfo=UTC)
        assert parse_time(launch["next_run_time"]) == datetime(2031, 1, 1, 8, tzinfo=UTC)

        held = await engine.get("/jobs/held")
        assert held["paused"] is True
        assert held["next_run_time"] is None
        assert held["trigger"]["type"] == "interval"
        assert held["trigger"]["expression"] == "10m"


async def test_an_unknown_job_is_a_404_with_a_detail(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    async with running(settings) as engine:
        response = await engine.client.get("/jobs/no-such-job")
        assert response.status_code == 404
        body = response.json()
        assert set(body) == {"detail"}
        assert "no-such-job" in body["detail"]


# -- /status ------------------------------------------------------------------------------


async def test_status_reports_the_engine_and_its_last_reconcile(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    path = write(
        schedules / "jobs.yaml",
        """
        jobs:
          a: {task: st_tasks.jobs:ping, cron: "0 1 * * *"}
          b: {task: st_tasks.jobs:ping, cron: "0 2 * * *"}
          c: {task: st_tasks.jobs:ping, cron: "0 3 * * *"}
        """,
    )
    async with running(settings) as engine:
        await engine.app.state.scheduler.add_interval_job(jobs.ping, "runtime-one", hours=1)
        status = await engine.get("/status")
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
        assert isinstance(status["revision"], str) and status["revision"]
        assert status["role"] == "single"
        assert status["scheduler"] == "running"
        assert status["jobs"] == 4
        assert status["version"] == importlib.metadata.version("schedctl")
        report = status["last_reconcile"]
        assert set(report) == REPORT_FIELDS
        assert (report["added"], report["updated"], report["removed"]) == (3, 0, 0)
        assert report["unchanged"] == 0
        assert report["errors"] == []
        assert isinstance(report["duration_ms"], int | float) and report["duration_ms"] >= 0
        assert parse_time(report["at"]) <= datetime.now(UTC)

        write(
            path,
            """
            jobs:
              a: {task: st_tasks.jobs:ping, cron: "0 1 * * *"}
              b: {task: st_tasks.jobs:ping, cron: "0 2 * * *", description: changed}
              d: {task: st_tasks.jobs:ping, cron: "0 4 * * *"}
            """,
        )
        await engine.reconcile()
        changed = await engine.get("/status")
        report = changed["last_reconcile"]
        counts = (report["added"], report["updated"], report["removed"], report["unchanged"])
        assert counts == (1, 1, 1, 1)
        assert changed["revision"] != status["revision"]
        assert changed["jobs"] == 4
        assert parse_time(report["at"]) >= parse_time(status["last_reconcile"]["at"])

        write(
            path,
            """
            # the same jobs, reordered and commented
            jobs:
              d: {task: st_tasks.jobs:ping, cron: "0 4 * * *"}  # fourth
              b: {description: changed, task: st_tasks.jobs:ping, cron: "0 2 * * *"}
              a: {task: st_tasks.jobs:ping, cron: "0 1 * * *"}
            """,
        )
        await engine.reconcile()
        same = await engine.get("/status")
        report = same["last_reconcile"]
        counts = (report["added"], report["updated"], report["removed"], report["unchanged"])
        assert counts == (0, 0, 0, 3)
        assert same["revision"] == changed["revision"]


async def test_an_invalid_file_is_reported_in_status_while_its_jobs_keep_their_state(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    broken = write(
        schedules / "a.yaml",
        """
        jobs:
          kept:
            task: st_tasks.jobs:ping
            cron: "0 3 * * *"
        """,
    )
    other = write(
        schedules / "b.yaml",
        """
        jobs:
          other: {task: st_tasks.jobs:ping, cron: "0 4 * * *"}
        """,
    )
    async with running(settings) as engine:
        before = await engine.get("/jobs/kept")
        revision = (await engine.get("/status"))["revision"]

        write(
            broken,
            """
            jobs:
              kept:
                task: st_tasks.jobs:ping
                crn: "0 5 * * *"
            """,
        )
        write(
            other,
            """
            jobs:
              other: {task: st_tasks.jobs:ping, cron: "0 4 * * *"}
              added-beside: {task: st_tasks.jobs:ping, cron: "0 6 * * *"}
            """,
        )
        await engine.reconcile()
        status = await engine.get("/status")
        errors = status["last_reconcile"]["errors"]
        assert errors, "the invalid file is reported"
        assert all(set(error) == {"file", "line", "column", "message"} for error in errors)
        typo = next(error for error in errors if "crn" in error["message"])
        assert same_file(typo["file"], broken)
        assert (typo["line"], typo["column"]) == (4, 5)
        assert "did you mean 'cron'" in typo["message"]
        assert status["revision"] != revision  # b.yaml still applied
        kept = await engine.get("/jobs/kept")
        assert kept["trigger"] == before["trigger"]
        assert kept["next_run_time"] == before["next_run_time"]
        assert (await engine.client.get("/jobs/added-beside")).status_code == 200

        await engine.reconcile()  # still broken: still reported
        assert (await engine.get("/status"))["last_reconcile"]["errors"] == errors

        write(
            broken,
            """
            jobs:
              kept:
                task: st_tasks.jobs:ping
                cron: "0 5 * * *"
            """,
        )
        await engine.reconcile()
        assert (await engine.get("/status"))["last_reconcile"]["errors"] == []
        fixed = await engine.get("/jobs/kept")
        assert fixed["trigger"]["expression"] == "0 5 * * *"


async def test_every_invalid_file_is_reported_and_an_engine_starting_with_one_is_ready(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    bad_cron = write(
        schedules / "bad-cron.yaml",
        """
        jobs:
          broken-cron: {task: st_tasks.jobs:ping, cron: "61 * * * *"}
        """,
    )
    bad_task = write(
        schedules / "nested" / "bad-task.yaml",
        """
        jobs:
          broken-task:
            task: st_tasks.jobs:pong
            cron: "0 * * * *"
        """,
    )
    async with running(settings) as engine:
        assert (await engine.client.get("/readyz")).status_code == 200
        assert [job["id"] for job in (await engine.get("/jobs"))["jobs"]] == ["hourly"]
        errors = (await engine.get("/status"))["last_reconcile"]["errors"]
        by_file = {Path(error["file"]).name: error for error in errors}
        assert set(by_file) == {"bad-cron.yaml", "bad-task.yaml"}
        assert same_file(by_file["bad-cron.yaml"]["file"], bad_cron)
        assert same_file(by_file["bad-task.yaml"]["file"], bad_task)
        assert by_file["bad-task.yaml"]["line"] == 3
        assert "'ping'" in by_file["bad-task.yaml"]["message"]  # did you mean 'ping'?
        assert all(error["line"] >= 1 and error["column"] >= 1 for error in errors)


async def test_a_duplicate_id_keeps_its_first_declaration_and_names_both_places(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(
        schedules / "a.yaml",
        """
        jobs:
          shared: {task: st_tasks.jobs:ping, cron: "0 1 * * *"}
        """,
    )
    async with running(settings) as engine:
        before = await engine.get("/jobs/shared")
        write(
            schedules / "b.yaml",
            """
            jobs:
              shared: {task: st_tasks.jobs:aping, cron: "0 2 * * *"}
            """,
        )
        await engine.reconcile()
        errors = (await engine.get("/status"))["last_reconcile"]["errors"]
        assert len(errors) == 1
        assert "a.yaml" in errors[0]["message"] + errors[0]["file"]
        assert "b.yaml" in errors[0]["message"] + errors[0]["file"]
        assert "shared" in errors[0]["message"]
        after = await engine.get("/jobs/shared")
        assert after == before


async def test_the_jobs_of_an_invalid_file_keep_firing(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    path = write(
        schedules / "beat.yaml",
        """
        jobs:
          beat: {task: st_tasks.jobs:ping, cron: "* * * * * *"}
        """,
    )
    async with running(settings) as engine:
        write(path, "jobs:\n  beat: {task: st_tasks.jobs:ping, cron: '* * * * * *', crn: 1}\n")
        await engine.reconcile()
        assert (await engine.get("/status"))["last_reconcile"]["errors"]
        broken_at = datetime.now(UTC)

        async def fired_since() -> bool:
            runs = (await engine.get("/jobs/beat"))["runs"]
            return any(
                run["status"] == "success" and parse_time(run["scheduled_at"]) > broken_at
                for run in runs
            )

        await eventually(fired_since, what="beat fired after its file broke")


# -- methods ------------------------------------------------------------------------------


async def test_only_get_and_head_are_answered_on_every_path(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    async with running(settings) as engine:
        refused = {}
        for path in PATHS:
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                response = await engine.client.request(method, path)
                refused[method, path] = response.status_code
            assert (await engine.client.get(path)).status_code == 200, path
            assert (await engine.client.head(path)).status_code == 200, path
        assert {key: code for key, code in refused.items() if code != 405} == {}
        assert (await engine.client.get("/jobs/hourly")).status_code == 200  # still there


# -- secrets ------------------------------------------------------------------------------


async def test_secret_looking_kwargs_are_masked_at_any_depth(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(
        schedules / "secrets.yaml",
        """
        jobs:
          with-secrets:
            task: st_tasks.jobs:ping
            cron: "0 0 1 1 *"
            args: [visible]
            kwargs:
              user: report-bot
              password: hunter2
              api_key: k-123
              Authorization: Bearer abc
              DB_PWD: x
              smtp: {host: mail.example.com, port: 25, Client_Secret: s}
              targets:
                - {url: "https://a.example", token: t1}
                - {url: "https://b.example", credentials: {user: u, pass: p}}
              note: the password is rotated monthly
        """,
    )
    masked = {
        "user": "report-bot",
        "password": "***",
        "api_key": "***",
        "Authorization": "***",
        "DB_PWD": "***",
        "smtp": {"host": "mail.example.com", "port": 25, "Client_Secret": "***"},
        "targets": [
            {"url": "https://a.example", "token": "***"},
            {"url": "https://b.example", "credentials": "***"},
        ],
        "note": "the password is rotated monthly",
    }
    async with running(settings) as engine:
        assert (await engine.get("/jobs/with-secrets"))["kwargs"] == masked
        assert (await engine.get("/jobs"))["jobs"][0]["kwargs"] == masked
        assert (await engine.app.state.scheduler.get_job("with-secrets"))["kwargs"] == masked
        assert "hunter2" not in (await engine.client.get("/jobs")).text

        # The task itself gets the real values.
        assert await engine.app.state.scheduler.run_job("with-secrets") is True
        await eventually(lambda: jobs.calls, what="the task ran")
        args, kwargs = jobs.calls[0]
        assert args == ("visible",)
        assert kwargs["password"] == "hunter2"
        assert kwargs["targets"][1]["credentials"] == {"user": "u", "pass": "p"}


# -- timestamps ---------------------------------------------------------------------------


async def test_timestamps_are_iso_8601_with_an_offset(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(
        schedules / "zones.yaml",
        """
        jobs:
          berlin:
            task: st_tasks.jobs:ping
            cron: "30 6 * * *"
            timezone: Europe/Berlin
          every-minute:
            task: st_tasks.jobs:aping
            cron: "* * * * *"
        """,
    )
    async with running(settings) as engine:
        assert await engine.app.state.scheduler.run_job("berlin") is True
        job = await eventually(lambda: _with_last_run(engine.get("/jobs/berlin")))

        stamps = [job["next_run_time"], (await engine.get("/jobs/every-minute"))["next_run_time"]]
        stamps += [job["last_run"][key] for key in ("scheduled_at", "started_at", "finished_at")]
        stamps += [job["runs"][0][key] for key in ("scheduled_at", "started_at", "finished_at")]
        stamps.append((await engine.get("/status"))["last_reconcile"]["at"])
        for stamp in stamps:
            assert isinstance(stamp, str)
            assert "T" in stamp
            parse_time(stamp)


# -- one-shot jobs ------------------------------------------------------------------------


async def test_a_declared_at_job_that_has_run_stays_listed_without_a_next_run_time(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    when = (datetime.now(UTC) + timedelta(milliseconds=500)).isoformat()
    path = write(
        schedules / "launch.yaml",
        f"""
        jobs:
          launch:
            task: st_tasks.jobs:ping
            at: "{when}"
        """,
    )
    async with running(settings) as engine:
        job = await eventually(lambda: _with_last_run(engine.get("/jobs/launch")), within=5)
        assert job["last_run"]["status"] == "success"
        assert parse_time(job["last_run"]["scheduled_at"]) == datetime.fromisoformat(when)
        assert job["next_run_time"] is None
        assert job["paused"] is False
        assert job["trigger"]["type"] == "date"

        report = await engine.reconcile()
        assert report["unchanged"] == 1
        listed = await engine.get("/jobs")
        assert [entry["id"] for entry in listed["jobs"]] == ["launch"]
        assert listed["jobs"][0]["next_run_time"] is None

    async with running(settings) as engine:  # and after a restart
        job = await engine.get("/jobs/launch")
        assert job["next_run_time"] is None
        assert job["last_run"]["status"] == "success"
        write(path, "jobs: {}\n")
        await engine.reconcile()
        assert (await engine.get("/jobs"))["count"] == 0
        assert (await engine.client.get("/jobs/launch")).status_code == 404
    assert len(jobs.calls) == 1  # it ran once, not again after the restart


# -- filters on /jobs ---------------------------------------------------------------------

FILTERED = """
jobs:
  a-nightly:
    task: st_tasks.jobs:ping
    cron: "0 2 * * *"
    labels: {team: data, tier: gold}
  b-hourly:
    task: st_tasks.jobs:ping
    cron: "0 * * * *"
    labels: {team: data, tier: silver}
  c-weekly:
    task: st_tasks.jobs:ping
    cron: "0 3 * * 1"
    labels: {team: web, "key=with": "equals=sign"}
"""


async def test_jobs_filters_by_source_label_status_and_file_and_counts_after_filtering(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "team" / "data.yaml", FILTERED)
    write(schedules / "web.yaml", "jobs:\n  d-web: {task: st_tasks.jobs:ping, interval: 1h}\n")
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.ping, "e-runtime", hours=1)
        assert await engine.scheduler.run_job("b-hourly") is True
        await eventually(lambda: _with_last_run(engine.get("/jobs/b-hourly")))

        async def ids(query: str) -> list[str]:
            body = await engine.get(f"/jobs?{query}")
            assert body["count"] == len(body["jobs"])
            return [job["id"] for job in body["jobs"]]

        assert await ids("") == ["a-nightly", "b-hourly", "c-weekly", "d-web", "e-runtime"]
        assert await ids("source=runtime") == ["e-runtime"]
        assert await ids("source=declared") == ["a-nightly", "b-hourly", "c-weekly", "d-web"]
        assert await ids("label=team=data") == ["a-nightly", "b-hourly"]
        assert await ids("label=team=data&label=tier=gold") == ["a-nightly"]
        assert await ids("label=team=nobody") == []
        assert await ids("label=key=with=equals=sign") == []  # KEY is up to the first '='
        assert await ids("label=team=web") == ["c-weekly"]
        assert await ids("status=success") == ["b-hourly"]
        assert await ids("status=failed") == []
        prefix = str(schedules / "team")
        assert await ids(f"file={prefix}") == ["a-nightly", "b-hourly", "c-weekly"]
        assert await ids(f"file={prefix}&label=tier=silver&status=success") == ["b-hourly"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("source=elsewhere", "unknown source 'elsewhere'; use declared or runtime"),
        ("status=great", "unknown status 'great'; use one of success, failed"),
        ("label=team", "label filter 'team' is not KEY=VALUE"),
        ("label==x", "label filter '=x' is not KEY=VALUE"),
        ("status=" + "x" * 10_000, "unknown status 'xxxx"),
    ],
)
async def test_a_malformed_filter_is_a_400_with_a_clear_detail(
    settings: Settings, schedules: Path, jobs: ModuleType, query: str, says: str
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    async with running(settings) as engine:
        response = await engine.client.get(f"/jobs?{query}")
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert isinstance(detail, str) and says in detail
        assert len(detail) < 400  # a long value is cut, not echoed


# -- the Host header ------------------------------------------------------------------------

ALLOWED_HOSTS = [
    "localhost",
    "localhost:8000",
    "LocalHost:8000",
    "localhost.",
    "127.0.0.1",
    "127.0.0.1:8000",
    "127.3.4.5:1",
    "[::1]",
    "[::1]:8000",
    "[::ffff:127.0.0.1]:8000",
]
REFUSED_HOSTS = [
    "attacker.example",
    "attacker.example:8000",
    "localhost.attacker.example",
    "127.0.0.1.attacker.example",
    "10.0.0.1",
    "[::2]:8000",
    "[::1",
    "localhost:80x",
    "",
    "é.example",
]


@pytest.mark.parametrize("host", ALLOWED_HOSTS)
async def test_the_loopback_and_localhost_are_answered(settings: Settings, host: str) -> None:
    async with client_for(create_app(settings)) as client:
        response = await client.get("/healthz", headers={"Host": host})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_any_other_host_gets_400_with_a_json_detail(settings: Settings, host: str) -> None:
    async with client_for(create_app(settings)) as client:
        for path in ("/healthz", "/jobs", "/nowhere"):
            response = await client.get(path, headers={"Host": host.encode()})
            assert response.status_code == 400, (path, response.text)
            assert (
                "not allowed" in response.json()["detail"]
                or "Host header" in (response.json()["detail"])
            )


async def test_allowed_hosts_the_bound_host_and_a_star_extend_the_check(tmp_path: Path) -> None:
    base = engine_settings(tmp_path, TASKS, shutdown_grace=1)
    settings = Settings(
        **{
            **base.__dict__,
            "host": "10.1.2.3",
            "allowed_hosts": ("status.example.com", "*.corp.example", "192.168.0.9", "::5"),
        }
    )
    async with client_for(create_app(settings)) as client:
        for host in (
            "10.1.2.3:8000",
            "status.example.com",
            "STATUS.example.com:443",
            "a.corp.example",
            "b.a.corp.example:1",
            "192.168.0.9",
            "[::5]:80",
            "localhost",
        ):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200, host
        for host in ("corp.example", "xcorp.example", "example.com", "10.1.2.4"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 400, host

    anything = Settings(**{**base.__dict__, "allowed_hosts": ("*",)})
    async with client_for(create_app(anything)) as client:
        response = await client.get("/healthz", headers={"Host": "whatever.example"})
        assert response.status_code == 200


async def test_the_router_mounted_in_a_users_app_leaves_hosts_to_that_app() -> None:
    app = FastAPI()
    app.include_router(router)
    async with client_for(app) as client:
        response = await client.get("/healthz", headers={"Host": "users-own-name.example"})
        assert response.status_code == 200


# -- API docs -------------------------------------------------------------------------------


async def test_docs_are_not_served_unless_asked_but_the_description_exists(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with client_for(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert (await client.get(path)).status_code == 404, path
    assert "/jobs" in app.openapi()["paths"]

    shown = create_app(Settings(**{**settings.__dict__, "api_docs": True}))
    async with client_for(shown) as client:
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "schedctl"
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/redoc")).status_code == 200


# -- secrets beyond kwargs ------------------------------------------------------------------

LEAKY = """
jobs:
  copy-db:
    task: st_tasks.jobs:ping
    cron: "0 0 1 1 *"
    args: ["postgresql://app:hunter2@db/prod", 3]
    kwargs:
      target: "redis://:cache-pass@cache:6379/0"
      options: {dsn: "amqp://bot:rabbit-pass@mq//"}
    description: "copies postgresql://app:hunter2@db/prod nightly"
    labels: {team: data, auth_token: label-secret, link: "https://u:label-pass@x.example/"}
"""


async def test_url_passwords_and_secret_labels_are_masked_alike_in_jobs_and_specs(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "leaky.yaml", LEAKY)
    async with running(settings) as engine:
        texts = [(await engine.client.get(p)).text for p in ("/jobs", "/jobs/copy-db", "/specs")]
        for text in texts:
            for secret in ("hunter2", "cache-pass", "rabbit-pass", "label-secret", "label-pass"):
                assert secret not in text
        job = await engine.get("/jobs/copy-db")
        assert job["args"] == ["postgresql://app:***@db/prod", 3]
        assert job["kwargs"] == {
            "target": "redis://:***@cache:6379/0",
            "options": {"dsn": "amqp://bot:***@mq//"},
        }
        assert job["description"] == "copies postgresql://app:***@db/prod nightly"
        labels = {"team": "data", "auth_token": "***", "link": "https://u:***@x.example/"}
        assert job["labels"] == labels
        listed = (await engine.get("/jobs"))["jobs"][0]
        spec = (await engine.get("/specs"))["jobs"]["copy-db"]["spec"]
        for field in ("args", "kwargs", "description", "labels"):
            assert listed[field] == job[field] == spec[field], field
        # A masked label is not probed by its real value through the filter.
        assert (await engine.get("/jobs?label=auth_token=label-secret"))["count"] == 0

        # The task gets the real values.
        assert await engine.scheduler.run_job("copy-db") is True
        await eventually(lambda: jobs.calls, what="the task ran")
        assert jobs.calls[0][0] == ("postgresql://app:hunter2@db/prod", 3)


async def test_specs_send_a_digest_of_each_field_holding_secrets(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(schedules / "leaky.yaml", LEAKY)
    write(schedules / "plain.yaml", HOURLY)
    async with running(settings) as engine:
        specs = (await engine.get("/specs"))["jobs"]
        digests = specs["copy-db"]["secret_digests"]
        assert set(digests) == {"args", "kwargs", "labels", "description"}
        assert all(len(d) == 16 for d in digests.values())
        assert specs["hourly"]["secret_digests"] == {}


async def test_specs_follow_pauses_edits_and_removals_between_polls(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    """/specs keeps each job's part while the job's spec is the same (a run changes
    nothing in it); a pause, an edit or a removal shows in the next answer."""
    write(schedules / "plain.yaml", HOURLY)
    write(schedules / "leaky.yaml", LEAKY)
    async with running(settings) as engine:
        first = (await engine.get("/specs"))["jobs"]
        assert first["hourly"]["runtime_paused"] is False
        assert await engine.scheduler.run_job("hourly") is True
        await eventually(lambda: jobs.calls, what="the run")
        assert (await engine.get("/specs"))["jobs"] == first  # a run changes no spec

        assert await engine.scheduler.pause_job("hourly") is True
        assert (await engine.get("/specs"))["jobs"]["hourly"]["runtime_paused"] is True

        write(schedules / "plain.yaml", HOURLY.replace('"0 * * * *"', '"30 * * * *"'))
        write(schedules / "leaky.yaml", "jobs: {}\n")
        await engine.reconcile()
        edited = (await engine.get("/specs"))["jobs"]
        assert set(edited) == {"hourly"}
        assert edited["hourly"]["spec"]["cron"] == "30 * * * *"
        assert edited["hourly"]["fingerprint"] != first["hourly"]["fingerprint"]
        assert edited["hourly"]["runtime_paused"] is False  # an edit ends a runtime pause

        # Moved to another file unchanged: the same spec, a new provenance.
        write(schedules / "moved.yaml", HOURLY.replace('"0 * * * *"', '"30 * * * *"'))
        write(schedules / "plain.yaml", "jobs: {}\n")
        await engine.reconcile()
        moved = (await engine.get("/specs"))["jobs"]
        assert moved["hourly"]["file"].endswith("moved.yaml")
        assert moved["hourly"]["fingerprint"] == edited["hourly"]["fingerprint"]
        assert await engine.scheduler.pause_job("hourly") is True
        assert await engine.scheduler.resume_job("hourly") is True
        assert (await engine.get("/specs"))["jobs"] == moved  # paused, then resumed


async def test_jobs_follow_runs_pauses_replacements_edits_and_removals_between_polls(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    """/jobs keeps each job's encoded Job between polls and encodes again only the jobs
    that changed (and of those only what changed): after each change, every Job it lists
    is the one /jobs/{id} builds afresh."""
    write(schedules / "plain.yaml", HOURLY)
    write(schedules / "leaky.yaml", LEAKY)

    async def listed() -> dict[str, Any]:
        answer = await engine.get("/jobs")
        assert answer["count"] == len(answer["jobs"])
        for job in answer["jobs"]:
            fresh = await engine.get(f"/jobs/{job['id']}")
            fresh.pop("runs")
            assert job == fresh, job["id"]
        return {job["id"]: job for job in answer["jobs"]}

    async with running(settings) as engine:
        first = await listed()
        assert set(first) == {"copy-db", "hourly"} and first["hourly"]["last_run"] is None

        assert await engine.scheduler.run_job("hourly") is True
        await eventually(lambda: jobs.calls, what="the run")
        await eventually(engine.until_runs("hourly", lambda runs: runs[0]["finished_at"]))
        ran = await listed()
        assert ran["hourly"]["last_run"]["status"] == "success"
        assert ran["copy-db"] == first["copy-db"]

        assert await engine.scheduler.pause_job("hourly") is True
        paused = await listed()
        assert paused["hourly"]["paused"] is True and paused["hourly"]["next_run_time"] is None
        assert await engine.scheduler.resume_job("hourly") is True
        assert (await listed())["hourly"]["paused"] is False

        await engine.scheduler.add_cron_job(jobs.ping, "runtime", minute="5")
        assert (await listed())["runtime"]["trigger"]["expression"] == "0 5 * * * *"
        await engine.scheduler.add_cron_job(jobs.ping, "runtime", minute="7", replace_existing=True)
        assert (await listed())["runtime"]["trigger"]["expression"] == "0 7 * * * *"

        write(schedules / "plain.yaml", HOURLY.replace('"0 * * * *"', '"30 * * * *"'))
        write(schedules / "leaky.yaml", "jobs: {}\n")
        await engine.reconcile()
        edited = await listed()
        assert set(edited) == {"hourly", "runtime"}
        assert edited["hourly"]["trigger"]["expression"] == "30 * * * *"
        assert await engine.scheduler.remove_job("runtime") is True
        assert set(await listed()) == {"hourly"}


async def test_kept_parts_of_many_jobs_read_as_a_fresh_build_after_changes_at_block_edges(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    """/jobs and /specs keep 700 jobs' parts joined by blocks of 256: pauses, runs,
    removals and additions at the blocks' edges and inside them show exactly as a build
    from scratch (``Views.build_jobs``, ``Views.specs``) has them."""

    def declare(numbers: list[int]) -> None:
        lines = ["jobs:"]
        for n in numbers:
            lines += [f"  job-{n:04d}:", "    task: st_tasks.jobs:ping", '    cron: "0 3 * * *"']
        (schedules / "many.yaml").write_text("\n".join(lines) + "\n")

    async def same_as_fresh() -> None:
        views = engine.app.state.engine.views
        listed, specs = await engine.get("/jobs"), await engine.get("/specs")
        entries = views.snapshot()
        assert listed["jobs"] == json.loads(dumps(views.build_jobs(entries)))
        assert specs == json.loads(dumps(views.specs(entries)))

    numbers = list(range(700))
    declare(numbers)
    async with running(settings) as engine:
        await same_as_fresh()
        for n in (0, 255, 256, 511, 699, 300):
            assert await engine.scheduler.pause_job(f"job-{n:04d}") is True
        assert await engine.scheduler.run_job("job-0257") is True
        await eventually(
            engine.until_runs("job-0257", lambda runs: runs and runs[0]["finished_at"])
        )
        await same_as_fresh()
        assert await engine.scheduler.resume_job("job-0256") is True
        await same_as_fresh()
        # A run that ends between two polls, with an edit of other jobs in between.
        # A run that ends between two polls, and a runtime job added meanwhile (the
        # catalog changes, the revision does not: the kept parts are laid out again).
        assert await engine.scheduler.run_job("job-0258") is True
        await eventually(
            engine.until_runs("job-0258", lambda runs: runs and runs[0]["finished_at"])
        )
        await engine.scheduler.add_cron_job(jobs.ping, "job-0258a", minute="5")
        await same_as_fresh()
        numbers = [n for n in numbers if n not in (0, 256, 257, 600)] + [1000, 1001]
        declare(numbers)
        await engine.reconcile()
        await same_as_fresh()
        assert (await engine.get("/jobs"))["count"] == 699


# -- JSON that never fails ------------------------------------------------------------------


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ({1, 2}, "{1, 2}"),
        (b"\x00bytes", "b'\\x00bytes'"),
        (object, "<class 'object'>"),
        ("lone \ud800 surrogate", "'lone \\ud800 surrogate'"),
        (_Unprintable(), "<_Unprintable instance at 0x"),
        (10**5000, "<int that cannot be shown>"),
        (datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "2030-01-02T03:04:05+00:00"),
    ],
    ids=["nan", "inf", "set", "bytes", "class", "surrogate", "bad-repr", "huge-int", "datetime"],
)
def test_a_value_json_cannot_hold_is_shown_as_its_repr(value: object, shown: str) -> None:
    body = json.loads(dumps({"kwargs": {"x": value, "ok": [1, "é"]}}))
    assert body["kwargs"]["ok"] == [1, "é"]
    assert body["kwargs"]["x"].startswith(shown)


def test_odd_keys_and_deep_nesting_still_render() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    body = json.loads(dumps({(1, 2): "tuple key", "deep": deep, 3: "int key"}))
    assert body["(1, 2)"] == "tuple key" and body["3"] == "int key"
    assert isinstance(body["deep"], list)


async def test_a_read_model_with_values_json_cannot_hold_is_served_not_a_500(
    settings: Settings, schedules: Path, jobs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.core.views as views

    write(schedules / "hourly.yaml", HOURLY)
    real = views.job_static

    def odd_job(*args: Any) -> dict[str, Any]:
        job = dict(real(*args))
        job["kwargs"] = {"when": float("nan"), "what": {1, 2}, "raw": object()}
        return job

    monkeypatch.setattr(views, "job_static", odd_job)
    async with running(settings) as engine:
        response = await engine.client.get("/jobs")
        assert response.status_code == 200
        kwargs = response.json()["jobs"][0]["kwargs"]
        assert kwargs["when"] == "nan" and kwargs["what"] == "{1, 2}"
        assert kwargs["raw"].startswith("<object object at")


async def test_bound_to_every_interface_the_machines_own_name_is_answered(
    settings: Settings,
) -> None:
    everywhere = Settings(**{**settings.__dict__, "host": "0.0.0.0"})
    name = socket.gethostname()
    async with client_for(create_app(everywhere)) as client:
        response = await client.get("/healthz", headers={"Host": f"{name}:8000"})
        assert response.status_code == 200
        response = await client.get("/healthz", headers={"Host": "elsewhere.example"})
        assert response.status_code == 400


# -- ETag and 304 (contract section 5) -------------------------------------------------------


@pytest.mark.parametrize("path", ["/jobs", "/jobs/hourly", "/status", "/jobs?source=declared"])
async def test_a_poller_of_an_unchanged_state_gets_304_without_a_body(
    settings: Settings, schedules: Path, jobs: ModuleType, path: str
) -> None:
    write(schedules / "hourly.yaml", HOURLY)
    async with running(settings) as engine:
        first = await engine.client.get(path)
        assert first.status_code == 200
        tag = first.headers["etag"]
        again = await engine.client.get(path, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == tag
        other = await engine.client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        # A change (a runtime pause, a new file) changes the answer and its tag.
        assert await engine.scheduler.pause_job("hourly") is True
        write(schedules / "more.yaml", HOURLY.replace("hourly:", "hourly-2:"))
        await engine.reconcile()
        changed = await engine.client.get(path, headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.headers["etag"] != tag


@pytest.mark.parametrize("count", [3, 2_100])  # built on the loop, and off it (over BIG)
async def test_jobs_kept_per_job_always_equal_a_fresh_build(
    settings: Settings, schedules: Path, jobs: ModuleType, count: int
) -> None:
    """``GET /jobs`` keeps each job's part until that job changes: after runs, a pause, an
    edit, a runtime job added and removed, it still equals every job built afresh."""
    lines = ["jobs:"] + [
        f"  j{n:05d}: {{task: st_tasks.jobs:aping, interval: 1h}}" for n in range(count)
    ]
    write(schedules / "many.yaml", "\n".join(lines) + "\n")
    async with running(settings) as engine:
        the_engine = engine.app.state.engine

        async def same() -> None:
            listed = await engine.get("/jobs")
            fresh = the_engine.views.build_jobs(the_engine.views.snapshot())
            assert listed == json.loads(dumps({"count": len(fresh), "jobs": fresh}))

        await same()
        await engine.scheduler.run_job("j00001")
        await eventually(lambda: the_engine.history.last_finished("j00001"))
        await same()
        assert await engine.scheduler.pause_job("j00002") is True
        await same()
        await engine.scheduler.add_interval_job(jobs.ping, "zz-runtime", minutes=1)
        await same()
        lines[1] = "  j00000: {task: st_tasks.jobs:ping, interval: 2h, labels: {a: b}}"
        write(schedules / "many.yaml", "\n".join(lines) + "\n")
        await engine.reconcile()
        await same()
        assert await engine.scheduler.remove_job("zz-runtime") is True
        await engine.scheduler.run_job("j00000")
        await eventually(lambda: the_engine.history.last_finished("j00000"))
        await same()
