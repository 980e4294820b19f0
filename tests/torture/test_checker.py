"""The checker on made-up histories: it passes a clean one and catches each kind of fault.

No processes: a history is a list of task starts, run records, faults and probes, built
here second by second, so each test states exactly what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from tests.torture.checker import Observed, Report, Rules, check
from tests.torture.harness import Fault, Incarnation, Probe, ProcSample
from tests.torture.project import JobPlan
from tests.torture.records import Execution, RunRecord

T0 = 1_800_000_000.0  # a whole second: cron jobs fire on it
JOBS = (
    JobPlan("tick-a", "quick_async", cron="* * * * * *"),
    JobPlan("tick-d", "quick_def", cron="* * * * * *"),
    JobPlan("every-2s", "quick_async", interval_s=2),
)


def fire(job: str, at: float, who: str = "r1#1", late: float = 0.01) -> Execution:
    kind = "quick_def" if job.endswith("-d") else "quick_async"
    return Execution(job, at, 1, kind, who, 100, at + late, 0.0)


def record(job: str, at: float, status: str = "success", started: bool = True) -> RunRecord:
    return RunRecord(job, at, 1, status, at if started else None, at + 0.1, None)


def steady(start: float, end: float, who: str = "r1#1") -> list[Execution]:
    """Every job fires on time, once, in [start, end)."""
    fires = []
    for second in range(int(start - T0), int(end - T0)):
        at = T0 + second
        fires += [fire("tick-a", at, who), fire("tick-d", at, who)]
        if second % 2 == 0:
            fires.append(fire("every-2s", at + 0.5, who))
    return fires


def observed(
    executions: Iterable[Execution],
    *,
    records: Iterable[RunRecord] = (),
    faults: Iterable[Fault] = (),
    probes: Iterable[Probe] = (),
    samples: Iterable[ProcSample] = (),
    incarnations: Iterable[Incarnation] = (),
    end: float = T0 + 60,
) -> Observed:
    runs = list(records)
    return Observed(
        JOBS,
        list(executions),
        {r.key: r for r in runs},
        runs,
        10,
        0,
        list(faults),
        list(incarnations),
        list(probes),
        list(samples),
        T0,
        end,
    )


def row(report: Report, prefix: str) -> tuple[str, bool | None]:
    found = [r for r in report.rows if r.name.startswith(prefix)]
    assert found, f"no row {prefix!r} in:\n{report.table()}"
    return found[0].value, found[0].ok


def judged(seen: Observed, rules: Rules | None = None) -> Report:
    return check(seen, "made-up", "test", "a made-up history", rules or Rules())


def test_a_clean_history_passes_every_row() -> None:
    report = judged(observed(steady(T0, T0 + 60)))
    assert not report.failures, report.table()
    assert row(report, "scheduled times checked")[0] != "0"


def test_a_run_started_twice_is_a_duplicate_named_with_its_fault() -> None:
    fires = steady(T0, T0 + 60)
    fires.append(fire("tick-a", T0 + 20, who="r1#2", late=2.5))
    kill = Fault("kill", "r1#1", T0 + 20.1, T0 + 20.1, T0 + 22)
    report = judged(observed(fires, faults=[kill]))
    value, ok = row(report, "duplicate executions")
    assert ok is False
    assert value.startswith("1 extra runs of 1 scheduled times in 1 of 1 faults")


def test_the_claim_off_proof_passes_only_when_duplicates_are_seen() -> None:
    clean = judged(observed(steady(T0, T0 + 60)), Rules(expect_duplicates=True))
    assert row(clean, "duplicate executions")[1] is False


@pytest.mark.parametrize(
    ("records", "lost", "not_run"),
    [
        ([], "1", "0"),  # no execution, no record: lost
        ([record("tick-a", T0 + 30, "running")], "1", "0"),  # a record that never ended
        ([record("tick-a", T0 + 30, "missed", started=False)], "0", "1 (missed 1)"),
    ],
)
def test_a_time_with_no_execution_while_serving_is_lost_or_not_run(
    records: list[RunRecord], lost: str, not_run: str
) -> None:
    fires = [
        f for f in steady(T0, T0 + 60) if not (f.job_id == "tick-a" and f.scheduled_at == T0 + 30)
    ]
    report = judged(observed(fires, records=records))
    assert row(report, "lost")[0] == lost
    assert row(report, "not run though")[0].startswith(not_run)


def test_times_due_during_a_fault_are_excused_once_recorded_or_run_late() -> None:
    fires = [f for f in steady(T0, T0 + 60) if not T0 + 20 <= f.scheduled_at < T0 + 30]
    missed = [
        record(f.job_id, f.scheduled_at, "missed", started=False) for f in steady(T0 + 20, T0 + 25)
    ]
    late = [
        fire(f.job_id, f.scheduled_at, late=T0 + 30.1 - f.scheduled_at)
        for f in steady(T0 + 25, T0 + 30)
    ]
    outage = Fault("outage-cut", None, T0 + 20, T0 + 30, T0 + 45)
    report = judged(observed(fires + late, records=missed, faults=[outage]))
    assert not report.failures, report.table()
    assert (
        row(report, "not run during fault allowances")[0] == f"{len(missed)} (missed {len(missed)})"
    )


def test_a_time_due_during_a_fault_with_no_trace_is_lost_once_an_engine_serves_again() -> None:
    fires = [f for f in steady(T0, T0 + 60) if not T0 + 20 <= f.scheduled_at < T0 + 30]
    outage = Fault("outage-cut", None, T0 + 20, T0 + 30, T0 + 45)
    report = judged(observed(fires, faults=[outage]))
    # Due at 26..29 with 5 s of grace: the engine firing again from 30 had to run them.
    assert row(report, "lost")[1] is False


def test_a_replica_that_never_fires_again_after_an_outage_is_lost_runs_and_no_recovery() -> None:
    fires = steady(T0, T0 + 20)
    outage = Fault("outage-cut", None, T0 + 20, T0 + 40, T0 + 55)
    report = judged(observed(fires, faults=[outage], end=T0 + 90))
    assert row(report, "recovery")[1] is False
    assert row(report, "recovery")[0].startswith("no fire at all")
    assert row(report, "lost")[1] is False


@pytest.mark.parametrize(("takeover", "ok"), [(3.0, True), (20.0, False)])
def test_takeover_after_a_leader_kill_must_come_within_15_s(takeover: float, ok: bool) -> None:
    kill_at = T0 + 20.05
    fires = steady(T0, T0 + 21) + steady(T0 + 20 + takeover, T0 + 60, who="r2#1")
    kill = Fault("leader-kill", "r1#1", kill_at, kill_at, kill_at + 15)
    report = judged(observed(fires, faults=[kill]))
    assert row(report, "takeover: fault to first fire")[1] is ok
    assert row(report, "takeover: last old fire")[1] is ok


def test_a_replaced_leader_that_fires_after_sigcont_is_caught() -> None:
    freeze = Fault("leader-freeze", "r1#1", T0 + 20.5, T0 + 50, T0 + 35.5)
    fires = steady(T0, T0 + 21) + steady(T0 + 26, T0 + 60, who="r2#1")
    fires.append(fire("tick-a", T0 + 49, who="r1#1", late=1.2))  # woke up and fired
    report = judged(observed(fires, faults=[freeze]))
    value, ok = row(report, "fires by a replaced leader")
    assert ok is False
    assert value == "1 (replaced in 1 of 1 freezes)"


def test_readyz_must_say_503_during_an_outage_and_while_nothing_fires() -> None:
    outage = Fault("outage-cut", None, T0 + 10, T0 + 30, T0 + 45)
    probes = [Probe(T0 + s + 0.5, "r1#1", 200, "leader", None) for s in range(60)]
    report = judged(observed(steady(T0, T0 + 10), faults=[outage], probes=probes))
    assert row(report, "/readyz 200 while the database is down")[1] is False
    assert row(report, "/readyz 200 while nothing fires")[1] is False


@pytest.mark.parametrize(
    ("status", "started", "ran"),
    [
        ("cancelled", False, True),  # ran, but recorded cancelled with no start
        ("missed", False, True),
        ("success", True, False),
        ("timeout", True, False),  # recorded as started, the task never did
    ],
)
def test_records_contradicting_the_tasks_are_caught(status: str, started: bool, ran: bool) -> None:
    fires = steady(T0, T0 + 60)
    at = T0 + 30
    if not ran:
        fires = [f for f in fires if not (f.job_id == "tick-a" and f.scheduled_at == at)]
    report = judged(observed(fires, records=[record("tick-a", at, status, started)]))
    assert row(report, "records contradicting")[1] is False


def test_a_record_left_running_is_caught() -> None:
    report = judged(observed(steady(T0, T0 + 60), records=[record("tick-a", T0 + 10, "running")]))
    assert row(report, "records not final")[1] is False


def test_soak_rules_judge_lateness_thread_growth_and_sigterm() -> None:
    fires = steady(T0, T0 + 60)
    fires += [fire("tick-d", T0 + s, late=2.0) for s in range(60, 70)]  # late def runs
    samples = [ProcSample(T0 + s, "r1#1", 70_000, 30 + s, 20, 1) for s in range(60)]
    stopped = Incarnation("r1#1", "r1", 100, 0, T0, T0, T0 + 80, "terminated", None)
    rules = Rules(lateness_p99_s=1.0, trend=True, warmup_s=10, sigterm_s=11)
    report = judged(observed(fires, samples=samples, incarnations=[stopped], end=T0 + 80), rules)
    assert row(report, "healthy def job lateness")[1] is False
    assert row(report, "r1#1 threads")[1] is False
    assert row(report, "r1#1 open fds")[1] is True
    assert row(report, "r1#1 exit after SIGTERM") == ("did not exit", False)


@pytest.mark.parametrize(
    ("threads_at", "flat"),
    [
        (lambda s: 33 + (s % 7 == 0) if s < 30 else 35 + (s >= 45), True),  # grown to its peaks
        (lambda s: 30 + s // 5, False),  # one thread leaked every five seconds
    ],
)
def test_thread_growth_is_told_from_a_pool_growing_to_its_peak(
    threads_at: Callable[[int], int], flat: bool
) -> None:
    samples = [ProcSample(T0 + s, "r1#1", 70_000, threads_at(s), 20, 1) for s in range(60)]
    rules = Rules(trend=True, warmup_s=10)
    report = judged(observed(steady(T0, T0 + 60), samples=samples), rules)
    assert row(report, "r1#1 threads")[1] is flat


def test_an_engine_that_exits_by_itself_is_caught() -> None:
    crashed = Incarnation("r1#1", "r1", 100, 0, T0, T0, T0 + 30, "exited by itself (1)")
    report = judged(observed(steady(T0, T0 + 60), incarnations=[crashed]))
    assert row(report, "engines that exited by themselves") == ("1 (r1#1)", False)


@pytest.mark.parametrize(
    ("other_start", "counted"),
    [
        (T0 + 29.6, "0"),  # started before this one was due: still going, a fair skip
        (T0 + 30.5, "1 (skipped 1)"),  # started after: it was queued, not going
        (None, "1 (skipped 1)"),
    ],
)
def test_a_skip_counts_as_not_run_unless_another_run_of_the_job_was_going(
    other_start: float | None, counted: str
) -> None:
    at = T0 + 30
    fires = [f for f in steady(T0, T0 + 60) if not (f.job_id == "tick-a" and f.scheduled_at == at)]
    fires = [f for f in fires if not (f.job_id == "tick-a" and at - 2 <= f.wall <= at + 1)]
    if other_start is not None:  # a late run of an earlier time, caught up after a fault
        fires = [f for f in fires if not (f.job_id == "tick-a" and f.scheduled_at == T0 + 5)]
        fires.append(fire("tick-a", T0 + 5, late=other_start - (T0 + 5)))
    report = judged(observed(fires, records=[record("tick-a", at, "skipped", started=False)]))
    assert row(report, "not run though")[0] == counted
