"""The leadership state machine: stand by, lead, step down, and back, for ever.

- **Standing by**: try the lease every second; meanwhile refresh a read-only view of the
  leader's state from the database (what changed since the last read, read off the
  event loop) and answer the runtime API by handing changes to the leader.
- **Leading**: restore the saved state, reconcile, fire, watch the files, apply the
  standbys' commands. The lease is renewed every ``ttl / 5`` by a thread of its own, so
  a loop busy for seconds (a burst of 50,000 runs, a large restore) keeps it; a loop not
  seen for ``3 * ttl`` is taken for wedged and renewals stop, so a standby takes over.
  When a renewal fails, or the lease would end by this process's own clock, stop firing
  at once and stand by again: a standby may take over only once the lease has expired,
  and this process has stopped firing before that.

Nothing here ends because a task ended: losing the lease, the database or the watcher
puts the engine back to standing by, and the loop goes on until ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.files.watcher import watch
from engine.state import celery_rows
from engine.state.db import RunRow
from engine.state.history import History, Run

if TYPE_CHECKING:
    from engine.core.engine import Engine

__all__ = ["Leadership", "runs_from_rows"]

log = logging.getLogger("schedctl")
STANDBY_TRY_S = 1.0  # a standby tries the lease this often
VIEW_SHARE = 0.25  # a standby spends at most about this share of its time reading the view
COMMANDS_POLL_S = 0.1  # a leader looks for standbys' runtime commands this often


def runs_from_rows(rows: list[RunRow]) -> list[Run]:
    return [
        Run(
            r.job_id,
            datetime.fromtimestamp(r.scheduled_at, UTC),
            r.attempt,
            r.status,
            datetime.fromtimestamp(r.started_at, UTC) if r.started_at else None,
            datetime.fromtimestamp(r.finished_at, UTC) if r.finished_at else None,
            r.error,
            r.traceback,
            r.logs,
            r.worker,
            r.epoch,
        )
        for r in rows
    ]


class Leadership:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._term: list[asyncio.Task[Any]] = []
        self._watch_stop: asyncio.Event | None = None
        self._view_since: float | None = None
        self._view_due = 0.0  # monotonic: a standby's next incremental read of the view
        self._leader_seen = time.monotonic()
        self._specs: dict[str, Any] = {}
        self._loop_seen = time.monotonic()  # the leading loop's last heartbeat
        self._renewed: tuple[int | None, bool | BaseException] | None = None
        self._renewer: threading.Thread | None = None

    # -- renewing, off the loop ----------------------------------------------------------

    def _start_renewer(self) -> None:
        self._loop_seen = time.monotonic()
        self._renewed = None
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(
                target=self._renew_forever, name="schedctl-lease-renewer", daemon=True
            )
            self._renewer.start()

    def _renew_forever(self) -> None:
        """Renew the lease every ``ttl / 5`` while leading and the loop is alive; the
        outcome is left for the loop (``_hold``) to act on."""
        engine, lease = self.engine, self.engine.lease
        while not engine.stopping():
            time.sleep(lease.ttl / 5)
            if not engine.leading or engine.stopping():
                continue
            if time.monotonic() - self._loop_seen > 3 * lease.ttl:
                continue  # a wedged loop must not keep the lease
            epoch = lease.epoch
            outcome: bool | Exception
            try:
                outcome = engine.lease_io.submit(lease.renew).result(timeout=lease.ttl)
            except Exception as exc:  # reported by the loop
                outcome = exc
            self._renewed = (epoch, outcome)

    # -- the loop ------------------------------------------------------------------------

    async def first_try(self) -> None:
        """At start: lead at once if the lease is free, else stand by with a view."""
        engine = self.engine
        try:
            if await engine.leasing(engine.lease.try_acquire):
                await self.lead()
                return
            log.info("Another process holds the leader lease; standing by.")
            await self.refresh_view()
        except Exception as exc:
            self._database_down(exc)

    async def run(self) -> None:
        engine = self.engine
        while not engine.stopping():
            try:
                if engine.leading:
                    await self._hold()
                else:
                    await asyncio.sleep(STANDBY_TRY_S)
                    await self._try_lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Leadership loop error; carrying on.")
                await asyncio.sleep(STANDBY_TRY_S)

    async def _try_lead(self) -> None:
        engine = self.engine
        try:
            await engine.blocking(engine.db.migrate)
            acquired = await engine.leasing(engine.lease.try_acquire)
        except Exception as exc:
            self._database_down(exc)
            return
        if acquired:
            log.info(
                "Took the leader lease (epoch %s); this process fires jobs now.", engine.lease.epoch
            )
            try:
                await self.lead()
            except Exception as exc:
                log.exception("Could not start leading; standing by.")
                await self.stop_leading(f"start failed: {exc}")
            return
        try:
            await self.refresh_view()
        except Exception as exc:
            self._database_down(exc)

    async def _hold(self) -> None:
        """While leading: act on the renewer's outcome, or stop firing before the lease
        ends by this process's own clock."""
        engine, lease = self.engine, self.engine.lease
        await asyncio.sleep(min(0.5, lease.ttl / 10))
        self._loop_seen = time.monotonic()
        if not engine.leading or engine.stopping():
            return
        renewed, self._renewed = self._renewed, None
        outcome = renewed[1] if renewed is not None and renewed[0] == lease.epoch else None
        if outcome is False:
            await self.stop_leading("another process took the lease over")
            return
        if isinstance(outcome, BaseException):
            self._database_down(outcome)
            if not lease.valid():
                await self.stop_leading(f"the lease could not be renewed ({_short(outcome)})")
            return
        if not lease.valid():
            await self.stop_leading("the lease ran out before it could be renewed")
            return
        if outcome is True:
            if engine.persister.healthy:
                engine.database_answered()
            else:
                engine.database_failed()
            self._leader_seen = time.monotonic()

    def _database_down(self, exc: BaseException) -> None:
        if self.engine.database_ok:
            log.error("The state database is unreachable (%s); will keep trying.", _short(exc))
        self.engine.database_failed()

    def leader_seen_recently(self) -> bool:
        """A standby's answer to "does anyone fire?": a live lease seen within 2 TTLs."""
        return time.monotonic() - self._leader_seen < 2 * self.engine.lease.ttl + STANDBY_TRY_S

    # -- leading -------------------------------------------------------------------------

    async def lead(self) -> None:
        engine = self.engine
        engine.leading, engine.in_charge = True, False
        self._start_renewer()  # restoring a large state holds the loop: renew meanwhile
        fence = engine.lease.fence
        with engine.tuning.loading():
            swept = await engine.blocking(engine.db.sweep_orphans, fence.epoch, fence)  # type: ignore[union-attr]
            if swept:
                log.warning(
                    "%d run(s) left in progress by an earlier leader are recorded failed "
                    "(leader lost).",
                    swept,
                )
            rows = await engine.blocking(engine.db.load_jobs)
            run_rows = await engine.blocking(engine.db.load_runs, engine.settings.history_limit)
            snapshot, commit = await engine.blocking(engine.reconciling.scan)
            engine.history.reset()
            engine.history.load(runs_from_rows(run_rows))
            desired = engine.reconciling.desired(snapshot)
            facade = engine.new_facade()
            skipped = facade.restore(rows, desired, self._specs)
            for message in skipped:
                engine.event("runtime", action="skipped", detail=message)
            engine.facade = facade
            engine.persister.bind(facade.job_row, facade.next_run_of, engine.fence_now)
            engine.reconciling.apply(snapshot, commit, "start", time.perf_counter(), desired)
            # Celery runs an earlier leader sent (or claimed) are followed, never resent.
            in_flight = await engine.blocking(celery_rows.in_flight, engine.db)
            adopted = engine.celery.adopt(in_flight, engine.celery_job)
            if adopted:
                log.info("Following %d Celery run(s) still in flight from before.", adopted)
            if engine.uses_celery():
                engine.persister.fact_changed(
                    "executors", {"celery": await engine.blocking(engine.celery.probe)}
                )
                engine.celery.ensure_started()
            facade.start()
        engine.in_charge = True
        engine.database_answered()
        engine.metrics.leader.set(1)
        self._leader_seen = time.monotonic()
        engine.event("leader", action="acquired", detail=f"epoch {fence.epoch} {fence.holder}")  # type: ignore[union-attr]
        engine.tuning.apply()
        self._watch_stop = asyncio.Event()
        self._term = [
            asyncio.create_task(engine.reconciling.loop(), name="schedctl-reconcile"),
            asyncio.create_task(engine.reconciling.resync_loop(), name="schedctl-resync"),
            asyncio.create_task(self._commands(), name="schedctl-commands"),
            asyncio.create_task(engine.celery.follow(), name="schedctl-celery-follow"),
        ]
        if engine.settings.watch:
            self._term.append(
                asyncio.create_task(
                    watch(
                        engine.settings.schedules_dir,
                        engine.reconciling.request,
                        self._watch_stop,
                    ),
                    name="schedctl-watch",
                )
            )

    async def stop_leading(self, why: str, grace: float | None = None) -> None:
        """Stop firing now. With ``grace`` (a clean stop), let runs finish first and stay
        the leader until the engine has written its last state; without, stand by."""
        engine = self.engine
        engine.facade.pause()  # first of all: nothing fires from here on
        if self._watch_stop is not None:
            self._watch_stop.set()  # the term's own event: never the engine's
        for task in self._term:
            task.cancel()
        for task in self._term:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._term = []
        engine.celery.stop()  # runs in flight on workers go on; the next leader follows them
        if grace is not None:
            await engine.dispatcher.drain(grace)
            engine.facade.shutdown()
            return
        engine.facade.shutdown()
        if not engine.leading:
            return
        engine.leading = engine.in_charge = False
        engine.metrics.leader.set(0)
        # Off the loop: it waits for the writer's lock, which a write to a database that
        # stopped answering holds for up to its statement timeout.
        await engine.blocking(engine.persister.forget_leader_state)
        epoch = engine.lease.epoch
        engine.lease.drop()
        with contextlib.suppress(Exception):
            await engine.leasing(engine.lease.lock.release)
        log.error("Stopped firing: %s. Standing by.", why)
        engine.event("leader", action="lost", detail=f"epoch {epoch}: {why}")
        self._view_since = None

    async def _commands(self) -> None:
        """Apply the runtime API changes standbys hand over through the database."""
        engine = self.engine
        from engine.core.commands import apply_command

        while True:
            await asyncio.sleep(COMMANDS_POLL_S)
            fence = engine.fence_now()
            if fence is None:
                continue
            try:
                taken = await engine.blocking(engine.db.take_commands, fence)
            except Exception:
                continue
            for command_id, op, payload in taken:
                status, result = apply_command(engine, op, payload)
                with contextlib.suppress(Exception):
                    await engine.blocking(engine.db.finish_command, command_id, status, result)

    # -- standing by ---------------------------------------------------------------------

    async def refresh_view(self) -> None:
        """The leader's state as the database has it: changes since the last read."""
        engine = self.engine
        since = self._view_since
        began = time.monotonic()
        if since is not None and began < self._view_due:
            # Under a heavy run rate a read takes long: the next waits in proportion, so a
            # standby's view never eats the CPU its host's workers need. The lease is still
            # tried (and the leader looked for) every second.
            await self._look_for_leader()
            engine.database_answered()
            return
        started = time.time() - 5.0  # rows written during the read come again next time
        if since is None:  # the whole view, built off the loop, then swapped in
            facade, history, facts = await engine.blocking(self._whole_view)
            engine.history.adopt(history)
            engine.facade = facade
        else:
            rows, ids = await engine.blocking(engine.db.load_jobs_since, since)
            run_rows = await engine.blocking(
                engine.db.load_runs, engine.settings.history_limit, since
            )
            facts = await engine.blocking(engine.db.get_facts, _FACTS)
            facade = engine.facade
            for gone in set(facade.catalog) - ids:
                facade.catalog.pop(gone, None)
                if facade.store.lookup_job(gone) is not None:
                    facade.store.remove_job(gone)
                engine.history.forget(gone)
            for row in rows:
                facade.catalog.pop(row.id, None)
                if facade.store.lookup_job(row.id) is not None:
                    facade.store.remove_job(row.id)
            facade.restore(rows, {}, self._specs)
            engine.history.merge(runs_from_rows(run_rows))
        engine.remote = facts
        engine.database_answered()
        self._view_since = started
        spent = time.monotonic() - began
        self._view_due = time.monotonic() + spent * (1 / VIEW_SHARE - 1)
        await self._look_for_leader()

    async def _look_for_leader(self) -> None:
        if await self.engine.leasing(self.engine.lease.leader_alive):
            self._leader_seen = time.monotonic()

    def _whole_view(self) -> tuple[Any, History, dict[str, Any]]:
        engine = self.engine
        rows = engine.db.load_jobs()
        run_rows = engine.db.load_runs(engine.settings.history_limit)
        facts = engine.db.get_facts(_FACTS)
        facade = engine.new_facade()
        facade.restore(rows, {}, self._specs)
        history = History(engine.settings.history_limit)
        history.load(runs_from_rows(run_rows))
        return facade, history, facts


_FACTS = ("revision", "last_reconcile", "commit", "errors", "pending_removal", "executors")


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
