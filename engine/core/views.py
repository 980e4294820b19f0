"""Read models: what the status API, the status page and the CLI show.

Built from the scheduler's catalog and the run history, the same on a leader (its live
scheduler) and a standby (its view of the database). Large answers are built off the
event loop from a snapshot taken on it, and cached until a job, a run or the revision
changes, so no read delays a due run and pollers of an unchanged state pay nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, tzinfo
from operator import attrgetter, is_
from typing import TYPE_CHECKING, Any, NamedTuple

from engine import pacing
from engine.core.touched import Touched
from engine.files.spec import as_dict
from engine.joined import Joined
from engine.jsontext import dumps
from engine.redact import holds_secret, redact, spec_secret_digests
from engine.scheduler.catalog import Catalog, Entry, in_id_order
from engine.scheduler.jobs import describe_trigger, trigger_for
from engine.state.history import History

if TYPE_CHECKING:
    from engine.scheduler.facade import SchedulerFacade

__all__ = ["JobsPlan", "SpecsPlan", "Views", "job_dynamic", "job_info", "job_static"]

BIG = 2_000  # jobs above which an answer is built off the event loop


def _describe(trigger: dict[str, Any]) -> str | None:
    try:
        from engine.files.describe import describe_schedule
    except ImportError:  # pragma: no cover - the describer ships with the package
        return None
    try:
        return describe_schedule(trigger["type"], trigger["expression"], trigger["timezone"])
    except Exception:
        return None


def job_static(
    facade: SchedulerFacade,
    entry: Entry,
    job: Any,  # the live job, from facade.store.lookup_job (None: not scheduled)
    stale_files: frozenset[str],
    descriptions: dict[tuple[str, str, str | None], str | None],
) -> dict[str, Any]:
    """What a Job says that only an edit, a pause or a new trigger changes."""
    spec = entry.spec
    task = entry.task
    if job is not None:
        trigger = describe_trigger(job.trigger)
    elif spec is not None:
        trigger = describe_trigger(trigger_for(spec, datetime.now(UTC)))
    else:
        trigger = {"type": "date", "expression": None, "timezone": None}
    key = (trigger["type"], str(trigger["expression"]), trigger["timezone"])
    if key not in descriptions:
        descriptions[key] = _describe(trigger)
    trigger["description"] = descriptions[key]
    return {
        "id": entry.id,
        "task": task.ref if task is not None else None,
        "args": redact(list(task.args)) if task is not None else [],
        "kwargs": redact(task.kwargs) if task is not None else {},
        "trigger": trigger,
        "executor": task.executor if task is not None else "local",
        "paused": entry.runtime_paused or bool(spec and spec.paused),
        "source": entry.source,
        "file": entry.file,
        "line": entry.line,
        "description": redact(spec.description) if spec else None,
        "labels": redact(dict(spec.labels)) if spec else {},
        "stale": entry.file in stale_files if entry.file else False,
    }


def job_dynamic(history: History, entry: Entry, job: Any) -> dict[str, Any]:
    """What a Job says that a fire or a run changes."""
    job_id = entry.id
    tz: tzinfo = entry.tz or UTC
    next_run = job.next_run_time if job is not None else None
    last = history.last_finished(job_id)
    last_success = history.last_success_at(job_id)
    return {
        "next_run_time": next_run.astimezone(tz).isoformat() if next_run else None,
        "running": history.running(job_id),
        "last_run": last.as_dict(tz) if last else None,
        "last_success_at": last_success.astimezone(tz).isoformat() if last_success else None,
    }


def job_info(
    facade: SchedulerFacade,
    history: History,
    entry: Entry,
    stale_files: frozenset[str],
    descriptions: dict[tuple[str, str, str | None], str | None],
) -> dict[str, Any]:
    """The Job of the status API (contract section 5)."""
    job = facade.store.lookup_job(entry.id)
    return job_static(facade, entry, job, stale_files, descriptions) | job_dynamic(
        history, entry, job
    )


class SpecsPlan(NamedTuple):
    """What the loop hands a ``GET /specs`` build: the catalog's (identity, version) and
    its entries in id order (None: the same as at the last build)."""

    catalog: tuple[int, int]
    entries: list[Entry] | None


class JobsPlan(NamedTuple):
    """What the loop hands a ``GET /jobs`` build: the catalog's (identity, version), its
    entries in id order (None: the same as at the last build) and the jobs touched since."""

    catalog: tuple[int, int]
    entries: list[Entry] | None
    touched: set[str]


def _in_order_on_loop(catalog: dict[str, Entry]) -> list[Entry]:
    """On the loop, which changes the catalog: its entries in id order, from the order
    the catalog keeps (``in_id_order`` sorts them again, wherever it is called)."""
    if isinstance(catalog, Catalog):
        return list(map(catalog.__getitem__, catalog.ids_in_order()))
    return [entry for _, entry in in_id_order(catalog)]


def _place(entries: list[Entry], job_id: str) -> int | None:
    """Where ``job_id`` is in ``entries`` (in id order), if it is there."""
    at = bisect_left(entries, job_id, key=_ID)
    return at if at < len(entries) and entries[at].id == job_id else None


def _kept(old: list[Entry], new: list[Entry]) -> Iterator[tuple[int, int]]:
    """(place in ``new``, place in ``old``) of every entry both hold, the very same
    object (both lists in id order: one walk through each)."""
    at, count = 0, len(old)
    for index, entry in enumerate(new):
        while at < count and old[at].id < entry.id:
            at += 1
        if at < count and old[at] is entry:
            yield index, at


_ID = attrgetter("id")


class _Layout:
    """``GET /jobs`` in parts: each job's encoded Job at its place in id order, and the
    encoded part of it that only an edit, a pause or a new trigger changes, with what that
    part was made from. Kept while the catalog holds the same entries (its version)."""

    __slots__ = ("catalog", "entries", "parts", "statics")

    def __init__(self, catalog: tuple[int, int], entries: list[Entry]) -> None:
        self.catalog = catalog
        self.entries = entries
        self.parts = Joined([b""] * len(entries), sep=b",")
        # Per job: what its static part was made from (its runtime pause, its trigger)
        # and that part's length: the part is the head of the job's encoded Job.
        self.statics: list[tuple[bool, Any, int] | None] = [None] * len(entries)


class Views:
    """Cached read models over the current facade and history (leader or standby)."""

    def __init__(
        self,
        facade: Callable[[], SchedulerFacade],
        history: Callable[[], History],
        stale_files: Callable[[], frozenset[str]],
        revision: Callable[[], str | None],
    ) -> None:
        self._facade = facade
        self._history = history
        self._stale = stale_files
        self._revision = revision
        self._descriptions: dict[tuple[str, str, str | None], str | None] = {}
        self._jobs_cache: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None
        # ``GET /jobs`` is assembled from each job's encoded Job, kept until the job is
        # touched (a run, an edit, a fire moving its next run time): while the catalog
        # holds the same entries, a poll visits only the jobs that changed, and of each
        # encodes again only what a run or a fire changes.
        self._layout: _Layout | None = None
        self._parts_base: tuple[Any, ...] | None = None
        self._touched = Touched(lambda: len(self._layout.parts) if self._layout else 0)
        # ``GET /specs``: each job's encoded part, kept as /jobs keeps its parts.
        self._specs: _SpecLayout | None = None

    def touched(self, job_id: str) -> None:
        """The job's Job may have changed; called after the change, from any thread."""
        self._touched.add(job_id)

    def plan_jobs_body(self) -> JobsPlan:
        """On the loop: the jobs touched since the last plan, and the entries in id order
        unless the catalog holds the same ones as at the last build (then None)."""
        facade, history = self._facade(), self._history()
        base = (id(facade), id(history), self._revision(), self._stale())
        touched, lost = self._touched.take()
        if lost or base != self._parts_base:
            self._layout, self._parts_base = None, base
        catalog = facade.catalog
        version = (id(catalog), getattr(catalog, "version", -1))
        layout = self._layout
        if layout is not None and layout.catalog == version and version[1] >= 0:
            return JobsPlan(version, None, touched)
        return JobsPlan(version, _in_order_on_loop(catalog), touched)

    def jobs_body(self, plan: JobsPlan) -> list[bytes]:
        """The body of ``GET /jobs``, as the pieces whose join it is (may run off the
        loop; one build at a time)."""
        try:
            return self._jobs_body(plan)
        except BaseException:
            self._parts_base = None  # the touched jobs are not lost: all are built again
            raise

    def _jobs_body(self, plan: JobsPlan) -> list[bytes]:
        facade, history, stale = self._facade(), self._history(), self._stale()
        old, touched = self._layout, plan.touched
        if plan.entries is None and old is not None:
            layout = old
            for job_id in touched:
                index = _place(layout.entries, job_id)
                if index is not None:
                    self._encode(layout, index, facade, history, stale)
                    pacing.step()
        else:
            entries = plan.entries if plan.entries is not None else self.snapshot()
            layout = _Layout(plan.catalog, entries)
            kept = dict(_kept(old.entries, entries)) if old is not None else {}
            for index in range(len(entries)):
                was = kept.get(index)
                if was is not None:
                    layout.statics[index] = old.statics[was]  # type: ignore[union-attr]
                    layout.parts[index] = old.parts[was]  # type: ignore[union-attr]
                    if entries[index].id not in touched:
                        continue
                self._encode(layout, index, facade, history, stale)
                pacing.step()
            self._layout = layout
        parts = layout.parts
        return parts.pieces(b'{"count":%d,"jobs":[' % len(parts), b"]}")

    def _encode(
        self,
        layout: _Layout,
        index: int,
        facade: SchedulerFacade,
        history: History,
        stale: frozenset[str],
    ) -> None:
        """Encode the job at ``index`` again; its static part only if what it is made
        from (the entry's runtime pause, the live job's trigger) is another."""
        entry = layout.entries[index]
        job = facade.store.lookup_job(entry.id)
        paused, trigger = entry.runtime_paused, job.trigger if job is not None else None
        static = layout.statics[index]
        if static is None or static[0] != paused or static[1] is not trigger:
            head = dumps(job_static(facade, entry, job, stale, self._descriptions))[:-1]
            layout.statics[index] = (paused, trigger, len(head))
        else:  # kept as the head of the job's part, not apart from it
            head = layout.parts[index][: static[2]]
        layout.parts[index] = head + b"," + dumps(job_dynamic(history, entry, job))[1:]

    def version(self) -> tuple[Any, ...]:
        facade, history = self._facade(), self._history()
        return (id(facade), facade.changes, id(history), history.changes, self._revision())

    def etag(self, *extra: Any) -> str:
        return '"' + "-".join(str(part) for part in (*self.version(), *extra)) + '"'

    def snapshot(self) -> list[Entry]:
        """The entries, sorted by id (one state of the catalog, wherever it is taken)."""
        return [entry for _, entry in in_id_order(self._facade().catalog)]

    def build_jobs(self, entries: list[Entry]) -> list[dict[str, Any]]:
        """Every job's Job (may run off the loop: it only reads)."""
        facade, history, stale = self._facade(), self._history(), self._stale()
        jobs = []
        for entry in entries:
            jobs.append(job_info(facade, history, entry, stale, self._descriptions))
            pacing.step()
        return jobs

    def jobs_cached(self) -> list[dict[str, Any]] | None:
        version = self.version()
        if self._jobs_cache is not None and self._jobs_cache[0] == version:
            return self._jobs_cache[1]
        return None

    def remember_jobs(self, version: tuple[Any, ...], jobs: list[dict[str, Any]]) -> None:
        self._jobs_cache = (version, jobs)

    def job(self, job_id: str) -> dict[str, Any] | None:
        facade, history = self._facade(), self._history()
        entry = facade.catalog.get(job_id)
        if entry is None:
            return None
        info = job_info(facade, history, entry, self._stale(), self._descriptions)
        tz = entry.tz or UTC
        info["runs"] = [run.as_dict(tz) for run in history.runs(job_id)]
        return info

    def specs(self, entries: list[Entry] | None = None) -> dict[str, Any]:
        """Every job's canonical spec (secrets masked) and fingerprint: for ``schedctl plan``.
        From ``entries`` when given (a snapshot taken on the loop: this may run off it)."""
        return {
            "revision": self._revision(),
            "jobs": {
                entry.id: _spec_of(entry)
                for entry in (self.snapshot() if entries is None else entries)
            },
        }

    def plan_specs_body(self) -> SpecsPlan:
        """On the loop: the entries in id order, unless the catalog holds the same ones
        as at the last build (sorting 100,000 entries holds the loop 30 ms)."""
        catalog = self._facade().catalog
        version = (id(catalog), getattr(catalog, "version", -1))
        kept = self._specs
        if kept is not None and kept.catalog == version and version[1] >= 0:
            return SpecsPlan(version, None)
        return SpecsPlan(version, _in_order_on_loop(catalog))

    def specs_body(self, plan: SpecsPlan) -> list[bytes]:
        """``specs(entries)`` as JSON (the pieces whose join it is), from each job's kept
        part. An entry is replaced, not changed, when its job is edited, moved or
        restored; only its runtime pause changes in place. So a part is kept while its
        job has the same entry and pause: a poll while jobs fire encodes nothing again
        (may run off the loop; one at a time)."""
        old = self._specs
        if plan.entries is not None:
            entries = plan.entries
        elif old is not None:  # the catalog holds the same entries as at the last build
            entries = old.entries
        else:
            entries = self.snapshot()
        paused = bytes(map(_PAUSED, entries))
        if old is not None and (
            entries is old.entries
            or (len(old.entries) == len(entries) and all(map(is_, old.entries, entries)))
        ):
            layout, fresh = old, _differ(old.paused, paused)
            layout.catalog = plan.catalog
        else:
            layout, fresh = _SpecLayout(plan.catalog, entries), []
            kept = dict(_kept(old.entries, entries)) if old is not None else {}
            for index in range(len(entries)):
                was = kept.get(index)
                if was is not None and old.paused[was] == paused[index]:  # type: ignore[union-attr]
                    layout.parts[index] = old.parts[was]  # type: ignore[union-attr]
                else:
                    fresh.append(index)
        for index in fresh:
            entry = entries[index]
            layout.parts[index] = dumps(entry.id) + b":" + dumps(_spec_of(entry))
            pacing.step()
        layout.paused = paused
        self._specs = layout
        head = b'{"revision":' + dumps(self._revision()) + b',"jobs":{'
        return layout.parts.pieces(head, b"}}")


