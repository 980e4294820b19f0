"""The engine's state in SQL: jobs, runs, facts, events, commands. SQLAlchemy 2 Core.

SQLite (embedded default, WAL) or PostgreSQL. Opening checks that the database is one
(a 0-byte or corrupt SQLite file is refused with one line, unless told to start afresh),
``migrate()`` brings its schema to the newest version in place.

Everything read back is untrusted: a row that does not decode is reported and skipped,
never a reason not to start. Writes that only the leader may make carry its lease
(``Fence``): they happen in a transaction that first checks the lease row, so a leader
that was replaced writes nothing (PostgreSQL holds the row ``FOR SHARE`` until commit;
SQLite's WAL refuses a write whose snapshot another writer has moved on).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from engine.errors import StateError
from engine.state import schema
from engine.state.schema import MIGRATIONS, commands, events, facts, jobs, lease, runs

__all__ = ["Fence", "Fenced", "JobRow", "RunRow", "StateDB"]

log = logging.getLogger("schedctl.state")
MIGRATION_LOCK = 0x5C4ED_C72
EVENTS_KEPT = 1000
RUN_FINAL = ("success", "failed", "timeout", "skipped", "missed", "cancelled")


_ANY_PENDING = select(commands.c.id).where(commands.c.status == "pending").limit(1)


@dataclass(frozen=True)
class Fence:
    """A leader's lease: its writes count only while the lease row still says so."""

    epoch: int
    holder: str


class Fenced(StateError):
    """A write refused because the lease it was made under is no longer current."""


@dataclass(frozen=True)
class Prepared:
    """A statement as the driver's SQL (``StateDB.prepared``): run it with ``args``."""

    statement: Any
    sql: str
    order: tuple[str, ...]
    constants: dict[str, Any]

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        """The parameters in the driver's order; the statement's own literals filled in."""
        return tuple(
            params[name] if name in params else self.constants[name] for name in self.order
        )


