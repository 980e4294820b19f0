"""A job's schedule in English words: ``At 09:00, Monday through Friday``, ``Every 30 seconds``.

Cron expressions are described by cron-descriptor (24-hour clock, English), after our own
macro expansion; intervals and one-shot dates in a few words of our own. Anything that
cannot be described (a runtime job's APScheduler cron fields, a type we do not know)
falls back to the expression itself, never to an error: this is display text.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import ExpressionDescriptor, Options

from engine.files.cron import CronExpression
from engine.files.durations import parse_duration

__all__ = ["describe_duration", "describe_schedule"]

_UNITS = (
    ("week", 604800),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)


@functools.lru_cache(maxsize=4096)  # thousands of jobs share a few dozen expressions
def describe_schedule(kind: str, expression: str, timezone: str | None = None) -> str:
    """``kind`` is the status API's ``trigger.type``: cron, interval or date."""
    try:
        if kind == "cron":
            return _cron(expression)
        if kind == "interval":
            return f"Every {describe_duration(parse_duration(expression))}"
        if kind == "date":
            return f"Once at {_date(expression, timezone)}"
    except (ValueError, ArithmeticError, LookupError):  # SpecError is a ValueError
        pass
    return f"{kind} {expression}"


def describe_duration(delta: timedelta) -> str:
    """``1h30m`` -> ``1 hour 30 minutes``; a single unit of one drops the number (``hour``)."""
    seconds = delta.total_seconds()
    if seconds != int(seconds):
        return f"{seconds:g} seconds"
    rest = int(seconds)
    parts = []
    for name, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {name}" + ("s" if count != 1 else ""))
    if len(parts) == 1 and parts[0].startswith("1 "):
        return parts[0][2:]  # "Every hour", not "Every 1 hour"
    return " ".join(parts) or "0 seconds"


def _cron(expression: str) -> str:
    fields = CronExpression.parse(expression).fields
    options = Options(locale_code="en_US", use_24hour_time_format=True)
    try:
        return str(ExpressionDescriptor(fields, options).get_description())
    except Exception:  # a library bug on a valid expression must not break a page
        return f"cron {expression}"


def _date(expression: str, timezone: str | None) -> str:
    when = datetime.fromisoformat(expression)
    if timezone and when.tzinfo is not None:
        when = when.astimezone(ZoneInfo(timezone))
    text = when.strftime("%Y-%m-%d %H:%M")
    if when.second or when.microsecond:
        text = when.strftime("%Y-%m-%d %H:%M:%S")
    zone = timezone or (when.tzname() if when.tzinfo is not None else None)
    return f"{text} ({zone})" if zone else text
