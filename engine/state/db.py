"""The engine's state in SQL: job catalog, run history, engine facts. SQLAlchemy 2 Core.

SQLite (embedded default, WAL) or PostgreSQL. The schema is versioned from the first
release: ``schema_version`` holds the applied migration steps, and ``migrate()`` applies
the missing ones in place, never dropping runtime jobs or history.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

__all__ = ["JobRow", "RunRow", "StateDB"]

metadata = MetaData()

schema_version = Table(
    "schedctl_schema_version", metadata, Column("version", Integer, primary_key=True)
)
jobs = Table(
    "schedctl_jobs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("source", String(16), nullable=False),
    Column("file", Text),
    Column("line", Integer),
    Column("col", Integer),
    Column("essence", Text),  # declared: the canonical spec as JSON
    Column("state", LargeBinary),  # runtime: the pickled APScheduler job state
    Column("next_run_time", Float),  # UTC timestamp; NULL when paused or done
    Column("runtime_paused", Boolean, nullable=False, default=False),
    Column("done", Boolean, nullable=False, default=False),
)
runs = Table(
    "schedctl_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False, index=True),
    Column("scheduled_at", Float, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration_s", Float),
    Column("error", Text),
    UniqueConstraint("job_id", "scheduled_at", "attempt", name="uq_schedctl_runs_claim"),
)
facts = Table(
    "schedctl_facts",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Each migration is a list of statements run once, in order, by version number.
# Version 1 is the tables above, created by metadata.create_all.
MIGRATIONS: dict[int, Sequence[str]] = {1: ()}
MIGRATION_LOCK = 0x5C4ED_C72


@dataclass(frozen=True)
class JobRow:
    id: str
    source: str
    file: str | None
    line: int | None
    column: int | None
    essence: dict[str, Any] | None
    state: bytes | None
    next_run_time: float | None
    runtime_paused: bool
    done: bool
    # The text as stored (its hash is the fingerprint); ``essence`` is the same, parsed.
    essence_json: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RunRow:
    job_id: str
    scheduled_at: float
    attempt: int
    status: str
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    error: str | None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class StateDB:
    """One database: schema, migrations, bulk reads and writes. Thread-safe writes."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(parsed, future=True)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._lock = threading.Lock()
        self._unpruned: dict[str, int] = {}  # runs written per job since its last trim
        upsert = _upsert_insert(self.dialect)(runs)
        self._upsert_run = upsert.on_conflict_do_update(
            index_elements=["job_id", "scheduled_at", "attempt"],
            set_={name: upsert.excluded[name] for name in _RUN_UPDATES},
        )
        self._update_next_run = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(next_run_time=bindparam("b_t"))
        )

    def migrate(self, attempts: int = 20) -> int:
        """Create or upgrade the schema in place; return the version now applied.

        Safe when several processes start at once on an empty database: PostgreSQL
        serialises them on an advisory lock; SQLite's racers retry after the winner.
        """
        for attempt in range(attempts):
            try:
                self._migrate_once()
                return max(MIGRATIONS)
            except DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _migrate_once(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            metadata.create_all(conn)
            applied = set(conn.scalars(select(schema_version.c.version)))
            for version in sorted(MIGRATIONS):
                if version in applied:
                    continue
                for statement in MIGRATIONS[version]:
                    conn.execute(text(statement))
                conn.execute(schema_version.insert().values(version=version))

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs --------------------------------------------------------------------------

    def load_jobs(self) -> list[JobRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs)).all()
        return [
            JobRow(
                r.id,
                r.source,
                r.file,
                r.line,
                r.col,
                json.loads(r.essence) if r.essence else None,
                r.state,
                r.next_run_time,
                bool(r.runtime_paused),
                bool(r.done),
                r.essence,
            )
            for r in rows
        ]

    def write_jobs(self, upserts: Iterable[dict[str, Any]], removals: Iterable[str]) -> None:
        rows = list(upserts)
        gone = list(removals)
        if not rows and not gone:
            return
        with self._lock, self.engine.begin() as conn:
            ids = [r["id"] for r in rows] + gone
            for chunk in _chunks(ids, 500):
                conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
            if rows:
                conn.execute(jobs.insert(), rows)

    # -- runs --------------------------------------------------------------------------

    def write_runs(self, rows: Sequence[dict[str, Any]], keep: int) -> None:
        """Upsert runs by (job, scheduled time, attempt); keep about the newest ``keep``.

        One cached statement, executed for many rows. A job's old runs are trimmed once it
        has had ``keep // 5`` new ones, so the table holds at most ``keep * 1.2`` per job.
        """
        if not rows:
            return
        with self._lock, self.engine.begin() as conn:
            conn.execute(self._upsert_run, list(rows))
            for row in rows:
                self._unpruned[row["job_id"]] = self._unpruned.get(row["job_id"], 0) + 1
            due = [job for job, count in self._unpruned.items() if count >= max(keep // 5, 1)]
            for job_id in due:
                del self._unpruned[job_id]
                newest = (
                    select(runs.c.id)
                    .where(runs.c.job_id == job_id)
                    .order_by(runs.c.scheduled_at.desc(), runs.c.attempt.desc())
                    .limit(keep)
                    .scalar_subquery()
                )
                conn.execute(delete(runs).where(runs.c.job_id == job_id, runs.c.id.not_in(newest)))

    def write_next_runs(self, moved: Sequence[tuple[float | None, str]]) -> None:
        """Only the next run times of jobs that fired: one UPDATE for many rows."""
        if not moved:
            return
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                self._update_next_run, [{"b_id": job_id, "b_t": when} for when, job_id in moved]
            )

    def claim_run(self, job_id: str, scheduled_at: float) -> bool:
        """Insert the first attempt of a run; False if another process inserted it first."""
        insert = _upsert_insert(self.dialect)
        stmt = (
            insert(runs)
            .values(job_id=job_id, scheduled_at=scheduled_at, attempt=1, status="running")
            .on_conflict_do_nothing(index_elements=["job_id", "scheduled_at", "attempt"])
            .returning(runs.c.id)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).scalar() is not None

    def load_runs(self, keep: int) -> list[RunRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(runs).order_by(runs.c.job_id, runs.c.scheduled_at, runs.c.attempt)
            ).all()
        return [
            RunRow(
                r.job_id,
                r.scheduled_at,
                r.attempt,
                r.status,
                r.started_at,
                r.finished_at,
                r.duration_s,
                r.error,
            )
            for r in rows
        ]

    # -- facts -------------------------------------------------------------------------

    def put_fact(self, key: str, value: Any) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(facts).where(facts.c.key == key))
            conn.execute(facts.insert().values(key=key, value=json.dumps(value, default=str)))

    def get_fact(self, key: str) -> Any:
        with self.engine.connect() as conn:
            found = conn.scalar(select(facts.c.value).where(facts.c.key == key))
        return json.loads(found) if found is not None else None


_RUN_UPDATES = ("status", "started_at", "finished_at", "duration_s", "error")


def _upsert_insert(dialect: str) -> Any:
    """The dialect's INSERT with ON CONFLICT (both SQLite and PostgreSQL have it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