@dataclass(frozen=True)
class JobRow:
    id: str
    source: str
    file: str | None
    line: int | None
    column: int | None
    essence: dict[str, Any] | None
    state: bytes | None  # a v1 pickled runtime job, converted once by the scheduler
    next_run_time: float | None
    runtime_paused: bool
    done: bool
    # The text as stored (its hash is the fingerprint); ``essence`` is the same, parsed.
    essence_json: str | None = field(default=None, compare=False, repr=False)
    runtime: dict[str, Any] | None = None


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
    traceback: str | None = None
    logs: list[dict[str, Any]] | None = None
    worker: str | None = None
    epoch: int | None = None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a process crash
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def parse_url(url: str) -> Any:
    """The SQLAlchemy URL of a ``database_url`` setting, or StateError saying what is wrong."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StateError(
            f"database URL {url!r} is not a URL; write e.g. sqlite:///.engine/state.db "
            "or postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StateError(
            f"database URL {url!r}: {backend!r} is not supported; use sqlite:/// or postgresql://"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class StateDB:
    """One database: checks, schema, reads and writes. Writes are thread-safe."""

    def __init__(self, url: str, *, reset: bool = False, autocommit: bool = False) -> None:
        """``autocommit``: every statement commits alone and a pooled connection is not
        pinged first: one round trip per write, for single-statement writers (Celery
        workers, ``engine.state.celery_rows``)."""
        self.url = parse_url(url)
        self.autocommit = autocommit
        self.dialect = self.url.get_backend_name()
        self.path: Path | None = None
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            self.path = Path(self.url.database)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _check_sqlite_file(self.path, reset)
        try:
            self.engine: Engine = create_engine(
                self.url,
                future=True,
                pool_pre_ping=self.dialect == "postgresql" and not autocommit,
                **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
                **_connect_args(self.dialect),
            )
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise StateError(
                f"cannot open {self.url.render_as_string(hide_password=True)}: {exc}; "
                "install the driver (pip install 'schedctl[postgres]')"
            ) from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._lock = threading.Lock()
        self._unpruned: dict[str, int] = {}  # runs written per job since its last trim
        self._prepared: dict[int, Prepared] = {}
        # The statements written once per run or per fire go to the driver as SQL text
        # with plain parameter rows: SQLAlchemy's per-row parameter processing cost more
        # than SQLite's own work for them.
        self._placeholder = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        # The lease row, shared-locked on PostgreSQL until the transaction ends, with the
        # database's clock (this host's for SQLite: see ``now``).
        postgres = self.dialect == "postgresql"
        self._fence_sql = (
            "SELECT epoch, holder, expires_at"
            + (", extract(epoch from clock_timestamp())" if postgres else "")
            + f" FROM {lease.name} WHERE name = {self._placeholder}"
            + (" FOR SHARE" if postgres else "")
        )
        self._upsert_run = self._driver(self._run_upsert(), _RUN_COLUMNS)
        # Claims: thousands of transactions a second when busy, each a lease check and an
        # INSERT, on a connection kept for them (SQLAlchemy's checkout, result handling
        # and commit cost more than SQLite's own work for a claim).
        self._claims = KeptConnection(self)
        self._update_next_run = self._driver(
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(
                next_run_time=bindparam("b_t"), done=bindparam("b_d"), changed_at=bindparam("b_c")
            ),
            ("b_t", "b_d", "b_c", "b_id"),
        )
        self._claim_sql: dict[int, str] = {}

    def prepared(self, statement: Any) -> Prepared:
        """A module-level statement as the driver's SQL, compiled once per database."""
        found = self._prepared.get(id(statement))
        if found is None or found.statement is not statement:
            sql, order = self._driver(statement, ())
            compiled = statement.compile(dialect=self.engine.dialect)
            constants = {
                name: value
                for name, value in compiled.params.items()
                if not compiled.binds[name].required  # a literal of the statement's own
            }
            found = Prepared(statement, sql, order, constants)
            self._prepared[id(statement)] = found
        return found

    def _driver(self, statement: Any, names: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        """The statement as the driver's SQL, and the order of its parameters."""
        compiled = statement.compile(dialect=self.engine.dialect, column_keys=list(names))
        if compiled.positional:
            return str(compiled), tuple(compiled.positiontup or ())
        # Named (PostgreSQL's %(name)s): rewritten positional, in the order they appear.
        sql, order = str(compiled), []
        while True:
            start = sql.find("%(")
            if start < 0:
                break
            end = sql.index(")s", start)
            order.append(sql[start + 2 : end])
            sql = sql[:start] + "%s" + sql[end + 2 :]
        return sql, tuple(order)

    def _claim_statement(self, count: int) -> str:
        """INSERT of ``count`` claim rows that skips runs claimed before, returning the rest."""
        sql = self._claim_sql.get(count)
        if sql is None:
            row = "(" + ", ".join([self._placeholder] * len(_RUN_COLUMNS)) + ")"
            sql = (
                f"INSERT INTO {runs.name} ({', '.join(_RUN_COLUMNS)}) VALUES "
                + ", ".join([row] * count)
                + " ON CONFLICT (job_id, scheduled_at, attempt) DO NOTHING"
                " RETURNING job_id, scheduled_at"
            )
            self._claim_sql[count] = sql
        return sql

    @property
    def display(self) -> str:
        return str(self.path) if self.path else self.url.render_as_string(hide_password=True)

    # -- schema ------------------------------------------------------------------------

    def migrate(self, attempts: int = 20) -> int:
        """Create or upgrade the schema in place; return the version now applied.

        Safe when several processes start at once on an empty database: PostgreSQL
        serialises them on an advisory lock; SQLite's racers retry after the winner.
        """
        for attempt in range(attempts):
            try:
                self._migrate_once()
                return max(MIGRATIONS)
            except StateError:
                raise
            except DBAPIError as exc:
                if self.dialect == "sqlite" and _not_a_database(exc):
                    raise StateError(
                        f"state database {self.display} is not a SQLite database or is "
                        f"corrupt ({exc.orig}); refusing to start over it: move it aside, or "
                        "start with --reset-state (ENGINE_RESET_STATE=true) to start afresh"
                    ) from None
                if attempt == attempts - 1 or exc.connection_invalidated:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _migrate_once(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            existing = set(conn.dialect.get_table_names(conn))
            if schema.schema_version.name not in existing or schema.jobs.name not in existing:
                schema.metadata.create_all(conn)
                applied: set[int] = set(conn.scalars(select(schema.schema_version.c.version)))
                for version in sorted(set(MIGRATIONS) - applied):
                    conn.execute(schema.schema_version.insert().values(version=version))
                return
            applied = set(conn.scalars(select(schema.schema_version.c.version)))
            newer = {v for v in applied if v not in MIGRATIONS}
            if newer:
                raise StateError(
                    f"state database {self.display} was written by a newer schedctl (schema "
                    f"version {max(newer)}, this one knows {max(MIGRATIONS)}); upgrade schedctl"
                )
            for version in sorted(MIGRATIONS):
                if version in applied:
                    continue
                for statement in MIGRATIONS[version]:
                    conn.execute(text(statement))
                conn.execute(schema.schema_version.insert().values(version=version))
            schema.metadata.create_all(conn)  # tables new in this version

    def close(self) -> None:
        self._claims.close()
        self.engine.dispose()

    def ping(self) -> None:
        """Raise if the database cannot be reached now."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def now(self, conn: Connection) -> float:
        """The database's clock (PostgreSQL's), or this host's for SQLite: lease arithmetic."""
        if self.dialect == "postgresql":
            return float(conn.scalar(text("SELECT extract(epoch from clock_timestamp())")))
        return time.time()

    # -- fencing -----------------------------------------------------------------------

    @contextmanager
    def fenced(self, fence: Fence | None) -> Iterator[Connection]:
        """A write transaction that commits only while ``fence`` is the current lease."""
        with self._lock, self.engine.begin() as conn:
            if fence is not None:
                self.check_fence(conn, fence)
            yield conn

    def check_fence(self, conn: Connection, fence: Fence) -> None:
        # One statement, written once: it runs in every claim's transaction, thousands of
        # times a second when busy (a built query cost as much as the claim itself).
        self._fence_holds(conn.exec_driver_sql(self._fence_sql, ("leader",)).first(), fence)

    def _fence_holds(self, row: Any, fence: Fence) -> None:
        """Raise ``Fenced`` unless the lease row read in this transaction is ``fence``."""
        if row is None or row[0] != fence.epoch or row[1] != fence.holder:
            raise Fenced(f"the leader lease moved on (epoch {fence.epoch} is no longer current)")
        now = float(row[3]) if self.dialect == "postgresql" else time.time()
        if float(row[2]) <= now:
            raise Fenced(f"the leader lease of epoch {fence.epoch} has expired")

    # -- jobs --------------------------------------------------------------------------

    def load_jobs(self) -> list[JobRow]:
        """Every job row that decodes; one that does not is logged and skipped."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs)).all()
        found = []
        for r in rows:
            try:
                found.append(_job_row(r))
            except Exception as exc:  # untrusted: a row that does not decode is skipped
                log.error(
                    "Skipping job %r in the state database: its row does not decode (%s: %s).",
                    str(r.id)[:128],
                    type(exc).__name__,
                    str(exc)[:200],
                )
        return found

    def load_jobs_since(self, since: float) -> tuple[list[JobRow], set[str]]:
        """Rows written at or after ``since`` and the ids of every job (for removals)."""
        with self.engine.connect() as conn:
            changed = conn.execute(select(jobs).where(jobs.c.changed_at >= since)).all()
            ids = set(conn.scalars(select(jobs.c.id)))
        found = []
        for r in changed:
            try:
                found.append(_job_row(r))
            except Exception:
                continue
        return found, ids

    def write_jobs(
        self,
        upserts: Iterable[dict[str, Any]],
        removals: Iterable[str],
        fence: Fence | None = None,
    ) -> None:
        rows = list(upserts)
        gone = list(removals)
        if not rows and not gone:
            return
        stamp = time.time()
        rows = [{"changed_at": stamp, "state": None, "runtime": None, **row} for row in rows]
        with self.fenced(fence) as conn:
            ids = [r["id"] for r in rows] + gone
            for chunk in _chunks(ids, 500):
                conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
            if rows:
                conn.execute(jobs.insert(), rows)

    def write_next_runs(
        self, moved: Sequence[tuple[float | None, bool, str]], fence: Fence | None = None
    ) -> None:
        """Only the next run times (and whether done) of jobs that fired: one UPDATE for
        many rows, each ``(next run time, done, id)``."""
        if not moved:
            return
        stamp = time.time()
        sql, order = self._update_next_run
        if order != ("b_t", "b_d", "b_c", "b_id"):  # pragma: no cover - both dialects give this
            raise RuntimeError(f"unexpected parameter order {order}")
        with self.fenced(fence) as conn:
            conn.exec_driver_sql(sql, [(when, done, stamp, job_id) for when, done, job_id in moved])

    # -- runs --------------------------------------------------------------------------

    def _run_upsert(self) -> Any:
        insert = _insert(self.dialect)(runs)
        updates = (
            "status",
            "started_at",
            "finished_at",
            "duration_s",
            "error",
            "traceback",
            "logs",
            "worker",
            "changed_at",
        )
        # A deposed leader may still finish what it claimed, never what another claimed.
        return insert.on_conflict_do_update(
            index_elements=["job_id", "scheduled_at", "attempt"],
            set_={name: insert.excluded[name] for name in updates},
            where=(runs.c.epoch.is_(None))
            | (insert.excluded.epoch.is_(None))
            | (runs.c.epoch == insert.excluded.epoch),
        )

    def write_runs(self, rows: Sequence[dict[str, Any]], keep: int) -> None:
        """Upsert runs by (job, scheduled time, attempt); keep about the newest ``keep``.

        A job's old runs are trimmed once it has had ``keep // 5`` new ones, so the table
        holds at most ``keep * 1.2`` per job.
        """
        if not rows:
            return
        stamp = time.time()
        sql, order = self._upsert_run
        if order != _RUN_COLUMNS:  # pragma: no cover - both dialects give this
            raise RuntimeError(f"unexpected parameter order {order}")
        prepared = [_run_values(row, stamp) for row in rows]
        with self._lock, self.engine.begin() as conn:
            conn.exec_driver_sql(sql, prepared)
            unpruned = self._unpruned
            for row in rows:
                unpruned[row["job_id"]] = unpruned.get(row["job_id"], 0) + 1
            every = max(keep // 5, 1)
            due = [job for job, count in unpruned.items() if count >= every]
            for job_id in due:
                del unpruned[job_id]
            # One statement for every job due a trim (not one per job).
            for chunk in _chunks(due, 500):
                ranked = (
                    select(
                        runs.c.id,
                        func.row_number()
                        .over(
                            partition_by=runs.c.job_id,
                            order_by=(runs.c.scheduled_at.desc(), runs.c.attempt.desc()),
                        )
                        .label("n"),
                    )
                    .where(runs.c.job_id.in_(chunk))
                    .subquery()
                )
                old = select(ranked.c.id).where(ranked.c.n > keep)
                conn.execute(delete(runs).where(runs.c.id.in_(old)))

    def claim_runs(
        self, claims: Sequence[dict[str, Any]], fence: Fence | None
    ) -> set[tuple[str, float]]:
        """Insert the first attempt of each run, under ``fence``; the (job, time) this call
        inserted. A run inserted before (by anyone, ever) is not claimed again.

        Each claim is ``{"job_id", "scheduled_at", "status", "error"?, "attempt"?, "worker"?}``:
        ``queued`` for a run about to start, or a final ``missed``/``skipped`` record; a
        Celery run's claim names its worker ``celery`` until a worker starts it. Raises
        ``Fenced`` (nothing inserted) when the lease is no longer current.
        """
        if not claims:
            return set()
        stamp = time.time()
        epoch = fence.epoch if fence is not None else None
        # Each claim's parameters in ``_RUN_COLUMNS`` order, made at once (a dict per
        # claim, flattened by name, cost a sixth of the claim's transaction).
        params = [
            (
                c["job_id"],
                c["scheduled_at"],
                c.get("attempt", 1),
                c.get("status", "queued"),
                None,  # started_at
                c.get("finished_at"),
                None,  # duration_s
                c.get("error"),
                epoch,
                None,  # traceback
                None,  # logs
                c.get("worker"),
                stamp,  # changed_at
            )
            for c in claims
        ]
        won: set[tuple[str, float]] = set()
        with self._lock, self._claims.transaction() as cursor:
            if fence is not None:
                cursor.execute(self._fence_sql, ("leader",))
                self._fence_holds(cursor.fetchone(), fence)
            for chunk in _chunks(params, 500):
                cursor.execute(self._claim_statement(len(chunk)), tuple(chain.from_iterable(chunk)))
                won.update(map(tuple, cursor.fetchall()))
        unpruned = self._unpruned
        for row in params:
            unpruned[row[0]] = unpruned.get(row[0], 0) + 1
        return won

    def claim_run(self, job_id: str, scheduled_at: float, fence: Fence | None = None) -> bool:
        """Claim one run; False if it was claimed before."""
        return bool(self.claim_runs([{"job_id": job_id, "scheduled_at": scheduled_at}], fence))

    def sweep_orphans(self, epoch: int, fence: Fence | None = None) -> int:
        """Runs left ``queued`` or ``running`` by an earlier lease (a leader that died or
        was replaced) end as ``failed``, saying so; return how many. A deposed leader that
        still finishes one of them later writes its real outcome over this.

        Runs handed to Celery (``worker`` is ``celery`` or a worker's name) are not the
        engine's to end: a worker may still start or finish them, and the new leader
        follows them (``engine.state.celery_rows``)."""
        stamp = time.time()
        lost_started = (
            "leader lost: the engine that ran this attempt stopped leading before its "
            "outcome was recorded"
        )
        lost_queued = (
            "leader lost: the engine that claimed this run stopped leading before the "
            "run was recorded as started"
        )
        with self.fenced(fence) as conn:
            count = 0
            for status, message in (("running", lost_started), ("queued", lost_queued)):
                result = conn.execute(
                    update(runs)
                    .where(
                        text(schema.OPEN),  # its index's own text: the index applies
                        runs.c.status == status,
                        (runs.c.epoch.is_(None)) | (runs.c.epoch < epoch),
                        (runs.c.worker.is_(None)) | (runs.c.worker == "local"),
                    )
                    .values(
                        status="failed",
                        error=message,
                        finished_at=func.coalesce(runs.c.started_at, runs.c.scheduled_at),
                        changed_at=stamp,
                    )
                )
                count += result.rowcount or 0
        return count

    def load_runs(self, keep: int, since: float | None = None) -> list[RunRow]:
        """Runs oldest first (of every job, or those written at or after ``since``)."""
        query = select(runs).order_by(runs.c.job_id, runs.c.scheduled_at, runs.c.attempt)
        if since is not None:
            query = query.where(runs.c.changed_at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = []
        for r in rows:
            try:
                found.append(_run_row(r))
            except Exception as exc:
                log.error("Skipping a run of %r: its row does not decode (%s).", r.job_id, exc)
        return found

    def load_runs_at(self, job_id: str, scheduled_at: float) -> list[RunRow]:
        """Every attempt of one scheduled run (for "why did it not run?")."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.job_id == job_id, runs.c.scheduled_at == scheduled_at)
                .order_by(runs.c.attempt)
            ).all()
        return [_run_row(r) for r in rows]

    # -- facts -------------------------------------------------------------------------

    def put_fact(self, key: str, value: Any, fence: Fence | None = None) -> None:
        self.put_facts({key: value}, fence)

    def put_facts(self, values: dict[str, Any], fence: Fence | None = None) -> None:
        if not values:
            return
        with self.fenced(fence) as conn:
            conn.execute(delete(facts).where(facts.c.key.in_(list(values))))
            conn.execute(
                facts.insert(),
                [{"key": k, "value": json.dumps(v, default=str)} for k, v in values.items()],
            )

    def get_fact(self, key: str) -> Any:
        with self.engine.connect() as conn:
            found = conn.scalar(select(facts.c.value).where(facts.c.key == key))
        try:
            return json.loads(found) if found is not None else None
        except ValueError:
            log.error("Ignoring the state database's fact %r: it does not decode.", key)
            return None

    def get_facts(self, keys: Sequence[str]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(facts).where(facts.c.key.in_(list(keys)))).all()
        found: dict[str, Any] = {}
        for row in rows:
            try:
                found[row.key] = json.loads(row.value)
            except ValueError:
                continue
        return found

    # -- events (the audit log) ---------------------------------------------------------

    def add_events(self, items: Sequence[tuple[float, str, dict[str, Any]]]) -> None:
        if not items:
            return
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                events.insert(),
                [
                    {"at": at, "kind": kind, "data": json.dumps(data, default=repr)}
                    for at, kind, data in items
                ],
            )
            newest = select(events.c.id).order_by(events.c.id.desc()).limit(EVENTS_KEPT).subquery()
            oldest_kept = select(func.min(newest.c.id)).scalar_subquery()
            conn.execute(delete(events).where(events.c.id < oldest_kept))

    def load_events(
        self, limit: int = 100, after_id: int | None = None
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        """Newest first: (id, at, kind, data)."""
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if after_id is not None:
            query = query.where(events.c.id > after_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = []
        for r in rows:
            try:
                data = json.loads(r.data)
                if isinstance(data, dict):
                    found.append((r.id, r.at, r.kind, data))
            except ValueError:
                continue
        return found

    # -- runtime commands (a standby hands a change to the leader) ----------------------

    def submit_command(self, op: str, payload: dict[str, Any]) -> int:
        with self._lock, self.engine.begin() as conn:
            result = conn.execute(
                commands.insert().values(
                    created_at=time.time(), op=op, payload=json.dumps(payload), status="pending"
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def command_result(self, command_id: int) -> tuple[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(commands.c.status, commands.c.result).where(commands.c.id == command_id)
            ).first()
        if row is None:
            return ("expired", None)
        return (row.status, json.loads(row.result) if row.result else None)

    def expire_command(self, command_id: int) -> bool:
        """Withdraw a command nobody took; False if the leader is applying it already."""
        with self._lock, self.engine.begin() as conn:
            result = conn.execute(
                update(commands)
                .where(commands.c.id == command_id, commands.c.status == "pending")
                .values(status="expired", finished_at=time.time())
            )
            return bool(result.rowcount)

    def take_commands(self, fence: Fence | None) -> list[tuple[int, str, dict[str, Any]]]:
        """Pending commands, marked ``applying`` under the leader's lease, oldest first."""
        # The leader asks ten times a second and nearly always finds none: a plain read
        # says so without the lease check, the writer's lock and a transaction (111 µs of
        # CPU instead of 397 on SQLite, measured alone; an idle engine's CPU fell a third).
        with self.engine.connect() as conn:
            if conn.execute(_ANY_PENDING).first() is None:
                return []
        with self.fenced(fence) as conn:
            rows = conn.execute(
                select(commands.c.id, commands.c.op, commands.c.payload)
                .where(commands.c.status == "pending")
                .order_by(commands.c.id)
                .limit(100)
            ).all()
            taken = []
            for row in rows:
                claimed = conn.execute(
                    update(commands)
                    .where(commands.c.id == row.id, commands.c.status == "pending")
                    .values(status="applying")
                )
                if not claimed.rowcount:
                    continue
                try:
                    payload = json.loads(row.payload)
                except ValueError:
                    payload = None
                if not isinstance(payload, dict):
                    conn.execute(
                        update(commands)
                        .where(commands.c.id == row.id)
                        .values(status="failed", result=json.dumps("the command does not decode"))
                    )
                    continue
                taken.append((row.id, row.op, payload))
        return taken

    def finish_command(self, command_id: int, status: str, result: Any) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                update(commands)
                .where(commands.c.id == command_id)
                .values(
                    status=status, result=json.dumps(result, default=repr), finished_at=time.time()
                )
            )
            # Answered commands older than an hour are of no use to anyone.
            conn.execute(
                delete(commands).where(
                    commands.c.status != "pending", commands.c.created_at < time.time() - 3600
                )
            )


def _check_sqlite_file(path: Path, reset: bool) -> None:
    """Refuse a SQLite file that holds no database; with ``reset``, move it aside."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    problem = None
    if size == 0:
        problem = "is empty (0 bytes): it holds no jobs and no history"
    elif not _is_sqlite(path):
        problem = "is not a SQLite database (its header is wrong)"
    if problem is None:
        return
    if reset:
        aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        log.warning(
            "State database %s %s; moved it to %s and started afresh.", path, problem, aside
        )
        return
    raise StateError(
        f"state database {path} {problem}; refusing to start over it: move it aside, or start "
        "with --reset-state (ENGINE_RESET_STATE=true) to keep it as a .broken file and start "
        "afresh"
    )


def _is_sqlite(path: Path) -> bool:
    """Whether ``path`` holds a SQLite database, asked of SQLite itself: opening and
    closing the file with ``open()`` would drop the locks this process's connections hold
    on it (POSIX locks belong to the process and go with any of its descriptors)."""
    try:
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        probe.execute("PRAGMA schema_version").fetchone()
        return True
    except sqlite3.DatabaseError as exc:
        return "not a database" not in str(exc)
    finally:
        probe.close()


def _not_a_database(exc: DBAPIError) -> bool:
    text_ = str(exc.orig).lower()
    return "not a database" in text_ or "malformed" in text_ or "corrupt" in text_


class KeptConnection:
    """One DBAPI connection of the database's pool, kept by one thread for its hot writes.

    ``transaction()`` yields the driver's cursor inside a transaction that commits when
    the block ends and rolls back if it raises. SQLite's transaction takes the write lock
    first (``BEGIN IMMEDIATE``), so what it reads cannot change before it writes. On an
    autocommit database (``StateDB(autocommit=True)``), ``execute`` runs one statement
    that commits alone: one round trip. A connection that fails is dropped (the next
    write opens another) and the driver's error is raised as SQLAlchemy's ``DBAPIError``,
    like every other write's. On PostgreSQL a connection idle for a while is pinged
    before use, as the pool does."""

    IDLE_PING_S = 1.0

    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._conn: Any = None
        self._used = 0.0

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        sqlite, explicit = self._db.dialect == "sqlite", self._db.autocommit
        with self._cursor() as (conn, cursor):
            if sqlite or explicit:
                cursor.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(Exception):
                    if explicit:
                        cursor.execute("ROLLBACK")
                    else:
                        conn.rollback()
                raise
            if explicit:
                cursor.execute("COMMIT")
            else:
                conn.commit()

    def execute(self, sql: str, args: Sequence[Any]) -> int:
        """One statement, committed alone (an autocommit database only); its row count."""
        if not self._db.autocommit:
            raise TypeError("KeptConnection.execute needs StateDB(autocommit=True)")
        with self._cursor() as (_, cursor):
            cursor.execute(sql, args)
            return int(cursor.rowcount)

    @contextmanager
    def _cursor(self) -> Iterator[tuple[Any, Any]]:
        dbapi_error = self._db.engine.dialect.loaded_dbapi.Error
        try:
            conn = self._connection()
            cursor = conn.cursor()
            try:
                yield conn, cursor
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
            self._used = time.monotonic()
        except dbapi_error as exc:
            self.close()
            raise DBAPIError.instance(
                None, None, exc, dbapi_error, dialect=self._db.engine.dialect
            ) from None

    def _connection(self) -> Any:
        idle = time.monotonic() - self._used > self.IDLE_PING_S
        if self._conn is not None and self._db.dialect == "postgresql" and idle:
            try:
                cursor = self._conn.cursor()
                cursor.execute("SELECT 1")
                cursor.close()
                if not self._db.autocommit:
                    self._conn.rollback()
            except Exception:
                self.close()
        if self._conn is None:
            self._conn = self._db.engine.raw_connection()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()  # not back to the pool: its state is unknown


def _connect_args(dialect: str) -> dict[str, Any]:
    if dialect == "postgresql":
        # A database that stops answering must not hang a write or a lease renewal for
        # the kernel's two-hour keepalive: fail within seconds and let the caller retry.
        return {
            "connect_args": {
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
                # Data a frozen server or proxy never acknowledges fails the call in 5 s.
                "tcp_user_timeout": 5000,
                # A process frozen inside a transaction (SIGSTOP between an UPDATE and its
                # COMMIT) keeps its row locks until the server ends its session: 5 s, so a
                # frozen leader's locks never outlast its lease.
                "options": (
                    "-c statement_timeout=15000 -c idle_in_transaction_session_timeout=5000"
                ),
            },
            "pool_size": 5,
            "max_overflow": 10,
            "pool_timeout": 10,
        }
    return {}


def _job_row(r: Any) -> JobRow:
    runtime = json.loads(r.runtime) if r.runtime else None
    if runtime is not None and not isinstance(runtime, dict):
        raise ValueError("the runtime job is not a JSON object")
    essence = json.loads(r.essence) if r.essence else None
    if essence is not None and not isinstance(essence, dict):
        raise ValueError("the declared job is not a JSON object")
    return JobRow(
        str(r.id),
        str(r.source),
        r.file,
        r.line,
        r.col,
        essence,
        r.state,
        r.next_run_time,
        bool(r.runtime_paused),
        bool(r.done),
        r.essence,
        runtime,
    )


def _run_row(r: Any) -> RunRow:
    logs = json.loads(r.logs) if r.logs else None
    if logs is not None and not isinstance(logs, list):
        logs = None
    return RunRow(
        r.job_id,
        r.scheduled_at,
        r.attempt,
        r.status,
        r.started_at,
        r.finished_at,
        r.duration_s,
        r.error,
        r.traceback,
        logs,
        r.worker,
        r.epoch,
    )


_RUN_COLUMNS = (
    "job_id",
    "scheduled_at",
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
    "epoch",
    "traceback",
    "logs",
    "worker",
    "changed_at",
)  # in the table's order, which is the order of the compiled INSERT's parameters


def _run_values(row: dict[str, Any], stamp: float) -> tuple[Any, ...]:
    """A run's parameters in ``_RUN_COLUMNS`` order."""
    logs = row.get("logs")
    get = row.get
    return (
        row["job_id"],
        row["scheduled_at"],
        row["attempt"],
        row["status"],
        get("started_at"),
        get("finished_at"),
        get("duration_s"),
        get("error"),
        get("epoch"),
        get("traceback"),
        json.dumps(logs, default=repr) if logs else None,
        get("worker"),
        stamp,
    )


def _insert(dialect: str) -> Any:
    """The dialect's INSERT with ON CONFLICT (both SQLite and PostgreSQL have it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
