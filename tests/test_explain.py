"""Why did it (not) run? ``GET /jobs/{id}/explain?at=T``: every verdict of section 9."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
import time_machine

from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, parse_time, running

TASKS = "ex_tasks"


@pytest.fixture
def jobs(make_package: MakePackage) -> Iterator[ModuleType]:
    source = "import asyncio\n\nasync def ok():\n    pass\n\nasync def hold():\n"
    make_package(TASKS, {"jobs": source + "    await asyncio.sleep(5)\n"})
    yield importlib.import_module(f"{TASKS}.jobs")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=0.2)


def declare(settings: Settings, text: str) -> None:
    (settings.schedules_dir / "jobs.yaml").write_text(textwrap.dedent(text).lstrip())


async def why(engine: Any, job_id: str, at: datetime | str) -> dict[str, Any]:
    value = at if isinstance(at, str) else at.isoformat()
    response = await engine.client.get(f"/jobs/{job_id}/explain?at={quote(value)}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert set(answer) == {"job", "at", "verdict", "detail", "runs", "previous_fire", "next_fire"}
    return answer


async def test_ran_lists_the_runs_of_that_fire_time(settings: Settings, jobs: ModuleType) -> None:
    declare(settings, 'jobs:\n  tick: {task: ex_tasks.jobs:ok, cron: "* * * * * *"}\n')
    async with running(settings) as engine:
        runs = await eventually(
            engine.until_runs("tick", lambda r: any(x["status"] == "success" for x in r))
        )
        done = next(r for r in runs if r["status"] == "success")
        answer = await why(engine, "tick", done["scheduled_at"])
        assert answer["verdict"] == "ran"
        assert [r["status"] for r in answer["runs"]] == ["success"]


async def test_a_time_the_schedule_does_not_have_names_the_nearest_fires(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, 'jobs:\n  nightly: {task: ex_tasks.jobs:ok, cron: "0 2 * * *"}\n')
    async with running(settings) as engine:
        day = datetime.now(UTC).date() - timedelta(days=3)
        at = datetime(day.year, day.month, day.day, 3, 0, tzinfo=UTC)
        answer = await why(engine, "nightly", at)
        assert answer["verdict"] in ("not_a_fire_time", "not_declared")
        future = at + timedelta(days=10)
        answer = await why(engine, "nightly", future)
        assert answer["verdict"] == "not_a_fire_time"
        assert parse_time(answer["previous_fire"]) == future - timedelta(hours=1)
        assert parse_time(answer["next_fire"]) == future + timedelta(hours=23)
        pending = await why(engine, "nightly", future - timedelta(hours=1))
        assert pending["verdict"] == "pending"
        near = await why(engine, "nightly", future - timedelta(minutes=59, seconds=30))
        assert near["verdict"] == "pending"  # within a minute of 02:00


async def test_not_declared_before_the_job_was_added(settings: Settings, jobs: ModuleType) -> None:
    declare(settings, 'jobs:\n  tick: {task: ex_tasks.jobs:ok, cron: "* * * * * *"}\n')
    async with running(settings) as engine:
        answer = await why(engine, "tick", datetime.now(UTC) - timedelta(hours=1))
        assert answer["verdict"] == "not_declared"
        assert (await engine.client.get("/jobs/nope/explain")).status_code == 404
        bad = await engine.client.get("/jobs/tick/explain?at=yesterday")
        assert bad.status_code == 422 and "datetime" in bad.text


async def test_outside_its_window_and_paused(settings: Settings, jobs: ModuleType) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0, tzinfo=None)
    declare(
        settings,
        f"""
        jobs:
          windowed: {{task: ex_tasks.jobs:ok, cron: "0 * * * *", start: "{later.isoformat()}"}}
          hourly: {{task: ex_tasks.jobs:ok, cron: "0 * * * *"}}
        """,
    )
    async with running(settings) as engine:
        soon = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        assert (await why(engine, "windowed", soon))["verdict"] == "outside_window"
        assert (await why(engine, "hourly", soon))["verdict"] == "pending"
        assert await engine.scheduler.pause_job("hourly") is True
        assert (await why(engine, "hourly", soon))["verdict"] == "paused"


async def test_missed_and_skipped_runs_say_why(settings: Settings, jobs: ModuleType) -> None:
    declare(
        settings,
        """
        jobs:
          busy: {task: ex_tasks.jobs:hold, cron: "* * * * * *"}
        """,
    )
    async with running(settings) as engine:
        runs = await eventually(
            engine.until_runs("busy", lambda r: any(x["status"] == "skipped" for x in r))
        )
        skipped = next(r for r in runs if r["status"] == "skipped")
        answer = await why(engine, "busy", skipped["scheduled_at"])
        assert answer["verdict"] == "skipped"
        assert "still going" in answer["detail"]


async def test_engine_down_while_no_engine_led(settings: Settings, jobs: ModuleType) -> None:
    declare(
        settings,
        'jobs:\n  hourly: {task: ex_tasks.jobs:ok, cron: "0 * * * *", misfire_grace: 1s}\n',
    )
    async with running(settings) as engine:
        due = parse_time((await engine.job("hourly"))["next_run_time"])
    with time_machine.travel(due + timedelta(hours=2, minutes=30), tick=True):
        async with running(settings) as engine:
            await eventually(engine.until_runs("hourly", bool))
            down = await why(engine, "hourly", due + timedelta(hours=1))
            assert down["verdict"] == "engine_down", down
            assert "no engine was leading" in down["detail"]
            missed = await why(engine, "hourly", due + timedelta(hours=2))
            assert missed["verdict"] == "missed" and "misfire_grace" in missed["detail"]
