"""The torture suite: real engines, real PostgreSQL, real signals; the checker's MUST rows.

``make test`` runs the short versions (``-m torture_short``), ``make torture`` the full
ones (``TORTURE=full``), ``make torture-proof`` the claim-off proof (``TORTURE=proof``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.torture.checker import Report, Rules, check
from tests.torture.conftest import MakeWorld
from tests.torture.harness import World
from tests.torture.noclaim import claim_off
from tests.torture.project import FAULT_JOBS, SOAK_JOBS
from tests.torture.scenarios import (
    FULL,
    NEAR_FIRE,
    PROOF,
    SHORT,
    Size,
    db_outages,
    kill_restarts,
    leader_faults,
    soak,
)

SEED = int(os.environ.get("TORTURE_SEED", "7"))
SHUTDOWN_GRACE_S = 10.0  # the engine's default
OUTAGE_MODES = {  # (one replica, three replicas)
    "short": (("cut",), ("freeze",)),
    "full": (("freeze", "cut", "freeze"), ("cut", "cut", "cut")),
}


def sizes(short_timeout: int, full_timeout: int) -> pytest.MarkDecorator:
    """Parametrise a scenario over the short and full suites, each with its own timeout.

    The timeouts are a safety net for a hung harness, far above the expected durations.
    """
    return pytest.mark.parametrize(
        "size",
        [
            pytest.param(
                SHORT,
                id="short",
                marks=[pytest.mark.torture_short, pytest.mark.timeout(short_timeout)],
            ),
            pytest.param(
                FULL,
                id="full",
                marks=[pytest.mark.torture_full, pytest.mark.timeout(full_timeout)],
            ),
        ],
    )


# Shown with a failure, up to ten of each: a CI log must say which runs, not only how many.
EXAMPLES = ("duplicates", "lost", "not_run", "untruthful_examples")


def judge(reports: list[Report], results: Path) -> None:
    """Print and keep every table; fail with the broken MUST rows of all of them."""
    for report in reports:
        report.write(results)
        print(report.table())
    broken = [
        f"{report.scenario}: {row.name} = {row.value} (must {row.must})"
        for report in reports
        for row in report.failures
    ]
    examples = [
        f"{report.scenario} {kind}: {example}"
        for report in reports
        if report.failures
        for kind in EXAMPLES
        for example in report.details.get(kind, [])[:10]
    ]
    warnings = [
        f"{report.scenario} {name}: {line}"
        for report in reports
        if report.failures
        for name, path in report.details.get("logs", {}).items()
        for line in _warnings(Path(path))[-10:]
    ]
    assert not broken, "\n".join(
        ["torture checks failed:", *broken, "", *examples, "", *warnings, ""]
        + [r.table() for r in reports]
    )


def _warnings(log: Path) -> list[str]:
    """A replica log's warning and error lines (the log itself stays in the clone)."""
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace")
        return [line[:300] for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    return []


def logs_on_failure(world: World) -> dict[str, str]:
    return {replica.name: str(replica.log_path) for replica in world.replicas}


@pytest.mark.e2e
@sizes(short_timeout=300, full_timeout=1200)
def test_sqlite_kill9_restarts_never_fire_a_run_twice(
    size: Size, make_world: MakeWorld, results: Path
) -> None:
    world = make_world("sqlite-kill9", FAULT_JOBS)
    kill_restarts(world, size.kill_cycles, SEED)
    report = check(
        world,
        "sqlite-kill9",
        size.name,
        f"{size.kill_cycles} kill -9 restarts of one engine on SQLite",
        Rules(),
    )
    report.details["logs"] = logs_on_failure(world)
    judge([report], results)


@pytest.mark.e2e
@pytest.mark.postgres
@sizes(short_timeout=300, full_timeout=1200)
def test_postgres_kill9_restarts_never_fire_a_run_twice(
    size: Size, make_world: MakeWorld, results: Path
) -> None:
    world = make_world("postgres-kill9", FAULT_JOBS, database="postgres")
    kill_restarts(world, size.kill_cycles, SEED)
    report = check(
        world,
        "postgres-kill9",
        size.name,
        f"{size.kill_cycles} kill -9 restarts of one engine on PostgreSQL",
        Rules(),
    )
    report.details["logs"] = logs_on_failure(world)
    judge([report], results)


@pytest.mark.e2e
@pytest.mark.postgres
@sizes(short_timeout=300, full_timeout=1500)
def test_replicas_take_over_from_killed_and_frozen_leaders(
    size: Size, make_world: MakeWorld, results: Path
) -> None:
    world = make_world("replicas", FAULT_JOBS, database="postgres")
    leader_faults(world, size.leader_kills, size.freezes, size.freeze_s)
    report = check(
        world,
        "replicas",
        size.name,
        f"3 replicas on PostgreSQL: {size.leader_kills} leader kills, "
        f"{size.freezes} SIGSTOPs of {size.freeze_s:g} s",
        Rules(),
    )
    report.details["logs"] = logs_on_failure(world)
    judge([report], results)


@pytest.mark.e2e
@pytest.mark.postgres
@sizes(short_timeout=300, full_timeout=900)
def test_database_outages_are_survived_without_restart(
    size: Size, make_world: MakeWorld, results: Path
) -> None:
    """One replica and three replicas, side by side, each behind its own failing proxy."""
    single = make_world("outage-single", FAULT_JOBS, database="postgres", proxy=True)
    triple = make_world("outage-replicas", FAULT_JOBS, database="postgres", proxy=True)

    def run(world: World, replicas: int, modes: tuple[str, ...]) -> Callable[[], None]:
        assert world.proxy is not None
        proxy = world.proxy
        return lambda: db_outages(world, proxy, replicas, size.outages, size.outage_s, modes)  # type: ignore[arg-type]

    # Each world meets both kinds of outage across the two suites; three cuts in a row
    # are what leaves three replicas without a leader when lease loss is not survived.
    single_modes, triple_modes = OUTAGE_MODES[size.name]
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(run(single, 1, single_modes)),
            pool.submit(run(triple, 3, triple_modes)),
        ]
        for job in jobs:
            job.result()
    reports = []
    for world, replicas in ((single, 1), (triple, 3)):
        report = check(
            world,
            world.name,
            size.name,
            f"{replicas} replica(s) on PostgreSQL behind a proxy: "
            f"{size.outages} outages of {size.outage_s:g} s",
            Rules(),
        )
        report.details["logs"] = logs_on_failure(world)
        reports.append(report)
    judge(reports, results)


