"""What happened, as the tasks and the engine tell it: the task log and the run history.

``read_runs()`` is the one function that knows the engine's history table; when the
schema changes, adapt it and nothing else. Times are UTC epoch seconds throughout.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "FINAL",
    "Execution",
    "RunHistory",
    "RunRecord",
    "TaskLog",
    "key_of",
    "read_runs",
]

# A run record with one of these statuses is final: it will not change any more.
FINAL = frozenset({"success", "failed", "timeout", "skipped", "missed", "cancelled"})


def key_of(job_id: str, scheduled_at: float, attempt: int) -> tuple[str, int, int]:
    """The identity of one attempt of one scheduled run (scheduled time to the ms)."""
    return (job_id, round(scheduled_at * 1000), attempt)


@dataclass(frozen=True, slots=True)
class Execution:
    """One task start, as the task itself recorded it."""

    job_id: str
    scheduled_at: float  # NaN when current_run() gave no context
    attempt: int
    kind: str
    incarnation: str  # which engine process (replica name and start number) ran it
    pid: int
    wall: float
    mono: float

    @property
    def key(self) -> tuple[str, int, int]:
        return key_of(self.job_id, self.scheduled_at, self.attempt)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the engine's run history."""

    job_id: str
    scheduled_at: float
    attempt: int
    status: str
    started_at: float | None
    finished_at: float | None
    error: str | None

    @property
    def key(self) -> tuple[str, int, int]:
        return key_of(self.job_id, self.scheduled_at, self.attempt)


def _parse(line: str) -> Execution | None:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 8:
        return None
    job_id, scheduled, attempt, kind, incarnation, pid, wall, mono = parts
    when = float("nan") if scheduled == "-" else datetime.fromisoformat(scheduled).timestamp()
    return Execution(
        job_id, when, int(attempt), kind, incarnation, int(pid), float(wall), float(mono)
    )


class TaskLog:
    """The scenario's task log, read incrementally (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executions: list[Execution] = []
        self.malformed = 0
        self._offset = 0
        self._lock = threading.Lock()

    def refresh(self) -> list[Execution]:
        """Read what was appended since the last call; return all executions so far."""
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return list(self.executions)
            end = data.rfind(b"\n") + 1
            self._offset += end
            for line in data[:end].decode("utf-8", "replace").splitlines():
                parsed = _parse(line)
                if parsed is None:
                    self.malformed += 1
                else:
                    self.executions.append(parsed)
            return list(self.executions)

    def since(self, wall: float) -> list[Execution]:
        return [e for e in self.refresh() if e.wall >= wall]


def read_runs(url: str) -> list[RunRecord]:
    """Every row of ``schedctl_runs`` in the state database at ``url`` (empty if none yet).

    ``sqlite:///PATH`` or ``postgresql://...``; read directly, never through the proxy,
    so the history can be read during a database outage of the replicas.
    """
    query = (
        "SELECT job_id, scheduled_at, attempt, status, started_at, finished_at, error "
        "FROM schedctl_runs"
    )
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(query).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url, connect_timeout=5, autocommit=True) as pg:
            try:
                rows = pg.execute(query).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
    return [RunRecord(r[0], float(r[1]), int(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


class RunHistory:
    """The union of periodic reads of the run history, newest status per run.

    The engine keeps only the newest runs of each job, so a long scenario reads the table
    every few seconds and remembers every row it has seen.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.records: dict[tuple[str, int, int], RunRecord] = {}
        self.reads = 0
        self.failed_reads = 0
        self.last_read_at: float | None = None
        self.last_rows: list[RunRecord] = []  # the table as the newest read saw it
        self._lock = threading.Lock()

    def read(self, now: float) -> None:
        try:
            rows = read_runs(self.url)
        except Exception:
            with self._lock:
                self.failed_reads += 1
            return
        with self._lock:
            for row in rows:
                self.records[row.key] = row
            self.reads += 1
            self.last_read_at = now
            self.last_rows = rows

    def snapshot(self) -> dict[tuple[str, int, int], RunRecord]:
        with self._lock:
            return dict(self.records)
