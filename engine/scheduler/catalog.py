"""The engine's jobs with their provenance (``Entry``), and the APScheduler jobs it builds.

An ``Entry`` is what the engine knows of a job: where it came from (a file, or the
runtime API), its spec or runtime data, and the ``Task`` every run executes. The
APScheduler ``Job`` holds only what APScheduler needs to decide *when*.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from operator import itemgetter
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.base import BaseTrigger

from engine.execution.task import Task
from engine.files.spec import JobSpec
from engine.reconciler import LiveJob

__all__ = ["RUN_REF", "BoundedJob", "Catalog", "Entry", "build_job", "in_id_order"]

log = logging.getLogger("schedctl.scheduler")
RUN_REF = "engine.execution.runner:run"  # the textual callable of every job (never called)
CATCH_UP_LIMIT = 1000  # fire times computed in one pass for one job, at most


class Catalog(dict[str, "Entry"]):
    """The engine's entries by job id. ``version`` moves whenever an entry is set or
    removed, so a read model can keep its layout of the jobs while only their runs and
    fire times change (those are told per job: ``Views.touched``).

    ``ids_in_order()`` keeps the ids sorted once asked, through the jobs added and
    removed one at a time (a runtime job coming or going): at 100,000 jobs sorting them
    again for each read after such a change held the loop 30 ms. A bulk change (a start,
    a reload adding thousands) lets the order go, to be sorted again when next asked.
    """

    __slots__ = ("_ids", "_kept_adds", "version")

    KEPT_ADDS = 1_000  # ids added into a kept order before it is let go (each moves it)

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self._ids: list[str] | None = None  # the ids in order, once asked
        self._kept_adds = 0

    def ids_in_order(self) -> list[str]:
        """The ids in order (the catalog's own list: read it, do not change it). Only
        on the thread that changes the catalog (the event loop)."""
        if self._ids is None:
            self._ids, self._kept_adds = sorted(self), 0
        return self._ids

    def __setitem__(self, key: str, value: Entry) -> None:
        self.version += 1
        new = key not in self
        super().__setitem__(key, value)
        if new and self._ids is not None:
            self._kept_adds += 1
            if self._kept_adds > self.KEPT_ADDS:
                self._ids = None
            else:
                insort(self._ids, key)

    def __delitem__(self, key: str) -> None:
        self.version += 1
        super().__delitem__(key)
        self._forget(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.version += 1
        found = key in self
        value = super().pop(key, *default)
        if found:
            self._forget(key)
        return value

    def _forget(self, key: str) -> None:
        ids = self._ids
        if ids is not None:
            at = bisect_left(ids, key)
            if at < len(ids) and ids[at] == key:
                del ids[at]

    def popitem(self) -> tuple[str, Entry]:
        self.version += 1
        self._ids = None
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        self._ids = None
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> Catalog:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        self.version += 1
        self._ids = None
        super().clear()


def in_id_order(catalog: dict[str, Entry]) -> list[tuple[str, Entry]]:
    """The entries in id order, as one state of the catalog, even read off the loop while
    the loop adds and removes jobs. ``dict(catalog)`` copies it in one step (no Python runs
    and nothing is allocated for the collector meanwhile, so no other thread can change it
    midway); the copy is then sorted. Looking each sorted id up again could miss a job
    just removed, and sorting the live items can be interrupted by a collection (making a
    tuple per item) and fail with "dictionary changed size during iteration"."""
    return sorted(dict(catalog).items(), key=_FIRST)  # by id alone: no pair compared


_FIRST = itemgetter(0)


@dataclass(slots=True)
class Entry:
    """One job the engine knows, with where it came from."""

    id: str
    source: str  # "declared" | "runtime"
    file: str | None = None
    line: int | None = None
    column: int | None = None
    essence: Any = None  # declared: the spec's essence (a lazy mapping)
    fingerprint: str | None = None
    spec: JobSpec | None = None
    runtime_paused: bool = False
    task: Task | None = None
    runtime: dict[str, Any] | None = None  # runtime: the saved data (task, trigger, args)
    tz: tzinfo | None = None
    _live: LiveJob | None = field(default=None, repr=False, compare=False)

    def live(self) -> LiveJob:
        """The reconciler's view of this entry (kept while nothing in it changes)."""
        found = self._live
        if found is None or found.runtime_paused != self.runtime_paused:
            found = self._live = LiveJob(
                self.source,
                self.file,
                self.essence,
                self.fingerprint,
                self.runtime_paused,
                self.line,
                self.column,
            )
        return found


class BoundedJob(Job):
    """An APScheduler job whose catch-up never starves the loop.

    APScheduler's ``Job._get_run_times`` computes every fire time between the job's stored
    next run time and now: a 1 s job stored a month ago is 2.6 million calls in one pass.
    Times older than the misfire grace are missed whatever happens: in ``due_times`` (what
    the engine's firing pass asks), after ``CATCH_UP_LIMIT`` of them (each recorded
    ``missed``) the walk jumps to the grace's edge, and a pass computes at most twice that
    many times.
    """

    __slots__ = ()

    def due_times(self, now: datetime) -> tuple[list[datetime], datetime | None]:
        """(the fire times due at ``now``, the first one after them): each is computed
        once, where APScheduler asks the trigger again for the next one."""
        run_times: list[datetime] = []
        next_run_time = self.next_run_time
        while next_run_time is not None and next_run_time <= now:
            run_times.append(next_run_time)
            if len(run_times) >= 2 * CATCH_UP_LIMIT:
                # Even inside a long grace (a 1 s job down for days, never coalesced): the
                # times between these and the latest one due are skipped, so a pass stays
                # bounded and the job is not left days behind (a stall) for the next one.
                latest = self._latest_due(now)
                if latest is not None and latest > next_run_time:
                    log.warning(
                        "Job %s is more than %d fire times behind (the engine was down, or "
                        "its clock jumped); the times between %s and %s are skipped.",
                        self.id,
                        2 * CATCH_UP_LIMIT,
                        next_run_time.isoformat(),
                        latest.isoformat(),
                    )
                    run_times.append(latest)
                return run_times, self.trigger.get_next_fire_time(run_times[-1], now)
            next_run_time = self.trigger.get_next_fire_time(next_run_time, now)
            if len(run_times) >= CATCH_UP_LIMIT and next_run_time is not None:
                grace = self.misfire_grace_time or 0
                edge = now - timedelta(seconds=grace)
                if next_run_time >= edge:
                    continue  # inside the grace: every one of them still counts
                resumed = self.trigger.get_next_fire_time(None, edge)
                log.warning(
                    "Job %s missed more than %d fire times (the engine was down, or its clock "
                    "jumped); only the first %d are recorded missed, and it resumes at %s.",
                    self.id,
                    CATCH_UP_LIMIT,
                    CATCH_UP_LIMIT,
                    resumed.isoformat() if resumed else "its end",
                )
                next_run_time = resumed
        return run_times, next_run_time

    def _latest_due(self, now: datetime) -> datetime | None:
        """A fire time at most ``now`` and close to it (searched back, doubling)."""
        back = timedelta(seconds=1)
        while back < timedelta(days=200 * 366):
            found = self.trigger.get_next_fire_time(None, now - back)
            if found is None:
                return None
            if found <= now:
                return found
            back *= 2
        return None


def build_job(
    scheduler: Any,
    job_id: str,
    trigger: BaseTrigger,
    next_run: datetime | None,
    *,
    name: str,
    misfire_grace_time: int,
    coalesce: bool,
    max_instances: int,
) -> Job:
    """A job built from state, as a job store loads one: ``Job()`` would inspect the
    runner's signature for every job, and the engine's jobs carry no arguments."""
    job = BoundedJob.__new__(BoundedJob)
    job.__setstate__(
        {
            "version": 1,
            "id": job_id,
            "func": RUN_REF,
            "trigger": trigger,
            "executor": "default",
            "args": (),
            "kwargs": {},
            "name": name,
            "misfire_grace_time": misfire_grace_time,
            "coalesce": coalesce,
            "max_instances": max_instances,
            "next_run_time": next_run,
        }
    )
    job._scheduler = scheduler
    job._jobstore_alias = "default"
    return job
