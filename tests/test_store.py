"""``HeapJobStore`` checked against APScheduler's own ``MemoryJobStore`` as the reference.

Both stores get the same random sequence of adds, updates (new next run times, pauses,
resumes) and removals, made with real ``apscheduler.job.Job`` objects of a scheduler that
is never started; after every step everything the scheduler can ask them must agree.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from engine.scheduler.store import HeapJobStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
IDS = [f"job-{n:02d}" for n in range(24)]
# A coarse grid so that several jobs often share one instant; some in another zone.
TIMES: list[datetime | None] = [T0 + timedelta(seconds=10 * k) for k in range(8)]
TIMES += [(T0 + timedelta(seconds=10 * k)).astimezone(BERLIN) for k in (0, 3, 9)]
TIMES += [T0 + timedelta(seconds=25, microseconds=1), None, None]
NOWS = [
    T0 - timedelta(seconds=1),
    T0,
    (T0 + timedelta(seconds=25)).astimezone(BERLIN),
    T0 + timedelta(seconds=25, microseconds=1),
    T0 + timedelta(hours=1),
]


@pytest.fixture(scope="module")
def scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone="UTC")  # never started: it only owns the jobs


@pytest.fixture(scope="module")
def trigger() -> IntervalTrigger:
    return IntervalTrigger(seconds=5, timezone=UTC)


MakeJob = Callable[[str, "datetime | None"], Job]


@pytest.fixture
def make_job(scheduler: BackgroundScheduler, trigger: IntervalTrigger) -> MakeJob:
    def make(job_id: str, next_run_time: datetime | None) -> Job:
        job = Job(
            scheduler,
            id=job_id,
            func=len,
            args=([],),
            kwargs={},
            trigger=trigger,
            executor="default",
            next_run_time=next_run_time,
            misfire_grace_time=1,
            coalesce=True,
            max_instances=1,
            name="x",
        )
        job._jobstore_alias = "default"
        return job

    return make


def started(store: BaseJobStore, scheduler: BackgroundScheduler) -> BaseJobStore:
    store.start(scheduler, "default")
    return store


@pytest.fixture
def heap(scheduler: BackgroundScheduler) -> Iterator[HeapJobStore]:
    store = HeapJobStore()
    store.start(scheduler, "default")
    yield store
    store.shutdown()


def due_ids(store: BaseJobStore, now: datetime) -> list[str]:
    return [job.id for job in store.get_due_jobs(now)]


def all_ids(store: BaseJobStore) -> list[str]:
    return [job.id for job in store.get_all_jobs()]


def assert_same_view(heap: HeapJobStore, memory: MemoryJobStore) -> None:
    """Everything the scheduler reads from a store agrees with the reference."""
    assert heap.get_next_run_time() == memory.get_next_run_time()
    assert all_ids(heap) == all_ids(memory)
    for job_id in IDS:
        found, expected = heap.lookup_job(job_id), memory.lookup_job(job_id)
        if expected is None:
            assert found is None
        else:
            assert found is not None
            assert (found.id, found.next_run_time) == (expected.id, expected.next_run_time)
    for now in NOWS:
        due = heap.get_due_jobs(now)
        reference = memory.get_due_jobs(now)
        # Same jobs, each once, earliest first. (The order of jobs due at the very same
        # instant is checked by its own test below.)
        assert sorted(job.id for job in due) == sorted(job.id for job in reference)
        times = [job.next_run_time for job in due]
        assert times == sorted(times)
    assert len(heap) == len(memory.get_all_jobs())
    assert len(heap._heap) <= 2 * len(heap) + 1024


def apply_random_operation(
    rng: random.Random,
    stores: tuple[HeapJobStore, MemoryJobStore],
    make_job: MakeJob,
) -> None:
    job_id = rng.choice(IDS)
    when = rng.choice(TIMES)
    present = stores[1].lookup_job(job_id) is not None
    action = rng.choice(["add", "add", "replace", "modify", "modify", "remove"])
    for store in stores:
        if action == "add" and not present:
            store.add_job(make_job(job_id, when))
        elif action == "add":
            with pytest.raises(ConflictingIdError):
                store.add_job(make_job(job_id, when))
        elif action == "replace" and present:  # a new Job object for the same id
            store.update_job(make_job(job_id, when))
        elif action == "modify" and present:  # as the scheduler does: change it, then save
            job = store.lookup_job(job_id)
            assert job is not None
            job._modify(next_run_time=when)
            store.update_job(job)
        elif action in ("replace", "modify"):
            with pytest.raises(JobLookupError):
                store.update_job(make_job(job_id, when))
        elif present:
            store.remove_job(job_id)
        else:
            with pytest.raises(JobLookupError):
                store.remove_job(job_id)


@pytest.mark.parametrize("seed", range(6))
def test_heap_store_agrees_with_memory_store_on_random_operations(
    seed: int, scheduler: BackgroundScheduler, make_job: MakeJob
) -> None:
    rng = random.Random(seed)
    heap = started(HeapJobStore(), scheduler)
    memory = started(MemoryJobStore(), scheduler)
    assert isinstance(heap, HeapJobStore)
    assert isinstance(memory, MemoryJobStore)
    for _ in range(400):
        apply_random_operation(rng, (heap, memory), make_job)
        assert_same_view(heap, memory)
    heap.remove_all_jobs()
    memory.remove_all_jobs()
    assert_same_view(heap, memory)


def test_paused_jobs_come_last_in_all_jobs(heap: HeapJobStore, make_job: MakeJob) -> None:
    heap.add_job(make_job("b-paused", None))
    heap.add_job(make_job("z-late", T0 + timedelta(hours=1)))
    heap.add_job(make_job("a-paused", None))
    heap.add_job(make_job("m-early", T0))
    assert all_ids(heap) == ["m-early", "z-late", "a-paused", "b-paused"]


def test_paused_job_is_never_due_and_has_no_next_run_time(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    heap.add_job(make_job("a", T0))
    job = heap.lookup_job("a")
    assert job is not None
    job._modify(next_run_time=None)
    heap.update_job(job)

    assert due_ids(heap, T0 + timedelta(days=365)) == []
    assert heap.get_next_run_time() is None
    assert heap.lookup_job("a") is job


def test_due_jobs_stay_due_until_the_scheduler_updates_them(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    heap.add_job(make_job("a", T0))
    assert due_ids(heap, T0) == ["a"]
    assert due_ids(heap, T0) == ["a"]
    assert heap.get_next_run_time() == T0

    job = heap.lookup_job("a")
    assert job is not None
    job._modify(next_run_time=T0 + timedelta(seconds=5))
    heap.update_job(job)
    assert due_ids(heap, T0) == []
    assert due_ids(heap, T0 + timedelta(seconds=5)) == ["a"]


def test_job_moved_back_to_an_earlier_time_is_due_once(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    heap.add_job(make_job("a", T0))
    for when in (T0 + timedelta(minutes=1), None, T0, T0 + timedelta(minutes=1), T0):
        heap.update_job(make_job("a", when))
    assert due_ids(heap, T0 + timedelta(hours=1)) == ["a"]
    assert heap.get_next_run_time() == T0


def test_removed_job_is_gone_everywhere(heap: HeapJobStore, make_job: MakeJob) -> None:
    heap.add_job(make_job("a", T0))
    heap.add_job(make_job("b", T0 + timedelta(seconds=1)))
    heap.remove_job("a")
    assert heap.lookup_job("a") is None
    assert due_ids(heap, T0 + timedelta(hours=1)) == ["b"]
    assert heap.get_next_run_time() == T0 + timedelta(seconds=1)
    assert all_ids(heap) == ["b"]


def test_removed_id_can_be_added_again(heap: HeapJobStore, make_job: MakeJob) -> None:
    heap.add_job(make_job("a", T0))
    heap.remove_job("a")
    heap.add_job(make_job("a", T0 + timedelta(seconds=30)))
    assert due_ids(heap, T0) == []
    assert heap.get_next_run_time() == T0 + timedelta(seconds=30)


def test_adding_an_existing_id_raises_and_keeps_the_first_job(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    first = make_job("nightly", T0)
    heap.add_job(first)
    with pytest.raises(ConflictingIdError, match="nightly"):
        heap.add_job(make_job("nightly", T0 + timedelta(hours=1)))
    assert heap.lookup_job("nightly") is first
    assert heap.get_next_run_time() == T0


def test_updating_or_removing_an_unknown_id_raises_lookup_error(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    with pytest.raises(JobLookupError, match="ghost"):
        heap.update_job(make_job("ghost", T0))
    with pytest.raises(JobLookupError, match="ghost"):
        heap.remove_job("ghost")
    assert heap.lookup_job("ghost") is None
    assert len(heap) == 0


def test_every_change_is_reported_with_the_job_id(
    scheduler: BackgroundScheduler, make_job: MakeJob
) -> None:
    seen: list[str] = []
    store = started(HeapJobStore(on_change=seen.append), scheduler)
    store.add_job(make_job("a", T0))
    store.add_job(make_job("b", None))
    store.update_job(make_job("a", T0 + timedelta(seconds=5)))
    store.remove_job("a")
    store.remove_all_jobs()
    assert seen == ["a", "b", "a", "a", "b"]


def test_failed_operations_report_no_change(
    scheduler: BackgroundScheduler, make_job: MakeJob
) -> None:
    seen: list[str] = []
    store = started(HeapJobStore(on_change=seen.append), scheduler)
    store.add_job(make_job("a", T0))
    seen.clear()
    with pytest.raises(ConflictingIdError):
        store.add_job(make_job("a", T0))
    with pytest.raises(JobLookupError):
        store.update_job(make_job("b", T0))
    with pytest.raises(JobLookupError):
        store.remove_job("b")
    assert seen == []


def test_heap_is_compacted_when_one_job_is_updated_many_times(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    heap.add_job(make_job("a", T0))
    job = heap.lookup_job("a")
    assert job is not None
    for step in range(10_000):
        job._modify(next_run_time=T0 + timedelta(seconds=step + 1))
        heap.update_job(job)
        assert len(heap._heap) <= 2 * 1 + 1024
    assert heap.get_next_run_time() == T0 + timedelta(seconds=10_000)
    assert due_ids(heap, T0 + timedelta(seconds=10_000)) == ["a"]


def test_heap_is_compacted_as_jobs_are_removed(heap: HeapJobStore, make_job: MakeJob) -> None:
    jobs = [make_job(f"job-{n:04d}", T0 + timedelta(seconds=n)) for n in range(1500)]
    for job in jobs:
        heap.add_job(job)
    for job in jobs:  # every job rescheduled once: half the heap entries are stale
        job._modify(next_run_time=job.next_run_time + timedelta(days=1))
        heap.update_job(job)
    for job in jobs[:1490]:
        heap.remove_job(job.id)
        assert len(heap._heap) <= 2 * len(heap) + 1024
    assert len(heap) == 10
    assert heap.get_next_run_time() == T0 + timedelta(days=1, seconds=1490)


def test_jobs_due_at_the_same_instant_come_in_id_order_like_memory_store(
    scheduler: BackgroundScheduler, make_job: MakeJob
) -> None:
    heap = started(HeapJobStore(), scheduler)
    memory = started(MemoryJobStore(), scheduler)
    for store in (heap, memory):
        for job_id in ("b", "a", "c"):
            store.add_job(make_job(job_id, T0))
    assert due_ids(memory, T0) == ["a", "b", "c"]
    assert due_ids(heap, T0) == due_ids(memory, T0)


def test_the_catalogs_kept_order_follows_every_change_a_dict_can_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Catalog.ids_in_order`` keeps the ids sorted through single adds and removals and
    lets the order go on bulk changes: whatever the changes, it is ``sorted(catalog)``,
    and every change moves the version."""
    import random

    from engine.scheduler.catalog import Catalog, Entry

    draw = random.Random(5)
    monkeypatch.setattr(Catalog, "KEPT_ADDS", 50)  # let the kept order go now and then
    catalog = Catalog()
    ids = [f"job-{n:03d}" for n in range(300)]
    for _ in range(3000):
        key = draw.choice(ids)
        version = catalog.version
        op = draw.randrange(10)
        if op < 4:
            catalog[key] = Entry(key, "declared")
        elif op == 4:
            catalog.pop(key, None)
        elif op == 5 and key in catalog:
            del catalog[key]
        elif op == 6:
            catalog.setdefault(key, Entry(key, "runtime"))
        elif op == 7:
            catalog.update({k: Entry(k, "declared") for k in draw.sample(ids, 5)})
        elif op == 8 and draw.random() < 0.05:
            catalog.clear() if draw.random() < 0.5 else catalog.popitem() if catalog else None
        else:
            assert catalog.ids_in_order() == sorted(catalog)
            continue
        if op in (0, 1, 2, 3, 7):
            assert catalog.version > version
        if draw.random() < 0.3:
            assert catalog.ids_in_order() == sorted(catalog)
    assert catalog.ids_in_order() == sorted(catalog)


def test_taken_jobs_are_due_again_only_once_updated_or_retried(
    heap: HeapJobStore, make_job: MakeJob
) -> None:
    for job_id in ("b", "a", "c"):
        heap.add_job(make_job(job_id, T0))
    taken = heap.take_due(T0.timestamp())
    assert [job.id for job in taken] == ["a", "b", "c"]
    assert heap.take_due(T0.timestamp()) == []  # taken: the firing pass owns them now
    assert len(heap) == 3

    a, b, _ = taken
    heap.update_job(a)  # its next run time unchanged (a retried pass): due again at once
    b.next_run_time = T0 + timedelta(seconds=5)
    heap.update_job(b)
    assert [job.id for job in heap.take_due(T0.timestamp())] == ["a"]
    assert [job.id for job in heap.take_due((T0 + timedelta(seconds=5)).timestamp())] == ["b"]

    c = heap.lookup_job("c")
    assert c is not None
    heap.retry_at(c, (T0 + timedelta(seconds=10)).timestamp())
    assert heap.get_next_run_time() == T0 + timedelta(seconds=10)
    assert c.next_run_time == T0  # what the status shows: still the time it is late for
    assert [job.id for job in heap.take_due((T0 + timedelta(seconds=10)).timestamp())] == ["c"]
