"""Specs and runtime arguments -> APScheduler triggers and runner payloads. Pure data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from engine.files.durations import format_duration
from engine.files.preview import aware
from engine.files.spec import JobSpec
from engine.files.tasks import split_task
from engine.scheduler.triggers import CrontabTrigger

__all__ = ["describe_trigger", "payload", "trigger_for"]


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


def payload(spec: JobSpec) -> dict[str, Any]:
    """What the runner needs for every run, as plain data."""
    module, attr = split_task(spec.task)
    return {
        "task": f"{module}:{attr}",
        "args": list(spec.args),
        "kwargs": dict(spec.kwargs),
        "concurrency": spec.concurrency.value,
        "max_instances": spec.max_instances,
        "options": {
            "timeout": spec.timeout.total_seconds() if spec.timeout else None,
            "retries": spec.retries,
            "retry_delay": spec.retry_delay.total_seconds(),
        },
    }


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
