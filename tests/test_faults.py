"""Faults and untrusted state, in-process: hung threads, timeouts, retries at shutdown,
crafted database rows, a broken state file, a lost lease, and an engine embedded in
someone else's process. Each test names the issue item it guards.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import pickle
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from engine.core.engine import Engine
from engine.errors import JobRefused, StateError
from engine.settings import Settings
from engine.state.db import StateDB
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, parse_time, running

TASKS = "ft_tasks"
TASK_SOURCE = """
import asyncio
import os
import threading
import time

calls = []
hold = threading.Event()


def hang():
    calls.append("hang")
    hold.wait(600)


def healthy():
    calls.append(("healthy", time.monotonic()))


async def own_timeout():
    raise TimeoutError("the upstream API timed out")


def sync_own_timeout():
    raise TimeoutError("the upstream API timed out")


async def fails():
    calls.append("fails")
    raise RuntimeError("down")


async def ok():
    calls.append("ok")


def touch(path):
    open(path, "w").close()
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=0.5)


@pytest.fixture
def jobs(make_package: MakePackage) -> Iterator[ModuleType]:
    make_package(TASKS, {"jobs": TASK_SOURCE})
    module = importlib.import_module(f"{TASKS}.jobs")
    yield module
    module.hold.set()


def declare(settings: Settings, text_: str) -> None:
    (settings.schedules_dir / "jobs.yaml").write_text(textwrap.dedent(text_).lstrip())


# -- threads (issue 7 item 4) ---------------------------------------------------------------


async def test_hanging_def_tasks_never_stop_other_def_jobs(
    settings: Settings, jobs: ModuleType
) -> None:
    """Three jobs whose `def` task hangs past its timeout fire every second; a healthy
    `def` job beside them keeps running on time, with a pool far smaller than the hangs."""
    small = Settings(**{**settings.__dict__, "thread_pool_size": 4})
    declare(
        small,
        """
        jobs:
          hang-1: {task: ft_tasks.jobs:hang, cron: "* * * * * *", timeout: 1s}
          hang-2: {task: ft_tasks.jobs:hang, cron: "* * * * * *", timeout: 1s}
          hang-3: {task: ft_tasks.jobs:hang, cron: "* * * * * *", timeout: 1s}
          healthy: {task: ft_tasks.jobs:healthy, cron: "* * * * * *"}
        """,
    )
    async with running(small) as engine:
        await eventually(lambda: jobs.calls.count("hang") >= 6, within=10, what="hangs")
        seen = len([c for c in jobs.calls if isinstance(c, tuple)])
        await eventually(
            lambda: len([c for c in jobs.calls if isinstance(c, tuple)]) >= seen + 4,
            within=8,
            what="the healthy job kept running",
        )
        runs = await engine.runs("hang-1")
        # A run is `running` only once its code started, and a hang is a timeout.
        assert {r["status"] for r in runs} <= {"timeout", "running", "failed", "skipped"}
        assert "timeout" in {r["status"] for r in runs}
        stuck = [r for r in runs if r["status"] == "failed"]
        assert all("still stuck" in r["error"] for r in stuck), stuck
        assert all(r["started_at"] for r in runs if r["status"] in ("running", "timeout"))


async def test_the_task_pool_starts_full_so_bursts_of_def_runs_add_no_threads(
    settings: Settings, jobs: ModuleType
) -> None:
    """Eight `def` jobs due in the same second, a pool of three: the three threads exist
    from the start and are the only ones that ever run them (a thread count that climbs
    with each burst would hide a leak from whoever graphs it)."""
    small = Settings(**{**settings.__dict__, "thread_pool_size": 3})
    burst = "\n".join(
        f'  burst-{i}: {{task: ft_tasks.jobs:healthy, cron: "* * * * * *"}}' for i in range(8)
    )
    declare(small, f"jobs:\n{burst}\n")
    before = set(threading.enumerate())

    def task_threads() -> set[threading.Thread]:
        return {
            t for t in set(threading.enumerate()) - before if t.name.startswith("schedctl-task")
        }

    async with running(small):
        started = task_threads()
        assert len(started) == 3
        await eventually(
            lambda: sum(isinstance(c, tuple) for c in jobs.calls) >= 24,
            within=10,
            what="three bursts of eight runs",
        )
        assert task_threads() == started


# -- timeouts and retries (issue 6 items 18, 19) ---------------------------------------------


@pytest.mark.parametrize("task", ["own_timeout", "sync_own_timeout"])
async def test_a_tasks_own_timeout_error_is_a_failure_not_the_engines_timeout(
    settings: Settings, jobs: ModuleType, task: str
) -> None:
    declare(
        settings,
        f"""
        jobs:
          no-limit: {{task: ft_tasks.jobs:{task}, cron: "0 0 1 1 *"}}
          with-limit: {{task: ft_tasks.jobs:{task}, cron: "0 0 1 1 *", timeout: 30s}}
        """,
    )
    async with running(settings) as engine:
        for job_id in ("no-limit", "with-limit"):
            assert await engine.scheduler.run_job(job_id) is True
            runs = await eventually(
                engine.until_runs(
                    job_id, lambda runs: runs and runs[0]["status"] not in ("queued", "running")
                )
            )
            assert runs[0]["status"] == "failed", runs
            assert runs[0]["error"] == "TimeoutError: the upstream API timed out"
            assert "TimeoutError" in runs[0]["traceback"]


