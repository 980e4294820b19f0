"""``FiringScheduler``: APScheduler's pass over due jobs, cut to what the engine uses.

Each test runs a real scheduler on the test's event loop with a ``HeapJobStore`` and
records what it hands on; fire times are a fraction of a second apart or in the past, so
nothing waits for the clock longer than a poll with a deadline allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from engine.scheduler.catalog import build_job
from engine.scheduler.firing import RETRY_S, FiringScheduler
from engine.scheduler.store import HeapJobStore
from tests.harness import eventually

Handed = list[tuple[str, list[datetime]]]


class Broken(BaseTrigger):
    """A trigger whose every answer is an exception (a bug, a corrupt zone file)."""

    def get_next_fire_time(self, previous_fire_time: object, now: object) -> datetime | None:
        raise RuntimeError("this trigger is broken")


@pytest.fixture
async def firing() -> AsyncIterator[tuple[FiringScheduler, HeapJobStore, Handed]]:
    handed: Handed = []
    store = HeapJobStore()
    scheduler = FiringScheduler(store, lambda job, times: handed.append((job.id, times)))
    scheduler.start()
    yield scheduler, store, handed
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)  # AsyncIOScheduler shuts down through the loop


def add(
    scheduler: FiringScheduler,
    store: HeapJobStore,
    job_id: str,
    trigger: BaseTrigger,
    next_run: datetime | None,
    coalesce: bool = True,
) -> None:
    job = build_job(
        scheduler,
        job_id,
        trigger,
        next_run,
        name=job_id,
        misfire_grace_time=60,
        coalesce=coalesce,
        max_instances=1,
    )
    store.add_job(job)
    scheduler.wakeup()


async def test_a_job_whose_trigger_fails_is_kept_and_the_others_go_on_firing(
    firing: tuple[FiringScheduler, HeapJobStore, Handed], caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, store, handed = firing
    now = datetime.now(UTC)
    add(scheduler, store, "broken", Broken(), now)
    add(scheduler, store, "ticking", IntervalTrigger(seconds=0.1, start_date=now), now)

    await eventually(
        lambda: sum(job_id == "ticking" for job_id, _ in handed) >= 5,
        within=10,
        what="the healthy job fired five times",
    )
    broken = store.lookup_job("broken")
    assert broken is not None, "the job whose trigger failed was lost"
    assert broken.next_run_time == now  # still due: tried again later, not skipped
    assert store._keys["broken"] == pytest.approx(now.timestamp() + RETRY_S, abs=5)
    assert [job_id for job_id, _ in handed].count("broken") == 0
    assert "Job broken could not be fired" in caplog.text
    assert "this trigger is broken" in caplog.text


async def test_jobs_due_together_are_handed_on_in_id_order_and_one_shots_leave(
    firing: tuple[FiringScheduler, HeapJobStore, Handed],
) -> None:
    scheduler, store, handed = firing
    when = datetime.now(UTC) - timedelta(seconds=1)
    scheduler.pause()
    for job_id in ("c", "a", "b"):
        add(scheduler, store, job_id, DateTrigger(when), when)
    scheduler.resume()

    await eventually(lambda: len(handed) == 3, what="three one-shots fired")
    assert handed == [("a", [when]), ("b", [when]), ("c", [when])]
    assert len(store) == 0
    assert store.get_next_run_time() is None


async def test_a_job_behind_hands_on_every_time_missed_or_only_the_last_when_coalescing(
    firing: tuple[FiringScheduler, HeapJobStore, Handed],
) -> None:
    scheduler, store, handed = firing
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(seconds=4)
    every = IntervalTrigger(seconds=1, start_date=start)
    scheduler.pause()
    add(scheduler, store, "all", every, start, coalesce=False)
    add(scheduler, store, "last", every, start, coalesce=True)
    scheduler.resume()

    await eventually(lambda: len(handed) >= 2, what="both jobs fired")
    behind = [start + timedelta(seconds=k) for k in range(5)]
    assert dict(handed[:2]) == {"all": behind, "last": behind[-1:]}
    for job_id in ("all", "last"):
        job = store.lookup_job(job_id)
        assert job is not None
        assert job.next_run_time == now + timedelta(seconds=1)


async def test_a_paused_scheduler_hands_nothing_on(
    firing: tuple[FiringScheduler, HeapJobStore, Handed],
) -> None:
    scheduler, store, handed = firing
    scheduler.pause()
    when = datetime.now(UTC)
    add(scheduler, store, "held", DateTrigger(when), when)  # wakes the scheduler up
    for _ in range(3):  # the wake-up's pass has run: it comes through the loop's queue
        await asyncio.sleep(0)
    assert handed == []
    assert store.lookup_job("held") is not None
    scheduler.resume()
    await eventually(lambda: handed == [("held", [when])], what="fired once resumed")
