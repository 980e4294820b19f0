"""The checker: reads what tasks and engines recorded after a scenario and judges it.

Every row of the report is a figure; rows with a ``must`` are the contract (sections 5
and 8, issue 7) and fail the scenario when broken:
- duplicates: one attempt of one scheduled run started more than once;
- lost: a scheduled time of a healthy job with no execution and no final record although
  an engine was serving for at least 1 s of its ``misfire_grace``;
- not run while serving: the whole grace fell in serving time, yet it did not run;
- takeover (leader killed or frozen) and recovery (database back) within 15 s;
- a replaced leader that wakes up fires nothing from before its freeze;
- ``/readyz`` 503 while the database is down, and never 200 while nothing fires;
- every record ends final, and no record contradicts what the tasks did;
- for the soak: ``def`` lateness while hangs hold threads, resource trend, SIGTERM exit.

"Serving" time is the checked window minus each fault's allowance: from ``Fault.start``
to ``Fault.serve_again_at`` (what the contract allows) or to the first fire after the
fault, if that came sooner (an engine that fires again serves: later times must run).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tests.torture.harness import Fault, Incarnation, Probe, ProcSample, World
from tests.torture.project import JobPlan
from tests.torture.records import FINAL, Execution, RunRecord, key_of
from tests.torture.report import Report, Row, counts, quantile, seconds, spread
from tests.torture.windows import Interval, expected, inside, overlap, same_window, subtract

__all__ = ["Observed", "Report", "Row", "Rules", "check", "observe"]

TAKEOVER_BUDGET_S = 15.0  # contract section 8
RECOVERY_BUDGET_S = 15.0  # a database outage ends: the lease comes back as in a takeover
READY_DETECT_S = 10.0  # /readyz may still say 200 this long into an outage
IDLE_S = 3.0  # no job started for this long (26 jobs fire every second): nothing fires
ACT_S = 1.0  # serving this long within a run's grace is enough to record or run it
SETTLED_S = 15.0  # a run scheduled this long before the final read is no longer running

Key = tuple[str, int, int]


@dataclass(frozen=True)
class Rules:
    """What a scenario asserts beyond the common rows."""

    lateness_p99_s: float | None = None  # healthy def jobs, while serving
    trend: bool = False  # threads and fds flat after warm-up
    trend_rss: bool = False  # RSS too (only long soaks: history fills for ~150 s)
    warmup_s: float = 0.0
    sigterm_s: float | None = None  # exit within this after SIGTERM
    expect_duplicates: bool = False  # the claim-off proof: the checker must see them


@dataclass
class Observed:
    """Everything a scenario left behind, as plain data: what the checker reads."""

    jobs: tuple[JobPlan, ...]
    executions: list[Execution]
    records: dict[Key, RunRecord]  # every run row seen by any read, newest status
    last_rows: list[RunRecord]  # the table as the final read saw it
    reads: int
    failed_reads: int
    faults: list[Fault]
    incarnations: list[Incarnation]
    probes: list[Probe]
    proc_samples: list[ProcSample]
    first_ready: float | None
    settled_at: float


def observe(world: World) -> Observed:
    return Observed(
        world.jobs,
        world.executions(),
        world.history.snapshot(),
        list(world.history.last_rows),
        world.history.reads,
        world.history.failed_reads,
        list(world.faults),
        [replace(i) for i in world.incarnations],  # copies: teardown goes on changing them
        list(world.probes),
        list(world.proc_samples),
        world.first_ready(),
        world.settled_at or _now(),
    )


def check(
    world: World | Observed, scenario: str, size: str, description: str, rules: Rules
) -> Report:
    seen = observe(world) if isinstance(world, World) else world
    report = Report(scenario, size, description)
    executions = [e for e in seen.executions if not math.isnan(e.scheduled_at)]
    no_context = [e for e in seen.executions if math.isnan(e.scheduled_at)]
    records = seen.records
    first_ready = seen.first_ready
    settled = seen.settled_at
    if first_ready is None:
        report.add("engine ready", "never", "once", False)
        return report
    faults = sorted(seen.faults, key=lambda f: f.start)
    allowances = [(f.start, _allowance_end(f, executions)) for f in faults]
    serving = subtract((first_ready, settled), allowances)
    jobs = {job.id: job for job in seen.jobs}
    executed: dict[Key, list[Execution]] = defaultdict(list)
    for e in executions:
        executed[e.key].append(e)
    fires = sorted(e.wall for e in executions if jobs.get(e.job_id, _HEALTHY).checked)

    report.details["faults"] = [asdict(f) for f in faults]
    report.details["serving_windows"] = serving
    report.details["incarnations"] = [asdict(i) for i in seen.incarnations]
    report.add(
        "executions / run records read",
        f"{len(executions)} / {len(records)} ({seen.reads} reads, {seen.failed_reads} failed)",
    )

    _duplicates(report, executed, faults, rules)
    report.add("tasks without a run context", len(no_context), "= 0", not no_context)
    crashed = [i.name for i in seen.incarnations if (i.end or "").startswith("exited by itself")]
    report.add(
        "engines that exited by themselves",
        f"{len(crashed)}" + (f" ({', '.join(crashed)})" if crashed else ""),
        "= 0",
        not crashed,
    )
    _accounting(report, jobs, executed, records, serving, first_ready, settled)
    _takeovers(report, executions, faults, settled)
    _recoveries(report, executions, faults, settled)
    _stale_fires(report, executions, faults)
    _readiness(report, seen.probes, faults, serving, fires)
    _truthful(report, seen.last_rows, executed, records, faults, first_ready, settled)
    _lateness(report, executions, jobs, serving, rules)
    _trend(report, seen.proc_samples, rules)
    _sigterm(report, seen.incarnations, rules)
    return report


_HEALTHY = JobPlan("?", "quick_async", cron="* * * * * *")


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _duplicates(
    report: Report, executed: dict[Key, list[Execution]], faults: list[Fault], rules: Rules
) -> None:
    doubled = {key: runs for key, runs in executed.items() if len(runs) > 1}
    extra = sum(len(runs) - 1 for runs in doubled.values())
    hit: Counter[int] = Counter()
    for runs in doubled.values():
        second = sorted(e.wall for e in runs)[1]
        before = [i for i, f in enumerate(faults) if f.start <= second]
        hit[before[-1] if before else -1] += 1
    where = f" in {len([i for i in hit if i >= 0])} of {len(faults)} faults" if faults else ""
    examples = [
        f"{key[0]}@{datetime.fromtimestamp(key[1] / 1000, UTC).time()} x{len(runs)} "
        f"({', '.join(sorted({e.incarnation for e in runs}))})"
        for key, runs in sorted(doubled.items(), key=lambda kv: kv[0][1])[:8]
    ]
    report.details["duplicates"] = examples
    if rules.expect_duplicates:
        report.add(
            "duplicate executions (claim switched off)",
            f"{extra} extra runs of {len(doubled)} scheduled times{where}",
            "> 0 (caught)",
            extra > 0,
        )
    else:
        report.add(
            "duplicate executions",
            f"{extra} extra runs of {len(doubled)} scheduled times{where}",
            "= 0",
            extra == 0,
        )


def _accounting(
    report: Report,
    jobs: dict[str, JobPlan],
    executed: dict[Key, list[Execution]],
    records: dict[Key, RunRecord],
    serving: list[Interval],
    first_ready: float,
    settled: float,
) -> None:
    seen: dict[str, list[float]] = defaultdict(list)
    for job_id, millis, _attempt in list(executed) + list(records):
        seen[job_id].append(millis / 1000)
    starts: dict[str, list[float]] = defaultdict(list)
    for runs in executed.values():
        for e in runs:
            starts[e.job_id].append(e.wall)
    lost: list[str] = []
    not_run: Counter[str] = Counter()
    not_run_examples: list[str] = []
    during_faults: Counter[str] = Counter()
    overlapped = 0
    checked = 0
    for job in jobs.values():
        if not job.checked:
            continue
        for at in expected(job, first_ready + 1, settled - job.grace_s - 1, seen[job.id]):
            checked += 1
            key = key_of(job.id, at, 1)
            if key in executed:
                continue
            record = records.get(key)
            final = record is not None and record.status in FINAL
            span = (at, at + job.grace_s)
            if overlap(span, serving) >= job.grace_s - 1e-6:
                if final:
                    assert record is not None
                    if record.status == "skipped" and any(
                        at - 2 <= wall <= at + 0.05 for wall in starts[job.id]
                    ):
                        # ``concurrency: forbid`` at work: another run of the job (a late
                        # one caught up after a fault) was going when this one was due.
                        overlapped += 1
                        continue
                    not_run[record.status] += 1
                    not_run_examples.append(
                        f"{job.id}@{datetime.fromtimestamp(at, UTC).time()} {record.status}: "
                        f"{record.error}"
                    )
                else:
                    lost.append(f"{job.id}@{datetime.fromtimestamp(at, UTC).time()}")
            elif not final and overlap(span, serving) >= ACT_S:
                lost.append(f"{job.id}@{datetime.fromtimestamp(at, UTC).time()}")
            else:
                during_faults[record.status if final and record else "no record"] += 1
    report.details["lost"] = lost[:50]
    report.details["not_run"] = not_run_examples[:50]
    report.add("scheduled times checked (healthy jobs)", checked)
    report.add("lost (no execution, no final record)", len(lost), "= 0", not lost)
    report.add(
        "not run though an engine should fire",
        f"{sum(not_run.values())}" + (f" ({counts(not_run)})" if not_run else ""),
        "= 0",
        not not_run,
    )
    report.add("skipped while another run of the job was going", overlapped)
    report.add(
        "not run during fault allowances",
        f"{sum(during_faults.values())}" + (f" ({counts(during_faults)})" if during_faults else ""),
    )


def _allowance_end(fault: Fault, executions: list[Execution]) -> float:
    """When firing is required again after ``fault``: its allowance ends, or sooner, as soon
    as an engine fires again (from then on it serves: every later time must run)."""
    if fault.kind.startswith("outage"):
        after = [e.wall for e in executions if e.wall >= fault.end]
    else:  # a process fault: a fire by another incarnation, or by the target once thawed
        after = [
            e.wall
            for e in executions
            if e.wall >= fault.start and (e.incarnation != fault.target or e.wall >= fault.end)
        ]
    resumed = min(after, default=fault.serve_again_at)
    end = min(fault.serve_again_at, resumed)
    fault.detail["serving_again_after_s"] = round(end - fault.start, 3)
    return end


def _window_end(faults: list[Fault], index: int, settled: float) -> float:
    return faults[index + 1].start if index + 1 < len(faults) else settled


def _takeovers(
    report: Report, executions: list[Execution], faults: list[Fault], settled: float
) -> None:
    to_fire: list[float | None] = []
    gaps: list[float | None] = []
    restarts: list[float | None] = []
    for i, fault in enumerate(faults):
        if fault.kind not in ("leader-kill", "leader-freeze", "kill"):
            continue
        end = _window_end(faults, i, settled)
        after = [
            e.wall
            for e in executions
            if fault.start <= e.wall < end
            and (fault.kind == "leader-freeze" or e.incarnation != fault.target)
        ]
        first = min(after) if after else None
        delay = None if first is None else first - fault.start
        fault.detail["first_fire_after_s"] = delay
        if fault.kind == "kill":
            restarts.append(delay)
            continue
        before = [
            e.wall for e in executions if e.incarnation == fault.target and e.wall < fault.start
        ]
        to_fire.append(delay)
        gaps.append(None if first is None or not before else first - max(before))
        fault.detail["last_old_to_first_new_s"] = gaps[-1]
    if restarts:
        report.add("kill -9 to first fire after restart", spread(restarts))
    if to_fire:
        ok = all(v is not None and v <= TAKEOVER_BUDGET_S for v in to_fire)
        report.add("takeover: fault to first fire", spread(to_fire), "<= 15 s", ok)
        ok = all(v is not None and v <= TAKEOVER_BUDGET_S for v in gaps)
        report.add("takeover: last old fire to first new", spread(gaps), "<= 15 s", ok)


def _recoveries(
    report: Report, executions: list[Execution], faults: list[Fault], settled: float
) -> None:
    recoveries: list[float | None] = []
    during: list[int] = []
    for i, fault in enumerate(faults):
        if not fault.kind.startswith("outage"):
            continue
        end = _window_end(faults, i, settled)
        after = [e.wall for e in executions if fault.end <= e.wall < end]
        recovery = min(after) - fault.end if after else None
        fault.detail["recovery_s"] = recovery
        recoveries.append(recovery)
        during.append(sum(1 for e in executions if fault.start + 1 <= e.wall < fault.end))
    if recoveries:
        ok = all(v is not None and v <= RECOVERY_BUDGET_S for v in recoveries)
        report.add("recovery: outage end to first fire", spread(recoveries), "<= 15 s", ok)
        report.add("task starts during outages (after 1 s)", " / ".join(map(str, during)))


def _stale_fires(report: Report, executions: list[Execution], faults: list[Fault]) -> None:
    freezes = [f for f in faults if f.kind == "leader-freeze"]
    if not freezes:
        return
    stale = 0
    replaced = 0
    for fault in freezes:
        others = [
            e
            for e in executions
            if fault.start <= e.wall <= fault.end and e.incarnation != fault.target
        ]
        if not others:
            continue
        replaced += 1
        woke = [
            e
            for e in executions
            if e.incarnation == fault.target
            and e.wall >= fault.end
            and e.scheduled_at <= fault.end + 1
        ]
        fault.detail["stale_fires_after_thaw"] = len(woke)
        stale += len(woke)
    report.add(
        "fires by a replaced leader after SIGCONT",
        f"{stale} (replaced in {replaced} of {len(freezes)} freezes)",
        "= 0",
        stale == 0,
    )


def _readiness(
    report: Report,
    probes: list[Probe],
    faults: list[Fault],
    serving: list[Interval],
    fires: list[float],
) -> None:
    outages = [f for f in faults if f.kind.startswith("outage")]
    if outages:
        lying = [
            p
            for p in probes
            if p.readyz == 200 and any(f.start + READY_DETECT_S <= p.at <= f.end for f in outages)
        ]
        report.add(
            "/readyz 200 while the database is down",
            f"{len(lying)} answers from {len({p.incarnation for p in lying})} replicas",
            "= 0",
            not lying,
        )
    idle_ready = []
    for probe in probes:
        if probe.readyz != 200 or not inside(probe.at - IDLE_S, serving):
            continue
        if not inside(probe.at, serving):
            continue
        index = bisect.bisect_left(fires, probe.at - IDLE_S)
        if index >= len(fires) or fires[index] > probe.at:
            idle_ready.append(probe)
    report.add(
        "/readyz 200 while nothing fires",
        f"{len(idle_ready)} answers"
        + (f" ({len({p.incarnation for p in idle_ready})} replicas)" if idle_ready else ""),
        "= 0",
        not idle_ready,
    )
    rounds: dict[int, set[str]] = defaultdict(set)
    for probe in probes:
        if probe.role == "leader":
            rounds[int(probe.at / 1.0)].add(probe.incarnation)
    report.add(
        "seconds with two replicas saying leader", sum(1 for s in rounds.values() if len(s) > 1)
    )


def _truthful(
    report: Report,
    last_rows: list[RunRecord],
    executed: dict[Key, list[Execution]],
    records: dict[Key, RunRecord],
    faults: list[Fault],
    first_ready: float,
    settled: float,
) -> None:
    lies: Counter[str] = Counter()
    examples: list[str] = []
    near_fault = [(f.start - 2, f.start + 2) for f in faults]
    for key, record in records.items():
        if not first_ready - 5 <= record.scheduled_at <= settled:
            continue
        ran = key in executed
        old = record.scheduled_at < settled - SETTLED_S
        if record.status == "success" and not ran:
            kind = "success, never started"
        elif record.status in ("missed", "skipped") and ran:
            kind = f"{record.status}, but it ran"
        elif record.status == "cancelled" and record.started_at is None and ran:
            kind = "cancelled with no start, but it ran"
        elif (
            record.status in ("running", "timeout")
            and record.started_at is not None
            and not ran
            and old
            and not inside(record.scheduled_at, near_fault)
        ):
            kind = f"{record.status} with a start, never started"
        else:
            continue
        lies[kind] += 1
        if len(examples) < 8:
            examples.append(
                f"{record.job_id}@{datetime.fromtimestamp(record.scheduled_at, UTC).time()}: {kind}"
            )
    report.details["untruthful_examples"] = examples
    report.add(
        "records contradicting the tasks",
        f"{sum(lies.values())}" + (f" ({counts(lies)})" if lies else ""),
        "= 0",
        not lies,
    )
    unfinished = [
        r
        for r in last_rows
        if r.status not in FINAL and first_ready - 5 <= r.scheduled_at < settled - SETTLED_S
    ]
    report.add(
        f"records not final {SETTLED_S:g} s after their time",
        f"{len(unfinished)}"
        + (f" ({counts(Counter(r.status for r in unfinished))})" if unfinished else ""),
        "= 0",
        not unfinished,
    )


def _lateness(
    report: Report,
    executions: list[Execution],
    jobs: dict[str, JobPlan],
    serving: list[Interval],
    rules: Rules,
) -> None:
    for kind in ("quick_def", "quick_async"):
        late = [
            e.wall - e.scheduled_at
            for e in executions
            if e.kind == kind
            and jobs.get(e.job_id, _HEALTHY).checked
            and same_window(e.scheduled_at - 1, e.wall, serving)
        ]
        p50, p99 = quantile(late, 0.5), quantile(late, 0.99)
        name = "def" if kind == "quick_def" else "async"
        value = (
            f"p50 {p50 * 1000:.1f} ms / p99 {p99 * 1000:.1f} ms / max {max(late) * 1000:.0f} ms"
            f" (n={len(late)})"
            if p50 is not None and p99 is not None
            else "no runs"
        )
        if kind == "quick_def" and rules.lateness_p99_s is not None:
            ok = p99 is not None and p99 <= rules.lateness_p99_s
            report.add(
                f"healthy {name} job lateness while serving",
                value,
                f"p99 <= {rules.lateness_p99_s:g} s",
                ok,
            )
        else:
            report.add(f"healthy {name} job lateness while serving", value)


def _trend(report: Report, samples_of_all: list[ProcSample], rules: Rules) -> None:
    by_incarnation: dict[str, list[Any]] = defaultdict(list)
    for sample in samples_of_all:
        by_incarnation[sample.incarnation].append(sample)
    for name, samples in by_incarnation.items():
        start = samples[0].at + rules.warmup_s
        kept = [s for s in samples if s.at >= start]
        if len(kept) < 6:
            continue
        third = len(kept) // 3
        first, last = kept[:third], kept[-third:]

        def mean(part: list[Any], attr: str) -> float:
            return statistics.fmean(getattr(s, attr) for s in part)

        rss = (mean(first, "rss_kb") / 1024, mean(last, "rss_kb") / 1024)
        threads = (mean(first, "threads"), mean(last, "threads"))
        fds = (mean(first, "fds"), mean(last, "fds"))
        peak = max(s.threads for s in samples)
        report.details.setdefault("trend", {})[name] = {
            "rss_mb": rss,
            "threads": threads,
            "fds": fds,
            "samples": len(samples),
            "threads_max": peak,
        }
        rss_ok = rss[1] <= rss[0] * 1.10 + 10
        report.add(
            f"{name} RSS MB, first -> last third",
            f"{rss[0]:.1f} -> {rss[1]:.1f}",
            "flat (+10%+10 MB)" if rules.trend_rss else None,
            rss_ok if rules.trend_rss else None,
        )
        # The engine starts its own pools full, so after warm-up only pools it does not
        # own (asyncio's default executor, AnyIO's for the web server) may still step up
        # under a loaded machine's peaks, up to their bounds; a leak grows without one.
        # Against the first third's peak, a step or two passes and a leak of even one
        # thread every five seconds does not.
        first_peak = max(s.threads for s in first)
        report.add(
            f"{name} threads, first -> last third",
            f"{threads[0]:.1f} (peak {first_peak}) -> {threads[1]:.1f} (max {peak})",
            "flat (+2 over the first peak)" if rules.trend else None,
            threads[1] <= first_peak + 2 if rules.trend else None,
        )
        report.add(
            f"{name} open fds, first -> last third",
            f"{fds[0]:.1f} -> {fds[1]:.1f}",
            "flat (+5)" if rules.trend else None,
            fds[1] <= fds[0] + 5 if rules.trend else None,
        )


def _sigterm(report: Report, incarnations: list[Incarnation], rules: Rules) -> None:
    if rules.sigterm_s is None:
        return
    stopped = [i for i in incarnations if i.end == "terminated"]
    for inc in stopped:
        report.add(
            f"{inc.name} exit after SIGTERM (def tasks hanging)",
            seconds(inc.exit_seconds, 1) if inc.exit_seconds is not None else "did not exit",
            f"<= {rules.sigterm_s:g} s",
            inc.exit_seconds is not None and inc.exit_seconds <= rules.sigterm_s,
        )
