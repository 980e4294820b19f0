"""What each reload did, kept: the audit log, the git commit, and the mass-removal delay
(contract sections 4 and 5)."""

from __future__ import annotations

import importlib
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, running

TASKS = "au_tasks"


@pytest.fixture
def jobs(make_package: MakePackage) -> Iterator[ModuleType]:
    make_package(TASKS, {"jobs": "calls = []\n\nasync def ok(tag='x'):\n    calls.append(tag)\n"})
    yield importlib.import_module(f"{TASKS}.jobs")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=0.5)


def declare(settings: Settings, count: int, every: str = "1h", name: str = "jobs.yaml") -> None:
    body = "".join(
        f"  job-{n}: {{task: au_tasks.jobs:ok, interval: {every}, args: [job-{n}]}}\n"
        for n in range(count)
    )
    (settings.schedules_dir / name).write_text("jobs:\n" + body if count else "jobs: {}\n")


async def events(engine: Any, kind: str | None = None) -> list[dict[str, Any]]:
    found = (await engine.get("/events?limit=1000"))["events"]
    return [e for e in found if kind is None or e["kind"] == kind]


# -- mass removal ----------------------------------------------------------------------------


async def test_a_mass_removal_is_held_then_applied_if_the_files_still_say_so(
    settings: Settings, jobs: ModuleType
) -> None:
    held = Settings(**{**settings.__dict__, "mass_removal_delay": 2.0})
    declare(held, 10, every="1s")
    async with running(held) as engine:
        declare(held, 2, every="1s")
        report = await engine.reconcile()
        assert report["removed"] == 0
        status = await engine.get("/status")
        assert status["pending_removal"]["jobs"] == 8
        assert status["jobs"] == 10
        metrics = (await engine.client.get("/metrics")).text
        assert "schedctl_pending_removal_jobs 8.0" in metrics
        fired = len(jobs.calls)
        await eventually(lambda: "job-9" in jobs.calls[fired:], what="held jobs keep firing")

        async def applied() -> bool:
            return (await engine.get("/status"))["jobs"] == 2

        await eventually(applied, within=6, what="the held removal applied after 2 s")
        assert (await engine.get("/status"))["pending_removal"] is None
        kinds = [e["kind"] for e in await events(engine)]
        assert "removal_pending" in kinds and "removal_applied" in kinds
        [pending] = await events(engine, "removal_pending")
        assert sorted(pending["removed"]) == [f"job-{n}" for n in range(2, 10)]


async def test_a_volume_that_comes_back_within_the_delay_loses_nothing(
    settings: Settings, jobs: ModuleType
) -> None:
    held = Settings(**{**settings.__dict__, "mass_removal_delay": 30.0})
    declare(held, 10)
    async with running(held) as engine:
        before = {job["id"]: job["next_run_time"] for job in (await engine.get("/jobs"))["jobs"]}
        declare(held, 0)  # the checkout is half-synced: the file is empty
        await engine.reconcile()
        assert (await engine.get("/status"))["pending_removal"]["jobs"] == 10
        declare(held, 10)  # back
        await engine.reconcile()
        status = await engine.get("/status")
        assert status["pending_removal"] is None
        after = {job["id"]: job["next_run_time"] for job in (await engine.get("/jobs"))["jobs"]}
        assert after == before  # phases kept


@pytest.mark.parametrize(
    ("before", "after", "held"), [(10, 5, False), (5, 0, False), (12, 5, True)]
)
async def test_only_removing_more_than_half_and_more_than_five_is_held(
    settings: Settings, jobs: ModuleType, before: int, after: int, held: bool
) -> None:
    declare(settings, before)
    async with running(settings) as engine:
        declare(settings, after)
        report = await engine.reconcile()
        assert (report["removed"] == 0) is held
        assert ((await engine.get("/status"))["pending_removal"] is not None) is held


async def test_a_delay_of_zero_turns_the_guard_off(settings: Settings, jobs: ModuleType) -> None:
    off = Settings(**{**settings.__dict__, "mass_removal_delay": 0.0})
    declare(off, 10)
    async with running(off) as engine:
        declare(off, 0)
        assert (await engine.reconcile())["removed"] == 10


# -- the audit log ---------------------------------------------------------------------------


async def test_reconciles_that_change_something_are_events_with_the_job_ids(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, 3)
    async with running(settings) as engine:
        (settings.schedules_dir / "jobs.yaml").write_text(
            textwrap.dedent(
                """
                jobs:
                  job-0: {task: au_tasks.jobs:ok, interval: 1h, args: [job-0]}
                  job-1: {task: au_tasks.jobs:ok, interval: 2h, args: [job-1]}
                  job-9: {task: au_tasks.jobs:ok, interval: 1h}
                """
            )
        )
        await engine.app.state.engine.reconcile("signal")
        await engine.app.state.engine.reconcile("signal")  # nothing changed: no event
        await engine.scheduler.add_interval_job(jobs.ok, "adhoc", minutes=5)
        [latest, first] = await events(engine, "reconcile")
        assert latest["added"] == ["job-9"]
        assert latest["updated"] == ["job-1"]
        assert latest["removed"] == ["job-2"]
        assert latest["reason"] == "signal" and latest["revision"]
        assert first["added"] == ["job-0", "job-1", "job-2"] and first["reason"] == "start"
        [runtime] = await events(engine, "runtime")
        assert (runtime["job"], runtime["action"]) == ("adhoc", "add")
        assert [e["kind"] for e in await events(engine) if e["kind"] in ("start", "leader")]
        for event in await events(engine):
            assert set(event) == {
                "at",
                "kind",
                "revision",
                "commit",
                "reason",
                "added",
                "updated",
                "removed",
                "errors",
                "job",
                "action",
                "detail",
            }


async def test_a_reconcile_that_finds_errors_is_an_event(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, 1)
    async with running(settings) as engine:
        (settings.schedules_dir / "bad.yaml").write_text("jobs:\n  x: {task: au_tasks.jobs:ok}\n")
        await engine.reconcile()
        [event, _] = await events(engine, "reconcile")
        assert event["errors"] and event["errors"][0]["file"].endswith("bad.yaml")


async def test_the_event_log_keeps_the_newest_thousand(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, 1)
    async with running(settings) as engine:
        core = engine.app.state.engine
        for n in range(1100):
            core.event("runtime", job=f"j{n}", action="add")
        found = (await engine.get("/events?limit=5000"))["events"]
        assert len(found) <= 1000
        assert found[0]["job"] == "j1099"


# -- the commit ------------------------------------------------------------------------------


async def test_status_shows_the_commit_of_the_checkout_holding_the_schedules(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, 1)
    async with running(settings) as engine:
        assert (await engine.get("/status"))["commit"] is None
    repo = settings.schedules_dir.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "add", "schedules")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "first")
    async with running(settings) as engine:
        status = await engine.get("/status")
        assert status["commit"] == git("rev-parse", "HEAD")
        latest = (await events(engine, "start"))[0]
        assert latest["commit"] == status["commit"]
        assert latest["revision"] == status["revision"]
