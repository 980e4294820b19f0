"""Who fires jobs: a leader lease held by exactly one process.

- PostgreSQL: a session advisory lock on a dedicated connection. It is held as long as
  that connection lives, so a dead leader's lock goes with its connection and a standby
  takes over at its next try.
- SQLite: an exclusive ``flock`` on a file beside the database, so several workers on one
  host (``uvicorn --workers 4``) never fire a job four times.
- SQLite in memory: nothing to share; always held.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ["FileLease", "Lease", "NoLease", "PostgresLease", "lease_for"]

log = logging.getLogger("schedctl.leader")
LOCK_KEY = 0x5C4ED_C71  # pg_advisory_lock key: "schedctl"


class Lease(Protocol):
    shared: bool  # True when other processes may be standing by

    def try_acquire(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


class NoLease:
    shared = False

    def try_acquire(self) -> bool:
        return True

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class FileLease:
    shared = False  # one host, one database file: the role stays "single" when held

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open as the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def still_held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class PostgresLease:
    shared = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        conn = self.engine.connect()
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            )
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:
            log.error("Lost the database connection that holds the leader lease.")
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def lease_for(dialect: str, database: str | None, engine: Engine) -> Lease:
    if dialect == "postgresql":
        return PostgresLease(engine)
    if dialect == "sqlite" and database not in (None, "", ":memory:"):
        return FileLease(Path(f"{database}.lock"))
    return NoLease()