@pytest.mark.e2e
@sizes(short_timeout=300, full_timeout=1200)
def test_soak_healthy_jobs_run_on_time_beside_raising_hanging_and_cpu_bound_ones(
    size: Size, make_world: MakeWorld, results: Path
) -> None:
    world = make_world("soak", SOAK_JOBS, sample_processes=True)
    soak(world, size.soak_s, sigterm_timeout=SHUTDOWN_GRACE_S + 5)
    full = size is FULL
    report = check(
        world,
        "soak",
        size.name,
        f"{size.soak_s:g} s on SQLite: raising, hanging def/async and CPU-bound jobs "
        "beside healthy ones",
        Rules(
            lateness_p99_s=1.0,
            trend=True,
            trend_rss=full,
            warmup_s=180 if full else 20,
            sigterm_s=SHUTDOWN_GRACE_S + 1,
        ),
    )
    report.details["logs"] = logs_on_failure(world)
    judge([report], results)


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.torture_proof
@pytest.mark.timeout(300)
def test_replica_scenario_catches_duplicates_when_the_claim_is_off(
    make_world: MakeWorld, results: Path
) -> None:
    """The proof: with the database claim switched off, the checker sees runs fired twice."""
    world = make_world("claim-off", FAULT_JOBS, database="postgres")
    world.entry, env, how = claim_off(world.project)
    world.env.update(env)
    leader_faults(world, PROOF.leader_kills, PROOF.freezes, PROOF.freeze_s, phases=NEAR_FIRE)
    report = check(
        world,
        "claim-off",
        PROOF.name,
        f"3 replicas, claim switched off ({how}): {PROOF.leader_kills} leader kills "
        f"just after a fire, {PROOF.freezes} SIGSTOP of {PROOF.freeze_s:g} s",
        Rules(expect_duplicates=True),
    )
    report.details["logs"] = logs_on_failure(world)
    report.write(results)
    print(report.table())
    duplicates = next(r for r in report.rows if r.name.startswith("duplicate"))
    assert duplicates.ok, f"the claim was switched off and no run fired twice:\n{report.table()}"
