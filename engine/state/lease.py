"""Who fires jobs: a leader lease with a time limit and an epoch (a fencing token).

The lease is one row (``schedctl_lease``): the epoch, who holds it, and until when, on
the database's clock. The leader renews it well within its time limit; a standby takes
it once it has expired, incrementing the epoch; every run is claimed under the epoch
(``StateDB.claim_runs``), so a leader that was replaced, frozen or cut off claims
nothing more. A leader that cannot renew stops firing before the limit ends, by its own
monotonic clock (``valid()``), so two leaders never fire in the same instant.

A host lock makes takeover after a crash fast: a PostgreSQL advisory lock on a dedicated
session (freed when the leader's process dies) or an ``flock`` beside the SQLite file.
Whoever gets it may take the lease at once; without it, only once the lease has expired
(a frozen leader keeps its session and its lock for hours, but not its lease).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import Connection, select, text, update

from engine.state.db import Fence, StateDB, _insert
from engine.state.schema import lease

__all__ = ["FileLock", "HostLock", "Lease", "NoLock", "PostgresLock", "host_lock_for"]

log = logging.getLogger("schedctl.leader")
LOCK_KEY = 0x5C4ED_C71  # pg_advisory_lock key: "schedctl"
TTL_S = 10.0  # the lease's time limit: a frozen leader is replaced within ~TTL + one try
SAFETY_S = 1.0  # a leader stops firing this long before its lease would expire


class HostLock(Protocol):
    shared: bool  # True when processes on other hosts may stand by (PostgreSQL)

    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...


class NoLock:
    """An in-memory database: nothing to share."""

    shared = False

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class FileLock:
    """An exclusive ``flock`` on a file beside the SQLite database (one host)."""

    shared = False

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

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class PostgresLock:
    """A session advisory lock on a dedicated connection: freed when the process dies."""

    shared = True

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._conn: Any = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except Exception:
                self._drop()
        conn = self.db.engine.connect()
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

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.invalidate()
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def host_lock_for(db: StateDB) -> HostLock:
    if db.dialect == "postgresql":
        return PostgresLock(db)
    if db.path is not None:
        return FileLock(Path(f"{db.path}.lock"))
    return NoLock()


class Lease:
    """The leader lease of one process. Blocking calls: run them off the event loop."""

    def __init__(self, db: StateDB, ttl: float = TTL_S) -> None:
        self.db = db
        self.ttl = ttl
        self.lock = host_lock_for(db)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic
        self._fence: Fence | None = None  # the last one made: every fire asks for it

    @property
    def shared(self) -> bool:
        return self.lock.shared

    @property
    def fence(self) -> Fence | None:
        epoch, made = self.epoch, self._fence  # one read each: the writer asks too
        if epoch is None:
            return None
        if made is None or made.epoch != epoch:  # the holder is this process's, for good
            made = self._fence = Fence(epoch, self.holder)
        return made

    def valid(self) -> bool:
        """True while this process may act as the leader (its own clock says so)."""
        return self.epoch is not None and time.monotonic() < self._valid_until

    @property
    def valid_until(self) -> float:
        return self._valid_until

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired, or the host lock says its holder died."""
        if self.valid():
            return True
        fast = self.lock.try_acquire()
        sent = time.monotonic()
        with self.db.engine.begin() as conn:
            self._wait_briefly(conn)
            conn.execute(
                _insert(self.db.dialect)(lease)
                .values(name="leader", epoch=0, holder=None, expires_at=0.0)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            query = select(lease.c.epoch, lease.c.holder, lease.c.expires_at).where(
                lease.c.name == "leader"
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one()
            now = self.db.now(conn)
            if not (fast or row.expires_at <= now or row.holder == self.holder):
                return False
            epoch = int(row.epoch) + 1
            conn.execute(
                update(lease)
                .where(lease.c.name == "leader", lease.c.epoch == row.epoch)
                .values(epoch=epoch, holder=self.holder, expires_at=now + self.ttl)
            )
        self.epoch = epoch
        self._valid_until = sent + self.ttl - SAFETY_S
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and no longer valid) if it was taken over."""
        if self.epoch is None:
            return False
        sent = time.monotonic()
        with self.db.engine.begin() as conn:
            self._wait_briefly(conn)
            now = self.db.now(conn)
            result = conn.execute(
                update(lease)
                .where(
                    lease.c.name == "leader",
                    lease.c.epoch == self.epoch,
                    lease.c.holder == self.holder,
                )
                .values(expires_at=now + self.ttl)
            )
        if result.rowcount != 1:
            self.drop()
            return False
        self._valid_until = sent + self.ttl - SAFETY_S
        return True

    def _wait_briefly(self, conn: Connection) -> None:
        """A lease row locked by a frozen process fails this try in a second (the caller
        tries again) instead of blocking it until the server ends that process's session."""
        if self.db.dialect == "postgresql":
            conn.execute(text("SET LOCAL lock_timeout = '1s'"))

    def drop(self) -> None:
        """Stop acting as the leader at once (nothing written)."""
        self.epoch = None
        self._valid_until = 0.0

    def release(self) -> None:
        """Give the lease up so a standby takes over at once (a clean stop)."""
        epoch, self.epoch, self._valid_until = self.epoch, None, 0.0
        if epoch is not None:
            with contextlib.suppress(Exception), self.db.engine.begin() as conn:
                conn.execute(
                    update(lease)
                    .where(
                        lease.c.name == "leader",
                        lease.c.epoch == epoch,
                        lease.c.holder == self.holder,
                    )
                    .values(expires_at=0.0)
                )
        with contextlib.suppress(Exception):
            self.lock.release()

    def leader_alive(self) -> bool:
        """Whether any process holds an unexpired lease (a standby's view of the world)."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(lease.c.expires_at).where(lease.c.name == "leader")).first()
            return row is not None and row.expires_at > self.db.now(conn)
