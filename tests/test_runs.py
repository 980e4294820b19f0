"""How runs turn out and how they are recorded: ``/jobs/{id}`` runs (newest first) and
``last_run``, timeouts, retries, concurrency policies, misfires, shutdown, metrics.

Each test runs a real engine in the test's event loop over schedule files in ``tmp_path``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import time_machine
from prometheus_client.parser import text_string_to_metric_families

from engine.settings import Settings
from engine.state.db import StateDB
from tests.conftest import MakePackage
from tests.harness import RUN_FIELDS, Running, engine_settings, eventually, parse_time, running

TASKS = "rn_tasks"

TASK_SOURCE = """
import asyncio
import sys
import threading

started = []
gate = asyncio.Event()
thread_gate = threading.Event()
flaky_calls = []
finished = []


async def ok(tag="ok"):
    started.append(tag)


def fail():
    started.append("fail")
    raise ValueError("the report server said no")


async def held(tag="held"):
    started.append(tag)
    await gate.wait()
    finished.append(f"{tag}:done")


def held_sync(tag="held-sync"):
    started.append(tag)
    thread_gate.wait(10)


async def sleepy(seconds):
    started.append("sleepy")
    await asyncio.sleep(seconds)


def exits():
    sys.exit(3)


async def aexits():
    sys.exit(4)


def flaky():
    flaky_calls.append(1)
    if len(flaky_calls) < 2:
        raise ConnectionError("first call fails")
"""

NEVER = '"0 0 1 1 *"'  # once a year: the job only runs when the test says run_job


# -- harness ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=0.5)


@pytest.fixture
def schedules(settings: Settings) -> Path:
    return settings.schedules_dir


@pytest.fixture
def jobs(make_package: MakePackage) -> Iterator[ModuleType]:
    make_package(TASKS, {"jobs": TASK_SOURCE})
    module = importlib.import_module(f"{TASKS}.jobs")
    yield module
    module.thread_gate.set()  # let a blocked `def` task's thread end


def declare(schedules: Path, text: str) -> None:
    (schedules / "jobs.yaml").write_text(textwrap.dedent(text).lstrip())


def statuses(runs: list[dict[str, Any]]) -> list[str]:
    return [run["status"] for run in runs]


def finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if run["status"] not in ("queued", "running")]


# -- outcomes -----------------------------------------------------------------------------


async def test_successful_runs_are_recorded_newest_first_with_their_times(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          every-second:
            task: rn_tasks.jobs:ok
            cron: "* * * * * *"
        """,
    )
    async with running(settings) as engine:
        runs = await eventually(
            engine.until_runs("every-second", lambda runs: len(finished(runs)) >= 2),
            what="two finished runs",
        )
        done = finished(runs)
        newest, older = done[0], done[1]
        assert parse_time(newest["scheduled_at"]) > parse_time(older["scheduled_at"])
        for run in done:
            assert set(run) == RUN_FIELDS
            assert run["status"] == "success"
            assert run["attempt"] == 1
            assert run["error"] is None
            scheduled = parse_time(run["scheduled_at"])
            started = parse_time(run["started_at"])
            ended = parse_time(run["finished_at"])
            assert scheduled.microsecond == 0  # a cron time, on the second
            assert timedelta(0) <= started - scheduled < timedelta(seconds=1)
            assert started <= ended
            assert run["duration_s"] == pytest.approx((ended - started).total_seconds(), abs=1e-3)

        job = await engine.job("every-second")
        assert job["last_run"]["status"] == "success"
        assert parse_time(job["last_run"]["scheduled_at"]) >= parse_time(newest["scheduled_at"])
        assert jobs.started.count("ok") >= 2


