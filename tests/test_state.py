"""The state database (``StateDB``) and its batch writer (``Persister``).

Every database test runs twice: on embedded SQLite and on the local PostgreSQL server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import DBAPIError

from engine.state import celery_rows, schema
from engine.state.db import Fence, Fenced, JobRow, RunRow, StateDB
from engine.state.history import Run
from engine.state.lease import Lease
from engine.state.persist import Claim, Persister
from tests.harness import wait_until

T0 = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
ESSENCE = {"task": "tasks.reports:nightly", "cron": "0 2 * * *", "args": ["pdf"], "retries": 2}
RUNTIME = {
    "version": 1,
    "task": "tasks.health:ping",
    "trigger": {"type": "interval", "seconds": 60.0, "timezone": "UTC"},
    "args": [1, "x"],
    "kwargs": {},
    "options": {"misfire_grace_time": 60, "coalesce": True, "max_instances": 1},
}


@pytest.fixture
def db(database_url: str) -> Iterator[StateDB]:
    database = StateDB(database_url)
    database.migrate()
    yield database
    database.close()


def declared_row(job_id: str = "nightly", **overrides: Any) -> dict[str, Any]:
    """A row as the scheduler facade writes it for a declared job."""
    row = {
        "id": job_id,
        "source": "declared",
        "file": "schedules/reports.yaml",
        "line": 3,
        "col": 3,
        "essence": json.dumps(ESSENCE, sort_keys=True),
        "state": None,
        "next_run_time": T0.timestamp() + 0.25,
        "runtime_paused": False,
        "done": False,
    }
    return {**row, **overrides}


def runtime_row(job_id: str = "adhoc", **overrides: Any) -> dict[str, Any]:
    """A row as the scheduler facade writes it for a job added through the runtime API."""
    row = {
        "id": job_id,
        "source": "runtime",
        "file": None,
        "line": None,
        "col": None,
        "essence": None,
        "runtime": json.dumps(RUNTIME),
        "next_run_time": None,
        "runtime_paused": True,
        "done": False,
    }
    return {**row, **overrides}


def run_row(
    job_id: str = "nightly",
    scheduled_at: float = 1000.0,
    attempt: int = 1,
    status: str = "success",
    **overrides: Any,
) -> dict[str, Any]:
    row = {
        "job_id": job_id,
        "scheduled_at": scheduled_at,
        "attempt": attempt,
        "status": status,
        "started_at": scheduled_at + 0.5,
        "finished_at": None if status == "running" else scheduled_at + 2.0,
        "duration_s": None if status == "running" else 1.5,
        "error": None,
    }
    return {**row, **overrides}


def jobs_by_id(database: StateDB) -> dict[str, JobRow]:
    return {row.id: row for row in database.load_jobs()}


def run_keys(database: StateDB, job_id: str) -> list[tuple[float, int]]:
    return [(r.scheduled_at, r.attempt) for r in database.load_runs(100) if r.job_id == job_id]


def schema_versions(database: StateDB) -> list[int]:
    with database.engine.connect() as conn:
        return list(conn.scalars(text("SELECT version FROM schedctl_schema_version")))


# -- schema ---------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    database = StateDB(database_url)
    try:
        assert database.migrate() == 3
        tables = set(inspect(database.engine).get_table_names())
        assert {
            "schedctl_schema_version",
            "schedctl_jobs",
            "schedctl_runs",
            "schedctl_facts",
        } <= tables
        assert database.migrate() == 3
        assert schema_versions(database) == [1, 2, 3]
        assert database.load_jobs() == []
        assert database.load_runs(100) == []
    finally:
        database.close()


def test_reopening_and_migrating_again_keeps_jobs_runs_and_facts(database_url: str) -> None:
    first = StateDB(database_url)
    first.migrate()
    first.write_jobs([declared_row(), runtime_row()], [])
    first.write_runs([run_row(scheduled_at=1000.0), run_row(scheduled_at=2000.0)], keep=10)
    first.put_fact("revision", "3f2a9c1e0b7d")
    jobs_before, runs_before = first.load_jobs(), first.load_runs(100)
    first.close()

    second = StateDB(database_url)
    try:
        second.migrate()
        assert sorted(second.load_jobs(), key=lambda r: r.id) == sorted(
            jobs_before, key=lambda r: r.id
        )
        assert second.load_runs(100) == runs_before
        assert jobs_by_id(second)["adhoc"].runtime == RUNTIME
        assert second.get_fact("revision") == "3f2a9c1e0b7d"
        assert schema_versions(second) == [1, 2, 3]
    finally:
        second.close()


def test_a_new_migration_is_applied_once_in_place_without_losing_data(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = StateDB(database_url)
    old.migrate()
    old.write_jobs([runtime_row()], [])
    old.write_runs([run_row(job_id="adhoc", status="failed", error="boom")], keep=10)
    old.close()

    # The next release ships migration 4; re-running its statement would fail, so running
    # it twice proves it is applied once.
    statement = "CREATE INDEX ix_schedctl_runs_finished ON schedctl_runs (finished_at)"
    monkeypatch.setitem(schema.MIGRATIONS, 4, (statement,))
    upgraded = StateDB(database_url)
    try:
        assert upgraded.migrate() == 4
        assert upgraded.migrate() == 4
        assert schema_versions(upgraded) == [1, 2, 3, 4]
        index_names = {ix["name"] for ix in inspect(upgraded.engine).get_indexes("schedctl_runs")}
        assert "ix_schedctl_runs_finished" in index_names
        assert jobs_by_id(upgraded)["adhoc"].runtime == RUNTIME
        [run] = upgraded.load_runs(100)
        assert (run.job_id, run.status, run.error) == ("adhoc", "failed", "boom")
    finally:
        upgraded.close()


def run_indexes(database: StateDB) -> dict[str, list[str]]:
    found = inspect(database.engine).get_indexes("schedctl_runs")
    return {ix["name"]: ix["column_names"] for ix in found if ix["name"]}


def plans_of(database: StateDB, call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``call`` returns, and the database's plans of the statements it ran on the
    runs table by status (table scans off on PostgreSQL, so an index that applies shows)."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "schedctl_runs" in statement and "status" in statement.split("WHERE", 1)[-1]:
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        result = call()
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    plans = []
    with database.engine.connect() as conn:
        for statement, parameters in seen:
            if database.dialect == "postgresql":
                conn.exec_driver_sql("SET enable_seqscan = off")
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
            else:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            plans.append(" ".join(str(row[-1]) for row in rows))
        conn.rollback()
    return result, plans


def test_a_version_2_database_keeps_its_runs_and_writes_two_fewer_index_entries_per_run(
    database_url: str,
) -> None:
    """Migration 3: the runs' ``job_id`` index (the claim key starts with the job id) and
    their full ``status`` index go; a partial one keeps the runs not ended, the only ones
    read by status, so a new leader still finds them without reading all history."""
    old = StateDB(database_url)
    old.migrate()
    with old.engine.begin() as conn:  # the database as version 2 left it
        conn.execute(text("DROP INDEX ix_schedctl_runs_open"))
        conn.execute(text("CREATE INDEX ix_schedctl_runs_job_id ON schedctl_runs (job_id)"))
        conn.execute(text("CREATE INDEX ix_schedctl_runs_status ON schedctl_runs (status)"))
        conn.execute(text("DELETE FROM schedctl_schema_version WHERE version = 3"))
    old.write_runs(
        [run_row(scheduled_at=1000.0), run_row(scheduled_at=2000.0, status="running")], keep=10
    )
    assert {"ix_schedctl_runs_job_id", "ix_schedctl_runs_status"} <= set(run_indexes(old))
    old.close()

    replicas = [StateDB(database_url) for _ in range(3)]  # upgraded by three at once
    upgraded = replicas[0]
    try:
        assert migrate_together(replicas) == []
        assert upgraded.migrate() == 3
        assert schema_versions(upgraded) == [1, 2, 3]
        indexes = run_indexes(upgraded)
        assert "ix_schedctl_runs_job_id" not in indexes
        assert "ix_schedctl_runs_status" not in indexes
        assert indexes["ix_schedctl_runs_open"] == ["status"]
        assert [r.status for r in upgraded.load_runs(100)] == ["success", "running"]
        # What a new leader reads by status (runs left by its predecessor, Celery's runs in
        # flight) is found through the index, in both databases, not by reading all runs.
        in_flight, plans = plans_of(upgraded, lambda: celery_rows.in_flight(upgraded))
        assert in_flight == [] and plans
        swept, more = plans_of(upgraded, lambda: upgraded.sweep_orphans(epoch=5))
        assert swept == 1 and more
        assert all("ix_schedctl_runs_open" in plan for plan in plans + more), plans + more
        assert [r.status for r in upgraded.load_runs(100)] == ["success", "failed"]
    finally:
        for replica in replicas:
            replica.close()


def migrate_together(replicas: list[StateDB]) -> list[Exception]:
    """Start ``migrate()`` on every replica at the same moment; the errors they raised."""
    errors: list[Exception] = []
    gate = threading.Barrier(len(replicas))

    def start(replica: StateDB) -> None:
        gate.wait()
        try:
            replica.migrate()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_replicas_starting_together_on_an_empty_database_all_migrate(database_url: str) -> None:
    replicas = [StateDB(database_url) for _ in range(4)]
    try:
        for _ in range(10):  # a race: try a few times, stop at the first failure
            errors = migrate_together(replicas)
            assert errors == []
            assert schema_versions(replicas[0]) == [1, 2, 3]
            schema.metadata.drop_all(replicas[0].engine)
    finally:
        for replica in replicas:
            replica.close()


# -- jobs -----------------------------------------------------------------------------------


def test_jobs_round_trip_declared_runtime_and_done(db: StateDB) -> None:
    one_shot = declared_row("launch", next_run_time=None, done=True, line=12, col=5)
    db.write_jobs([declared_row(), runtime_row(), one_shot], [])

    assert jobs_by_id(db) == {
        "nightly": JobRow(
            id="nightly",
            source="declared",
            file="schedules/reports.yaml",
            line=3,
            column=3,
            essence=ESSENCE,
            state=None,
            next_run_time=T0.timestamp() + 0.25,
            runtime_paused=False,
            done=False,
        ),
        "adhoc": JobRow(
            id="adhoc",
            source="runtime",
            file=None,
            line=None,
            column=None,
            essence=None,
            state=None,
            next_run_time=None,
            runtime_paused=True,
            done=False,
            runtime=RUNTIME,
        ),
        "launch": JobRow(
            id="launch",
            source="declared",
            file="schedules/reports.yaml",
            line=12,
            column=5,
            essence=ESSENCE,
            state=None,
            next_run_time=None,
            runtime_paused=False,
            done=True,
        ),
    }


def test_next_run_time_keeps_microseconds(db: StateDB) -> None:
    when = datetime(2030, 6, 30, 23, 59, 59, 999_999, tzinfo=UTC)
    db.write_jobs([declared_row(next_run_time=when.timestamp())], [])
    stored = jobs_by_id(db)["nightly"].next_run_time
    assert stored is not None
    assert datetime.fromtimestamp(stored, UTC) == when


def test_writing_a_job_again_replaces_its_row(db: StateDB) -> None:
    db.write_jobs([declared_row(), runtime_row()], [])
    moved = declared_row(file="schedules/team/reports.yaml", line=7, next_run_time=5.0)
    db.write_jobs([moved, runtime_row(runtime_paused=False, next_run_time=6.0)], [])

    rows = jobs_by_id(db)
    assert len(db.load_jobs()) == 2
    assert (rows["nightly"].file, rows["nightly"].line, rows["nightly"].next_run_time) == (
        "schedules/team/reports.yaml",
        7,
        5.0,
    )
    assert (rows["adhoc"].runtime_paused, rows["adhoc"].next_run_time) == (False, 6.0)


def test_removed_jobs_are_deleted_and_unknown_removals_are_ignored(db: StateDB) -> None:
    db.write_jobs([declared_row("a"), declared_row("b"), runtime_row("c")], [])
    db.write_jobs([declared_row("d")], ["a", "c", "never-existed"])
    assert set(jobs_by_id(db)) == {"b", "d"}


def test_job_upserted_and_removed_in_one_write_is_gone(db: StateDB) -> None:
    db.write_jobs([declared_row("a")], [])
    db.write_jobs([], ["a"])
    db.write_jobs([], [])  # nothing to do is not an error
    assert db.load_jobs() == []


# -- runs -----------------------------------------------------------------------------------


def test_run_finishing_updates_its_row_instead_of_adding_one(db: StateDB) -> None:
    db.write_runs([run_row(status="running")], keep=10)
    db.write_runs([run_row(status="success")], keep=10)

    assert db.load_runs(100) == [
        RunRow("nightly", 1000.0, 1, "success", 1000.5, 1002.0, 1.5, None),
    ]


def test_each_attempt_of_a_run_is_its_own_row(db: StateDB) -> None:
    db.write_runs(
        [
            run_row(attempt=1, status="failed", error="ValueError: boom"),
            run_row(attempt=2, status="running"),
        ],
        keep=10,
    )
    db.write_runs([run_row(attempt=2, status="success")], keep=10)

    runs = db.load_runs(100)
    assert [(r.attempt, r.status, r.error) for r in runs] == [
        (1, "failed", "ValueError: boom"),
        (2, "success", None),
    ]


def test_only_the_newest_runs_of_each_job_are_kept(db: StateDB) -> None:
    db.write_runs([run_row("other", scheduled_at=1.0)], keep=3)
    db.write_runs(
        [
            run_row("nightly", scheduled_at=100.0),
            run_row("nightly", scheduled_at=300.0, attempt=1, status="failed"),
            run_row("nightly", scheduled_at=300.0, attempt=2),
            run_row("nightly", scheduled_at=200.0),
            run_row("nightly", scheduled_at=400.0),
            run_row("weekly", scheduled_at=50.0),
        ],
        keep=3,
    )

    assert run_keys(db, "nightly") == [(300.0, 1), (300.0, 2), (400.0, 1)]
    assert run_keys(db, "weekly") == [(50.0, 1)]
    assert run_keys(db, "other") == [(1.0, 1)]


def test_history_limit_applies_across_writes(db: StateDB) -> None:
    for scheduled_at in (1.0, 2.0, 3.0, 4.0):
        db.write_runs([run_row(scheduled_at=scheduled_at)], keep=2)
    assert run_keys(db, "nightly") == [(3.0, 1), (4.0, 1)]


def test_a_run_is_claimed_by_one_process_only(db: StateDB, database_url: str) -> None:
    other_replica = StateDB(database_url)
    try:
        assert db.claim_run("nightly", 1000.0) is True
        assert db.claim_run("nightly", 1000.0) is False
        assert other_replica.claim_run("nightly", 1000.0) is False
        assert other_replica.claim_run("nightly", 1060.0) is True
        assert db.claim_run("weekly", 1000.0) is True
    finally:
        other_replica.close()
    assert [(r.job_id, r.scheduled_at, r.status) for r in db.load_runs(100)] == [
        ("nightly", 1000.0, "queued"),
        ("nightly", 1060.0, "queued"),
        ("weekly", 1000.0, "queued"),
    ]


def test_concurrent_claims_of_one_run_have_one_winner(db: StateDB) -> None:
    wins: list[bool] = []
    gate = threading.Barrier(8)

    def claim() -> None:
        gate.wait()
        wins.append(db.claim_run("nightly", 1000.0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_claim_under_a_lease_that_moved_on_or_expired_writes_nothing(db: StateDB) -> None:
    lease = Lease(db)
    assert lease.try_acquire()
    try:
        fence = lease.fence
        assert fence is not None
        for stale in (Fence(fence.epoch - 1, fence.holder), Fence(fence.epoch, "another:1:x")):
            with pytest.raises(Fenced, match="moved on"):
                db.claim_runs([{"job_id": "nightly", "scheduled_at": 100.0}], stale)
        assert db.claim_runs([{"job_id": "nightly", "scheduled_at": 101.0}], fence) == {
            ("nightly", 101.0)
        }
        with db.engine.begin() as conn:  # the lease's time runs out (a frozen leader)
            conn.execute(schema.lease.update().values(expires_at=0.0))
        with pytest.raises(Fenced, match="expired"):
            db.claim_runs([{"job_id": "nightly", "scheduled_at": 102.0}], fence)
        assert run_keys(db, "nightly") == [(101.0, 1)]
    finally:
        lease.release()


@pytest.mark.parametrize("idle_ping", [True, False], ids=["idle-pinged", "busy"])
def test_claims_carry_on_after_the_database_drops_their_connection(
    postgres_url: str, idle_ping: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims keep one connection. The server ends it (a restart, a failover, an idle
    timeout): a connection idle for a while is pinged and replaced before the claim; a busy
    one fails that claim as a database error (the writer keeps it and tries again), and
    the next claim opens a new connection. No run is claimed twice."""
    import psycopg

    from engine.state.db import KeptConnection

    monkeypatch.setattr(KeptConnection, "IDLE_PING_S", 0.0 if idle_ping else 3600.0)
    db = StateDB(postgres_url)  # PostgreSQL: a SQLite file has no server to drop it
    db.migrate()
    assert db.claim_runs([{"job_id": "nightly", "scheduled_at": 1.0}], None)
    name = db.url.database
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    assert ended  # the claims' connection was one of this test's database's
    if not idle_ping:
        with pytest.raises(DBAPIError):
            db.claim_runs([{"job_id": "nightly", "scheduled_at": 2.0}], None)
    assert db.claim_runs([{"job_id": "nightly", "scheduled_at": 2.0}], None) == {("nightly", 2.0)}
    assert db.claim_runs([{"job_id": "nightly", "scheduled_at": 1.0}], None) == set()
    assert run_keys(db, "nightly") == [(1.0, 1), (2.0, 1)]
    db.close()


