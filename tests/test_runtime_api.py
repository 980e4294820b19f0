"""The in-process runtime API (contract section 7): ``app.state.scheduler``, ``engine.aps``,
a user's own FastAPI app, and extensions, against a real engine in the test's event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import textwrap
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI, Request

from engine import aps
from engine.api import router as status_router
from engine.app import create_app, lifespan
from engine.errors import JobRefused
from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import (
    JOB_FIELDS,
    RUN_FIELDS,
    engine_settings,
    eventually,
    parse_time,
    running,
    serving,
)

TASKS = "rt_tasks"

TASK_SOURCE = """
import threading
import time

calls = []


def _record(kind, tag):
    calls.append({"kind": kind, "tag": tag, "thread": threading.get_ident(), "at": time.time()})


async def async_tick(tag="async"):
    _record("async", tag)


def sync_tick(tag="sync"):
    _record("sync", tag)


def make_nested():
    def nested():
        pass

    return nested
"""

HOOKS_SOURCE = """
import asyncio

calls = []
entered = asyncio.Event()
release = asyncio.Event()


def set_app(app):
    calls.append(("set_app", app, app.state.engine.status()["scheduler"]))


async def init_tasks(config):
    app = calls[0][1]
    jobs = await app.state.scheduler.get_jobs()
    scheduler = app.state.engine.status()["scheduler"]
    calls.append(("init_tasks", dict(config), scheduler, [job["id"] for job in jobs]))
    entered.set()
    await release.wait()
"""

DECLARED = """
jobs:
  declared-nightly:
    task: rt_tasks.jobs:sync_tick
    cron: "0 3 * * *"
    description: declared in a file
