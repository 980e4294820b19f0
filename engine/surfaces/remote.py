"""``schedctl plan``: what applying the local files would change on a running engine.

``plan`` runs the same reconciler the engine runs, with the local files as desired state
and the engine's declared jobs (``GET /specs``) as live state, so what it prints is what
the engine would do. Secrets are never printed: values are compared masked for display,
and the engine's digests of each field's secrets tell whether a secret changed.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.errors import SchedctlError
from engine.files.loader import Loader
from engine.files.preview import next_fire_times
from engine.files.spec import JobSpec
from engine.reconciler import Desired, LiveJob, Op, Step, plan
from engine.redact import mask_url_passwords, redact, secret_digest
from engine.settings import Settings

__all__ = ["RemoteError", "fetch", "plan_against"]

FIRE_TIMES = 3
SECRET_CHANGED = "(secret values changed)"


class RemoteError(SchedctlError):
    """The engine could not be asked."""


def fetch(url: str, path: str) -> Any:
    target = url.rstrip("/") + path
    try:
        with urllib.request.urlopen(target, timeout=30) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        shown = mask_url_passwords(target)
        raise RemoteError(f"cannot read {shown}: {mask_url_passwords(str(exc))}") from None


@dataclass
class JobChange:
    """What ``plan`` shows of one job: masked values only."""

    job_id: str
    op: str
    lines: list[str] = field(default_factory=list)  # the "~ id field: ..." lines
    changes: list[dict[str, Any]] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # next fire times, as it is now
    after: list[str] = field(default_factory=list)  # next fire times, once applied
    replaces_runtime: bool = False


def plan_against(settings: Settings, url: str, output: str = "text") -> int:
    """Print what applying the files would change; 0 no change, 2 changes, 1 error."""
    snapshot = Loader(settings.task_modules, settings.timezone).scan([settings.schedules_dir])
    if snapshot.problems:
        for problem in snapshot.problems:
            print(problem, file=sys.stderr)
        print("error: the files have problems; fix them first (schedctl validate)", file=sys.stderr)
        return 1
    remote = fetch(url, "/specs")
    items = remote["jobs"]
    live = {
        job_id: LiveJob(
            item["source"],
            item.get("file"),
            item.get("spec"),
            item.get("fingerprint"),
            bool(item.get("runtime_paused")),
        )
        for job_id, item in items.items()
    }
    desired = {
        job_id: Desired(job.essence, job.fingerprint, job.file, job.line, job.column, job.spec)
        for job_id, job in snapshot.jobs.items()
    }
    now = datetime.now(UTC)
    shown = []
    for step in plan(desired, live).changed_steps:
        digests = (items.get(step.job_id) or {}).get("secret_digests") or {}
        change = _describe(step, digests, items.get(step.job_id), now)
        if change is not None:
            shown.append(change)
    if output == "json":
        print(json.dumps({"changed": bool(shown), "jobs": [_as_json(c) for c in shown]}))
    else:
        _print_text(shown)
    return 2 if shown else 0


def _describe(
    step: Step, digests: dict[str, str], item: dict[str, Any] | None, now: datetime
) -> JobChange | None:
    """The shown change of one step, or None when it changes nothing but masked values."""
    change = JobChange(step.job_id, step.op.value, replaces_runtime=step.replaces_runtime)
    if step.op is Op.REMOVE:
        return change
    if step.op is Op.ADD:
        change.after = _fire_times(step.desired.spec if step.desired else None, now)
        return change
    for diff in step.changes:
        old, new = redact(diff.old), redact(diff.new)
        # /specs sends masked values: equal masked values differ only in their secrets,
        # which the digests compare without either side showing them.
        secret_changed = digests.get(diff.field) != secret_digest(diff.new)
        if old != new:
            change.lines.append(f"~ {step.job_id} {diff.field}: {_show(old)} -> {_show(new)}")
            change.changes.append({"field": diff.field, "old": old, "new": new})
        if secret_changed:
            change.lines.append(f"~ {step.job_id} {diff.field}: {SECRET_CHANGED}")
            change.changes.append({"field": diff.field, "secret_changed": True})
    if not change.lines:
        return None
    if step.op is Op.RESCHEDULE:
        change.before = _fire_times(_live_spec(item), now)
        change.after = _fire_times(step.desired.spec if step.desired else None, now)
    return change


def _live_spec(item: dict[str, Any] | None) -> JobSpec | None:
    try:
        return JobSpec.model_validate((item or {}).get("spec") or {})
    except ValueError:  # a spec this version cannot read: no fire times, still the diff
        return None


def _fire_times(spec: JobSpec | None, now: datetime) -> list[str]:
    if spec is None:
        return []
    try:
        return [t.isoformat() for t in next_fire_times(spec, now, FIRE_TIMES)]
    except (ValueError, OverflowError):
        return []


def _print_text(shown: list[JobChange]) -> None:
    if not shown:
        print("No changes.")
        return
    for change in shown:
        if change.op == "add":
            note = " (replaces a runtime job)" if change.replaces_runtime else ""
            print(f"+ {change.job_id}{note}")
        elif change.op == "remove":
            print(f"- {change.job_id}")
        for line in change.lines:
            print(line)
        if change.before:
            print(f"    next before: {', '.join(change.before)}")
        if change.after:
            label = "next after: " if change.before else "next: "
            print(f"    {label}{', '.join(change.after)}")


def _as_json(change: JobChange) -> dict[str, Any]:
    data: dict[str, Any] = {"id": change.job_id, "op": change.op}
    if change.replaces_runtime:
        data["replaces_runtime"] = True
    if change.changes:
        data["changes"] = change.changes
    if change.op in ("add", "reschedule"):
        data["next_after"] = change.after
    if change.op == "reschedule":
        data["next_before"] = change.before
    return data


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
