"""The rows of Celery runs: who may write what, each write conditional on the status it expects.

A run handed to Celery has one row (job, scheduled time, attempt), written by three parties
that never see each other except through it:

- the engine's claim inserts it ``queued``, ``worker = "celery"`` (``StateDB.claim_runs``);
- a worker claims the start, ``queued -> running`` with its name, only while the row is
  still ``queued`` and the run within its misfire grace (a redelivered message, a run
  already started or recorded missed, finds nothing to update and does not run); while
  the task runs, the worker touches ``changed_at`` (a heartbeat); at the end it writes the
  outcome, ``running -> success | failed | timeout``, only if the run is still its own;
- the engine settles what no worker will: ``queued -> missed`` past the grace,
  ``queued -> failed`` when the broker refused it, ``running -> failed | timeout`` when
  the worker stopped beating (lost). These writes carry the leader's lease.

Each write is one ``UPDATE ... WHERE status = <expected>``: of two parties racing for the
same row, exactly one wins, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, literal, select, text, tuple_, update

from engine.state.db import Fence, KeptConnection, RunRow, StateDB, _run_row
from engine.state.schema import OPEN, runs

__all__ = [
    "CELERY",
    "Outcome",
    "RunKey",
    "Writer",
    "heartbeat",
    "in_flight",
    "read",
    "settle",
    "settle_by_worker",
    "settle_missed",
]

CELERY = "celery"  # the worker of a Celery run that no worker has started yet
RunKey = tuple[str, float, int]  # job id, scheduled time (UTC timestamp), attempt
_CHUNK = 300


def _key(key: RunKey) -> Any:
    job_id, scheduled_at, attempt = key
    return (
        (runs.c.job_id == job_id)
        & (runs.c.scheduled_at == scheduled_at)
        & (runs.c.attempt == attempt)
    )


# -- the worker's side -------------------------------------------------------------------


_KEY = (
    (runs.c.job_id == bindparam("b_job"))
    & (runs.c.scheduled_at == bindparam("b_at"))
    & (runs.c.attempt == bindparam("b_attempt"))
)
# Built once: a worker runs them twice per task, at whatever rate its pool runs tasks.
_START = (
    update(runs)
    .where(_KEY, runs.c.status == "queued")
    .values(
        status="running",
        worker=bindparam("b_worker"),
        started_at=bindparam("b_now"),
        changed_at=bindparam("b_now"),
    )
)
_FINISH = (
    update(runs)
    .where(_KEY, runs.c.status == "running", runs.c.worker == bindparam("b_worker"))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_now"),
        duration_s=bindparam("b_now") - runs.c.started_at,
        error=bindparam("b_error"),
        traceback=bindparam("b_traceback"),
        logs=bindparam("b_logs"),
        changed_at=bindparam("b_now"),
    )
)


def _params(key: RunKey, **values: Any) -> dict[str, Any]:
    job_id, scheduled_at, attempt = key
    return {"b_job": job_id, "b_at": scheduled_at, "b_attempt": attempt, **values}


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its worker writes it: ``running -> status``."""

    key: RunKey
    worker: str
    status: str
    error: str | None = None
    traceback: str | None = None
    logs: list[dict[str, Any]] | None = None
    at: float = field(default_factory=time.time)


class Writer:
    """A worker's writes on a connection it keeps (one writer per thread that writes).

    They run once or twice per task, as many times a second as the pool starts tasks:
    SQLAlchemy's checkout, execution and checkin cost more than the database's own work
    for them, so they go to the driver as SQL text compiled once, on a ``KeptConnection``.
    Needs a ``StateDB(autocommit=True)``: the start claim is one statement committed
    alone, one round trip."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._kept = KeptConnection(db)
        self._lock = threading.Lock()  # a threads pool shares one process's writer

    def claim_start(self, key: RunKey, worker: str, now: float | None = None) -> bool:
        """``queued -> running`` on ``worker``; False when the run is not queued any more."""
        now = time.time() if now is None else now
        prepared = self.db.prepared(_START)
        args = prepared.args(_params(key, b_worker=worker[:255], b_now=now))
        with self._lock:
            return self._kept.execute(prepared.sql, args) > 0

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Each run's outcome, only while the run is still its worker's, in one
        transaction: True for each one written, False where the engine recorded it first."""
        prepared = self.db.prepared(_FINISH)
        written = []
        with self._lock, self._kept.transaction() as cursor:
            for o in outcomes:
                params = _params(
                    o.key,
                    b_worker=o.worker[:255],
                    b_status=o.status,
                    b_now=o.at,
                    b_error=o.error,
                    b_traceback=o.traceback,
                    b_logs=json.dumps(o.logs, default=repr) if o.logs else None,
                )
                cursor.execute(prepared.sql, prepared.args(params))
                written.append(cursor.rowcount > 0)
        return written

    def close(self) -> None:
        self._kept.close()