def test_claimed_run_is_completed_by_its_later_write(db: StateDB) -> None:
    assert db.claim_run("nightly", 1000.0)
    db.write_runs([run_row(scheduled_at=1000.0, status="success")], keep=10)
    [run] = db.load_runs(100)
    assert (run.scheduled_at, run.attempt, run.status, run.duration_s) == (
        1000.0,
        1,
        "success",
        1.5,
    )


# -- facts ----------------------------------------------------------------------------------


def test_facts_round_trip_and_overwrite(db: StateDB) -> None:
    assert db.get_fact("revision") is None
    db.put_fact("revision", "abc")
    db.put_fact("last_reconcile", {"added": 1, "errors": [{"file": "a.yaml", "line": 2}]})
    db.put_fact("revision", "def")

    assert db.get_fact("revision") == "def"
    assert db.get_fact("last_reconcile") == {
        "added": 1,
        "errors": [{"file": "a.yaml", "line": 2}],
    }


# -- Persister --------------------------------------------------------------------------------


def make_run(job_id: str = "nightly", attempt: int = 1) -> Run:
    return Run(job_id, T0, attempt, "running", started_at=T0 + timedelta(seconds=1))


def finish(run: Run, status: str = "success", error: str | None = None) -> Run:
    run.status = status
    run.error = error
    run.finished_at = T0 + timedelta(seconds=3)
    return run


