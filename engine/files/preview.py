"""When a job spec fires, computed without a scheduler: the engine of ``schedctl next``.

The cron case is the same ``CronExpression`` the live trigger uses, so what ``next``
prints is what the engine does.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from engine.files.cron import CronExpression
from engine.files.spec import JobSpec

__all__ = ["aware", "next_fire_times"]


def aware(value: datetime, tz: tzinfo) -> datetime:
    """A naive datetime is read in ``tz``; an aware one is kept."""
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def next_fire_times(
    spec: JobSpec, after: datetime, count: int, tz: tzinfo | None = None
) -> list[datetime]:
    """The next ``count`` fire times of ``spec`` strictly after ``after``, in its zone.

    An interval job without ``start`` is phased from ``after``, as a job added then would be.
    """
    zone = tz or ZoneInfo(spec.timezone)
    start = aware(spec.start, zone) if spec.start else None
    end = aware(spec.end, zone) if spec.end else None
    times: list[datetime] = []
    if spec.cron is not None:
        base = max(after, start) if start else after
        times = CronExpression.parse(spec.cron).next_times(base, zone, count)
    elif spec.interval is not None:
        origin = start or after
        steps = int((after - origin) / spec.interval) + 1 if origin <= after else 0
        times = [(origin + spec.interval * (steps + i)).astimezone(zone) for i in range(count)]
    elif spec.at is not None:
        when = aware(spec.at, zone)
        times = [when.astimezone(zone)] if when > after else []
    return [t for t in times if end is None or t <= end]
