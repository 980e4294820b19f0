"""Run history: the in-memory read model of every run, fed by the runner.

The status API reads from here, so it always shows what has happened, even before the
writer (``engine.state.persist``) has put it in the database. Each job keeps its newest
``limit`` runs. A run is ``queued`` until its code starts (a ``def`` task waiting for a
thread, a Celery task waiting for a worker), then ``running``, then final.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

__all__ = ["FINISHED", "IN_PROGRESS", "History", "Run"]

FINISHED = frozenset({"success", "failed", "timeout", "skipped", "missed", "cancelled"})
IN_PROGRESS = frozenset({"queued", "running"})


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
    traceback: str | None = None
    logs: list[dict[str, Any]] | None = None
    worker: str | None = None
    epoch: int | None = None

    @property
    def run_id(self) -> str:
        return f"{self.job_id}@{self.scheduled_at.timestamp():.6f}#{self.attempt}"

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 6)

    def as_dict(self, tz: tzinfo | None = None) -> dict[str, Any]:
        """The Run of the status API, every instant in ``tz`` (the job's zone)."""
        return {
            "status": self.status,
            "scheduled_at": _iso(self.scheduled_at, tz),
            "started_at": _iso(self.started_at, tz),
            "finished_at": _iso(self.finished_at, tz),
            "duration_s": self.duration_s,
            "attempt": self.attempt,
            "error": self.error,
            "traceback": self.traceback,
            "logs": list(self.logs) if self.logs else [],
            "worker": self.worker,
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
            "traceback": self.traceback,
            "logs": self.logs,
            "worker": self.worker,
            "epoch": self.epoch,
        }


def _iso(value: datetime | None, tz: tzinfo | None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def _now() -> datetime:
    return datetime.now(UTC)


class History:
    """Runs per job, newest last in memory, bounded; ``on_change`` sees every change."""

    def __init__(self, limit: int = 100, on_change: Callable[[Run], None] | None = None) -> None:
        self.limit = limit
        # Lists, trimmed in steps: a deque(maxlen) allocates 64 slots for a job's first run.
        self._runs: dict[str, list[Run]] = {}
        self._running: dict[str, int] = {}
        self._last_success: dict[str, datetime] = {}  # kept when the run itself is trimmed
        self._on_change = on_change or (lambda run: None)
        self.changes = 0  # bumped on every change: read models cache on it

    def start(
        self,
        job_id: str,
        scheduled_at: datetime,
        attempt: int = 1,
        *,
        started: bool = True,
        epoch: int | None = None,
        worker: str | None = "local",
    ) -> Run:
        """A run in progress: ``running`` now, or ``queued`` until ``begin()``."""
        if started:
            run = Run(job_id, scheduled_at, attempt, "running", _now(), None, worker=worker)
        else:
            run = Run(job_id, scheduled_at, attempt, "queued", worker=worker)
        run.epoch = epoch
        self._append(run)
        self._running[job_id] = self._running.get(job_id, 0) + 1
        self._changed(run)
        return run

    def begin(self, run: Run, worker: str | None = None, at: datetime | None = None) -> None:
        """The run's code starts now, or started ``at`` (may be called from a worker thread)."""
        if run.status != "queued":
            return
        run.started_at = at or _now()
        run.status = "running"
        if worker is not None:
            run.worker = worker
        self._changed(run)

    def finish(
        self,
        run: Run,
        status: str,
        error: str | None = None,
        *,
        traceback: str | None = None,
        logs: list[dict[str, Any]] | None = None,
        at: datetime | None = None,
    ) -> None:
        if run.status not in IN_PROGRESS:
            return
        run.status = status
        run.error = error
        run.traceback = traceback
        if logs is not None:
            run.logs = logs
        run.finished_at = at or _now()
        if status == "success":
            self._last_success[run.job_id] = run.finished_at
        left = self._running.get(run.job_id, 1) - 1
        if left > 0:
            self._running[run.job_id] = left
        else:
            self._running.pop(run.job_id, None)
        self._changed(run)

    def amend(self, run: Run) -> None:
        """A finished run's record was corrected (may be called from a worker thread)."""
        self._changed(run)

    def record(
        self,
        job_id: str,
        scheduled_at: datetime,
        status: str,
        error: str | None = None,
        epoch: int | None = None,
        attempt: int = 1,
    ) -> Run:
        """A run that never started: skipped, missed or cancelled before it ran."""
        run = Run(job_id, scheduled_at, attempt, status, None, _now(), error)
        run.epoch = epoch
        self._append(run)
        self._changed(run)
        return run

    def _changed(self, run: Run) -> None:
        self.changes += 1
        self._on_change(run)

    def _append(self, run: Run) -> None:
        runs = self._runs.get(run.job_id)
        if runs is None:
            runs = self._runs[run.job_id] = []
        runs.append(run)
        if len(runs) > self.limit + self.limit // 2:
            del runs[: -self.limit]

    def load(self, runs: Iterable[Run]) -> None:
        """Runs read back from the database, oldest first; in-progress ones count."""
        for run in runs:
            if run.status in IN_PROGRESS:
                self._running[run.job_id] = self._running.get(run.job_id, 0) + 1
            elif run.status == "success" and run.finished_at is not None:
                self._last_success[run.job_id] = run.finished_at
            self._append(run)
        self.changes += 1

    def reset(self) -> None:
        """Forget everything (a new leadership term reloads from the database)."""
        self._runs.clear()
        self._running.clear()
        self._last_success.clear()
        self.changes += 1

    def adopt(self, other: History) -> None:
        """Take ``other``'s runs as this history's (a view built elsewhere, swapped in)."""
        self._runs, self._running = other._runs, other._running
        self._last_success = other._last_success
        self.changes += 1

    def merge(self, runs: Iterable[Run]) -> None:
        """Runs re-read from the database (a standby's refresh): each replaces its twin."""
        touched: set[str] = set()
        for run in runs:
            kept = self._runs.setdefault(run.job_id, [])
            for index, old in enumerate(kept):
                if old.scheduled_at == run.scheduled_at and old.attempt == run.attempt:
                    kept[index] = run
                    break
            else:
                kept.append(run)
            touched.add(run.job_id)
        for job_id in touched:
            kept = self._runs[job_id]
            kept.sort(key=lambda r: (r.scheduled_at, r.attempt))
            self.replace(job_id, kept)

    def replace(self, job_id: str, runs: list[Run]) -> None:
        """A standby's refresh: the job's runs as the database has them now."""
        self._runs[job_id] = runs[-self.limit :]
        for run in runs:
            if run.status == "success" and run.finished_at is not None:
                self._last_success[job_id] = run.finished_at
        count = sum(1 for r in runs if r.status in IN_PROGRESS)
        if count:
            self._running[job_id] = count
        else:
            self._running.pop(job_id, None)
        self.changes += 1

    def forget(self, job_id: str) -> None:
        self._runs.pop(job_id, None)
        self._running.pop(job_id, None)
        self._last_success.pop(job_id, None)
        self.changes += 1

    def runs(self, job_id: str) -> list[Run]:
        return list(reversed(self._runs.get(job_id, [])[-self.limit :]))

    def runs_at(self, job_id: str, scheduled_at: datetime) -> list[Run]:
        return [r for r in self._runs.get(job_id, ()) if r.scheduled_at == scheduled_at]

    def oldest(self, job_id: str) -> Run | None:
        runs = self._runs.get(job_id)
        return runs[0] if runs else None

    def last_finished(self, job_id: str) -> Run | None:
        for run in reversed(self._runs.get(job_id, ())):
            if run.status in FINISHED:
                return run
        return None

    def last_success_at(self, job_id: str) -> datetime | None:
        return self._last_success.get(job_id)

    def consecutive_failures(self, job_id: str) -> int:
        count = 0
        for run in reversed(self._runs.get(job_id, ())):
            if run.status in ("failed", "timeout"):
                count += 1
            elif run.status == "success":
                break
        return count

    def running(self, job_id: str) -> int:
        return self._running.get(job_id, 0)

    def job_ids(self) -> list[str]:
        return list(self._runs)
