"""The jobs touched since a read model last looked (``engine.core.touched``)."""

from __future__ import annotations

import threading

from engine.core.touched import SLACK, Touched


def test_a_job_touched_again_after_a_take_is_handed_on_by_the_next() -> None:
    touched = Touched(lambda: 10)
    touched.add("a")
    touched.add("a")  # a fire touches a job several times: once is enough
    touched.add("b")
    assert touched.take() == ({"a", "b"}, False)
    assert touched.take() == (set(), False)
    touched.add("a")  # changed again after the read: the next read must see it
    assert touched.take() == ({"a"}, False)


def test_past_its_bound_the_set_is_dropped_and_the_reader_told() -> None:
    touched = Touched(lambda: 2)
    for n in range(2 + SLACK + 1):
        touched.add(f"job-{n}")
    assert touched.take() == (set(), True)  # read everything again
    assert touched.take() == (set(), False)


def test_no_touch_is_lost_while_another_thread_takes() -> None:
    # Each writer bumps its job's version, then touches it; the reader takes and reads
    # the versions. Once both stop, a last take and read must see every last version.
    touched = Touched(lambda: 100)
    versions = dict.fromkeys((f"job-{n}" for n in range(20)), 0)
    seen = dict(versions)
    stop = threading.Event()

    def write() -> None:
        for round_ in range(1, 2001):
            for job_id in versions:
                versions[job_id] = round_
                touched.add(job_id)
        stop.set()

    def read_once() -> None:
        ids, lost = touched.take()
        for job_id in versions if lost else ids:
            seen[job_id] = versions[job_id]

    writer = threading.Thread(target=write)
    writer.start()
    while not stop.is_set():
        read_once()
    writer.join()
    read_once()
    assert seen == versions
