"""``/metrics`` writes the per-job series itself: byte for byte the client library's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from engine.metrics import JobSample, Metrics
from engine.state.history import Run


def _library_text(metrics: Metrics) -> bytes:
    registry = CollectorRegistry()
    registry.register(metrics.job_collector)
    return generate_latest(registry)


def test_per_job_series_are_written_as_the_client_library_writes_them() -> None:
    samples = [
        JobSample("a-job", 1764532800.123456, 1764532801.5, "success", 1764536400.0, 0, False),
        JobSample('odd"\\id\nx', None, 1.0, "failed", None, 3, True),
        JobSample("never-ran", None, None, None, 2e9, 0, False),
        JobSample("paused", 5.0, 6.25, "timeout", None, 12, False),
    ]
    changed: list[int] | None = None
    metrics = Metrics()
    metrics.source = lambda: (list(samples), changed)
    metrics.counts = {("a-job", "success"): 7, ('odd"\\id\nx', "failed"): 3, ("paused", "x"): 1}
    assert metrics.render_jobs() == _library_text(metrics)
    # The same jobs: the lines of the samples said to have changed are written again,
    # and of the runs counted since.
    samples[3] = JobSample("paused", 5.0, 7.5, "success", 3e9, 0, False)
    changed = [3]
    at = datetime(2026, 12, 1, tzinfo=UTC)
    metrics.observe(Run("a-job", at, status="success", started_at=at, finished_at=at))
    assert metrics.counts[("a-job", "success")] == 8
    assert metrics.render_jobs() == _library_text(metrics)
    # Kept lines follow their job's changes; a job gone is gone.
    samples[0] = JobSample("a-job", 1764532900.0, 1764532900.5, "failed", None, 1, True)
    del samples[2]
    changed = None
    metrics.counts[("a-job", "failed")] = 1
    assert metrics.render_jobs() == _library_text(metrics)
    assert metrics.render().startswith(metrics.render_jobs())
    assert b"schedctl_fire_lateness_seconds_bucket" in metrics.render()


def test_many_jobs_stay_byte_for_byte_as_changes_land_anywhere_in_the_kept_text() -> None:
    """A scrape joins again only the stretch of lines around a change: a change at either
    end of a stretch, or in several at once, still shows; the rest is as written."""
    import random

    draw = random.Random(7)
    samples = [
        JobSample(f"job-{n:04d}", None, float(n), "success", 2e9 + n, 0, False) for n in range(1000)
    ]
    changed: list[int] | None = None
    metrics = Metrics()
    metrics.source = lambda: (list(samples), changed)
    metrics.counts = {(s.job_id, "success"): 1 for s in samples}
    assert metrics.render_jobs() == _library_text(metrics)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    for places in ([0], [255, 256], [999], [511, 512, 767], draw.sample(range(1000), 40), []):
        for index in places:
            old = samples[index]
            samples[index] = JobSample(
                old.job_id, float(index), 3e9, "failed", None, old.consecutive_failures + 1, True
            )
            metrics.observe(Run(old.job_id, at, status="failed", started_at=at, finished_at=at))
        changed = sorted(places)
        assert metrics.render_jobs() == _library_text(metrics), places


def test_kept_samples_are_read_afresh_after_more_touches_than_they_can_track() -> None:
    """An engine nobody scrapes does not pile up touched job ids: past a bound the set is
    dropped and the next scrape reads every job again, so no change is lost."""
    from types import SimpleNamespace

    from engine.core.samples import JobSamples
    from engine.scheduler.catalog import Catalog, Entry

    catalog = Catalog()
    catalog.update({f"job-{n}": Entry(f"job-{n}", "declared") for n in range(100)})
    facade, history = SimpleNamespace(catalog=catalog), object()
    state = dict.fromkeys(catalog, 0)

    def sample(entry: Entry) -> JobSample:
        return JobSample(entry.id, None, None, None, float(state[entry.id]), 0, False)

    def read() -> dict[str, float | None]:
        found, _ = cache.samples(facade, history, frozenset(), True, sample)  # type: ignore[arg-type]
        return {s.job_id: s.next_run for s in found}

    cache = JobSamples()
    assert read()["job-5"] == 0
    state["job-5"] = 7
    cache.touched("job-5")
    for n in range(2000):  # runtime jobs come and go, unscraped
        cache.touched(f"gone-{n}")
    assert len(cache._touched) < 1200
    assert read()["job-5"] == 7


def test_kept_samples_follow_touches_and_the_catalogs_entries() -> None:
    """Between scrapes only touched jobs are read again, and the places of those are
    given; an entry set or removed lays every job out afresh."""
    from types import SimpleNamespace

    from engine.core.samples import JobSamples
    from engine.scheduler.catalog import Catalog, Entry

    catalog = Catalog()
    for n in (3, 1, 2):
        catalog[f"job-{n}"] = Entry(f"job-{n}", "declared")
    facade, history = SimpleNamespace(catalog=catalog), object()
    state = dict.fromkeys(catalog, 0.0)
    cache = JobSamples()

    def read() -> tuple[dict[str, float | None], list[int] | None]:
        def sample(entry: Entry) -> JobSample:
            return JobSample(entry.id, None, None, None, state[entry.id], 0, False)

        found, changed = cache.samples(facade, history, frozenset(), True, sample)  # type: ignore[arg-type]
        return {s.job_id: s.next_run for s in found}, changed

    assert read() == ({"job-1": 0.0, "job-2": 0.0, "job-3": 0.0}, None)
    assert list(read()[0]) == ["job-1", "job-2", "job-3"]  # in id order
    state["job-2"] = state["job-3"] = 5.0
    cache.touched("job-3")
    assert read() == ({"job-1": 0.0, "job-2": 0.0, "job-3": 5.0}, [2])  # job-2: untouched
    catalog["job-0"] = Entry("job-0", "runtime")
    state["job-0"] = 9.0
    cache.touched("job-2")
    assert read() == ({"job-0": 9.0, "job-1": 0.0, "job-2": 5.0, "job-3": 5.0}, None)
    del catalog["job-1"]
    assert read() == ({"job-0": 9.0, "job-2": 5.0, "job-3": 5.0}, None)
    assert read() == ({"job-0": 9.0, "job-2": 5.0, "job-3": 5.0}, [])


def test_a_scrape_that_fails_midway_loses_no_touched_job() -> None:
    from types import SimpleNamespace

    from engine.core.samples import JobSamples
    from engine.scheduler.catalog import Catalog, Entry

    catalog = Catalog()
    for n in range(3):
        catalog[f"job-{n}"] = Entry(f"job-{n}", "declared")
    facade, history = SimpleNamespace(catalog=catalog), object()
    state = dict.fromkeys(catalog, 0.0)
    broken = {"job-0"}
    cache = JobSamples()

    def sample(entry: Entry) -> JobSample:
        if entry.id in broken:
            raise RuntimeError("a history being swapped")
        return JobSample(entry.id, None, None, None, state[entry.id], 0, False)

    def read() -> dict[str, float | None]:
        found, _ = cache.samples(facade, history, frozenset(), True, sample)  # type: ignore[arg-type]
        return {s.job_id: s.next_run for s in found}

    broken.clear()
    assert read() == {"job-0": 0.0, "job-1": 0.0, "job-2": 0.0}
    state["job-0"] = state["job-2"] = 4.0
    cache.touched("job-0")
    cache.touched("job-2")
    broken.add("job-0")
    with pytest.raises(RuntimeError):
        read()
    broken.clear()
    assert read() == {"job-0": 4.0, "job-1": 0.0, "job-2": 4.0}


def test_another_registrys_scrape_between_renders_hides_no_change_from_the_next() -> None:
    """``source`` says which samples changed since it was last asked; a scrape of
    ``job_collector`` through another registry asks it too, and the next ``/metrics``
    render still writes the lines of what changed meanwhile."""
    samples = [JobSample(f"job-{n}", None, None, None, 1e9 + n, 0, False) for n in range(4)]
    pending: list[int] | None = None  # None: the first call lays every job out

    def source() -> tuple[list[JobSample], list[int] | None]:
        nonlocal pending
        said, pending = pending, []
        return list(samples), said

    metrics = Metrics()
    metrics.source = source
    assert metrics.render_jobs() == _library_text(metrics)
    samples[2] = JobSample("job-2", 5.0, 6.0, "success", 2e9, 0, False)
    pending = [2]
    assert b'job_id="job-2"} 5.0' in _library_text(metrics)  # it took the news
    assert metrics.render_jobs() == _library_text(metrics)


def test_a_scrape_off_the_loop_reads_one_state_of_a_catalog_the_loop_is_changing() -> None:
    """At more than 2,000 jobs ``/metrics`` renders on a thread while the loop adds and
    removes jobs: the scrape lays out the jobs as they were at one moment, and never fails
    on a job removed while it read them."""
    import gc
    import sys
    import threading
    from types import SimpleNamespace

    from engine.core.samples import JobSamples
    from engine.scheduler.catalog import Catalog, Entry

    catalog = Catalog()
    for n in range(5000):
        catalog[f"job-{n:05d}"] = Entry(f"job-{n:05d}", "declared")
    facade, history = SimpleNamespace(catalog=catalog), object()
    cache, stop = JobSamples(), threading.Event()

    class Garbage:  # a cycle with a finalizer: collecting it runs Python code
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            pass

    def churn() -> None:  # the loop: runtime jobs come and go, the catalog's version moves
        n = 0
        while not stop.is_set():
            catalog[f"extra-{n % 50}"] = Entry(f"extra-{n % 50}", "runtime")
            catalog.pop(f"extra-{(n + 25) % 50}", None)
            Garbage()
            n += 1

    def sample(entry: Entry) -> JobSample:
        return JobSample(entry.id, None, None, None, None, 0, False)

    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)  # the threads take turns as often as they can
    gc.set_threshold(100)  # and collections (which run finalizers) come often
    loop = threading.Thread(target=churn)
    loop.start()
    try:
        for _ in range(100):
            found, _ = cache.samples(facade, history, frozenset(), True, sample)  # type: ignore[arg-type]
            ids = [s.job_id for s in found]
            assert ids == sorted(ids) and sum(1 for i in ids if i.startswith("job-")) == 5000
    finally:
        stop.set()
        loop.join()
        sys.setswitchinterval(switch)
        gc.set_threshold(*threshold)


def test_a_job_whose_sample_changes_back_shows_its_first_lines_again() -> None:
    """Each job's lines are kept only in the joined text, with the sample they were
    written from: a sample that changes, then changes back, is written again each time,
    and a new layout keeps the lines of the jobs whose samples did not change."""
    first = JobSample("job-a", 1.0, 2.0, "success", 3e9, 0, False)
    other = JobSample("job-a", 5.0, 6.0, "failed", None, 2, True)
    steady = JobSample("job-b", None, None, None, 4e9, 0, False)
    samples = [first, steady]
    changed: list[int] | None = None
    metrics = Metrics()
    metrics.source = lambda: (list(samples), changed)
    for step, (sample, places) in enumerate(
        [(first, None), (other, [0]), (first, [0]), (other, [0]), (first, None)]
    ):
        samples[0], changed = sample, places
        if step == 4:  # a new layout: a job added before the others
            samples.insert(0, JobSample("job-0", None, None, None, None, 0, False))
        assert metrics.render_jobs() == _library_text(metrics), step
