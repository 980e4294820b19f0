"""The state database's tables and their versioned migrations. SQLAlchemy 2 Core.

A new database gets every table at the newest version at once. An existing one gets the
migrations it lacks, in order, in place: runtime jobs and history are never dropped.

- v1: jobs, runs, facts (the first release; runtime jobs were pickled in ``jobs.state``).
- v2: runtime jobs as JSON data (``jobs.runtime``); runs carry the lease ``epoch`` that
  claimed them, the failing attempt's ``traceback``, the attempt's ``logs`` and the
  ``worker``; the leader lease, the audit log and the runtime-command queue.
- v3: two fewer index entries to write per run: runs lose their ``job_id`` index (the
  claim key ``(job_id, scheduled_at, attempt)`` starts with it) and their ``status``
  index covers only runs not ended (``OPEN``), the only ones looked up by status.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "MIGRATIONS",
    "OPEN",
    "commands",
    "events",
    "facts",
    "jobs",
    "lease",
    "metadata",
    "runs",
    "schema_version",
]

metadata = MetaData()

# Runs not ended: the only ones read by status (a new leader's follow-up, Celery's runs in
# flight). A query names this very text, so both databases see their index applies.
OPEN = "status IN ('queued', 'running')"

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
    Column("state", LargeBinary),  # v1 only: a pickled runtime job, converted once, never run
    Column("next_run_time", Float),  # UTC timestamp; NULL when paused or done
    Column("runtime_paused", Boolean, nullable=False, default=False),
    Column("done", Boolean, nullable=False, default=False),
    Column("runtime", Text),  # runtime: the task reference, trigger and JSON arguments
    Column("changed_at", Float),  # when the row was last written (standbys read what changed)
)
runs = Table(
    "schedctl_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    Column("scheduled_at", Float, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration_s", Float),
    Column("error", Text),
    Column("epoch", Integer),  # the lease epoch under which the run was claimed
    Column("traceback", Text),
    Column("logs", Text),  # JSON list of {"at", "level", "message"}
    Column("worker", String(255)),
    Column("changed_at", Float),
    UniqueConstraint("job_id", "scheduled_at", "attempt", name="uq_schedctl_runs_claim"),
    Index(
        "ix_schedctl_runs_open",
        "status",
        sqlite_where=text(OPEN),
        postgresql_where=text(OPEN),
    ),
)
facts = Table(
    "schedctl_facts",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
lease = Table(
    "schedctl_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("holder", String(255)),
    Column("expires_at", Float, nullable=False),  # the database's clock, epoch seconds
)
events = Table(
    "schedctl_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("data", Text, nullable=False),  # JSON object: the event's other fields
)
commands = Table(
    "schedctl_commands",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("op", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column(
        "status", String(16), nullable=False, index=True
    ),  # pending|applying|done|failed|expired
    Column("result", Text),
    Column("finished_at", Float),
)

# Statements that bring a database from the previous version to this one. A database
# created fresh gets metadata.create_all() and every version marked applied.
MIGRATIONS: dict[int, Sequence[str]] = {
    1: (),
    2: (
        "ALTER TABLE schedctl_jobs ADD COLUMN runtime TEXT",
        "ALTER TABLE schedctl_jobs ADD COLUMN changed_at FLOAT",
        "ALTER TABLE schedctl_runs ADD COLUMN changed_at FLOAT",
        "ALTER TABLE schedctl_runs ADD COLUMN epoch INTEGER",
        "ALTER TABLE schedctl_runs ADD COLUMN traceback TEXT",
        "ALTER TABLE schedctl_runs ADD COLUMN logs TEXT",
        "ALTER TABLE schedctl_runs ADD COLUMN worker VARCHAR(255)",
        "CREATE INDEX ix_schedctl_runs_status ON schedctl_runs (status)",
    ),
    3: (
        "DROP INDEX IF EXISTS ix_schedctl_runs_job_id",
        "DROP INDEX IF EXISTS ix_schedctl_runs_status",
        f"CREATE INDEX IF NOT EXISTS ix_schedctl_runs_open ON schedctl_runs (status) WHERE {OPEN}",
    ),
}