"""


# -- harness ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=2)


@pytest.fixture
def schedules(settings: Settings) -> Path:
    return settings.schedules_dir


@pytest.fixture
def jobs(make_package: MakePackage) -> ModuleType:
    make_package(TASKS, {"jobs": TASK_SOURCE})
    return importlib.import_module(f"{TASKS}.jobs")


@pytest.fixture
def declared(schedules: Path, jobs: ModuleType) -> Path:
    path = schedules / "declared.yaml"
    write(path, DECLARED)
    return path


def calls_tagged(jobs: ModuleType, tag: str) -> list[dict[str, Any]]:
    return [call for call in jobs.calls if call["tag"] == tag]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip())


# -- add_job ------------------------------------------------------------------------------


async def test_add_job_with_an_interval_trigger_runs_async_def_on_the_loop_and_def_in_a_thread(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        loop_thread = threading.get_ident()
        await engine.scheduler.add_job(
            jobs.async_tick, "every-second-async", trigger="interval", seconds=1, args=["a"]
        )
        await engine.scheduler.add_job(
            jobs.sync_tick, "every-second-sync", trigger="interval", seconds=1, kwargs={"tag": "s"}
        )

        await eventually(
            lambda: len(calls_tagged(jobs, "a")) >= 2 and len(calls_tagged(jobs, "s")) >= 2,
            within=6,
            what="both interval jobs ran twice",
        )
        assert all(call["thread"] == loop_thread for call in calls_tagged(jobs, "a"))
        assert all(call["thread"] != loop_thread for call in calls_tagged(jobs, "s"))

        info = await eventually(lambda: engine.scheduler.get_job("every-second-async"))
        assert info["source"] == "runtime"
        assert info["task"] == f"{TASKS}.jobs:async_tick"
        assert info["args"] == ["a"]
        assert info["trigger"]["type"] == "interval"
        assert info["trigger"]["expression"] == "1s"
        assert info["next_run_time"] is not None
        sync_info = await eventually(
            lambda: _with_last_run(engine.scheduler.get_job("every-second-sync"))
        )
        assert sync_info["kwargs"] == {"tag": "s"}
        assert sync_info["last_run"]["status"] == "success"


async def _with_last_run(info: Awaitable[dict[str, Any] | None]) -> dict[str, Any] | None:
    found = await info
    return found if found is not None and found["last_run"] is not None else None


async def test_add_job_with_a_date_trigger_runs_async_and_sync_functions_at_that_time(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        soon = datetime.now(UTC) + timedelta(milliseconds=300)
        for func, tag in ((jobs.async_tick, "date-a"), (jobs.sync_tick, "date-s")):
            job_id = await engine.scheduler.add_job(
                func, f"once-{tag}", trigger="date", run_date=soon, args=[tag]
            )
            assert job_id == f"once-{tag}"
            info = await engine.scheduler.get_job(job_id)
            assert info["trigger"]["type"] == "date"
            assert parse_time(info["next_run_time"]) == soon

        await eventually(
            lambda: calls_tagged(jobs, "date-a") and calls_tagged(jobs, "date-s"),
            what="both date jobs ran",
        )
        ran = calls_tagged(jobs, "date-a") + calls_tagged(jobs, "date-s")
        assert all(call["at"] >= soon.timestamp() for call in ran)


async def test_a_runtime_date_job_leaves_the_job_list_after_its_run(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        job_id = await engine.scheduler.add_date_job(jobs.sync_tick, "one-shot", args=["one"])
        await engine.scheduler.add_interval_job(jobs.sync_tick, "stays", minutes=5)
        await eventually(lambda: calls_tagged(jobs, "one"), what="the date job ran")

        await eventually(
            lambda: _is_none(engine.scheduler.get_job(job_id)), what="the one-shot is gone"
        )
        assert [job["id"] for job in await engine.scheduler.get_jobs()] == ["stays"]
        response = await engine.client.get("/jobs")
        assert response.status_code == 200
        assert response.json()["count"] == 1
        assert (await engine.client.get(f"/jobs/{job_id}")).status_code == 404
        assert await engine.scheduler.remove_job(job_id) is False


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None


async def test_add_job_honours_an_apscheduler_style_id_keyword(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        job_id = await engine.scheduler.add_job(
            jobs.sync_tick, trigger="interval", minutes=5, id="my-report"
        )
        assert job_id == "my-report"
        assert await engine.scheduler.get_job("my-report") is not None


# -- add_cron_job, add_interval_job, add_date_job -----------------------------------------


async def test_add_cron_job_with_a_seconds_field_runs_async_and_sync_functions(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_cron_job(
            jobs.async_tick, "cron-a", second="*", minute="*", args=["cron-a"]
        )
        await engine.scheduler.add_cron_job(
            jobs.sync_tick, "cron-s", second="*", minute="*", kwargs={"tag": "cron-s"}
        )
        await eventually(
            lambda: calls_tagged(jobs, "cron-a") and calls_tagged(jobs, "cron-s"),
            what="both cron jobs ran",
        )
        info = await engine.scheduler.get_job("cron-a")
        assert {k: v for k, v in info["trigger"].items() if k != "description"} == {
            "type": "cron",
            "expression": "* * * * * *",
            "timezone": "UTC",
        }


async def test_add_cron_job_defaults_to_second_zero_and_reads_fields_like_crontab(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_cron_job(jobs.sync_tick, "nightly", minute="30", hour="2")
        await engine.scheduler.add_cron_job(
            jobs.sync_tick, "sundays", minute="0", hour="9", day_of_week="0"
        )
        await engine.scheduler.add_cron_job(
            jobs.async_tick, "sundays-too", minute="0", hour="9", day_of_week="7"
        )

        nightly = await engine.scheduler.get_job("nightly")
        assert nightly["trigger"]["expression"] == "0 30 2 * * *"
        at = parse_time(nightly["next_run_time"]).astimezone(UTC)
        assert (at.hour, at.minute, at.second) == (2, 30, 0)
        assert timedelta(0) < at - datetime.now(UTC) <= timedelta(days=1)
        for job_id in ("sundays", "sundays-too"):
            info = await engine.scheduler.get_job(job_id)
            assert parse_time(info["next_run_time"]).astimezone(UTC).weekday() == 6  # Sunday


async def test_add_interval_job_runs_async_and_sync_functions(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(
            jobs.async_tick, "interval-a", seconds=1, args=["interval-a"]
        )
        await engine.scheduler.add_interval_job(
            jobs.sync_tick, "interval-s", seconds=1, args=["interval-s"]
        )
        await eventually(
            lambda: calls_tagged(jobs, "interval-a") and calls_tagged(jobs, "interval-s"),
            what="both interval jobs ran",
        )

        before = datetime.now(UTC)
        await engine.scheduler.add_interval_job(jobs.sync_tick, "every-90-minutes", minutes=90)
        info = await engine.scheduler.get_job("every-90-minutes")
        assert info["trigger"]["expression"] == "1h30m"
        first = parse_time(info["next_run_time"])
        assert before + timedelta(minutes=90) <= first <= datetime.now(UTC) + timedelta(minutes=90)


@pytest.mark.parametrize(
    "fields",
    [{}, {"seconds": 0, "minutes": 0, "hours": 0, "days": 0, "weeks": 0}, {"seconds": -5}],
    ids=["nothing", "all-zero", "negative"],
)
async def test_add_interval_job_without_a_positive_interval_is_refused(
    settings: Settings, jobs: ModuleType, fields: dict[str, int]
) -> None:
    async with running(settings) as engine:
        with pytest.raises(JobRefused, match="above zero"):
            await engine.scheduler.add_interval_job(jobs.sync_tick, "never", **fields)
        assert await engine.scheduler.get_job("never") is None


async def test_add_date_job_without_a_date_runs_now_for_async_and_sync_functions(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_date_job(jobs.async_tick, "now-a", args=["now-a"])
        await engine.scheduler.add_date_job(jobs.sync_tick, "now-s", kwargs={"tag": "now-s"})
        await eventually(
            lambda: calls_tagged(jobs, "now-a") and calls_tagged(jobs, "now-s"),
            within=2,
            what="both date jobs ran at once",
        )


async def test_add_date_job_in_the_future_waits_for_its_date(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        when = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        await engine.scheduler.add_date_job(jobs.sync_tick, "launch", run_date=when)
        info = await engine.scheduler.get_job("launch")
        assert info["trigger"]["type"] == "date"
        assert parse_time(info["next_run_time"]) == when
        assert info["last_run"] is None


async def test_runtime_cron_jobs_use_the_engine_timezone(
    settings: Settings, jobs: ModuleType
) -> None:
    berlin = Settings(**{**settings.__dict__, "timezone": "Europe/Berlin"})
    async with running(berlin) as engine:
        await engine.scheduler.add_cron_job(jobs.sync_tick, "morning", minute="0", hour="9")
        info = await engine.scheduler.get_job("morning")
        assert info["trigger"]["timezone"] == "Europe/Berlin"
        local = parse_time(info["next_run_time"]).astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 0)


async def test_a_naive_run_date_is_read_in_the_engine_timezone_like_cron_fields(
    settings: Settings, jobs: ModuleType
) -> None:
    berlin = Settings(**{**settings.__dict__, "timezone": "Europe/Berlin"})
    async with running(berlin) as engine:
        naive = datetime(2030, 1, 1, 9)
        await engine.scheduler.add_date_job(jobs.sync_tick, "launch", run_date=naive)
        info = await engine.scheduler.get_job("launch")
        expected = naive.replace(tzinfo=ZoneInfo("Europe/Berlin"))
        assert parse_time(info["next_run_time"]) == expected


async def test_add_methods_generate_distinct_ids_when_job_id_is_none(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        later = datetime.now(UTC) + timedelta(hours=1)
        ids = [
            await engine.scheduler.add_job(jobs.sync_tick, trigger="interval", minutes=5),
            await engine.scheduler.add_job(jobs.async_tick, None, trigger="date", run_date=later),
            await engine.scheduler.add_cron_job(jobs.sync_tick),
            await engine.scheduler.add_interval_job(jobs.async_tick, hours=1),
            await engine.scheduler.add_date_job(jobs.sync_tick, run_date=later),
        ]
        assert all(isinstance(job_id, str) and job_id for job_id in ids)
        assert len(set(ids)) == len(ids)
        for job_id in ids:
            info = await engine.scheduler.get_job(job_id)
            assert info is not None and info["id"] == job_id and info["source"] == "runtime"


# -- remove, pause, resume, run -----------------------------------------------------------


async def test_remove_job_returns_true_once_then_false(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.sync_tick, "to-remove", minutes=5)

        assert await engine.scheduler.remove_job("to-remove") is True
        assert await engine.scheduler.get_job("to-remove") is None
        assert "to-remove" not in {job["id"] for job in await engine.scheduler.get_jobs()}
        assert await engine.scheduler.remove_job("to-remove") is False
        assert await engine.scheduler.remove_job("never-existed") is False


async def test_a_removed_interval_job_stops_running(settings: Settings, jobs: ModuleType) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.async_tick, "short-lived", seconds=0.5)
        await eventually(lambda: calls_tagged(jobs, "async"), what="the job ran")
        assert await engine.scheduler.remove_job("short-lived") is True
        ran = len(calls_tagged(jobs, "async"))
        # A marker job due after the removed job's next due time shows that time has passed.
        await engine.scheduler.add_interval_job(jobs.sync_tick, "marker", seconds=0.5)
        await eventually(lambda: len(calls_tagged(jobs, "sync")) >= 2, what="marker ran twice")
        assert len(calls_tagged(jobs, "async")) == ran


async def test_pause_clears_next_run_time_and_resume_brings_it_back(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_cron_job(jobs.async_tick, "pausable", minute="*/5")
        assert (await engine.scheduler.get_job("pausable"))["paused"] is False

        assert await engine.scheduler.pause_job("pausable") is True
        paused = await engine.scheduler.get_job("pausable")
        assert paused["paused"] is True
        assert paused["next_run_time"] is None
        response = await engine.client.get("/jobs/pausable")
        assert response.json()["next_run_time"] is None

        assert await engine.scheduler.resume_job("pausable") is True
        resumed = await engine.scheduler.get_job("pausable")
        assert resumed["paused"] is False
        next_run = parse_time(resumed["next_run_time"])
        assert next_run.minute % 5 == 0 and next_run > datetime.now(UTC)


async def test_pause_and_resume_of_an_unknown_job_return_false(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        assert await engine.scheduler.pause_job("nope") is False
        assert await engine.scheduler.resume_job("nope") is False
        assert await engine.scheduler.run_job("nope") is False


async def test_resuming_a_runtime_job_whose_schedule_has_ended_removes_it_without_error(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        ends = datetime.now(UTC) + timedelta(seconds=30)
        await engine.scheduler.add_job(
            jobs.sync_tick, "ended", trigger="interval", hours=1, end_date=ends
        )
        assert await engine.scheduler.pause_job("ended") is True

        assert await engine.scheduler.resume_job("ended") is True
        assert await engine.scheduler.get_job("ended") is None
        assert await engine.scheduler.get_jobs() == []


async def test_a_paused_interval_job_does_not_run(settings: Settings, jobs: ModuleType) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.async_tick, "held", seconds=0.5)
        assert await engine.scheduler.pause_job("held") is True
        await engine.scheduler.add_interval_job(jobs.sync_tick, "marker", seconds=0.5)
        await eventually(lambda: len(calls_tagged(jobs, "sync")) >= 2, what="marker ran twice")
        assert calls_tagged(jobs, "async") == []


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_run_job_runs_now_and_leaves_next_run_time_as_it_was(
    settings: Settings, jobs: ModuleType, kind: str
) -> None:
    func = jobs.async_tick if kind == "async" else jobs.sync_tick
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(func, "hourly", hours=1, args=[f"now-{kind}"])
        before = await engine.scheduler.get_job("hourly")
        assert before["last_run"] is None and before["runs"] == []

        assert await engine.scheduler.run_job("hourly") is True
        after = await eventually(
            lambda: _with_last_run(engine.scheduler.get_job("hourly")), what="the run finished"
        )
        assert calls_tagged(jobs, f"now-{kind}")
        assert after["last_run"]["status"] == "success"
        assert set(after["runs"][0]) == RUN_FIELDS
        assert after["runs"][0]["status"] == "success"
        assert after["runs"][0]["attempt"] == 1
        assert after["next_run_time"] == before["next_run_time"]


async def test_run_job_of_a_declared_job_runs_it_and_keeps_its_schedule(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        before = await engine.scheduler.get_job("declared-nightly")
        assert await engine.scheduler.run_job("declared-nightly") is True
        after = await eventually(
            lambda: _with_last_run(engine.scheduler.get_job("declared-nightly"))
        )
        assert after["last_run"]["status"] == "success"
        assert after["next_run_time"] == before["next_run_time"]


# -- get_job, get_jobs --------------------------------------------------------------------


async def test_get_job_returns_the_status_api_job_or_none(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(
            jobs.sync_tick, "described", minutes=10, args=[1, "two"], kwargs={"tag": "x"}
        )
        info = await engine.scheduler.get_job("described")
        assert set(info) == JOB_FIELDS | {"runs"}
        assert info["id"] == "described"
        assert info["task"] == f"{TASKS}.jobs:sync_tick"
        assert info["args"] == [1, "two"]
        assert info["kwargs"] == {"tag": "x"}
        assert info["trigger"]["type"] == "interval"
        assert info["trigger"]["expression"] == "10m"
        assert info["paused"] is False
        assert info["source"] == "runtime"
        assert info["file"] is None and info["line"] is None
        assert info["running"] == 0
        assert info["last_run"] is None
        assert info["runs"] == []
        parse_time(info["next_run_time"])
        response = await engine.client.get("/jobs/described")
        assert response.json() == info

        assert await engine.scheduler.get_job("missing") is None


async def test_get_jobs_lists_runtime_and_declared_jobs_with_their_source(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.sync_tick, "added-at-runtime", minutes=1)

        listed = {job["id"]: job for job in await engine.scheduler.get_jobs()}
        assert set(listed) == {"added-at-runtime", "declared-nightly"}
        assert listed["added-at-runtime"]["source"] == "runtime"
        assert listed["declared-nightly"]["source"] == "declared"
        assert Path(listed["declared-nightly"]["file"]).name == "declared.yaml"
        assert listed["declared-nightly"]["line"] == 2
        assert listed["declared-nightly"]["description"] == "declared in a file"
        assert all(set(job) == JOB_FIELDS for job in listed.values())


# -- declared jobs at runtime -------------------------------------------------------------


async def test_removing_a_declared_job_at_runtime_is_refused_and_it_stays(
    settings: Settings, declared: Path, jobs: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as engine:
        before = await engine.scheduler.get_job("declared-nightly")

        assert await engine.scheduler.remove_job("declared-nightly") is False
        after = await engine.scheduler.get_job("declared-nightly")
        assert after is not None
        assert after["next_run_time"] == before["next_run_time"]
        assert "declared" in caplog.text and "declared-nightly" in caplog.text


async def test_adding_a_runtime_job_with_a_declared_id_is_refused(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        before = await engine.scheduler.get_job("declared-nightly")

        with pytest.raises(JobRefused, match="declared"):
            await engine.scheduler.add_interval_job(jobs.async_tick, "declared-nightly", seconds=1)
        after = await engine.scheduler.get_job("declared-nightly")
        assert after == before
        assert after["task"] == f"{TASKS}.jobs:sync_tick"
        assert after["source"] == "declared"


async def test_a_declaration_added_later_replaces_a_runtime_job_of_the_same_id(
    settings: Settings, schedules: Path, jobs: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.async_tick, "declared-nightly", minutes=1)
        write(schedules / "declared.yaml", DECLARED)

        await engine.app.state.engine.reconcile()
        info = await engine.scheduler.get_job("declared-nightly")
        assert info["source"] == "declared"
        assert info["task"] == f"{TASKS}.jobs:sync_tick"
        assert info["trigger"]["expression"] == "0 3 * * *"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("declared-nightly" in message for message in warnings)


async def test_reconciling_never_touches_runtime_jobs(
    settings: Settings, schedules: Path, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.sync_tick, "mine", minutes=7)
        before = await engine.scheduler.get_job("mine")
        write(declared, "jobs: {}\n")
        write(
            schedules / "other.yaml",
            "jobs:\n  other: {task: rt_tasks.jobs:sync_tick, cron: '0 4 * * *'}\n",
        )

        await engine.app.state.engine.reconcile()
        assert await engine.scheduler.get_job("mine") == before
        assert {job["id"] for job in await engine.scheduler.get_jobs()} == {"mine", "other"}


async def test_a_runtime_pause_of_a_declared_job_holds_until_its_declaration_changes(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        assert await engine.scheduler.pause_job("declared-nightly") is True

        report = await engine.app.state.engine.reconcile()
        assert report["errors"] == []
        held = await engine.scheduler.get_job("declared-nightly")
        assert held["paused"] is True
        assert held["next_run_time"] is None

        edit(declared, "declared in a file", "now changed")
        await engine.app.state.engine.reconcile()
        resumed = await engine.scheduler.get_job("declared-nightly")
        assert resumed["description"] == "now changed"
        assert resumed["paused"] is False
        next_run = parse_time(resumed["next_run_time"]).astimezone(UTC)
        assert (next_run.hour, next_run.minute) == (3, 0)
        assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)


async def test_a_runtime_pause_of_a_declared_job_ends_when_its_schedule_changes(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        assert await engine.scheduler.pause_job("declared-nightly") is True

        edit(declared, '"0 3 * * *"', '"30 4 * * *"')
        await engine.app.state.engine.reconcile()
        resumed = await engine.scheduler.get_job("declared-nightly")
        assert resumed["trigger"]["expression"] == "30 4 * * *"
        assert resumed["paused"] is False
        next_run = parse_time(resumed["next_run_time"]).astimezone(UTC)
        assert (next_run.hour, next_run.minute) == (4, 30)


async def test_a_runtime_pause_of_a_declared_job_survives_a_restart(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        assert await engine.scheduler.pause_job("declared-nightly") is True

    async with running(settings) as engine:
        held = await engine.scheduler.get_job("declared-nightly")
        assert held["paused"] is True
        assert held["next_run_time"] is None
        assert await engine.scheduler.resume_job("declared-nightly") is True
        assert (await engine.scheduler.get_job("declared-nightly"))["next_run_time"] is not None


async def test_a_job_paused_in_its_file_never_shows_paused_while_it_is_scheduled(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    write(
        schedules / "paused.yaml",
        """
        jobs:
          file-paused:
            task: rt_tasks.jobs:sync_tick
            cron: "0 3 * * *"
            paused: true
        """,
    )
    async with running(settings) as engine:
        info = await engine.scheduler.get_job("file-paused")
        assert (info["paused"], info["next_run_time"]) == (True, None)

        await engine.scheduler.resume_job("file-paused")
        await engine.app.state.engine.reconcile()
        info = await engine.scheduler.get_job("file-paused")
        assert info["paused"] is (info["next_run_time"] is None)


# -- refusals -----------------------------------------------------------------------------


def _local_function() -> Callable[[], None]:
    def local() -> None:
        pass

    return local


async def test_a_lambda_or_nested_function_is_refused_when_added(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        refused = [lambda: None, _local_function(), jobs.make_nested()]
        for func in refused:
            with pytest.raises(JobRefused) as caught:
                await engine.scheduler.add_interval_job(func, seconds=1)
            message = str(caught.value)
            assert "importable" in message
            assert "lambda" in message and "nested function" in message
            with pytest.raises(JobRefused):
                await engine.scheduler.add_job(func, "x", trigger="interval", seconds=1)
            with pytest.raises(JobRefused):
                await engine.scheduler.add_date_job(func)
        assert await engine.scheduler.get_jobs() == []
        assert (await engine.client.get("/readyz")).status_code == 200


async def test_arguments_that_cannot_be_saved_are_refused_when_added(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        with pytest.raises(JobRefused, match="cannot be saved"):
            await engine.scheduler.add_interval_job(
                jobs.sync_tick, "locked", seconds=1, args=[threading.Lock()]
            )
        with pytest.raises(JobRefused, match="cannot be saved"):
            await engine.scheduler.add_date_job(
                jobs.async_tick, "locked-kw", kwargs={"tag": threading.Lock()}
            )
        assert await engine.scheduler.get_jobs() == []


# -- engine.aps -----------------------------------------------------------------------------


async def test_engine_aps_module_functions_drive_the_running_engine(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        later = datetime.now(UTC) + timedelta(hours=2)
        added = [
            await aps.add_job(jobs.async_tick, "a", trigger="interval", hours=1, args=["aps"]),
            await aps.add_cron_job(jobs.sync_tick, "c", minute="0"),
            await aps.add_interval_job(jobs.sync_tick, "i", minutes=3),
            await aps.add_date_job(jobs.sync_tick, "d", run_date=later),
        ]
        assert added == ["a", "c", "i", "d"]
        assert {job["id"] for job in await aps.get_jobs()} == {*added, "declared-nightly"}
        assert (await aps.get_job("c"))["trigger"]["expression"] == "0 0 * * * *"
        assert parse_time((await aps.get_job("d"))["next_run_time"]) == later

        assert await aps.pause_job("i") is True
        assert (await aps.get_job("i"))["next_run_time"] is None
        assert await aps.resume_job("i") is True
        assert (await aps.get_job("i"))["next_run_time"] is not None

        assert await aps.run_job("a") is True
        await eventually(lambda: calls_tagged(jobs, "aps"), what="the job run through aps")

        assert await aps.remove_job("d") is True
        assert await aps.remove_job("d") is False
        assert await aps.remove_job("declared-nightly") is False
        assert await aps.get_job("d") is None
        # The same engine the app holds.
        assert await engine.scheduler.get_job("i") == await aps.get_job("i")

    with pytest.raises(RuntimeError, match="no schedctl engine"):
        await aps.get_jobs()


# -- restart ------------------------------------------------------------------------------


async def test_runtime_jobs_come_back_after_a_restart_on_the_same_database(
    settings: Settings, jobs: ModuleType
) -> None:
    later = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    ids = ("cron-job", "interval-job", "date-job", "paused-job", "generated")
    async with running(settings) as engine:
        await engine.scheduler.add_cron_job(
            jobs.sync_tick, "cron-job", minute="15", hour="4", args=["nightly"]
        )
        await engine.scheduler.add_interval_job(
            jobs.async_tick, "interval-job", minutes=45, kwargs={"tag": "interval"}
        )
        await engine.scheduler.add_date_job(jobs.sync_tick, "date-job", run_date=later)
        await engine.scheduler.add_interval_job(jobs.sync_tick, "paused-job", hours=2)
        assert await engine.scheduler.pause_job("paused-job") is True
        generated = await engine.scheduler.add_job(jobs.async_tick, trigger="interval", hours=5)
        before = {job_id: await engine.scheduler.get_job(job_id) for job_id in ids[:-1]}
        before["generated"] = await engine.scheduler.get_job(generated)

    async with running(settings) as engine:
        for job_id in ids:
            wanted = before[job_id]
            info = await engine.scheduler.get_job(wanted["id"])
            assert info is not None, f"{job_id} did not come back"
            for field in ("source", "task", "args", "kwargs", "trigger", "next_run_time"):
                assert info[field] == wanted[field], (job_id, field)
            assert info["paused"] is (job_id == "paused-job")
        assert (await engine.scheduler.get_job("date-job"))["next_run_time"] is not None
        assert await engine.scheduler.resume_job("paused-job") is True
        assert (await engine.scheduler.get_job("paused-job"))["next_run_time"] is not None


async def test_a_restored_runtime_job_keeps_firing_after_a_restart(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.async_tick, "beat", seconds=1, args=["b"])
    jobs.calls.clear()

    async with running(settings) as engine:
        await eventually(lambda: calls_tagged(jobs, "b"), what="the restored job fired")
        info = await eventually(lambda: _with_last_run(engine.scheduler.get_job("beat")))
        assert info["last_run"]["status"] == "success"


# -- a user's own FastAPI app ---------------------------------------------------------------


def user_app(settings: Settings, jobs: ModuleType) -> FastAPI:
    """An application as the original design had it: the engine in the lifespan, the
    status router mounted, and the app's own routes calling ``app.state.scheduler``."""
    app = FastAPI(lifespan=lifespan(settings))
    app.include_router(status_router)

    @app.post("/reports/{name}")
    async def add_report(name: str, request: Request) -> dict[str, str]:
        job_id = await request.app.state.scheduler.add_interval_job(
            jobs.sync_tick, f"report-{name}", minutes=30, args=[name]
        )
        return {"id": job_id}

    @app.post("/pause/{job_id}")
    async def pause(job_id: str, request: Request) -> dict[str, bool]:
        return {"ok": await request.app.state.scheduler.pause_job(job_id)}

    @app.post("/resume/{job_id}")
    async def resume(job_id: str, request: Request) -> dict[str, bool]:
        return {"ok": await request.app.state.scheduler.resume_job(job_id)}

    @app.post("/run/{job_id}")
    async def run(job_id: str, request: Request) -> dict[str, bool]:
        return {"ok": await request.app.state.scheduler.run_job(job_id)}

    @app.delete("/reports/{job_id}")
    async def remove(job_id: str, request: Request) -> dict[str, bool]:
        return {"ok": await request.app.state.scheduler.remove_job(job_id)}

    @app.get("/mine")
    async def mine(request: Request) -> list[str]:
        found = await request.app.state.scheduler.get_jobs()
        return [job["id"] for job in found if job["source"] == "runtime"]

    return app