async def test_a_failed_run_is_recorded_with_the_error_text(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          failing:
            task: rn_tasks.jobs:fail
            cron: "* * * * * *"
        """,
    )
    async with running(settings) as engine:
        await eventually(lambda: "fail" in jobs.started, what="the failing task ran")
        job = await eventually(
            lambda: _with_last_run(engine.job("failing")), what="the failed run is recorded"
        )
        assert job["last_run"]["status"] == "failed"
        assert job["last_run"]["error"] == "ValueError: the report server said no"
        assert job["last_run"]["attempt"] == 1
        assert job["running"] == 0
        assert job["runs"][0]["status"] in {"failed", "running"}
        assert job["next_run_time"] is not None  # a failure does not stop the schedule


async def _with_last_run(job: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    found = await job
    return found if found["last_run"] is not None else None


async def test_runs_past_their_timeout_are_recorded_timeout_for_async_and_sync_tasks(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          slow-async:
            task: rn_tasks.jobs:held
            cron: {NEVER}
            timeout: 1s
          slow-sync:
            task: rn_tasks.jobs:held_sync
            cron: {NEVER}
            timeout: 1s
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("slow-async") is True
        assert await engine.scheduler.run_job("slow-sync") is True
        for job_id in ("slow-async", "slow-sync"):
            job = await eventually(lambda job_id=job_id: _with_last_run(engine.job(job_id)))
            last = job["last_run"]
            assert last["status"] == "timeout", job_id
            assert "1s" in last["error"]
            assert 0.9 <= last["duration_s"] < 3
            # A thread cannot be stopped, but its run no longer counts as running.
            assert job["running"] == 0
        assert jobs.started.count("held-sync") == 1
        assert not jobs.thread_gate.is_set()  # the sync task really was still going


# -- retries ------------------------------------------------------------------------------


async def test_retries_record_each_attempt_as_its_own_run_with_a_doubling_delay(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          retried:
            task: rn_tasks.jobs:fail
            cron: {NEVER}
            retries: 2
            retry_delay: 200ms
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("retried") is True
        runs = await eventually(
            engine.until_runs("retried", lambda runs: len(finished(runs)) == 3),
            what="three finished attempts",
        )
        assert [run["attempt"] for run in runs] == [3, 2, 1]
        assert statuses(runs) == ["failed", "failed", "failed"]
        assert {run["error"] for run in runs} == {"ValueError: the report server said no"}
        assert len({run["scheduled_at"] for run in runs}) == 1  # one scheduled run
        third, second, first = runs
        wait_1 = parse_time(second["started_at"]) - parse_time(first["finished_at"])
        wait_2 = parse_time(third["started_at"]) - parse_time(second["finished_at"])
        assert wait_1 >= timedelta(seconds=0.19)
        assert wait_2 >= timedelta(seconds=0.39)
        job = await engine.job("retried")
        assert job["last_run"]["attempt"] == 3
        assert jobs.started.count("fail") == 3


async def test_a_retry_that_succeeds_ends_the_attempts(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          flaky:
            task: rn_tasks.jobs:flaky
            cron: {NEVER}
            retries: 3
            retry_delay: 100ms
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("flaky") is True
        job = await eventually(
            lambda: _status_is(engine.job("flaky"), "success"), what="the retry succeeded"
        )
        assert [(run["attempt"], run["status"]) for run in job["runs"]] == [
            (2, "success"),
            (1, "failed"),
        ]
        assert job["runs"][1]["error"] == "ConnectionError: first call fails"
        assert len(jobs.flaky_calls) == 2


async def _status_is(job: Awaitable[dict[str, Any]], status: str) -> dict[str, Any] | None:
    found = await job
    last = found["last_run"]
    return found if last is not None and last["status"] == status else None


async def test_a_timed_out_attempt_is_retried(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          slow:
            task: rn_tasks.jobs:held
            cron: {NEVER}
            timeout: 200ms
            retries: 1
            retry_delay: 100ms
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("slow") is True
        runs = await eventually(
            engine.until_runs("slow", lambda runs: len(finished(runs)) == 2),
            what="two timed-out attempts",
        )
        assert [(run["attempt"], run["status"]) for run in runs] == [(2, "timeout"), (1, "timeout")]
        assert jobs.started.count("held") == 2


# -- concurrency --------------------------------------------------------------------------


async def test_forbid_records_a_run_due_while_the_previous_one_goes_as_skipped(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          single:
            task: rn_tasks.jobs:held
            interval: 1s
        """,
    )
    async with running(settings) as engine:
        runs = await eventually(
            engine.until_runs("single", lambda runs: "skipped" in statuses(runs)),
            what="a skipped run",
        )
        skipped = next(run for run in runs if run["status"] == "skipped")
        assert "still going" in skipped["error"]
        assert skipped["started_at"] is None
        assert statuses(runs).count("running") == 1
        assert (await engine.job("single"))["running"] == 1
        assert jobs.started == ["held"]

        jobs.gate.set()
        runs = await eventually(
            engine.until_runs("single", lambda runs: "success" in statuses(runs)),
            what="the held run finished",
        )
        first = min(runs, key=lambda run: run["scheduled_at"])
        assert first["status"] == "success"


