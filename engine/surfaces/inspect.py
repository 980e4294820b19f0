"""``schedctl jobs``, ``runs`` and ``why``: a running engine, read over its status API."""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from engine.surfaces.remote import RemoteError, fetch

__all__ = ["print_jobs", "print_runs", "print_why"]

LOG_LINES = 5  # the last lines of a run's logs that `runs` shows


def _get(url: str, path: str) -> Any | None:
    """``fetch``, but None for a 404 (an unknown job)."""
    try:
        return fetch(url, path)
    except RemoteError as exc:
        if "HTTP Error 404" in str(exc):
            return None
        raise


def _ago(text: str | None, now: datetime) -> str:
    if not text:
        return "-"
    when = datetime.fromisoformat(text)
    seconds = (when - now).total_seconds()
    past = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            words = f"{int(seconds // size)} {unit}"
            return f"{words} ago" if past else f"in {words}"
    return text  # pragma: no cover


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_jobs(url: str, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """The engine's jobs: id, schedule, next run, last run's status and time."""
    jobs = fetch(url, "/jobs")["jobs"]
    if as_json:
        print(json.dumps(jobs, indent=2), file=out)
        return 0
    now = datetime.now(UTC)
    rows = [("ID", "SCHEDULE", "NEXT RUN", "LAST RUN", "RUNNING", "SOURCE")]
    for job in jobs:
        trigger = job.get("trigger") or {}
        last = job.get("last_run") or {}
        schedule = (
            trigger.get("description") or f"{trigger.get('type')} {trigger.get('expression')}"
        )
        if job.get("paused"):
            next_run = "paused"
        else:
            next_run = (
                f"{job['next_run_time']} ({_ago(job['next_run_time'], now)})"
                if job.get("next_run_time")
                else "-"
            )
        finished = last.get("finished_at") or last.get("scheduled_at")
        last_text = f"{last['status']} {_ago(finished, now)}" if last else "-"
        if job.get("stale"):
            last_text += " [stale: its file is invalid]"
        rows.append(
            (job["id"], schedule, next_run, last_text, str(job.get("running", 0)), job["source"])
        )
    _table(rows, out)
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}", file=out)
    return 0


def job_on(url: str, job_id: str) -> dict[str, Any] | None:
    """The engine's Job of ``job_id`` (with its runs), or None if it has none such."""
    found: dict[str, Any] | None = _get(url, f"/jobs/{urllib.parse.quote(job_id, safe='')}")
    return found


def print_runs(
    url: str, job_id: str, count: int = 10, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    """The job's newest runs with their errors and the last lines of their logs."""
    job = job_on(url, job_id)
    if job is None:
        print(f"error: no job {job_id!r} on {url}", file=sys.stderr)
        return 1
    runs = job["runs"][:count]
    if as_json:
        print(json.dumps(runs, indent=2), file=out)
        return 0
    if not runs:
        print(f"{job_id}: no runs yet", file=out)
        return 0
    for run in runs:
        took = f" in {run['duration_s']:.3f}s" if run.get("duration_s") is not None else ""
        worker = f" on {run['worker']}" if run.get("worker") not in (None, "local") else ""
        print(
            f"{run['scheduled_at']}  attempt {run['attempt']}  {run['status']}{took}{worker}",
            file=out,
        )
        if run.get("error"):
            print(f"    error: {run['error']}", file=out)
        for record in (run.get("logs") or [])[-LOG_LINES:]:
            print(f"    {record.get('level', ''):<8} {record.get('message', '')}", file=out)
    return 0


def print_why(url: str, job_id: str, at: str | None, out: TextIO = sys.stdout) -> int:
    """The explanation of ``GET /jobs/{id}/explain`` in words."""
    query = f"?at={urllib.parse.quote(at)}" if at else ""
    answer = _get(url, f"/jobs/{urllib.parse.quote(job_id, safe='')}/explain{query}")
    if answer is None:
        print(f"error: no job {job_id!r} on {url}", file=sys.stderr)
        return 1
    verdict = _VERDICTS.get(answer["verdict"], answer["verdict"])
    print(f"{answer['job']} at {answer['at']}: {verdict}", file=out)
    if answer.get("detail"):
        print(f"  {answer['detail']}", file=out)
    for run in answer.get("runs") or []:
        error = f": {run['error']}" if run.get("error") else ""
        print(f"  attempt {run['attempt']}: {run['status']}{error}", file=out)
    if answer.get("previous_fire"):
        print(f"  previous fire: {answer['previous_fire']}", file=out)
    if answer.get("next_fire"):
        print(f"  next fire:     {answer['next_fire']}", file=out)
    return 0


_VERDICTS = {
    "ran": "it ran",
    "not_a_fire_time": "that is not one of its fire times",
    "not_declared": "it did not exist then",
    "paused": "it was paused",
    "outside_window": "that is outside its start/end window",
    "engine_down": "no engine was running it then",
    "missed": "the run was missed",
    "skipped": "the run was skipped",
    "pending": "it will run then",
    "unknown": "unknown",
}
