"""Specs and runtime arguments -> APScheduler triggers and runner payloads. Pure data."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from engine.execution.task import Task
from engine.files.durations import format_duration
from engine.files.preview import aware
from engine.files.spec import JobSpec
from engine.files.tasks import split_task
from engine.redact import secret_values
from engine.scheduler.triggers import CrontabTrigger

__all__ = [
    "describe_trigger",
    "runtime_task",
    "schedule_problem",
    "task_of",
    "trigger_for",
    "trigger_zone",
]


def trigger_for(spec: JobSpec, now: datetime) -> BaseTrigger:
    zone = ZoneInfo(spec.timezone)
    start = aware(spec.start, zone) if spec.start else None
    end = aware(spec.end, zone) if spec.end else None
    jitter = spec.jitter.total_seconds() or None
    if spec.cron is not None:
        return CrontabTrigger(spec.cron, zone, start, end, jitter)
    if spec.interval is not None:
        return IntervalTrigger(
            seconds=spec.interval.total_seconds(),
            # Without a start, the first run is one interval after the job is added.
            start_date=start or now + spec.interval,
            end_date=end,
            timezone=zone,
            jitter=jitter,
        )
    assert spec.at is not None
    return DateTrigger(run_date=aware(spec.at, zone), timezone=zone)


def schedule_problem(spec: JobSpec, now: datetime | None = None) -> tuple[str, str] | None:
    """Why the scheduler cannot hold ``spec``, as (field, message), or None.

    The loader's check, so that ``validate`` and the engine agree: the first fire time
    and the one after it, computed by the very triggers the engine builds, and turned
    into the UTC timestamps the job store and the database keep. A time near year 1 or
    9999 that leaves the calendar once in UTC fails here instead of silently later.
    """
    if spec.at is None and spec.start is None and spec.end is None:
        # Counted from now, a cron or an interval (at most a century, as is the jitter)
        # stays far inside the calendar: nothing to compute, at 100k jobs that matters.
        return None
    now = now or datetime.now(UTC)
    try:
        trigger = trigger_for(spec, now)
        first = trigger.get_next_fire_time(None, now)
        if first is not None:
            # The job store orders jobs by these timestamps, a restart reads them back.
            datetime.fromtimestamp(first.timestamp(), UTC)
            after = trigger.get_next_fire_time(first, first)
            if after is not None:
                datetime.fromtimestamp(after.timestamp(), UTC)
    except (OverflowError, ValueError) as exc:
        field = next(
            (name for name in ("at", "start", "end") if getattr(spec, name) is not None),
            "cron" if spec.cron is not None else "interval",
        )
        return (
            field,
            f"the scheduler cannot compute this job's fire times ({exc}): in "
            f"{spec.timezone} they lie outside the years 1 to 9999 in UTC; write a date "
            "and time between 0001-01-02 and 9999-12-30",
        )
    return None


_NO_KWARGS: dict[str, Any] = {}  # shared: a Task's kwargs are only read


def task_of(spec: JobSpec) -> Task:
    """What every run of a declared job executes, built once per declaration."""
    module, attr = split_task(spec.task)
    return Task(
        # Many jobs run one task: its reference, and an empty kwargs, held once for all.
        ref=sys.intern(f"{module}:{attr}"),
        args=tuple(spec.args),
        kwargs=dict(spec.kwargs) if spec.kwargs else _NO_KWARGS,
        timeout=spec.timeout.total_seconds() if spec.timeout else None,
        retries=spec.retries,
        retry_delay=spec.retry_delay.total_seconds(),
        concurrency=spec.concurrency.value,
        max_instances=spec.max_instances,
        executor=getattr(spec, "executor", "local") or "local",
        queue=getattr(spec, "queue", None),
        declared=True,
        tz=ZoneInfo(spec.timezone),
        secrets=secret_values(spec.args, spec.kwargs),
    )


def runtime_task(
    ref: str, args: list[Any], kwargs: dict[str, Any], max_instances: int, tz: tzinfo
) -> Task:
    """What every run of a runtime job executes."""
    return Task(
        ref=ref,
        args=tuple(args),
        kwargs=dict(kwargs),
        concurrency="allow" if max_instances > 1 else "forbid",
        max_instances=max_instances,
        declared=False,
        tz=tz,
        secrets=secret_values(args, kwargs),
    )


def trigger_zone(trigger: BaseTrigger) -> tzinfo:
    """The zone a job's instants are shown in."""
    if isinstance(trigger, DateTrigger):
        return trigger.run_date.tzinfo or UTC
    return getattr(trigger, "timezone", None) or UTC


def describe_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """The ``trigger`` object of the status API."""
    if isinstance(trigger, CrontabTrigger):
        return {"type": "cron", "expression": trigger.expression, "timezone": str(trigger.timezone)}
    if isinstance(trigger, IntervalTrigger):
        return {
            "type": "interval",
            "expression": format_duration(trigger.interval),
            "timezone": str(trigger.timezone),
        }
    if isinstance(trigger, DateTrigger):
        return {
            "type": "date",
            "expression": trigger.run_date.isoformat(),
            "timezone": str(trigger.run_date.tzinfo or UTC),
        }
    if isinstance(trigger, CronTrigger):
        fields = " ".join(str(f) for f in trigger.fields)
        return {"type": "cron", "expression": fields, "timezone": str(trigger.timezone)}
    return {"type": type(trigger).__name__, "expression": str(trigger), "timezone": None}
