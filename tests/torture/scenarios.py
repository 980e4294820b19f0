"""The scenarios: what is done to the engines, in what order, for how long.

Each function drives a ``World`` (already holding its project and database) through its
faults, records each one as a ``Fault`` with the contract's allowance, lets the system
settle and returns; the checker judges afterwards. Half of the kills land just after the
target is seen starting a task (the dangerous instant: it ran, and the engine may not have
written so yet), the others at chosen phases of the second.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from tests.torture.harness import Fault, Replica, World, wait_until
from tests.torture.project import GRACE_S
from tests.torture.proxy import Mode, PgProxy

__all__ = [
    "FULL",
    "PROOF",
    "SHORT",
    "Size",
    "db_outages",
    "kill_restarts",
    "leader_faults",
    "soak",
]

TAKEOVER_S = 15.0  # contract section 8
SETTLE_S = GRACE_S + 3  # the last runs get their grace, then the history is read
# When kills land: ("fire", d) d seconds after the target is seen starting a task (the
# dangerous instant: it ran, and has not written so yet), ("wall", p) at p into a second.
Timing = tuple[str, float]
PHASES: tuple[Timing, ...] = (
    ("fire", 0.03),
    ("wall", 0.5),
    ("fire", 0.1),
    ("wall", 0.8),
    ("fire", 0.0),
    ("wall", 0.3),
    ("fire", 0.15),
    ("wall", 0.65),
    ("fire", 0.06),
    ("wall", 0.9),
)
NEAR_FIRE: tuple[Timing, ...] = (
    ("fire", 0.03),
    ("fire", 0.06),
    ("fire", 0.1),
    ("fire", 0.0),
    ("fire", 0.08),
    ("fire", 0.12),
)


@dataclass(frozen=True)
class Size:
    name: str
    kill_cycles: int
    leader_kills: int
    freezes: int
    freeze_s: float
    outages: int
    outage_s: float
    soak_s: float


SHORT = Size("short", 5, 2, 1, 20, 1, 20, 60)
FULL = Size("full", 50, 20, 5, 30, 3, 20, 600)
PROOF = Size("proof", 0, 6, 1, 20, 0, 0, 0)


def _at_phase(phase: float) -> None:
    """Sleep until the wall clock is ``phase`` into a second (the next such instant)."""
    now = time.time()
    target = int(now) + phase
    if target <= now + 0.01:
        target += 1
    time.sleep(target - now)


def _await_kill_moment(world: World, target: str, timing: Timing) -> None:
    how, offset = timing
    if how == "wall":
        _at_phase(offset)
        return
    # The cron jobs, which all fire together on the second (interval jobs have their own phase).
    cron = {job.id for job in world.jobs if job.cron is not None}
    since = time.time()
    wait_until(
        lambda: any(e.incarnation == target and e.job_id in cron for e in world.fires_since(since)),
        5,
        interval=0.005,
    )
    time.sleep(offset)


def _start_all(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.start(wait=False)
    for replica in replicas:
        replica.wait_ready()


def _first_fire(world: World) -> None:
    if world.wait_fire(world.began_at, 30) is None:
        raise AssertionError(f"{world.name}: no job fired within 30 s of the start")


def kill_restarts(world: World, cycles: int, seed: int) -> None:
    """One process; ``cycles`` times: let it fire, SIGKILL it, restart it at once."""
    rng = random.Random(seed)
    (replica,) = world.add_replicas(1)
    world.start_sampling()
    replica.start()
    _first_fire(world)
    for cycle in range(cycles):
        assert replica.current is not None
        # A fire by this incarnation first, so each kill hits a running scheduler.
        world.wait_fire(replica.current.started_at, 15, exclude=None)
        time.sleep(rng.uniform(0.3, 1.5))
        phase = PHASES[cycle % len(PHASES)]
        target = replica.current.name
        _await_kill_moment(world, target, phase)
        killed = replica.kill()
        fresh = replica.start()
        assert fresh.ready_at is not None
        world.fault(Fault("kill", target, killed, killed, fresh.ready_at, {"kill_at": phase}))
    world.settle(SETTLE_S)


def leader_faults(
    world: World,
    kills: int,
    freezes: int,
    freeze_s: float,
    phases: tuple[Timing, ...] = PHASES,
) -> None:
    """Three replicas; kill the leader ``kills`` times and freeze it ``freezes`` times.

    A killed leader is restarted at once (it comes back as a standby). A frozen one is
    SIGCONTed after ``freeze_s``; if it was replaced it must fire nothing more.
    """
    replicas = world.add_replicas(3)
    world.start_sampling()
    _start_all(replicas)
    _first_fire(world)
    steps = _interleave(kills, freezes)
    for number, step in enumerate(steps):
        leader = world.leader(timeout=TAKEOVER_S + 5)
        if leader is None or leader.current is None:
            world.note("no-leader", detail=f"before step {number}")
            continue
        target = leader.current.name
        if step == "kill":
            phase = phases[number % len(phases)]
            _await_kill_moment(world, target, phase)
            killed = leader.kill()
            world.fault(
                Fault(
                    "leader-kill", target, killed, killed, killed + TAKEOVER_S, {"kill_at": phase}
                )
            )
            leader.start(wait=False)
            world.wait_fire(killed, TAKEOVER_S + 5, exclude=target)
            leader.wait_ready()
        else:
            frozen = leader.freeze()
            fault = world.fault(Fault("leader-freeze", target, frozen, frozen, frozen + TAKEOVER_S))
            time.sleep(freeze_s)  # the fault's duration, not a synchronisation
            fault.end = leader.thaw()
            fault.serve_again_at = min(fault.start + TAKEOVER_S, fault.end)
        time.sleep(2.0)  # steady state between faults
    world.settle(SETTLE_S)


def _interleave(kills: int, freezes: int) -> list[str]:
    """Kills with the freezes spread among them: 20 + 5 -> K K K K F K K K K F ..."""
    steps = ["kill"] * kills
    for i in range(freezes):
        steps.insert(round((i + 1) * (kills + i + 1) / (freezes + 1)), "freeze")
    return steps


def db_outages(
    world: World,
    proxy: PgProxy,
    replicas: int,
    outages: int,
    outage_s: float,
    modes: tuple[Mode, ...] = ("cut", "freeze"),
) -> None:
    """``replicas`` engines behind ``proxy``; ``outages`` database outages of ``outage_s``."""
    started = world.add_replicas(replicas)
    world.start_sampling()
    _start_all(started)
    _first_fire(world)
    for number in range(outages):
        time.sleep(3.0)
        mode = modes[number % len(modes)]
        began = time.time()
        proxy.outage(mode)
        world.note("outage", detail=mode)
        fault = world.fault(
            Fault(f"outage-{mode}", None, began, began + outage_s, began + outage_s + TAKEOVER_S)
        )
        time.sleep(outage_s)  # the fault's duration
        proxy.restore()
        fault.end = world.note("restore", detail=mode)
        fault.serve_again_at = fault.end + TAKEOVER_S
        world.wait_fire(fault.end, TAKEOVER_S + 5)
    world.settle(SETTLE_S)


def soak(world: World, seconds: float, sigterm_timeout: float) -> None:
    """One process, healthy jobs beside raising, hanging and CPU-bound ones, ``seconds`` long.

    Ends with SIGTERM: the engine must exit within its grace while def tasks hang.
    """
    (replica,) = world.add_replicas(1)
    replica.start()
    world.start_sampling()
    _first_fire(world)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and replica.alive:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    world.settle(0)
    if replica.alive:
        replica.terminate(sigterm_timeout)
