"""The read-only HTTP status API (contract section 5) over a real engine: what each path
answers, errors of invalid files, methods, secret masking and timestamps.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import textwrap
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.app import create_app
from engine.settings import Settings
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
