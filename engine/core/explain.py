"""Why did a job run, or not, at an instant? (contract section 9)

``explain()`` is a pure function over what the engine knows: the job's fire times near
the instant, its run records near it, its window and pause state, and the audit log
(when the job was declared, when an engine led). The engine gathers those
(``Engine.explain``); ``GET /jobs/{id}/explain`` and ``schedctl why`` show the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

__all__ = ["TOLERANCE", "Facts", "explain", "nearest_fires"]

TOLERANCE = timedelta(minutes=1)
_WINDOWS = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=5 * 366),
)


@dataclass(frozen=True)
class Facts:
    """What the engine knows of one job, for one question."""

    job_id: str
    at: datetime  # the instant asked about (aware)
    now: datetime
    tz: tzinfo  # the job's zone: answers are shown in it
    fires_after: Callable[[datetime], datetime | None] | None  # first fire >= the instant
    runs: Sequence[dict[str, Any]]  # records of this job scheduled within TOLERANCE of `at`
    oldest_run: datetime | None  # the oldest record still kept (older ones were trimmed)
    start: datetime | None = None
    end: datetime | None = None
    paused_now: bool = False
    declared_now: bool = True
    events: Sequence[dict[str, Any]] = ()  # the audit log, newest first (parsed `at`)


def nearest_fires(
    fires_after: Callable[[datetime], datetime | None], at: datetime, budget: int = 5000
) -> tuple[datetime | None, datetime | None]:
    """(the last fire at or before ``at``, the first fire after it); at most ``budget``
    fire times are computed (a per-second job asked about a year ago: None before)."""
    following = fires_after(at + timedelta(microseconds=1))
    previous = None
    for window in _WINDOWS:
        cursor = fires_after(at - window)
        while cursor is not None and cursor <= at and budget > 0:
            previous = cursor
            cursor = fires_after(cursor + timedelta(microseconds=1))
            budget -= 1
        if previous is not None or budget <= 0:
            break
    return previous, following


def _iso(value: datetime | None, tz: tzinfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


def explain(facts: Facts) -> dict[str, Any]:
    at, tz = facts.at, facts.tz
    previous = following = None
    if facts.fires_after is not None:
        try:
            previous, following = nearest_fires(facts.fires_after, at)
        except (OverflowError, ValueError):  # an instant near year 1 or 9999
            previous = following = None
    fire: datetime | None = None
    for candidate in (previous, following):
        if candidate is not None and abs(candidate - at) <= TOLERANCE:
            fire = candidate if fire is None or abs(candidate - at) < abs(fire - at) else fire
    answer: dict[str, Any] = {
        "job": facts.job_id,
        "at": _iso(at, tz),
        "verdict": "unknown",
        "detail": "",
        "runs": [],
        "previous_fire": _iso(previous, tz),
        "next_fire": _iso(following, tz),
    }

    def say(verdict: str, detail: str) -> dict[str, Any]:
        answer["verdict"], answer["detail"] = verdict, detail
        return answer

    runs = _runs_of(facts.runs, fire if fire is not None else at, exact=fire is not None)
    answer["runs"] = runs
    if runs:
        statuses = {run["status"] for run in runs}
        if statuses <= {"missed", "skipped"}:
            run = runs[0]
            return say(run["status"], run.get("error") or f"the run was recorded {run['status']}")
        attempts = ", ".join(f"{run['status']} (attempt {run['attempt']})" for run in runs)
        return say("ran", f"{len(runs)} attempt(s): {attempts}")
    declared = _declared_at(facts)
    if declared is False:
        return say("not_declared", "the job was not declared (or added) at that time")
    if facts.start is not None and at < facts.start - TOLERANCE:
        return say("outside_window", f"the job fires from {_iso(facts.start, tz)} only")
    if facts.end is not None and at > facts.end + TOLERANCE:
        return say("outside_window", f"the job fired until {_iso(facts.end, tz)} only")
    if _paused_at(facts):
        return say("paused", "the job was paused then")
    if fire is None:
        return say(
            "not_a_fire_time",
            "the schedule has no fire time within a minute of it; see previous_fire and next_fire",
        )
    if fire > facts.now:
        return say("pending", f"the job fires at {_iso(fire, tz)}")
    down = _engine_down_at(facts, fire)
    if down:
        return say("engine_down", down)
    if facts.oldest_run is None or fire < facts.oldest_run:
        return say("unknown", "no record of this run is kept (older runs are trimmed)")
    return say("unknown", "no run was recorded for this fire time")


def _runs_of(runs: Sequence[dict[str, Any]], when: datetime, exact: bool) -> list[dict[str, Any]]:
    """The records of the run scheduled at ``when`` (or near it, when no fire time is known)."""
    limit = timedelta(milliseconds=1) if exact else TOLERANCE
    return [r for r in runs if abs(datetime.fromisoformat(r["scheduled_at"]) - when) <= limit]


def _job_events(facts: Facts) -> list[dict[str, Any]]:
    found = []
    for event in facts.events:
        if event["kind"] == "reconcile":
            for key in ("added", "removed"):
                if facts.job_id in (event.get(key) or ()):
                    found.append({**event, "change": key})
        elif event["kind"] == "runtime" and event.get("job") == facts.job_id:
            found.append({**event, "change": event.get("action")})
        elif event["kind"] == "removal_applied" and facts.job_id in (event.get("removed") or ()):
            found.append({**event, "change": "removed"})
    return found  # newest first


def _declared_at(facts: Facts) -> bool | None:
    """True/False when the audit log tells, None when it does not."""
    for event in _job_events(facts):
        if event["at"] <= facts.at:
            return event["change"] not in ("removed", "remove")
    changes = _job_events(facts)
    if changes:  # only changes after `at`: the oldest one says what came before
        oldest = changes[-1]
        return oldest["change"] in ("removed", "remove")
    return None if facts.declared_now else False


def _paused_at(facts: Facts) -> bool:
    for event in _job_events(facts):
        if event["at"] <= facts.at and event["change"] in ("pause", "resume"):
            return event["change"] == "pause"
    later = [e for e in _job_events(facts) if e["at"] > facts.at]
    return facts.paused_now and not later


def _engine_down_at(facts: Facts, fire: datetime) -> str:
    """Why no engine was leading at ``fire``, from starts, stops and leader changes."""
    for event in facts.events:
        if event["at"] > fire:
            continue
        kind, action = event["kind"], event.get("action")
        if kind == "leader" and action == "acquired":
            return ""
        if (kind == "stop" and action in ("leader", "single")) or (
            kind == "leader" and action == "lost"
        ):
            return f"no engine was leading then (last: {kind} at {_iso(event['at'], facts.tz)})"
    if facts.events and all(e["at"] > fire for e in facts.events):
        oldest = facts.events[-1]
        if oldest["kind"] in ("start", "leader"):
            return "no engine had started yet"
    return ""
