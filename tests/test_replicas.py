"""Replicas on one database: one leader fires, standbys serve, and no run fires twice.

Every task records the run it executes (``engine.current_run()``) with the engine that
ran it, so a duplicate is seen however it came about. The fencing test fails when the
database claim is switched off (``claims_off``): a leader that was replaced but still
believes it leads then fires the same runs as its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from engine.core.engine import Engine
from engine.errors import NotLeader
from engine.settings import Settings
from engine.state.db import StateDB
from engine.state.schema import lease as lease_table
from tests.conftest import MakePackage

JOBS = """
jobs:
  tick:
    task: replica_tasks.work:tick
    cron: "* * * * * *"
"""

TASKS = """
import os
import engine

ran = []


async def tick():
    run = engine.current_run()
    ran.append((run.job_id, run.scheduled_at.timestamp(), run.attempt, os.environ.get("X")))


def sync_tick():
    tick_run = engine.current_run()
    ran.append((tick_run.job_id, tick_run.scheduled_at.timestamp(), tick_run.attempt, None))
"""


async def eventually(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool) and hasattr(result, "__await__"):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.05)


@pytest.fixture
def work(make_package: MakePackage) -> Iterator[Any]:
    make_package("replica_tasks", {"work": TASKS})
    import replica_tasks.work as module

    yield module


@pytest.fixture
def project(tmp_path: Path, work: Any) -> Path:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(JOBS)
    return schedules


def settings(schedules: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "schedules_dir": schedules,
        "database_url": url,
        "task_modules": ("replica_tasks",),
        "watch": False,
        "shutdown_grace": 1,
        "lease_ttl": 3.0,
    }
    return Settings(**{**values, **overrides})


def duplicates(work: Any) -> list[tuple[str, float, int]]:
    seen: set[tuple[str, float, int]] = set()
    twice = []
    for job_id, when, attempt, _ in work.ran:
        key = (job_id, when, attempt)
        if key in seen:
            twice.append(key)
        seen.add(key)
    return twice


@pytest.fixture
def claims_off(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """``SCHEDCTL_CLAIMS_OFF=1`` switches the database claim off (every claim wins), to
    show that the fencing test then fails."""
    import os

    if os.environ.get("SCHEDCTL_CLAIMS_OFF") != "1":
        return False

    def every_claim_wins(self: StateDB, claims: Any, fence: Any) -> set[tuple[str, float]]:
        return {(c["job_id"], c["scheduled_at"]) for c in claims}

    monkeypatch.setattr(StateDB, "claim_runs", every_claim_wins)
    return True


async def test_one_leader_fires_and_the_standby_serves_the_same_jobs(
    project: Path, postgres_url: str, work: Any
) -> None:
    leader = Engine(settings(project, postgres_url))
    standby = Engine(settings(project, postgres_url))
    await leader.start()
    await standby.start()
    try:
        assert leader.status()["role"] == "leader"
        assert leader.status()["scheduler"] == "running"
        assert standby.status()["role"] == "standby"
        assert standby.status()["scheduler"] == "stopped"
        await eventually(lambda: len(work.ran) >= 2)
        await eventually(lambda: standby.status()["revision"] == leader.revision)
        assert [job["id"] for job in standby.jobs()] == ["tick"]
        await eventually(lambda: (standby.job("tick") or {}).get("last_run") is not None)
        assert standby.leading is False
    finally:
        await standby.stop()
        await leader.stop()
    assert duplicates(work) == []


async def test_a_replaced_leader_that_still_believes_it_leads_fires_nothing(
    project: Path, postgres_url: str, work: Any, claims_off: bool
) -> None:
    """A frozen or cut-off leader wakes up believing it leads: its claims carry the old
    epoch and the database refuses them, so it runs nothing its successor runs."""
    old = Engine(settings(project, postgres_url))
    new = Engine(settings(project, postgres_url))
    thaw = threading.Event()
    await old.start()
    await new.start()
    try:
        await eventually(lambda: len(work.ran) >= 2)
        # The old leader goes deaf: it never renews, and even its own clock check is
        # switched off, so only the database's epoch check stands in its way.
        old._tasks[0].cancel()  # its leadership loop
        old.lease.renew = lambda: thaw.wait(60) and False  # type: ignore[method-assign]
        old.lease.valid = lambda: True  # type: ignore[method-assign]
        # Its lease ends in the database (as when a frozen process misses its renewals).
        with old.db.engine.begin() as conn:
            conn.execute(update(lease_table).values(expires_at=0.0))
        await eventually(lambda: new.leading, timeout=10)
        await eventually(lambda: len({r for r in work.ran if r[1] > time.time() - 1}) >= 1)
        before = len(work.ran)
        await eventually(lambda: len(work.ran) >= before + 3)
        assert old.leading  # it still thinks so
    finally:
        thaw.set()
        await new.stop()
        await old.stop()
    assert duplicates(work) == [], "a replaced leader fired runs its successor fired too"


async def _forever() -> None:
    await asyncio.sleep(3600)


async def test_standby_takes_over_when_the_leader_dies_without_firing_a_run_twice(
    project: Path, postgres_url: str, work: Any
) -> None:
    first = Engine(settings(project, postgres_url))
    second = Engine(settings(project, postgres_url))
    await first.start()
    await second.start()
    try:
        await eventually(lambda: len(work.ran) >= 2)
        # The leader's lease connection dies, as it does when its process dies: only the
        # sessions of this test's own database are touched.
        with first.db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND a.datname = current_database()"
                )
            )
            conn.commit()
        died = time.monotonic()
        await eventually(lambda: second.leading, timeout=15)
        took_over_in = time.monotonic() - died
        count = len(work.ran)
        await eventually(lambda: len(work.ran) >= count + 2)
        await eventually(lambda: not first.leading, timeout=10)  # the old one stepped down
        assert took_over_in < 15
    finally:
        await second.stop()
        await first.stop()
    assert duplicates(work) == []


async def test_a_frozen_leader_is_replaced_once_its_lease_expires(
    project: Path, postgres_url: str, work: Any
) -> None:
    first = Engine(settings(project, postgres_url, lease_ttl=2.0))
    second = Engine(settings(project, postgres_url, lease_ttl=2.0))
    thaw = threading.Event()
    await first.start()
    await second.start()
    try:
        await eventually(lambda: len(work.ran) >= 1)
        # Frozen: it renews nothing and fires nothing, yet its process and its lock live
        # (its renewal never comes back, its loop acts on nothing).
        first.lease.renew = lambda: thaw.wait(60) and False  # type: ignore[method-assign]
        first.leadership._hold = _forever  # type: ignore[method-assign]
        first.facade.pause()
        frozen = time.monotonic()
        await eventually(lambda: second.leading, timeout=10)
        assert time.monotonic() - frozen < 2.0 + 1.0 + 1.5  # ttl + one try + slack
        count = len(work.ran)
        await eventually(lambda: len(work.ran) >= count + 2)
        # Woken up, it may not fire: its lease is gone by its own clock.
        assert first.may_fire() is False
    finally:
        thaw.set()
        await second.stop()
        await first.stop()
    assert duplicates(work) == []


async def test_the_runtime_api_on_a_standby_is_applied_by_the_leader(
    project: Path, postgres_url: str, work: Any
) -> None:
    from engine.surfaces.runtime_api import Scheduler

    leader = Engine(settings(project, postgres_url))
    standby = Engine(settings(project, postgres_url))
    await leader.start()
    await standby.start()
    try:
        on_standby = Scheduler(standby)
        job_id = await on_standby.add_interval_job(work.sync_tick, "from-standby", hours=1)
        assert job_id == "from-standby"
        assert "from-standby" in leader.facade.catalog  # applied before the call returned
        assert await on_standby.pause_job("from-standby") is True
        assert leader.facade.catalog["from-standby"].runtime_paused is True
        assert await on_standby.remove_job("tick") is False  # declared: refused
        await eventually(lambda: "from-standby" in standby.facade.catalog, timeout=10)
        assert await on_standby.remove_job("from-standby") is True
        assert "from-standby" not in leader.facade.catalog
    finally:
        await standby.stop()
        await leader.stop()


async def test_a_runtime_change_no_leader_takes_raises_not_leader_and_changes_nothing(
    project: Path, postgres_url: str, work: Any
) -> None:
    from engine.surfaces.runtime_api import Scheduler

    leader = Engine(settings(project, postgres_url))
    standby = Engine(settings(project, postgres_url))
    await leader.start()
    await standby.start()
    try:
        leader.leadership._term[2].cancel()  # the leader no longer reads commands
        with pytest.raises(NotLeader):
            await Scheduler(standby).add_interval_job(work.sync_tick, "lost", hours=1)
        await asyncio.sleep(0.3)
        assert "lost" not in leader.facade.catalog
    finally:
        await standby.stop()
        await leader.stop()


async def test_second_process_on_one_sqlite_file_stands_by(
    project: Path, tmp_path: Path, work: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    single, other = Engine(settings(project, url)), Engine(settings(project, url))
    await single.start()
    await other.start()
    try:
        assert single.status()["role"] == "single"
        assert other.status()["role"] == "standby"
        await eventually(lambda: len(work.ran) >= 1)
        assert other.leading is False
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
    assert duplicates(work) == []


def test_a_leader_frozen_inside_a_lease_transaction_does_not_block_the_takeover(
    postgres_url: str,
) -> None:
    """SIGSTOP can catch the leader between its renewal's UPDATE and COMMIT: the lease row
    stays locked by a session that never speaks again. A standby must still take over once
    the lease expires, not when the frozen process wakes up (found by the torture suite:
    30 s with no leader)."""
    from engine.state.lease import Lease

    frozen_db, standby_db = StateDB(postgres_url), StateDB(postgres_url)
    frozen_db.migrate()
    frozen, standby = Lease(frozen_db, ttl=2.0), Lease(standby_db, ttl=2.0)
    try:
        assert frozen.try_acquire()
        session = frozen_db.engine.connect()  # the leader's connection, frozen mid-renewal
        raw = session.connection.dbapi_connection
        session.begin()
        session.execute(
            update(lease_table).where(lease_table.c.name == "leader").values(holder=frozen.holder)
        )
        started = time.monotonic()
        took = False
        while not took and time.monotonic() - started < 12:
            try:
                took = standby.try_acquire()
            except Exception:  # the database refused this try: the standby tries again
                took = False
            if not took:
                time.sleep(0.2)  # a poll with a deadline
        assert took, "the standby never took the lease from a leader frozen in a transaction"
        assert time.monotonic() - started < 2.0 + 8.0  # the TTL, then the server's cut-off
        session.invalidate()
        with contextlib.suppress(Exception):
            raw.close()  # type: ignore[union-attr]  # ended by the server already
    finally:
        standby.release()
        frozen.lock.release()
        frozen_db.close()
        standby_db.close()


async def test_a_leader_frozen_between_claim_and_start_does_not_start_the_run_late(
    project: Path, postgres_url: str, work: Any
) -> None:
    """SIGSTOP between a run's claim and the start of its code: when the process wakes up
    its lease has run out (a standby may lead by now), so the run it claimed before the
    freeze must not start, 4 s late; its record says why (found by the torture suite)."""
    from engine.execution.runner import NOT_STARTED

    leader = Engine(settings(project, postgres_url, lease_ttl=2.0))
    frozen: list[datetime] = []
    thaw = threading.Event()
    execute = leader.runner.execute

    async def freeze_once(job_id: str, scheduled_at: datetime, *args: Any) -> str:
        if not frozen:
            frozen.append(scheduled_at)
            # SIGSTOP stops every thread: the lease's renewals too.
            leader.lease.renew = lambda: thaw.wait(60) and False  # type: ignore[method-assign]
            time.sleep(4.0)  # noqa: ASYNC251  (the process stops here: loop, lease renewals)
        return await execute(job_id, scheduled_at, *args)

    leader.runner.execute = freeze_once  # type: ignore[method-assign,assignment]
    await leader.start()
    try:
        await eventually(lambda: bool(frozen))
        when = frozen[0]

        def final() -> list[Any]:
            return [r for r in leader.history.runs_at("tick", when) if r.finished_at]

        records = await eventually(final)
    finally:
        thaw.set()
        await leader.stop()
    assert when.timestamp() not in {r[1] for r in work.ran}, "the claimed run started late"
    assert [(r.status, r.error, r.started_at) for r in records] == [("failed", NOT_STARTED, None)]


async def test_a_leader_whose_loop_is_busy_for_longer_than_its_lease_keeps_leading(
    project: Path, postgres_url: str, work: Any
) -> None:
    """A burst of runs or a large restore can hold the event loop for seconds: the lease
    is renewed by a thread of its own, so the leader keeps it and fires on (before, a
    50,000-run burst cost the lease, and the restore after it cost it again: no run
    started for as long as the burst lasted)."""
    leader = Engine(settings(project, postgres_url, lease_ttl=2.0))
    await leader.start()
    try:
        await eventually(lambda: len(work.ran) >= 1)
        epoch = leader.lease.epoch
        time.sleep(3.0)  # noqa: ASYNC251  (the loop held for longer than the lease)
        count = len(work.ran)
        await eventually(lambda: len(work.ran) >= count + 2)
        assert leader.leading and leader.lease.epoch == epoch, "the lease changed hands"
    finally:
        await leader.stop()
