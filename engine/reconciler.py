"""The reconciler: a pure function from (desired, live) to a plan. No clock, no I/O.

``plan()`` compares *essences* (canonical specs without source locations) and gives one
step per job that must change, sorted by id; a job that needs nothing has no step. The
rules are the contract's: per-file isolation (a file with problems keeps its last applied
jobs as they are), a duplicated id stays as it was, runtime jobs are never touched but a
declared id replaces a runtime job of the same id, and a runtime pause holds until the
declaration changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.files.spec import SCHEDULE_FIELDS, as_dict

__all__ = ["Change", "Desired", "LiveJob", "Op", "Plan", "Step", "plan", "revision_of"]


class Op(StrEnum):
    ADD = "add"  # a new declared job (or one replacing a runtime job of the same id)
    RESCHEDULE = "reschedule"  # when it fires changed: next run time computed from now
    MODIFY = "modify"  # other fields changed: applied in place, next run time kept
    PAUSE = "pause"
    RESUME = "resume"
    REMOVE = "remove"


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Desired:
    """One declared job as the files want it: its essence and where it was written."""

    essence: Mapping[str, Any]
    fingerprint: str
    file: str
    line: int = 1
    column: int = 1
    spec: Any = field(default=None, compare=False)  # the parsed JobSpec, when at hand


@dataclass(frozen=True, slots=True)
class LiveJob:
    """What the engine runs now for one id."""

    source: str  # "declared" | "runtime"
    file: str | None = None
    essence: Mapping[str, Any] | None = None  # declared jobs only
    fingerprint: str | None = None
    runtime_paused: bool = False  # paused through the runtime API
    line: int | None = None  # where it was written, when known
    column: int | None = None


@dataclass(frozen=True)
class Step:
    op: Op
    job_id: str
    desired: Desired | None = None
    changes: tuple[Change, ...] = ()
    replaces_runtime: bool = False

    def as_tuple(self) -> tuple[str, str]:
        return (self.op.value, self.job_id)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    effective: Mapping[str, Desired]  # every declared job after the plan, kept ones included
    kept: frozenset[str] = field(default_factory=frozenset)  # held as they were (bad files)
    revision: str = ""

    @property
    def changed_steps(self) -> tuple[Step, ...]:
        """The steps that change a job, without provenance-only updates."""
        return tuple(s for s in self.steps if s.changes or s.op in (Op.ADD, Op.REMOVE))

    def counts(self) -> dict[str, int]:
        """Changed jobs by operation (a provenance-only update changes nothing)."""
        counts = {op.value: 0 for op in Op}
        for step in self.changed_steps:
            counts[step.op.value] += 1
        return counts


def plan(
    desired: Mapping[str, Desired],
    live: Mapping[str, LiveJob],
    invalid_files: frozenset[str] | set[str] = frozenset(),
    duplicate_ids: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """The steps that make ``live`` match ``desired``.

    ``desired`` holds the jobs of valid files only, without duplicated ids; the jobs of
    ``invalid_files`` and the ``duplicate_ids`` keep their live state.
    """
    steps: list[Step] = []
    effective: dict[str, Desired] = {}
    kept: set[str] = set()

    for job_id, job in live.items():
        if job.source != "declared" or job.essence is None:
            continue
        if job.file in invalid_files or job_id in duplicate_ids:
            kept.add(job_id)
            effective[job_id] = Desired(job.essence, job.fingerprint or "", job.file or "")

    for job_id in sorted(desired):
        if job_id in kept:
            continue
        want = desired[job_id]
        effective[job_id] = want
        have = live.get(job_id)
        if have is None or have.source != "declared" or have.essence is None:
            steps.append(Step(Op.ADD, job_id, want, replaces_runtime=have is not None))
            continue
        step = _compare(job_id, have, want)
        if step is not None:
            steps.append(step)

    for job_id in sorted(live):
        job = live[job_id]
        if job.source == "declared" and job_id not in effective:
            steps.append(Step(Op.REMOVE, job_id))

    steps.sort(key=lambda s: s.job_id)
    revision = revision_of(effective)
    return Plan(tuple(steps), effective, frozenset(kept), revision)


def revision_of(effective: Mapping[str, Desired]) -> str:
    """A short hash of the effective declared jobs: ids and their essences' fingerprints."""
    text = "\n".join(f"{job_id}={effective[job_id].fingerprint}" for job_id in sorted(effective))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _compare(job_id: str, have: LiveJob, want: Desired) -> Step | None:
    if have.fingerprint == want.fingerprint:
        # Unchanged declaration: a runtime pause holds, and nothing is touched; a job
        # written elsewhere gets a MODIFY without changes (provenance only).
        moved = have.file != want.file or (
            have.line is not None and (have.line, have.column) != (want.line, want.column)
        )
        return Step(Op.MODIFY, job_id, want) if moved else None
    old = as_dict(have.essence or {})
    new = as_dict(want.essence)
    changes = tuple(
        Change(name, old.get(name), new.get(name))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )
    if not changes:  # equal essences with different fingerprints: nothing to do
        return None
    names = {c.field for c in changes}
    if names & set(SCHEDULE_FIELDS):
        return Step(Op.RESCHEDULE, job_id, want, changes)
    if names == {"paused"}:
        return Step(Op.PAUSE if new.get("paused") else Op.RESUME, job_id, want, changes)
    return Step(Op.MODIFY, job_id, want, changes)
