"""Run history: the in-memory read model of every run, fed by the runner.

The status API reads from here, so it always shows what has happened, even before the
batch writer (``engine.state.persist``) has put it in the database. Each job keeps its newest
``limit`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["FINISHED", "History", "Run"]

FINISHED = frozenset({"success", "failed", "timeout", "skipped", "missed", "cancelled"})


@dataclass(slots=True)
class Run:
    """One attempt of one scheduled run of one job."""

    job_id: str
    scheduled_at: datetime
    attempt: int = 1
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "scheduled_at": _iso(self.scheduled_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s,
            "attempt": self.attempt,
            "error": self.error,
        }

    def as_row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "scheduled_at": self.scheduled_at.timestamp(),
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at.timestamp() if self.started_at else None,
            "finished_at": self.finished_at.timestamp() if self.finished_at else None,
            "duration_s": self.duration_s,
            "error": self.error,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


class History:
    """Runs per job, newest last in memory, bounded; ``on_change`` sees every change."""

    def __init__(self, limit: int = 100, on_change: Callable[[Run], None] | None = None) -> None:
        self.limit = limit
        # Lists, trimmed in steps: a deque(maxlen) allocates 64 slots for a job's first run.
        self._runs: dict[str, list[Run]] = {}
        self._running: dict[str, int] = {}
        self._on_change = on_change or (lambda run: None)

    def start(self, job_id: str, scheduled_at: datetime, attempt: int = 1) -> Run:
        run = Run(job_id, scheduled_at, attempt, "running", started_at=_now())
        self._append(run)
        self._running[job_id] = self._running.get(job_id, 0) + 1
        self._on_change(run)
        return run

    def finish(self, run: Run, status: str, error: str | None = None) -> None:
        if run.status != "running":
            return
        run.status = status
        run.error = error
        run.finished_at = _now()
        left = self._running.get(run.job_id, 1) - 1
        if left > 0:
            self._running[run.job_id] = left
        else:
            self._running.pop(run.job_id, None)
        self._on_change(run)

    def record(
        self, job_id: str, scheduled_at: datetime, status: str, error: str | None = None
    ) -> Run:
        """A run that never started: skipped, missed or cancelled before it ran."""
        now = _now()
        run = Run(job_id, scheduled_at, 1, status, None, now, error)
        self._append(run)
        self._on_change(run)
        return run

    def _append(self, run: Run) -> None:
        runs = self._runs.get(run.job_id)
        if runs is None:
            runs = self._runs[run.job_id] = []
        runs.append(run)
        if len(runs) > self.limit + self.limit // 2:
            del runs[: -self.limit]

    def load(self, runs: Iterable[Run], *, taking_over: bool = True) -> None:
        """Runs read back from the database, oldest first.

        ``taking_over``: this process now fires the jobs, so a run still marked running
        belonged to a process that is gone; a standby's read-only view keeps it as it is.
        """
        for run in runs:
            if run.status == "running" and not taking_over:
                self._running[run.job_id] = self._running.get(run.job_id, 0) + 1
            elif run.status == "running":  # the process died under it
                run.status = "cancelled"
                run.error = "the engine stopped while this run was in progress"
                run.finished_at = run.finished_at or run.started_at or run.scheduled_at
                self._on_change(run)
            self._append(run)

    def runs(self, job_id: str) -> list[Run]:
        return list(reversed(self._runs.get(job_id, [])[-self.limit :]))

    def last_finished(self, job_id: str) -> Run | None:
        for run in reversed(self._runs.get(job_id, ())):
            if run.status in FINISHED:
                return run
        return None

    def running(self, job_id: str) -> int:
        return self._running.get(job_id, 0)