async def test_no_retry_starts_once_the_engine_is_stopping(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(
        settings,
        """
        jobs:
          flaky: {task: ft_tasks.jobs:fails, cron: "0 0 1 1 *", retries: 5, retry_delay: 0.3s}
        """,
    )
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("flaky") is True
        await eventually(lambda: jobs.calls.count("fails") == 1)
    stopped = jobs.calls.count("fails")
    await asyncio.sleep(1.0)  # longer than the retry delay: a retry would have started
    assert jobs.calls.count("fails") == stopped == 1


# -- the runtime API (issue 6 items 16, 17) --------------------------------------------------


async def test_adding_an_existing_id_is_refused_unless_replace_existing(
    settings: Settings, jobs: ModuleType
) -> None:
    async with running(settings) as engine:
        await engine.scheduler.add_interval_job(jobs.ok, "mine", minutes=5)
        assert await engine.scheduler.pause_job("mine") is True
        with pytest.raises(JobRefused, match="exists already"):
            await engine.scheduler.add_interval_job(jobs.ok, "mine", minutes=1)
        held = await engine.scheduler.get_job("mine")
        assert held["paused"] is True and held["trigger"]["expression"] == "5m"
        await engine.scheduler.add_interval_job(jobs.ok, "mine", minutes=1, replace_existing=True)
        assert (await engine.scheduler.get_job("mine"))["trigger"]["expression"] == "1m"


@pytest.mark.parametrize(
    "value", [object(), b"bytes", {1, 2}, float("nan"), 10**30, datetime.now(UTC)]
)
async def test_arguments_that_are_not_json_are_refused_and_jobs_stays_200(
    settings: Settings, jobs: ModuleType, value: Any
) -> None:
    async with running(settings) as engine:
        with pytest.raises(JobRefused, match="kwargs"):
            await engine.scheduler.add_interval_job(jobs.ok, "x", minutes=5, kwargs={"v": value})
        assert (await engine.client.get("/jobs")).status_code == 200


# -- every instant in the job's zone (issue 6 item 20) -------------------------------------


async def test_every_instant_of_a_job_is_in_its_zone_before_and_after_a_restart(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(
        settings,
        """
        jobs:
          berlin: {task: ft_tasks.jobs:ok, cron: "0 9 * * *", timezone: Europe/Berlin}
        """,
    )

    def offsets(job: dict[str, Any]) -> set[Any]:
        run = job["runs"][0]
        times = [job["next_run_time"], run["scheduled_at"], run["started_at"]]
        times.append(run["finished_at"])
        return {parse_time(t).utcoffset() for t in times}

    zone = {timedelta(hours=1), timedelta(hours=2)}  # CET or CEST
    async with running(settings) as engine:
        assert await engine.scheduler.run_job("berlin") is True
        await eventually(engine.until_runs("berlin", lambda r: r and r[0]["status"] == "success"))
        assert offsets(await engine.job("berlin")) <= zone
    async with running(settings) as engine:
        assert offsets(await engine.job("berlin")) <= zone


# -- untrusted state (issue 6 items 11, 14, 15) ----------------------------------------------


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


async def test_a_crafted_database_row_runs_no_code_and_blocks_no_start(
    settings: Settings, jobs: ModuleType, tmp_path: Path
) -> None:
    async with running(settings):
        pass  # creates the database
    marker = tmp_path / "pwned"
    db = StateDB(settings.database_url)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schedctl_jobs (id, source, state, runtime_paused, done) "
                "VALUES ('pickled', 'runtime', :blob, 0, 0)"
            ),
            {"blob": pickle.dumps({"kwargs": _Exploit(str(marker))})},
        )
        runtime = {
            "version": 1,
            "task": "os:system",
            "trigger": {"type": "interval", "seconds": 1, "timezone": "UTC"},
            "args": [f"touch {marker}"],
            "kwargs": {},
            "options": {"misfire_grace_time": 60, "coalesce": True, "max_instances": 1},
        }
        conn.execute(
            text(
                "INSERT INTO schedctl_jobs (id, source, runtime, next_run_time, runtime_paused, "
                "done) VALUES ('shell', 'runtime', :data, 0, 0, 0)"
            ),
            {"data": json.dumps(runtime)},
        )
        huge = {"task": f"{TASKS}.jobs:ok", "cron": "0 0 1 1 *", "args": [int("f" * 4000, 16)]}
        sys.set_int_max_str_digits(0)
        try:
            essence = json.dumps(huge)
        finally:
            sys.set_int_max_str_digits(4300)
        conn.execute(
            text(
                "INSERT INTO schedctl_jobs (id, source, essence, runtime_paused, done) "
                "VALUES ('huge', 'declared', :essence, 0, 0)"
            ),
            {"essence": essence},
        )
    db.close()
    async with running(settings) as engine:
        assert (await engine.client.get("/readyz")).status_code == 200
        await asyncio.sleep(1.5)  # the shell job would have fired by now
        assert not marker.exists()
        listed = {job["id"] for job in (await engine.get("/jobs"))["jobs"]}
        assert "pickled" not in listed and "huge" not in listed and "shell" not in listed
    assert not marker.exists()