async def test_allow_runs_up_to_max_instances_beside_each_other(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          parallel:
            task: rn_tasks.jobs:held
            interval: 1s
            concurrency: allow
            max_instances: 2
        """,
    )
    async with running(settings) as engine:
        job = await eventually(
            lambda: _running_count(engine.job("parallel"), 2), what="two runs at once"
        )
        assert statuses(job["runs"]).count("running") == 2
        runs = await eventually(
            engine.until_runs("parallel", lambda runs: "skipped" in statuses(runs)),
            what="a third due run skipped",
        )
        skipped = next(run for run in runs if run["status"] == "skipped")
        assert "max_instances: 2" in skipped["error"]
        assert statuses(runs).count("running") == 2
        assert jobs.started == ["held", "held"]

        jobs.gate.set()
        runs = await eventually(
            engine.until_runs("parallel", lambda runs: statuses(runs).count("success") >= 2),
            what="both runs finished",
        )


async def _running_count(job: Awaitable[dict[str, Any]], count: int) -> dict[str, Any] | None:
    found = await job
    return found if found["running"] == count else None


async def test_replace_cancels_the_running_run_and_starts_the_new_one(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          latest-wins:
            task: rn_tasks.jobs:held
            interval: 1s
            concurrency: replace
        """,
    )
    async with running(settings) as engine:
        runs = await eventually(
            engine.until_runs(
                "latest-wins",
                lambda runs: bool(runs) and runs[0]["status"] == "running" and len(runs) >= 2,
            ),
            what="a replaced run and its successor",
        )
        newest, replaced = runs[0], runs[1]
        assert replaced["status"] == "cancelled"
        assert replaced["started_at"] is not None and replaced["finished_at"] is not None
        assert parse_time(newest["scheduled_at"]) > parse_time(replaced["scheduled_at"])
        assert parse_time(newest["started_at"]) >= parse_time(replaced["finished_at"]) - timedelta(
            milliseconds=50
        )
        assert "skipped" not in statuses(runs)
        job = await engine.job("latest-wins")
        assert job["running"] == 1
        assert len(jobs.started) >= 2
        jobs.gate.set()


# -- misfires -----------------------------------------------------------------------------


