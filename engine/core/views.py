"""Read models: what the status API, the status page and the CLI show.

Built from the scheduler's catalog and the run history, the same on a leader (its live
scheduler) and a standby (its view of the database). Large answers are built off the
event loop from a snapshot taken on it, and cached until a job, a run or the revision
changes, so no read delays a due run and pollers of an unchanged state pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.core.touched import Touched
from engine.files.spec import as_dict
from engine.joined import Joined
from engine.jsontext import dumps
from engine.redact import redact, spec_secret_digests
from engine.scheduler.catalog import Entry, in_id_order
from engine.scheduler.jobs import describe_trigger, trigger_for
from engine.state.history import History

if TYPE_CHECKING:
    from engine.scheduler.facade import SchedulerFacade

__all__ = ["JobsPlan", "Views", "job_dynamic", "job_info", "job_static"]

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


class JobsPlan(NamedTuple):
    """What the loop hands a ``GET /jobs`` build: the catalog's (identity, version), its
    entries in id order (None: the same as at the last build) and the jobs touched since."""

    catalog: tuple[int, int]
    entries: list[Entry] | None
    touched: set[str]


class _Layout:
    """``GET /jobs`` in parts: each job's encoded Job at its place in id order, and the
    encoded part of it that only an edit, a pause or a new trigger changes, with what that
    part was made from. Kept while the catalog holds the same entries (its version)."""

    __slots__ = ("at", "catalog", "entries", "parts", "statics")

    def __init__(self, catalog: tuple[int, int], entries: list[Entry]) -> None:
        self.catalog = catalog
        self.entries = entries
        self.at = {entry.id: index for index, entry in enumerate(entries)}
        self.parts = Joined([b""] * len(entries), sep=b",")
        self.statics: list[tuple[Any, bytes] | None] = [None] * len(entries)


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
        # ``GET /specs``: each job's encoded part, with what it was made from.
        self._spec_parts: dict[str, tuple[Entry, bool, tuple[Any, ...], bytes]] = {}

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
        return JobsPlan(version, self.snapshot(), touched)

    def jobs_body(self, plan: JobsPlan) -> bytes:
        """The body of ``GET /jobs`` (may run off the loop; one build at a time)."""
        try:
            return self._jobs_body(plan)
        except BaseException:
            self._parts_base = None  # the touched jobs are not lost: all are built again
            raise

    def _jobs_body(self, plan: JobsPlan) -> bytes:
        facade, history, stale = self._facade(), self._history(), self._stale()
        old, touched = self._layout, plan.touched
        if plan.entries is None and old is not None:
            layout = old
            for job_id in touched:
                index = layout.at.get(job_id)
                if index is not None:
                    self._encode(layout, index, facade, history, stale)
        else:
            entries = plan.entries if plan.entries is not None else self.snapshot()
            layout = _Layout(plan.catalog, entries)
            for index, entry in enumerate(entries):
                was = old.at.get(entry.id) if old is not None else None
                if was is not None and old is not None and old.entries[was] is entry:
                    layout.statics[index] = old.statics[was]
                    if entry.id not in touched:
                        layout.parts[index] = old.parts[was]
                        continue
                self._encode(layout, index, facade, history, stale)
            self._layout = layout
        parts = layout.parts
        return parts.wrapped(b'{"count":%d,"jobs":[' % len(parts), b"]}")

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
        made_of = (entry.runtime_paused, job.trigger if job is not None else None)
        static = layout.statics[index]
        if static is None or static[0][0] != made_of[0] or static[0][1] is not made_of[1]:
            info = job_static(facade, entry, job, stale, self._descriptions)
            static = layout.statics[index] = (made_of, dumps(info)[:-1])
        layout.parts[index] = static[1] + b"," + dumps(job_dynamic(history, entry, job))[1:]

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
        return [job_info(facade, history, e, stale, self._descriptions) for e in entries]

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

    def specs_body(self, entries: list[Entry]) -> bytes:
        """``specs(entries)`` as JSON, from each job's encoded part, kept while what the
        part says of the job is the same (its entry, essence, file, fingerprint, pause):
        a job that fires does not change its spec, so a poll while jobs fire re-encodes
        only the jobs that were edited (may run off the loop; one at a time)."""
        parts, out = self._spec_parts, []
        for entry in entries:
            key = (entry.essence, entry.source, entry.file, entry.fingerprint)
            kept = parts.get(entry.id)
            if (
                kept is None
                or kept[0] is not entry
                or kept[1] != entry.runtime_paused
                or any(a is not b for a, b in zip(kept[2], key, strict=True))
            ):
                part = dumps(entry.id) + b":" + dumps(_spec_of(entry))
                kept = parts[entry.id] = (entry, entry.runtime_paused, key, part)
            out.append(kept[3])
        if len(parts) > len(entries) + 1024:  # jobs gone
            live = {entry.id for entry in entries}
            for job_id in [j for j in parts if j not in live]:
                del parts[job_id]
        revision = dumps(self._revision())
        return b'{"revision":' + revision + b',"jobs":{' + b",".join(out) + b"}}"


def _spec_of(entry: Entry) -> dict[str, Any]:
    spec = _essence(entry)
    return {
        "source": entry.source,
        "file": entry.file,
        "fingerprint": entry.fingerprint,
        "runtime_paused": entry.runtime_paused,
        "spec": redact(spec) if spec is not None else None,
        "secret_digests": spec_secret_digests(spec) if spec is not None else {},
    }


def _essence(entry: Entry) -> dict[str, Any] | None:
    return as_dict(entry.essence) if entry.essence is not None else None
