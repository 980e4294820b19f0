"""Durations as schedule files write them: ``30s``, ``5m``, ``1h30m``, ``2d``, ``1w`` or seconds."""

from __future__ import annotations

import re
from datetime import timedelta

from engine.errors import DurationError

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_MAX_SECONDS = 100 * 366 * 86400  # a century: beyond it a duration is a typo
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|w|d|h|m|s))+")


def parse_duration(value: object) -> timedelta:
    """Return the duration ``value`` stands for; raise DurationError for anything else.

    Booleans are refused although YAML would let them pass as integers.
    """
    if isinstance(value, timedelta):
        seconds: float = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(value)
    elif isinstance(value, int | float):
        seconds = value
    else:
        text = value.strip().lower().replace(" ", "")
        if text.isdigit():
            seconds = int(text)
        elif text and _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        else:
            raise DurationError(value)
    if not 0 <= seconds <= _MAX_SECONDS:  # also refuses NaN
        raise DurationError(value)
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest schedule-file spelling of ``delta`` (``5400s`` -> ``1h30m``)."""
    total = delta.total_seconds()
    if total != int(total):  # fixed-point, never an exponent: it must parse back
        return f"{total:.6f}".rstrip("0") + "s"
    rest = int(total)
    if rest == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)