def test_persister_flush_writes_queued_runs_and_jobs(db: StateDB) -> None:
    rows = {"nightly": declared_row(), "adhoc": runtime_row()}
    persister = Persister(db, rows.get)
    run = make_run()
    persister.run_changed(run)
    persister.run_changed(finish(run))  # the same run twice: its latest state is written
    persister.job_changed("nightly")
    persister.job_changed("adhoc")
    persister.job_changed("nightly")

    assert db.load_runs(100) == []  # queued only, nothing written yet
    persister.flush()

    assert db.load_runs(100) == [
        RunRow(
            job_id="nightly",
            scheduled_at=T0.timestamp(),
            attempt=1,
            status="success",
            started_at=T0.timestamp() + 1,
            finished_at=T0.timestamp() + 3,
            duration_s=2.0,
            error=None,
        ),
    ]
    assert set(jobs_by_id(db)) == {"nightly", "adhoc"}


def test_persister_deletes_a_job_whose_row_is_gone(db: StateDB) -> None:
    db.write_jobs([declared_row("kept"), declared_row("removed")], [])
    rows: dict[str, dict[str, Any]] = {"kept": declared_row("kept", next_run_time=42.0)}
    persister = Persister(db, rows.get)
    persister.job_changed("kept")
    persister.job_changed("removed")
    persister.flush()

    assert {row.id: row.next_run_time for row in db.load_jobs()} == {"kept": 42.0}


