"""Replicas on one database: one leader fires, standbys serve, takeover never double-fires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.engine import Engine
from engine.settings import Settings

JOBS = """
jobs:
  tick:
    task: replica_tasks.work:tick
    cron: "* * * * * *"
"""


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path, make_package) -> Path:  # type: ignore[no-untyped-def]
    make_package("replica_tasks", {"work": "async def tick():\n    return None\n"})
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(JOBS)
    return schedules


def settings(schedules: Path, url: str) -> Settings:
    return Settings(
        schedules_dir=schedules,
        database_url=url,
        task_modules=("replica_tasks",),
        watch=False,
        shutdown_grace=1,
    )


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[tuple[str, float]]]:
    """Every run each engine really starts, keyed by the engine's history object id."""
    import engine.scheduler.executor as executor_module

    started: dict[int, list[tuple[str, float]]] = {}
    real = executor_module.execute

    async def recording(job_id, scheduled_at, *args, **kwargs):  # type: ignore[no-untyped-def]
        history = args[4]
        started.setdefault(id(history), []).append((job_id, scheduled_at.timestamp()))
        return await real(job_id, scheduled_at, *args, **kwargs)

    monkeypatch.setattr(executor_module, "execute", recording)
    return started


def fired(starts: dict[int, list[tuple[str, float]]], engine: Engine) -> list[tuple[str, float]]:
    """The runs started while ``engine``'s current history was the leader's."""
    return starts.get(id(engine.history), [])


async def test_one_leader_fires_and_the_standby_serves_the_same_jobs(
    project: Path, postgres_url: str, starts: dict[int, list[tuple[str, float]]]
) -> None:
    leader, standby = (
        Engine(settings(project, postgres_url)),
        Engine(settings(project, postgres_url)),
    )
    await leader.start()
    await standby.start()
    try:
        assert leader.status()["role"] == "leader"
        assert leader.status()["scheduler"] == "running"
        assert standby.status()["role"] == "standby"
        assert standby.status()["scheduler"] == "stopped"
        await eventually(lambda: len(fired(starts, leader)) >= 2)
        await eventually(lambda: standby.status()["revision"] == leader.revision)
        assert [job["id"] for job in standby.jobs()] == ["tick"]
        await eventually(lambda: standby.job("tick")["last_run"] is not None)  # type: ignore[index]
        assert list(starts) == [id(leader.history)]  # the standby never fires
    finally:
        await standby.stop()
        await leader.stop()


async def test_standby_takes_over_when_the_leader_dies_without_firing_a_run_twice(
    project: Path, postgres_url: str, starts: dict[int, list[tuple[str, float]]]
) -> None:
    first, second = Engine(settings(project, postgres_url)), Engine(settings(project, postgres_url))
    await first.start()
    await second.start()
    try:
        await eventually(lambda: len(fired(starts, first)) >= 2)
        # The leader's lease connection dies, as it does when its host or process dies.
        with first.db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted"
                )
            )
            conn.commit()
        died = time.monotonic()
        await eventually(lambda: second.status()["role"] == "leader", timeout=15)
        took_over_in = time.monotonic() - died
        await eventually(lambda: len(fired(starts, second)) >= 2)
        assert first.status()["role"] == "standby"  # the old leader stopped firing
        every = [start for runs in starts.values() for start in runs]
        assert len(every) == len(set(every)), "a scheduled run fired twice"
        assert took_over_in < 15
    finally:
        await second.stop()
        await first.stop()


async def test_second_process_on_one_sqlite_file_stands_by(
    project: Path, tmp_path: Path, starts: dict[int, list[tuple[str, float]]]
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    single, other = Engine(settings(project, url)), Engine(settings(project, url))
    await single.start()
    await other.start()
    try:
        assert single.status()["role"] == "single"
        assert other.status()["role"] == "standby"
        await eventually(lambda: len(fired(starts, single)) >= 1)
        assert list(starts) == [id(single.history)]
    finally:
        await other.stop()
        await single.stop()
    # Once the first process is gone, a new one takes the lock and fires.
    again = Engine(settings(project, url))
    await again.start()
    try:
        assert again.status()["role"] == "single"
    finally:
        await again.stop()