async def test_a_run_due_while_the_engine_was_down_is_missed_beyond_misfire_grace(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          strict:
            task: rn_tasks.jobs:ok
            args: [strict]
            cron: "0 3 * * *"
            misfire_grace: 1s
          lenient:
            task: rn_tasks.jobs:ok
            args: [lenient]
            cron: "0 3 * * *"
            misfire_grace: 1h
        """,
    )
    async with running(settings) as engine:
        due = parse_time((await engine.job("strict"))["next_run_time"])
        assert (await engine.job("lenient"))["next_run_time"] == (await engine.job("strict"))[
            "next_run_time"
        ]

    # The engine is down over 03:00 and comes back two minutes later.
    with time_machine.travel(due + timedelta(minutes=2), tick=True):
        async with running(settings) as engine:
            strict = await eventually(lambda: _with_last_run(engine.job("strict")))
            lenient = await eventually(lambda: _status_is(engine.job("lenient"), "success"))

            missed = strict["last_run"]
            assert missed["status"] == "missed"
            assert parse_time(missed["scheduled_at"]) == due
            assert "misfire_grace" in missed["error"]
            assert missed["started_at"] is None
            assert parse_time(strict["next_run_time"]) == due + timedelta(days=1)

            assert parse_time(lenient["last_run"]["scheduled_at"]) == due
            assert parse_time(lenient["next_run_time"]) == due + timedelta(days=1)
            assert jobs.started == ["lenient"]


async def test_a_one_shot_that_ran_stays_done_after_a_restart(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    due = datetime(2030, 1, 1, 3, tzinfo=UTC)
    declare(
        schedules,
        f"""
        jobs:
          launch:
            task: rn_tasks.jobs:ok
            args: [launch]
            at: "{due.isoformat()}"
            misfire_grace: 1h
          ticker:
            task: rn_tasks.jobs:ok
            args: [tick]
            cron: "* * * * * *"
        """,
    )
    with time_machine.travel(due - timedelta(seconds=0.5), tick=True):
        async with running(settings) as engine:
            await eventually(lambda: _status_is(engine.job("launch"), "success"), within=10)
            job = await engine.job("launch")
            assert (job["next_run_time"], job["paused"]) == (None, False)
    db = StateDB(settings.database_url)
    try:  # what a restart reads: done, not a paused job to be resumed
        [row] = [row for row in db.load_jobs() if row.id == "launch"]
        assert (row.done, row.next_run_time) == (True, None)
    finally:
        db.close()

    # Back within the grace: had the job's row not said it is done, it would run again.
    with time_machine.travel(due + timedelta(minutes=1), tick=True):
        async with running(settings) as engine:
            job = await engine.job("launch")
            assert (job["next_run_time"], job["paused"]) == (None, False)  # done, not paused
            assert job["last_run"]["status"] == "success"
            assert statuses(job["runs"]) == ["success"]
            # Resuming it at runtime has nothing to resume: a paused job would fire now.
            await engine.scheduler.resume_job("launch")
            resumed = datetime.now(UTC)
            await eventually(
                engine.until_runs(
                    "ticker",
                    lambda runs: any(
                        parse_time(r["scheduled_at"]) > resumed for r in finished(runs)
                    ),
                ),
                what="a tick after the resume",
            )
            assert statuses(await engine.runs("launch")) == ["success"]
            assert jobs.started.count("launch") == 1


async def test_coalesce_decides_whether_runs_missed_while_down_are_recorded_once_or_each(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          coalesced:
            task: rn_tasks.jobs:ok
            cron: "0 * * * *"
            misfire_grace: 1s
          each:
            task: rn_tasks.jobs:ok
            cron: "0 * * * *"
            misfire_grace: 1s
            coalesce: false
        """,
    )
    async with running(settings) as engine:
        due = parse_time((await engine.job("coalesced"))["next_run_time"])

    # Down over three hourly runs.
    with time_machine.travel(due + timedelta(hours=2, minutes=30), tick=True):
        async with running(settings) as engine:
            coalesced = await eventually(engine.until_runs("coalesced", bool))
            each = await eventually(engine.until_runs("each", lambda runs: len(runs) == 3))

            assert statuses(coalesced) == ["missed"]
            assert parse_time(coalesced[0]["scheduled_at"]) == due + timedelta(hours=2)
            assert statuses(each) == ["missed"] * 3
            assert sorted(parse_time(run["scheduled_at"]) for run in each) == [
                due + timedelta(hours=hours) for hours in range(3)
            ]
            for job_id in ("coalesced", "each"):
                job = await engine.job(job_id)
                assert parse_time(job["next_run_time"]) == due + timedelta(hours=3)
            assert jobs.started == []


async def test_without_coalesce_every_run_missed_within_the_grace_runs_after_downtime(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          catch-up:
            task: rn_tasks.jobs:ok
            cron: "0 * * * *"
            misfire_grace: 5h
            coalesce: false
        """,
    )
    async with running(settings) as engine:
        due = parse_time((await engine.job("catch-up"))["next_run_time"])

    with time_machine.travel(due + timedelta(hours=2, minutes=30), tick=True):
        async with running(settings) as engine:
            runs = await eventually(
                engine.until_runs("catch-up", lambda runs: len(finished(runs)) == 3)
            )
            assert statuses(runs) == ["success"] * 3
            assert jobs.started == ["ok"] * 3


# -- shutdown -----------------------------------------------------------------------------


async def test_stopping_waits_up_to_shutdown_grace_then_records_the_rest_cancelled(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          quick:
            task: rn_tasks.jobs:sleepy
            args: [0.3]
            cron: {NEVER}
          stuck-async:
            task: rn_tasks.jobs:held
            cron: {NEVER}
          stuck-sync:
            task: rn_tasks.jobs:held_sync
            cron: {NEVER}
        """,
    )
    graceful = Settings(**{**settings.__dict__, "shutdown_grace": 1.0})
    async with running(graceful) as engine:
        for job_id in ("quick", "stuck-async", "stuck-sync"):
            assert await engine.scheduler.run_job(job_id) is True
        await eventually(
            lambda: len(jobs.started) == 3 and _all_running(engine), what="three runs going"
        )
        stopping = time.monotonic()
    assert time.monotonic() - stopping >= 0.9  # it waited for the grace

    async with running(settings) as engine:
        quick = await engine.job("quick")
        assert quick["last_run"]["status"] == "success"
        for job_id in ("stuck-async", "stuck-sync"):
            job = await engine.job(job_id)
            assert job["last_run"]["status"] == "cancelled", job_id
            assert statuses(job["runs"]) == ["cancelled"]
            assert job["running"] == 0