class _SpecLayout:
    """``GET /specs`` in parts: each job's encoded spec at its place in id order, and the
    runtime pause it was encoded with (one byte a job)."""

    __slots__ = ("catalog", "entries", "parts", "paused")

    def __init__(self, catalog: tuple[int, int], entries: list[Entry]) -> None:
        self.catalog = catalog
        self.entries = entries
        self.parts = Joined([b""] * len(entries), sep=b",")
        self.paused = bytes(len(entries))


_PAUSED = attrgetter("runtime_paused")


def _differ(before: bytes, now: bytes) -> list[int]:
    """The places where two byte strings of one length differ (none: compared at once)."""
    if before == now:
        return []
    return [index for index, (a, b) in enumerate(zip(before, now, strict=True)) if a != b]


def _spec_of(entry: Entry) -> dict[str, Any]:
    spec = shown = _essence(entry)
    digests: dict[str, str] = {}
    if spec is not None and holds_secret(spec):  # one walk for the usual spec, not two
        shown, digests = redact(spec), spec_secret_digests(spec)
    return {
        "source": entry.source,
        "file": entry.file,
        "fingerprint": entry.fingerprint,
        "runtime_paused": entry.runtime_paused,
        "spec": shown,
        "secret_digests": digests,
    }


def _essence(entry: Entry) -> dict[str, Any] | None:
    return as_dict(entry.essence) if entry.essence is not None else None