def job_rows_written(db: StateDB, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every job row ``db`` writes from now on, in order, as it is written."""
    written: list[dict[str, Any]] = []
    write_jobs = db.write_jobs

    def recorded(upserts: Any, removals: Any, fence: Any = None) -> None:
        rows = list(upserts)
        write_jobs(rows, removals, fence)
        written.extend(rows)

    monkeypatch.setattr(db, "write_jobs", recorded)
    return written


def test_a_start_with_many_jobs_holds_only_a_chunk_of_their_rows_at_once(
    db: StateDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a start every job's row is written (its spec as JSON, ~1 KB): built all at once
    before the first was written, 100,000 jobs' rows held about 75 MB at their peak."""
    from engine.state import persist

    total = 2 * persist._JOBS_CHUNK + 7
    counts = {"built": 0, "most": 0}
    db.write_jobs([declared_row("gone-1"), declared_row("gone-2")], [])
    written = job_rows_written(db, monkeypatch)

    def job_row(job_id: str) -> dict[str, Any] | None:
        if job_id.startswith("gone"):
            return None
        counts["built"] += 1
        counts["most"] = max(counts["most"], counts["built"] - len(written))
        return declared_row(job_id)

    persister = Persister(db, job_row)
    for n in range(total):
        persister.job_changed(f"job-{n}")
    persister.job_changed("gone-1")
    persister.job_changed("gone-2")
    persister.flush()

    assert len(db.load_jobs()) == total  # every row written, the jobs gone removed
    assert len(written) == total
    assert counts["most"] <= persist._JOBS_CHUNK, counts


def test_a_claim_that_comes_while_job_rows_are_built_goes_before_their_write(
    db: StateDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after a start with 100,000 jobs the writer saves every job's row; a job due
    meanwhile waits for its claim, and so for at most the rows already built: its claim
    goes in before they are written (jobs started 160 ms late, p99, behind 2,000 rows).
    It must: a row carries its job's next run time, already past the run being claimed,
    and a leader killed between the two writes would have skipped that run for good."""
    from engine.state import persist

    written = job_rows_written(db, monkeypatch)
    claimed: list[bool] = []
    landed: list[tuple[int, str]] = []

    def job_row(job_id: str) -> dict[str, Any]:
        if not claimed:  # a job falls due while the first rows are built
            claimed.append(True)
            persister.claim(
                [Claim("hot", T0.timestamp())],
                lambda batch: landed.append((len(written), batch[0].outcome)),
            )
        return declared_row(job_id)

    persister = Persister(db, job_row)
    for n in range(2 * persist._JOBS_CHUNK):
        persister.job_changed(f"job-{n}")
    persister.flush()

    assert landed == [(0, "won")]  # claimed before any of the rows was written
    assert len(written) == 2 * persist._JOBS_CHUNK


def test_persister_keeps_the_history_limit(db: StateDB) -> None:
    persister = Persister(db, lambda job_id: None, history_limit=2)
    for minutes in range(4):
        persister.run_changed(Run("nightly", T0 + timedelta(minutes=minutes), status="missed"))
    persister.flush()
    assert [r.scheduled_at for r in db.load_runs(100)] == [
        (T0 + timedelta(minutes=2)).timestamp(),
        (T0 + timedelta(minutes=3)).timestamp(),
    ]


def test_persister_writes_queued_facts_latest_value_wins(db: StateDB) -> None:
    persister = Persister(db, lambda job_id: None)
    persister.fact_changed("revision", "aaaaaaaaaaaa")
    persister.fact_changed("revision", "bbbbbbbbbbbb")
    persister.fact_changed("last_reconcile", {"added": 2, "errors": []})
    assert db.get_fact("revision") is None
    persister.flush()
    assert db.get_fact("revision") == "bbbbbbbbbbbb"
    assert db.get_fact("last_reconcile") == {"added": 2, "errors": []}


def test_persister_stop_flushes_what_is_left(db: StateDB) -> None:
    rows = {"adhoc": runtime_row()}
    persister = Persister(db, rows.get, interval=60)
    persister.start()
    persister.run_changed(finish(make_run("adhoc"), "failed", "RuntimeError: down"))
    persister.job_changed("adhoc")
    persister.fact_changed("revision", "cccccccccccc")
    persister.stop()

    [run] = db.load_runs(100)
    assert (run.job_id, run.status, run.error) == ("adhoc", "failed", "RuntimeError: down")
    assert jobs_by_id(db)["adhoc"].runtime == RUNTIME
    assert db.get_fact("revision") == "cccccccccccc"


def test_persister_stop_without_start_still_flushes(db: StateDB) -> None:
    persister = Persister(db, lambda job_id: None)
    persister.run_changed(make_run())
    persister.stop()
    assert [r.status for r in db.load_runs(100)] == ["running"]


def test_persister_retries_a_batch_whose_write_failed(tmp_path: Path) -> None:
    database = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        rows = {"adhoc": runtime_row()}
        persister = Persister(database, rows.get)
        persister.run_changed(finish(make_run("adhoc")))
        persister.job_changed("adhoc")
        with pytest.raises(DBAPIError):  # the database is not usable yet: no tables
            persister.flush()

        database.migrate()
        persister.flush()

        assert [r.job_id for r in database.load_runs(100)] == ["adhoc"]
        assert set(jobs_by_id(database)) == {"adhoc"}
    finally:
        database.close()


def test_a_saved_next_run_time_never_passes_a_run_not_yet_claimed(db: StateDB) -> None:
    # The job fires again while the writer is writing: its claim is queued just before its
    # next run time moves on. The time may be saved only with the claim before it: a
    # leader killed between the two writes would otherwise skip that run for good.
    db.write_jobs([declared_row("nightly", next_run_time=T0.timestamp())], [])
    fired = (T0 + timedelta(minutes=1)).timestamp()
    then = (T0 + timedelta(minutes=2)).timestamp()
    persister = Persister(db, lambda job_id: None)

    def next_run_of(job_id: str) -> tuple[bool, bool, float | None]:
        persister.claim([Claim(job_id, fired)], lambda claims: None)  # the loop fires
        return (True, False, then)

    persister.bind(lambda job_id: None, next_run_of, None)
    persister.time_changed("nightly")
    persister.flush()

    assert jobs_by_id(db)["nightly"].next_run_time == then
    assert [(r.scheduled_at, r.status) for r in db.load_runs(100)] == [(fired, "queued")]


def test_next_run_times_of_jobs_that_fired_are_written_once_a_second(db: StateDB) -> None:
    # Runs go out at every flush (here every 10 ms); the next run times that fires moved,
    # at most once a second: each page of the wide jobs table is written once a second.
    db.write_jobs([declared_row("nightly", next_run_time=T0.timestamp())], [])
    moved = {"nightly": T0.timestamp()}
    persister = Persister(db, lambda job_id: None, interval=0.01)
    persister.bind(lambda job_id: None, lambda job_id: (True, False, moved[job_id]), None)
    persister.start()
    try:
        for minutes in range(1, 6):  # a pass slower than a second (a loaded machine) retries
            moved["nightly"] = (T0 + timedelta(minutes=minutes)).timestamp()
            persister.time_changed("nightly")
            persister.run_changed(finish(Run("nightly", T0 + timedelta(minutes=minutes))))
            wait_until(lambda m=minutes: len(db.load_runs(100)) == m, 10.0, "the run written")
            if jobs_by_id(db)["nightly"].next_run_time != moved["nightly"]:
                break  # the run went out, the next run time waits
        else:
            pytest.fail("the next run time was written at every flush, not once a second")
        wait_until(
            lambda: jobs_by_id(db)["nightly"].next_run_time == moved["nightly"],
            5.0,
            "the next run time written",
        )
    finally:
        persister.stop()