async def _all_running(engine: Running) -> bool:
    counts = [(await engine.job(job_id))["running"] for job_id in ("quick", "stuck-async")]
    return counts == [1, 1]


async def test_a_run_in_progress_is_shown_as_running(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          in-progress:
            task: rn_tasks.jobs:held
            cron: {NEVER}
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("in-progress") is True
        job = await eventually(lambda: _running_count(engine.job("in-progress"), 1))
        current = job["runs"][0]
        assert current["status"] == "running"
        assert current["started_at"] is not None
        assert current["finished_at"] is None and current["duration_s"] is None
        assert job["last_run"] is None  # the last *finished* run
        listed = (await engine.client.get("/jobs")).json()["jobs"]
        assert [entry["running"] for entry in listed] == [1]

        jobs.gate.set()
        job = await eventually(lambda: _status_is(engine.job("in-progress"), "success"))
        assert job["running"] == 0
        assert statuses(job["runs"]) == ["success"]


async def test_a_job_removed_from_the_files_lets_its_running_run_finish(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          going:
            task: rn_tasks.jobs:held
            args: [going]
            cron: {NEVER}
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("going") is True
        await eventually(lambda: _running_count(engine.job("going"), 1))
        declare(schedules, "jobs: {}\n")
        report = await engine.app.state.engine.reconcile()
        assert report["removed"] == 1
        assert (await engine.client.get("/jobs/going")).status_code == 404

        jobs.gate.set()
        await eventually(lambda: "going:done" in jobs.finished, what="the run finished")


SYSTEM_EXIT_SCRIPT = """
import asyncio
import json
import sys
from pathlib import Path

from engine.app import create_app
from engine.settings import Settings
from engine.state.db import StateDB


async def main():
    settings = Settings(
        schedules_dir=Path(sys.argv[1]),
        database_url=sys.argv[2],
        task_modules=("rn_tasks",),
        watch=False,
        shutdown_grace=1,
    )
    app = create_app(settings)
    outcomes = {}
    async with app.router.lifespan_context(app):
        scheduler = app.state.scheduler
        for job_id in ("exits-async", "exits-sync"):
            await scheduler.run_job(job_id)
            for _ in range(250):
                job = await scheduler.get_job(job_id)
                if job["last_run"] is not None:
                    break
                await asyncio.sleep(0.02)
            outcomes[job_id] = [job["last_run"] and job["last_run"]["status"], job["running"]]
            outcomes[job_id].append(job["last_run"] and job["last_run"]["error"])
    print(json.dumps(outcomes))


asyncio.run(main())
"""


def test_a_task_calling_sys_exit_is_a_failed_run_not_the_end_of_the_engine(
    tmp_path: Path, settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        f"""
        jobs:
          exits-async:
            task: rn_tasks.jobs:aexits
            cron: {NEVER}
          exits-sync:
            task: rn_tasks.jobs:exits
            cron: {NEVER}
        """,
    )
    script = tmp_path / "system_exit.py"
    script.write_text(SYSTEM_EXIT_SCRIPT)
    # The engine runs in its own process: with the bug it takes that process down.
    done = subprocess.run(
        [sys.executable, str(script), str(schedules), settings.database_url],
        cwd=tmp_path / "importable",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes["exits-async"][:2] == ["failed", 0]
    assert outcomes["exits-sync"][:2] == ["failed", 0]
    assert "SystemExit" in outcomes["exits-async"][2]
    assert "SystemExit" in outcomes["exits-sync"][2]


# -- metrics ------------------------------------------------------------------------------

GOOD_AND_BAD = f"""
jobs:
  good:
    task: rn_tasks.jobs:ok
    cron: {NEVER}
  bad:
    task: rn_tasks.jobs:fail
    cron: {NEVER}
"""


async def test_metrics_count_finished_runs_by_job_and_status(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(schedules, GOOD_AND_BAD)
    async with running(settings) as engine:
        for job_id in ("good", "good", "bad"):
            assert await engine.scheduler.run_job(job_id) is True
            await eventually(lambda job_id=job_id: _with_last_run(engine.job(job_id)))
        await eventually(
            engine.until_runs("good", lambda runs: statuses(runs) == ["success", "success"])
        )

        response = await engine.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = {
            (sample.name, sample.labels.get("job_id"), sample.labels.get("status")): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
        assert samples[("schedctl_runs_total", "good", "success")] == 2
        assert samples[("schedctl_runs_total", "bad", "failed")] == 1
        assert ("schedctl_runs_total", "good", "failed") not in samples
        assert 'schedctl_runs_total{job_id="good",status="success"} 2.0' in response.text


async def test_per_job_metrics_follow_each_change_between_scrapes(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    """A scrape keeps each job's series until the job changes: what the next scrape says
    of a job that ran, failed, was paused or whose file broke is what the job says now."""
    declare(schedules, GOOD_AND_BAD)

    async def scrape() -> dict[tuple[str, str | None], float]:
        text = (await engine.client.get("/metrics")).text
        return {
            (sample.name, sample.labels.get("job_id")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("job_id") in ("good", "bad")
        }

    async with running(settings) as engine:
        before = await scrape()  # every job's lines kept from here on
        assert ("schedctl_job_last_success_timestamp_seconds", "good") not in before
        next_run = parse_time((await engine.job("good"))["next_run_time"]).timestamp()
        assert before[("schedctl_job_next_run_timestamp_seconds", "good")] == next_run
        assert await engine.scheduler.run_job("good") is True
        for _ in range(2):
            assert await engine.scheduler.run_job("bad") is True
        await eventually(engine.until_runs("good", lambda runs: statuses(runs) == ["success"]))
        await eventually(engine.until_runs("bad", lambda runs: statuses(runs) == ["failed"] * 2))
        ran = await scrape()
        [run] = await engine.runs("good")
        finished_at = parse_time(run["finished_at"]).timestamp()
        assert ran[("schedctl_job_last_success_timestamp_seconds", "good")] == finished_at
        assert ran[("schedctl_job_last_run_timestamp_seconds", "good")] == finished_at
        assert ran[("schedctl_job_consecutive_failures", "bad")] == 2
        assert ran[("schedctl_runs_total", "bad")] == 2

        await engine.scheduler.pause_job("good")
        paused = await scrape()
        assert ("schedctl_job_next_run_timestamp_seconds", "good") not in paused
        assert paused[("schedctl_job_next_run_timestamp_seconds", "bad")] == next_run

        (schedules / "jobs.yaml").write_text("jobs:\n  good: [not, a, job\n")
        await engine.reconcile()  # the file is broken: its jobs run as last applied
        broken = await scrape()
        assert broken[("schedctl_job_stale", "good")] == 1
        assert broken[("schedctl_job_stale", "bad")] == 1


# -- when interval jobs first run ---------------------------------------------------------


async def test_a_declared_interval_job_first_runs_one_interval_after_it_is_added(
    settings: Settings, schedules: Path, jobs: ModuleType
) -> None:
    declare(
        schedules,
        """
        jobs:
          hourly:
            task: rn_tasks.jobs:ok
            interval: 1h
        """,
    )
    async with running(settings) as engine:
        added = datetime.now(UTC)
        job = await engine.job("hourly")
        first = parse_time(job["next_run_time"])
        assert timedelta(minutes=59) < first - added <= timedelta(hours=1)
        # A marker run shows the scheduler has had its chance to fire anything due now.
        assert await engine.scheduler.run_job("hourly") is True
        await eventually(lambda: _with_last_run(engine.job("hourly")))
        assert jobs.started == ["ok"]