def test_an_empty_state_file_is_refused_in_one_line_unless_told_to_start_afresh(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    with pytest.raises(StateError) as caught:
        StateDB(f"sqlite:///{path}")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "empty" in message
    assert "--reset-state" in message
    StateDB(f"sqlite:///{path}", reset=True).close()
    assert [p.name for p in tmp_path.iterdir() if ".broken-" in p.name]


def test_a_corrupt_state_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError) as caught:
        StateDB(f"sqlite:///{path}")
    assert "not a SQLite database" in str(caught.value)
    damaged = tmp_path / "damaged.db"
    good = StateDB(f"sqlite:///{damaged}")
    good.migrate()
    good.close()
    data = bytearray(damaged.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, overwritten
    damaged.write_bytes(bytes(data))
    with pytest.raises(StateError) as caught:
        StateDB(f"sqlite:///{damaged}").migrate()
    assert "corrupt" in str(caught.value) and "\n" not in str(caught.value)


# -- a lost lease (issue 7 items 1, 3, 8) ------------------------------------------------------


async def test_a_leader_that_cannot_renew_stops_firing_then_leads_again_by_itself(
    settings: Settings, jobs: ModuleType
) -> None:
    short = Settings(**{**settings.__dict__, "lease_ttl": 2.0})
    declare(short, """jobs:\n  tick: {task: ft_tasks.jobs:ok, cron: "* * * * * *"}\n""")
    async with running(short) as engine:
        core: Engine = engine.app.state.engine
        await eventually(lambda: jobs.calls.count("ok") >= 1)
        renew, acquire = core.lease.renew, core.lease.try_acquire

        def unreachable() -> bool:
            raise OSError("connection refused")

        core.lease.renew = unreachable  # type: ignore[method-assign]
        core.lease.try_acquire = unreachable  # type: ignore[method-assign]
        lost = time.monotonic()
        await eventually(lambda: not core.may_fire(), within=3)
        assert time.monotonic() - lost < 2.0  # before the lease's 2 s could end
        await eventually(lambda: not core.leading, within=3)
        response = await engine.client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "database unreachable"}
        count = jobs.calls.count("ok")
        await asyncio.sleep(1.5)
        assert jobs.calls.count("ok") == count  # nothing fires meanwhile
        core.lease.renew, core.lease.try_acquire = renew, acquire  # type: ignore[method-assign]
        await eventually(lambda: core.leading, within=5, what="leading again")
        await eventually(lambda: jobs.calls.count("ok") > count, within=5)
        assert (await engine.client.get("/readyz")).status_code == 200


# -- embedding (issue 7 item 9) --------------------------------------------------------------


def _process_state() -> tuple[Any, ...]:
    return (
        gc.get_threshold(),
        sys.getswitchinterval(),
        gc.get_freeze_count(),
        gc.isenabled(),
        signal.getsignal(signal.SIGHUP),
    )


async def test_an_embedded_engine_changes_nothing_process_wide(
    settings: Settings, jobs: ModuleType
) -> None:
    declare(settings, """jobs:\n  tick: {task: ft_tasks.jobs:ok, interval: 1h}\n""")
    before = _process_state()
    async with running(settings):
        assert _process_state() == before
    assert _process_state() == before


async def test_tune_process_changes_the_process_and_restores_it(
    settings: Settings, jobs: ModuleType
) -> None:
    tuned = Settings(**{**settings.__dict__, "tune_process": True})
    declare(tuned, """jobs:\n  tick: {task: ft_tasks.jobs:ok, interval: 1h}\n""")
    before = _process_state()
    async with running(tuned):
        assert _process_state() != before
        assert sys.getswitchinterval() <= 0.0002  # the loop gets the GIL back soon
        assert gc.get_threshold()[0] >= 10_000  # a run's short-lived objects die untraced
    assert _process_state()[:4] == before[:4]


def test_no_thread_of_the_engine_keeps_the_process_alive(settings: Settings) -> None:
    """A stop or an exit never waits for a task or a database call (issue 7 item 5)."""
    import threading

    engine = Engine(settings)
    engine.io.submit(lambda: None).result()
    engine.threads.submit("x", lambda: None).result()
    ours = [t for t in threading.enumerate() if t.name.startswith(("schedctl-task", "schedctl-io"))]
    assert {t.name.split("-")[1] for t in ours} == {"task", "io"}
    assert all(t.daemon for t in ours)
    engine.db.close()
