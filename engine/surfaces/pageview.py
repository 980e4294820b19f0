"""What the status page shows, computed from the status API's own dicts. Pure: no I/O.

The page's script (``templates/base.html``) formats the same fields the same way when it
refreshes the table from ``GET /jobs``: a time is the wall clock of the ISO string (the API
already gives it in the job's timezone) with its offset, and ``relative`` words are floored
to one unit. Keep the two in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from engine.files.describe import describe_schedule
from engine.files.preview import next_fire_times
from engine.files.spec import JobSpec
from engine.redact import redact

__all__ = [
    "FAILING",
    "Fact",
    "JobRow",
    "Moment",
    "badges",
    "counts",
    "duration",
    "fire_times",
    "job_href",
    "job_row",
    "log_time",
    "moment",
    "pretty",
    "relative",
    "run_views",
    "schedule_words",
    "spec_items",
    "status_view",
]

FAILING = frozenset({"failed", "timeout"})
STATUSES = frozenset(
    {"success", "failed", "timeout", "skipped", "missed", "cancelled", "queued", "running"}
)
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
_ISO = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


@dataclass(frozen=True, slots=True)
class Moment:
    """An instant as the page prints it: ``2027-01-01 09:00:00`` ``+01:00`` ``in 5 min``."""

    iso: str
    text: str
    offset: str
    relative: str
    epoch: float

    @property
    def label(self) -> str:
        """The wall clock and its offset: ``2027-01-01 09:00:00 +01:00``."""
        return f"{self.text} {self.offset}" if self.offset else self.text


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of the jobs table."""

    id: str
    href: str
    schedule: str
    expression: str
    timezone: str
    next: Moment | None
    next_note: str  # why there is no next run: "paused", "done"
    status: str | None  # the last finished run's status
    status_class: str
    last: Moment | None
    error: str
    place: str  # file:line, or "runtime"
    badges: tuple[str, ...] = field(default=())

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def css(self) -> str:
        return " ".join(f"is-{badge}" for badge in self.badges)