def heartbeat(db: StateDB, keys: Iterable[RunKey], worker: str) -> None:
    """The worker still runs these: touch their ``changed_at``."""
    now = time.time()
    params = [
        {"b_job": job_id, "b_at": at, "b_attempt": attempt, "b_now": now, "b_worker": worker[:255]}
        for job_id, at, attempt in keys
    ]
    if not params:
        return
    statement = (
        update(runs)
        .where(
            runs.c.job_id == bindparam("b_job"),
            runs.c.scheduled_at == bindparam("b_at"),
            runs.c.attempt == bindparam("b_attempt"),
            runs.c.status == "running",
            runs.c.worker == bindparam("b_worker"),
        )
        .values(changed_at=bindparam("b_now"))
    )
    with db.fenced(None) as conn:
        conn.execute(statement, params)


def settle_by_worker(db: StateDB, key: RunKey, status: str, error: str) -> bool:
    """``running -> status`` from a worker's main process, whose pool process was stopped
    (hard time limit) or lost: it knows the run ended, not by which process it started."""
    now = time.time()
    with db.fenced(None) as conn:
        result = conn.execute(
            update(runs)
            .where(_key(key), runs.c.status == "running")
            .values(
                status=status,
                error=error,
                finished_at=now,
                duration_s=literal(now) - runs.c.started_at,
                changed_at=now,
            )
        )
    return bool(result.rowcount)


# -- the engine's side -------------------------------------------------------------------


def settle(
    db: StateDB,
    key: RunKey,
    expect: str,
    status: str,
    error: str,
    fence: Fence | None,
    quiet_since: float | None = None,
) -> bool:
    """The engine's verdict on a run no worker will finish: ``expect -> status``, under
    the lease; with ``quiet_since``, only if the row has not changed since then."""
    now = time.time()
    condition = _key(key) & (runs.c.status == expect)
    if quiet_since is not None:
        condition = condition & (runs.c.changed_at <= quiet_since)
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": now}
    values["changed_at"] = now
    if expect == "running":
        values["duration_s"] = literal(now) - runs.c.started_at
    with db.fenced(fence) as conn:
        result = conn.execute(update(runs).where(condition).values(**values))
    return bool(result.rowcount)


def settle_missed(db: StateDB, overdue: Sequence[tuple[RunKey, str]], fence: Fence) -> None:
    """``queued -> missed`` for each run (with its reason) still queued: one transaction,
    one lease check, however many runs a leader finds past their grace at once (after a
    takeover or a backlog at the workers that can be tens of thousands)."""
    now = time.time()
    statement = (
        update(runs)
        .where(_KEY, runs.c.status == "queued")
        .values(status="missed", error=bindparam("b_error"), finished_at=now, changed_at=now)
    )
    params = [_params(key, b_error=error) for key, error in overdue]
    with db.fenced(fence) as conn:
        for start in range(0, len(params), _CHUNK * 10):
            conn.execute(statement, params[start : start + _CHUNK * 10])


def read(db: StateDB, keys: Sequence[RunKey]) -> list[tuple[RunRow, float | None]]:
    """The rows of these runs as they are now, each with its ``changed_at`` (the
    worker's last heartbeat while running); missing ones are left out."""
    found: list[tuple[RunRow, float | None]] = []
    column = tuple_(runs.c.job_id, runs.c.scheduled_at, runs.c.attempt)
    with db.engine.connect() as conn:
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            rows = conn.execute(select(runs).where(column.in_(chunk))).all()
            for r in rows:
                try:
                    found.append((_run_row(r), r.changed_at))
                except Exception:  # untrusted: a row that does not decode is left as it was
                    continue
    return found


def in_flight(db: StateDB) -> list[RunRow]:
    """Celery runs not finished yet, of any epoch: what a new leader follows."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(runs).where(
                text(OPEN),  # its index's own text: the index applies
                runs.c.worker.is_not(None),
                runs.c.worker != "local",
            )
        ).all()
    found = []
    for r in rows:
        try:
            found.append(_run_row(r))
        except Exception:
            continue
    return found
