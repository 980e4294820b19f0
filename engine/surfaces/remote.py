"""``schedctl plan`` and ``schedctl jobs``: the command line against a running engine.

``plan`` runs the same reconciler the engine runs, with the local files as desired state
and the engine's declared jobs (``GET /specs``) as live state, so what it prints is what
the engine would do. Secret-looking values are never printed.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from engine.errors import SchedctlError
from engine.files.loader import Loader
from engine.reconciler import Desired, LiveJob, Op, plan
from engine.redact import redact
from engine.settings import Settings

__all__ = ["fetch", "plan_against", "print_jobs"]


class RemoteError(SchedctlError):
    """The engine could not be asked."""


def fetch(url: str, path: str) -> Any:
    target = url.rstrip("/") + path
    try:
        with urllib.request.urlopen(target, timeout=30) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RemoteError(f"cannot read {target}: {exc}") from None


def plan_against(settings: Settings, url: str) -> int:
    """Print ``+ id``, ``~ id field: old -> new``, ``- id``; 0 no change, 2 changes, 1 error."""
    snapshot = Loader(settings.task_modules, settings.timezone).scan([settings.schedules_dir])
    if snapshot.problems:
        for problem in snapshot.problems:
            print(problem, file=sys.stderr)
        print("error: the files have problems; fix them first (schedctl validate)", file=sys.stderr)
        return 1
    remote = fetch(url, "/specs")
    live = {
        job_id: LiveJob(
            item["source"],
            item.get("file"),
            item.get("spec"),
            item.get("fingerprint"),
            bool(item.get("runtime_paused")),
        )
        for job_id, item in remote["jobs"].items()
    }
    desired = {
        job_id: Desired(job.essence, job.fingerprint, job.file, job.line, job.column)
        for job_id, job in snapshot.jobs.items()
    }
    steps = plan(desired, live).changed_steps
    for step in steps:
        if step.op is Op.ADD:
            print(
                f"+ {step.job_id}" + (" (replaces a runtime job)" if step.replaces_runtime else "")
            )
        elif step.op is Op.REMOVE:
            print(f"- {step.job_id}")
        else:
            for change in step.changes:
                old, new = redact(change.old), redact(change.new)
                if old == new:
                    print(f"~ {step.job_id} {change.field}: (secret values changed)")
                else:
                    print(f"~ {step.job_id} {change.field}: {_show(old)} -> {_show(new)}")
    return 2 if steps else 0


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def print_jobs(url: str) -> int:
    jobs = fetch(url, "/jobs")["jobs"]
    rows = [("ID", "SOURCE", "TRIGGER", "NEXT RUN", "PAUSED", "RUNNING", "LAST RUN")]
    for job in jobs:
        trigger = job["trigger"]
        last = job.get("last_run") or {}
        rows.append(
            (
                job["id"],
                job["source"],
                f"{trigger['type']} {trigger['expression']}",
                job["next_run_time"] or "-",
                "yes" if job["paused"] else "no",
                str(job["running"]),
                last.get("status", "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}")
    return 0
