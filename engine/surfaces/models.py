"""The status API's answers as pydantic models: what ``/openapi.json`` documents.

The fields are the contract's (section 5). Those the engine may not fill yet are
optional with a None default, so an answer without them still conforms. The handlers
send the engine's read models as they are (see ``engine.surfaces.http``); these models
describe them, and the property-based HTTP test checks every answer against them.
Unknown extra fields are allowed, so a new field never breaks an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "RUN_STATUSES",
    "Detail",
    "Event",
    "Events",
    "Explanation",
    "Health",
    "Job",
    "JobDetail",
    "JobList",
    "LastReconcile",
    "LogRecord",
    "PendingRemoval",
    "Problem",
    "Ready",
    "Run",
    "SpecEntry",
    "Specs",
    "Status",
    "Trigger",
]

RUN_STATUSES = (
    "success",
    "failed",
    "timeout",
    "skipped",
    "missed",
    "cancelled",
    "queued",
    "running",
)
RunStatus = Literal[
    "success", "failed", "timeout", "skipped", "missed", "cancelled", "queued", "running"
]


class Detail(BaseModel):
    """An error answer: 400 (a bad filter, a Host not allowed), 404, 405."""

    detail: str


class Health(BaseModel):
    status: Literal["ok", "stalled"]
    loop_lag_ms: float | None = Field(None, description="how late the event loop answers")


class Ready(BaseModel):
    status: Literal["ready", "starting", "database unreachable", "no leader", "stalled"]


class Trigger(BaseModel):
    type: str = Field(description="cron, interval or date")
    expression: str = Field(description="the crontab line, the interval ('10m') or the instant")
    timezone: str | None = None
    description: str | None = Field(
        None, description='the schedule in English: "At 09:00, Monday through Friday"'
    )


class LogRecord(BaseModel):
    at: datetime
    level: str = Field(description="a level name such as WARNING")
    message: str


class Run(BaseModel):
    """One attempt of a job."""

    status: RunStatus
    scheduled_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    attempt: int = Field(ge=1)
    error: str | None = None
    traceback: str | None = None
    logs: list[LogRecord] | None = Field(None, description="the last 100 records of the run")
    worker: str | None = Field(None, description="local, or the Celery worker's name")


class Job(BaseModel):
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any] = Field(description="values under secret-looking keys are '***'")
    trigger: Trigger
    executor: Literal["local", "celery"] | None = None
    next_run_time: datetime | None = Field(description="null when paused or done")
    paused: bool
    source: Literal["declared", "runtime"]
    file: str | None = None
    line: int | None = None
    description: str | None = None
    labels: dict[str, str] = Field(description="values under secret-looking keys are '***'")
    running: int = Field(ge=0, description="runs in progress")
    last_run: Run | None = Field(description="the last finished run")
    last_success_at: datetime | None = None
    stale: bool | None = Field(
        None, description="true while the job's file is invalid and it runs as last applied"
    )


class JobDetail(Job):
    runs: list[Run] = Field(description="newest first")


class JobList(BaseModel):
    count: int = Field(ge=0, description="the number of jobs after filtering")
    jobs: list[Job] = Field(description="sorted by id")


class Problem(BaseModel):
    file: str
    line: int
    column: int
    message: str


class LastReconcile(BaseModel):
    at: datetime
    reason: str | None = None
    duration_ms: float
    added: int
    updated: int
    removed: int
    unchanged: int
    errors: list[Problem] = Field(description="every problem of every file invalid right now")


class PendingRemoval(BaseModel):
    jobs: int
    apply_at: datetime


class Status(BaseModel):
    revision: str | None
    commit: str | None = None
    role: Literal["single", "leader", "standby"]
    scheduler: Literal["running", "stopped"]
    database: Literal["ok", "unreachable"] | None = None
    jobs: int = Field(ge=0)
    pending_removal: PendingRemoval | None = None
    last_reconcile: LastReconcile | None
    version: str
    executors: dict[str, str] | None = None


class SpecEntry(BaseModel):
    source: Literal["declared", "runtime"]
    file: str | None = None
    fingerprint: str | None = None
    runtime_paused: bool = False
    spec: dict[str, Any] | None = Field(description="the canonical spec, secrets masked")
    secret_digests: dict[str, str] = Field(
        default_factory=dict,
        description="per spec field holding secrets, a hash of them: plan compares it",
    )


class Specs(BaseModel):
    revision: str | None
    jobs: dict[str, SpecEntry]


class Event(BaseModel):
    """One entry of the audit log; fields that do not apply are null."""

    at: datetime
    kind: Literal[
        "reconcile", "start", "stop", "leader", "runtime", "removal_pending", "removal_applied"
    ]
    revision: str | None = None
    commit: str | None = None
    reason: str | None = None
    added: list[str] | None = None
    updated: list[str] | None = None
    removed: list[str] | None = None
    errors: list[Problem] | None = None
    job: str | None = None
    action: str | None = None
    detail: str | None = None


class Events(BaseModel):
    events: list[Event]


class Explanation(BaseModel):
    """Why a job did or did not run at an instant (contract section 9)."""

    job: str
    at: datetime
    verdict: Literal[
        "ran",
        "not_a_fire_time",
        "not_declared",
        "paused",
        "outside_window",
        "engine_down",
        "missed",
        "skipped",
        "pending",
        "unknown",
    ]
    detail: str
    runs: list[Run]
    previous_fire: datetime | None
    next_fire: datetime | None
