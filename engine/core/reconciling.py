"""Reconciling: files -> loader -> reconciler -> scheduler facade, one at a time.

Every trigger of a reconcile (start, a file change, SIGHUP, the periodic resync, a
pending mass removal coming due) goes through ``request()``, which coalesces bursts.
Each reconcile that changed something or found errors is reported (``last_reconcile``),
logged and written to the audit log with the job ids it touched, the revision and the
git commit of the schedules' checkout.

Mass removal is delayed, not refused: a plan that would remove more than half of the
declared jobs (and more than ``MASS_MIN``) holds those removals for
``mass_removal_delay``; they apply only if the files still say so then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.files.loader import Declared, Loader, Snapshot
from engine.reconciler import Desired, Op, Plan, plan
from engine.scheduler.jobs import schedule_problem

if TYPE_CHECKING:
    from engine.core.engine import Engine

__all__ = ["Reconciling", "git_commit"]

log = logging.getLogger("schedctl")
MASS_MIN = 5


def git_commit(folder: Path) -> str | None:
    """The full hash of HEAD of the git checkout holding ``folder`` (after symlinks), or None."""
    real = os.path.realpath(folder)
    if not os.path.isdir(real):
        return None
    try:
        found = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", real, "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) in (40, 64) else None


class Reconciling:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        settings = engine.settings
        self.loader = Loader(
            settings.task_modules,
            settings.timezone,
            job_check=engine.celery_app.check_job,
            schedule_check=schedule_problem,
        )
        self.lock = asyncio.Lock()
        self.dirty = asyncio.Event()
        self.revision: str | None = None
        self.commit: str | None = None
        self.last_reconcile: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None  # held mass removal: ids, apply_at
        self._desired_cache: dict[int, tuple[Declared, Desired]] = {}
        self._due_timer: asyncio.TimerHandle | None = None
        self._reason = "change"

    def request(self) -> None:
        """A file changed (the watcher's door)."""
        self.request_for("change")

    def request_for(self, reason: str) -> None:
        """Reconcile soon; bursts coalesce into one reconcile, with the latest reason."""
        self._reason = reason
        self.dirty.set()

    def scan(self) -> tuple[Snapshot, str | None]:
        """Read the files and the commit (blocking: call it off the loop)."""
        folder = self.engine.settings.schedules_dir
        return self.loader.scan([folder]), git_commit(folder)

    async def reconcile(self, reason: str = "request") -> dict[str, Any] | None:
        """Scan the files and apply them now; the report (None when not leading)."""
        if not self.engine.leading:
            return None
        started = time.perf_counter()
        async with self.lock:
            snapshot, commit = await self.engine.blocking(self.scan)
            if not self.engine.leading:
                return None
            return self.apply(snapshot, commit, reason, started)

    async def loop(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                reason, self._reason = self._reason, "change"
                await self.reconcile(reason)
            except Exception:
                log.exception("Reconcile failed; the live jobs are unchanged.")

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.engine.settings.resync_interval)
            self.request_for("resync")

    def desired(self, snapshot: Snapshot) -> dict[str, Desired]:
        # The loader hands back the same Declared objects for files it did not re-parse;
        # their Desired twins are kept too, so an edit costs what changed, not all jobs.
        cache, fresh = self._desired_cache, {}
        desired = {}
        for job_id, job in snapshot.jobs.items():
            found = cache.get(id(job))
            if found is None or found[0] is not job:
                found = (
                    job,
                    Desired(job.essence, job.fingerprint, job.file, job.line, job.column, job.spec),
                )
            fresh[id(job)] = found
            desired[job_id] = found[1]
        self._desired_cache = fresh
        return desired

    def apply(
        self,
        snapshot: Snapshot,
        commit: str | None,
        reason: str,
        started: float,
        desired: dict[str, Desired] | None = None,
    ) -> dict[str, Any]:
        engine = self.engine
        facade = engine.facade
        live = facade.live()
        invalid = snapshot.invalid_files
        if snapshot.missing:  # a folder mid-swap or unmounted says nothing: keep everything
            invalid = invalid | {job.file for job in live.values() if job.file}
        if desired is None:
            desired = self.desired(snapshot)
        held = self._held(desired, live, invalid, set(snapshot.duplicates))
        the_plan = plan(desired, live, invalid, set(snapshot.duplicates) | held)
        warnings = facade.apply(the_plan)
        if any(s.op in (Op.ADD, Op.RESCHEDULE, Op.MODIFY) for s in the_plan.steps):
            engine.runner.forget_resolved()
        problems = snapshot.problems
        counts = the_plan.counts()  # a job that only moved in its file is unchanged
        changed = sum(counts.values())
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        unchanged = len(the_plan.effective) - (changed - counts["remove"])
        ids = _ids(the_plan)
        errors = [p.as_dict() for p in problems]
        report = {
            "at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "duration_ms": duration_ms,
            "added": counts["add"],
            "updated": counts["reschedule"] + counts["modify"] + counts["pause"] + counts["resume"],
            "removed": counts["remove"],
            "unchanged": max(unchanged, 0),
            "errors": errors,
        }
        self.revision = the_plan.revision
        self.commit = commit
        # What a user would call a change: jobs, their place in the files, or the errors.
        matters = bool(the_plan.steps or errors != self.errors or problems or reason == "start")
        self.errors = errors
        if matters:
            self.last_reconcile = report
        elif self.last_reconcile is not None:
            self.last_reconcile["errors"] = errors
        persister = engine.persister
        persister.fact_changed("revision", self.revision)
        persister.fact_changed("commit", commit)
        persister.fact_changed("errors", errors)
        persister.fact_changed("pending_removal", self.pending_removal)
        if matters:
            persister.fact_changed("last_reconcile", report)
        if changed or problems:
            engine.event(
                "reconcile",
                revision=self.revision,
                commit=commit,
                reason=reason,
                added=ids["added"],
                updated=ids["updated"],
                removed=ids["removed"],
                errors=errors,
            )
        engine.metrics.reconciles.labels("errors" if problems else "ok").inc()
        engine.metrics.reconcile_seconds.observe(duration_ms / 1000)
        engine.metrics.reconcile_errors.set(len({p.file for p in problems}))
        for warning in warnings + [str(w) for w in getattr(snapshot, "warnings", ())]:
            log.warning("%s", warning)
        for problem in problems:
            log.error("%s", problem)
        if matters:
            log.info(
                "Reload applied: %d added, %d rescheduled, %d modified, %d removed, %d unchanged "
                "(revision %s, %.0f ms)%s.",
                counts["add"],
                counts["reschedule"],
                counts["modify"] + counts["pause"] + counts["resume"],
                counts["remove"],
                report["unchanged"],
                the_plan.revision,
                duration_ms,
                f"; {len(problems)} problem(s) keep their files' jobs as they were"
                if problems
                else "",
            )
        return report

    # -- mass removal --------------------------------------------------------------------

    @property
    def pending_removal(self) -> dict[str, Any] | None:
        if self.pending is None:
            return None
        return {"jobs": len(self.pending["ids"]), "apply_at": self.pending["apply_at"]}

    def _held(
        self,
        desired: dict[str, Desired],
        live: dict[str, Any],
        invalid: set[str] | frozenset[str],
        duplicates: set[str],
    ) -> set[str]:
        """The removals to hold back now (empty when there is no mass removal, or its
        delay has passed)."""
        delay = self.engine.settings.mass_removal_delay
        declared = [j for j, job in live.items() if job.source == "declared"]
        removals = plan(desired, live, invalid, duplicates)
        removed = {s.job_id for s in removals.steps if s.op is Op.REMOVE}
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds <= 0 or len(removed) <= MASS_MIN or len(removed) * 2 <= len(declared):
            if self.pending is not None:
                if removed >= set(self.pending["ids"]) and self.pending["due"]:
                    self.engine.event("removal_applied", removed=sorted(removed))
                    log.warning("Held removal applied: %d jobs removed.", len(removed))
                else:
                    log.info("The held removal is no longer asked for by the files.")
                self._clear_pending()
            return set()
        now = time.time()
        if self.pending is not None and self.pending["due"] and removed >= set(self.pending["ids"]):
            self.engine.event("removal_applied", removed=sorted(removed))
            log.warning("Held removal applied after the delay: %d jobs removed.", len(removed))
            self._clear_pending()
            return set()
        if self.pending is None or set(self.pending["ids"]) != removed:
            apply_at = datetime.fromtimestamp(now + seconds, UTC)
            self.pending = {"ids": sorted(removed), "apply_at": apply_at.isoformat(), "due": False}
            self.engine.event(
                "removal_pending", removed=sorted(removed), detail=apply_at.isoformat()
            )
            self.engine.metrics.pending_removal.set(len(removed))
            log.warning(
                "Holding the removal of %d of %d declared jobs until %s "
                "(mass_removal_delay): they keep firing; it applies then if the files still "
                "say so.",
                len(removed),
                len(declared),
                apply_at.isoformat(),
            )
            loop = asyncio.get_running_loop()
            if self._due_timer is not None:
                self._due_timer.cancel()
            self._due_timer = loop.call_later(seconds, self._removal_due)
        return removed

    def _removal_due(self) -> None:
        if self.pending is not None:
            self.pending["due"] = True
            self.request_for("change")

    def _clear_pending(self) -> None:
        self.pending = None
        self.engine.metrics.pending_removal.set(0)
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None

    def close(self) -> None:
        if self._due_timer is not None:
            self._due_timer.cancel()


def _ids(the_plan: Plan) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
    for step in the_plan.changed_steps:
        key = {"add": "added", "remove": "removed"}.get(step.op.value, "updated")
        found[key].append(step.job_id)
    return found