def relative(seconds: float) -> str:
    """``in 5 min`` / ``3 h ago``: one unit, floored, as a person glances at it."""
    size = abs(seconds)
    if size < 1:
        return "now"
    for unit, name in _UNITS:
        if size >= unit:
            count = int(size // unit)
            return f"in {count} {name}" if seconds > 0 else f"{count} {name} ago"
    return "now"  # pragma: no cover - the loop always returns


def moment(iso: str | None, now: datetime) -> Moment | None:
    """``iso`` (an aware ISO 8601 string from the API) as the page prints it."""
    if not iso:
        return None
    found = _ISO.match(iso) if isinstance(iso, str) else None
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return Moment(str(iso), str(iso), "", "", 0.0)
    if found is not None:  # the API's own format: slicing is 5x faster than strftime
        text = f"{found[1]} {found[2]}"
        offset = "+00:00" if found[3] == "Z" else found[3] or ""
    else:
        text, offset = when.strftime("%Y-%m-%d %H:%M:%S"), ""
        delta = when.utcoffset()
        if delta is not None:
            minutes = int(delta.total_seconds() // 60)
            sign = "-" if minutes < 0 else "+"
            offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if not offset:
        return Moment(iso, text, "", "", 0.0)  # a naive time is not an instant: no "in 5 min"
    epoch = when.timestamp()
    return Moment(iso, text, offset, relative(epoch - now.timestamp()), epoch)


def schedule_words(trigger: Mapping[str, Any]) -> str:
    """The API's ``trigger.description`` when the engine fills it, else our own words."""
    given = trigger.get("description")
    if given:
        return str(given)
    return describe_schedule(
        str(trigger.get("type") or ""),
        str(trigger.get("expression") or ""),
        trigger.get("timezone"),
    )


def job_href(job_id: str, prefix: str = "") -> str:
    """The job page's address relative to the page linking to it."""
    if _PLAIN_ID.fullmatch(job_id) is None:  # most ids need no quoting: skip the cost
        job_id = quote(job_id, safe="")
    return f"{prefix}ui/jobs/{job_id}"


def badges(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The words that make a row stand out: failing, stale, paused, running."""
    last = job.get("last_run") or None
    found: tuple[str, ...] = ()
    if last and last.get("status") in FAILING:
        found += ("failing",)
    if job.get("stale"):
        found += ("stale",)
    if job.get("paused"):
        found += ("paused",)
    if job.get("running"):
        found += ("running",)
    return found


def job_row(job: Mapping[str, Any], now: datetime) -> JobRow:
    """A ``GET /jobs`` item as a table row."""
    trigger = job.get("trigger") or {}
    last = job.get("last_run") or None
    status = str(last.get("status")) if last else None
    words = schedule_words(trigger)
    next_run = moment(job.get("next_run_time"), now)
    note = "" if next_run else "paused" if job.get("paused") else "none"
    when = None
    if last:
        when = moment(last.get("finished_at") or last.get("started_at"), now)
        when = when or moment(last.get("scheduled_at"), now)
    file, line = job.get("file"), job.get("line")
    place = f"{file}:{line}" if file and line else str(file) if file else str(job.get("source"))
    return JobRow(
        id=str(job.get("id")),
        href=job_href(str(job.get("id"))),
        schedule=words,
        expression=f"{trigger.get('type')}: {trigger.get('expression')}",
        timezone=_zone_note(words, trigger.get("timezone")),
        next=next_run,
        next_note=note,
        status=status,
        status_class=status if status in STATUSES else "other",
        last=when,
        error=str((last or {}).get("error") or ""),
        place=place,
        badges=badges(job),
    )


def _zone_note(words: str, zone: object) -> str:
    """The zone after the words, unless they already say it (``Once at ... (Europe/Berlin)``)."""
    return "" if not zone or str(zone) in words else str(zone)


def fire_times(job: Mapping[str, Any], now: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times of a job, from its status API dict.

    A declared job's trigger is read back as a spec and previewed like ``schedctl next``,
    anchored just before its live next run time (so a ``start`` window or an interval's
    phase is the live one). A runtime job's trigger is APScheduler's own: only its next
    run time is known here. A paused or finished job has none.
    """
    trigger = job.get("trigger") or {}
    upcoming = job.get("next_run_time")
    if not upcoming:
        return []
    first = datetime.fromisoformat(upcoming)
    if job.get("source") != "declared":
        return [first]
    kind, expression = trigger.get("type"), trigger.get("expression")
    zone = str(trigger.get("timezone") or "UTC")
    fields: dict[str, Any] = {"task": "page.preview:job", "timezone": zone}
    try:
        if kind == "cron":
            fields["cron"] = expression
        elif kind == "interval":
            fields.update(interval=expression, start=first)
        else:
            return [first]
        spec = JobSpec(**fields)
        times = next_fire_times(spec, first - timedelta(microseconds=1), count, ZoneInfo(zone))
    except (ValueError, LookupError):
        return [first]
    return times or [first]


def pretty(value: Any) -> str:
    """JSON for a person, with secret-looking values masked (again: masking is idempotent)."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, sort_keys=True, default=repr)


def counts(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many jobs there are, and how many carry each badge."""
    found = {"jobs": 0, "failing": 0, "stale": 0, "paused": 0, "running": 0}
    for job in jobs:
        found["jobs"] += 1
        for badge in badges(job):
            found[badge] += 1
    return found


def log_time(iso: str) -> str:
    """A log record's instant to the millisecond: ``2026-03-02 02:00:00.500 +01:00``."""
    found = _LOG_TIME.match(iso)
    if found is None:
        return iso
    offset = "+00:00" if found[4] == "Z" else found[4] or ""
    return f"{found[1]} {found[2]}{(found[3] or '.000')[:4].ljust(4, '0')} {offset}".rstrip()


def duration(seconds: float | None) -> str:
    """``12 ms``, ``3.4 s``, ``2 min 5 s``: as the page's script prints it."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str
    css: str = ""
    title: str = ""


def status_view(status: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The facts and alerts at the top of the status page, from ``GET /status``."""
    report = status.get("last_reconcile") or {}
    role, scheduler = str(status.get("role")), str(status.get("scheduler"))
    facts = [
        Fact("role", role, "v-muted" if role == "standby" else ""),
        Fact("scheduler", scheduler, "v-ok" if scheduler == "running" else "v-bad"),
    ]
    if "database" in status:
        database = str(status["database"])
        facts.append(Fact("database", database, "v-ok" if database == "ok" else "v-bad"))
    for name, state in (status.get("executors") or {}).items():
        facts.append(Fact(str(name), str(state), "v-ok" if state == "ok" else "v-bad"))
    facts.append(Fact("revision", str(status.get("revision") or "none"), "mono"))
    if "commit" in status:
        commit = status["commit"]
        facts.append(
            Fact("commit", str(commit)[:12], "mono", str(commit))
            if commit
            else Fact("commit", "not in git", "v-muted")
        )
    facts.append(Fact("jobs", str(status.get("jobs"))))
    at = moment(report.get("at"), now)
    if at is not None:
        title = (
            f"{report.get('at')} · {report.get('reason') or 'reconcile'} · "
            f"{report.get('added')} added, {report.get('updated')} updated, "
            f"{report.get('removed')} removed, {report.get('unchanged')} unchanged · "
            f"{report.get('duration_ms')} ms"
        )
        facts.append(Fact("last reconcile", at.text[11:], "", title))
    facts.append(Fact("version", str(status.get("version"))))
    errors = [
        {
            "place": f"{e.get('file')}:{e.get('line')}:{e.get('column')}",
            "message": str(e.get("message")),
        }
        for e in report.get("errors") or ()
    ]
    pending = status.get("pending_removal")
    return {
        "facts": facts,
        "errors": errors,
        "pending": (
            f"{pending.get('jobs')} jobs are gone from the files and will be removed at "
            f"{pending.get('apply_at')} unless they come back; they keep firing until then"
            if pending
            else ""
        ),
    }


def run_views(runs: Iterable[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """A job's runs as the job page prints them; the newest failure's details are open."""
    views = []
    opened = False
    for run in runs:
        status = str(run.get("status"))
        logs = [
            {
                "at": log_time(str(log.get("at"))),
                "level": str(log.get("level")),
                "level_class": str(log.get("level")) if log.get("level") in _LEVELS else "other",
                "message": str(log.get("message")),
            }
            for log in run.get("logs") or ()
            if isinstance(log, Mapping)
        ]
        traceback = str(run.get("traceback") or "")
        parts = (["traceback"] if traceback else []) + (
            [f"{len(logs)} log record" + ("" if len(logs) == 1 else "s")] if logs else []
        )
        failing = status in FAILING
        views.append(
            {
                "status": status,
                "status_class": status if status in STATUSES else "other",
                "failing": failing,
                "scheduled": moment(run.get("scheduled_at"), now),
                "started": moment(run.get("started_at"), now),
                "duration": duration(run.get("duration_s")),
                "attempt": "" if run.get("attempt") is None else str(run.get("attempt")),
                "worker": "" if run.get("worker") is None else str(run.get("worker")),
                "error": str(run.get("error") or ""),
                "traceback": traceback,
                "logs": logs,
                "summary": " · ".join(parts),
                "key": f"{run.get('scheduled_at')}#{run.get('attempt')}",
                "open": failing and bool(parts) and not opened,
            }
        )
        opened = opened or (failing and bool(parts))
    return views


def spec_items(job: Mapping[str, Any], now: datetime) -> list[tuple[str, Any, str]]:
    """``(label, value, kind)`` of a job's spec; kind is text, mono, json or when (a Moment)."""
    trigger = job.get("trigger") or {}
    items: list[tuple[str, Any, str]] = [
        ("task", str(job.get("task")), "mono"),
        ("schedule", schedule_words(trigger), "text"),
        (str(trigger.get("type") or "trigger"), str(trigger.get("expression")), "mono"),
        ("timezone", str(trigger.get("timezone") or ""), "text"),
    ]
    upcoming = moment(job.get("next_run_time"), now)
    if upcoming is not None:
        items.append(("next run", upcoming, "when"))
    else:
        items.append(("next run", "paused" if job.get("paused") else "none", "text"))
    if job.get("args"):
        items.append(("args", pretty(job.get("args")), "json"))
    if job.get("kwargs"):
        items.append(("kwargs", pretty(job.get("kwargs")), "json"))
    for key in ("executor", "description"):
        if job.get(key):
            items.append((key, str(job[key]), "text"))
    if job.get("labels"):
        items.append(
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(job["labels"].items())), "mono")
        )
    place = job.get("file")
    if place:
        items.append(("file", f"{place}:{job.get('line')}" if job.get("line") else place, "mono"))
    items.append(("source", str(job.get("source")), "text"))
    items.append(("paused", "yes" if job.get("paused") else "no", "text"))
    if job.get("stale"):
        items.append(("stale", "yes: its file is invalid; it runs as last applied", "text"))
    if "last_success_at" in job:
        success = moment(job.get("last_success_at"), now)
        items.append(("last success", success or "never", "when" if success else "text"))
    items.append(("running now", str(job.get("running") or 0), "text"))
    return items