async def test_a_user_app_drives_the_scheduler_from_its_own_routes(
    settings: Settings, declared: Path, jobs: ModuleType
) -> None:
    async with serving(user_app(settings, jobs)) as engine:
        client = engine.client
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        assert (await client.post("/reports/sales")).json() == {"id": "report-sales"}
        assert (await client.get("/mine")).json() == ["report-sales"]

        job = (await client.get("/jobs/report-sales")).json()
        assert job["source"] == "runtime" and job["args"] == ["sales"]

        assert (await client.post("/pause/report-sales")).json() == {"ok": True}
        paused = (await client.get("/jobs/report-sales")).json()
        assert paused["paused"] is True and paused["next_run_time"] is None
        assert (await client.post("/pause/unknown")).json() == {"ok": False}
        assert (await client.post("/resume/report-sales")).json() == {"ok": True}
        assert (await client.get("/jobs/report-sales")).json()["next_run_time"] is not None

        assert (await client.post("/run/report-sales")).json() == {"ok": True}
        await eventually(lambda: calls_tagged(jobs, "sales"), what="the run through the route")

        assert (await client.delete("/reports/declared-nightly")).json() == {"ok": False}
        assert (await client.delete("/reports/report-sales")).json() == {"ok": True}
        assert (await client.get("/jobs/report-sales")).status_code == 404
        status = (await client.get("/status")).json()
        assert status["jobs"] == 1 and status["scheduler"] == "running"


