"""Specs and runtime arguments -> APScheduler triggers and runner payloads. Pure data."""

from __future__ import annotations

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

__all__ = ["describe_trigger", "runtime_task", "task_of", "trigger_for", "trigger_zone"]


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


def task_of(spec: JobSpec) -> Task:
    """What every run of a declared job executes, built once per declaration."""
    module, attr = split_task(spec.task)
    return Task(
        ref=f"{module}:{attr}",
        args=tuple(spec.args),
        kwargs=dict(spec.kwargs),
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