# -- extensions ---------------------------------------------------------------------------


@pytest.fixture
def hooks(make_package: MakePackage, jobs: ModuleType) -> ModuleType:
    make_package("rt_ext", {"hooks": HOOKS_SOURCE})
    return importlib.import_module("rt_ext.hooks")


async def test_extensions_get_the_app_first_and_init_tasks_gates_readiness(
    settings: Settings, declared: Path, hooks: ModuleType
) -> None:
    app = create_app(settings, extensions={"rt_ext.hooks": {"x": 1}})
    stop = asyncio.Event()

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            await stop.wait()

    server = asyncio.create_task(serve())
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client:
            await eventually(hooks.entered.is_set, what="init_tasks was awaited")
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json() == {"status": "starting"}
            assert (await client.get("/healthz")).status_code == 200

            set_app, init_tasks = hooks.calls
            assert set_app[0] == "set_app" and set_app[1] is app
            assert set_app[2] == "stopped"  # before the scheduler started
            assert init_tasks[:3] == ("init_tasks", {"x": 1}, "running")
            assert init_tasks[3] == ["declared-nightly"]  # after the first reconcile

            hooks.release.set()
            ready = await eventually(
                lambda: _status_ok(client.get("/readyz")), what="/readyz turned ready"
            )
            assert ready.json() == {"status": "ready"}
    finally:
        hooks.release.set()
        stop.set()
        await server


async def _status_ok(response: Awaitable[httpx.Response]) -> httpx.Response | None:
    found = await response
    return found if found.status_code == 200 else None


async def test_extensions_named_in_settings_get_an_empty_config(
    settings: Settings, hooks: ModuleType
) -> None:
    hooks.release.set()
    configured = Settings(**{**settings.__dict__, "extensions": {"rt_ext.hooks": {}}})
    async with running(configured) as engine:
        assert (await engine.client.get("/readyz")).status_code == 200
        assert [call[0] for call in hooks.calls] == ["set_app", "init_tasks"]
        assert hooks.calls[1][1] == {}
