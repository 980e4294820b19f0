"""Crontab expressions with Vixie/Debian cron semantics, computed by cronsim.

What a crontab user expects, and APScheduler's ``CronTrigger.from_crontab`` gets wrong:
day-of-week 0 and 7 are Sunday; when day-of-month and day-of-week are both restricted
(neither starts with ``*``) a day matching EITHER fires; ``@daily`` and friends; an
optional leading seconds field; and Debian's daylight-saving rules: a fixed time inside
the spring gap fires once at the end of the gap, a fixed time in the repeated autumn hour
fires once, and a job with ``*`` in its minute or hour fires every real hour.

All arithmetic that decides "strictly after" is done on aware datetimes, so the same
instant is never returned twice whatever the wall clock does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import islice

from cronsim import CronSim, CronSimError
from cronsim.cronsim import Field

from engine.errors import CronError

__all__ = ["MACROS", "CronExpression"]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS_5 = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELDS_6 = ("second", *_FIELDS_5)
_CRONSIM_FIELD = {
    "second": Field.SECOND,
    "minute": Field.MINUTE,
    "hour": Field.HOUR,
    "day-of-month": Field.DAY,
    "month": Field.MONTH,
    "day-of-week": Field.DOW,
}
_RANGES = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT (0 and 7 are Sunday)",
}
_EXAMPLE = "write five fields 'minute hour day-of-month month day-of-week' such as '0 9 * * 1-5'"
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class CronExpression:
    """A validated crontab expression; ``fields`` is the expanded form cronsim reads."""

    expression: str
    fields: str

    @classmethod
    def parse(cls, expression: str) -> CronExpression:
        """Validate ``expression``; raise CronError saying which field is wrong and why."""
        if isinstance(expression, str):
            return _parse(expression)
        return cls._parse(expression)

    @classmethod
    def _parse(cls, expression: str) -> CronExpression:
        if not isinstance(expression, str):
            raise CronError(f"a cron expression must be a string; {_EXAMPLE}")
        text = " ".join(expression.split())
        if text.startswith("@"):
            expanded = MACROS.get(text.lower())
            if expanded is None:
                known = ", ".join(MACROS)
                raise CronError(f"unknown cron macro {text!r}; use one of {known}")
            return cls(expression, expanded)
        parts = text.split(" ")
        if len(parts) not in (5, 6):
            raise CronError(
                f"cron expression {text!r} has {len(parts) if text else 0} fields; {_EXAMPLE}, "
                "optionally preceded by a seconds field"
            )
        names = _FIELDS_5 if len(parts) == 5 else _FIELDS_6
        for name, part in zip(names, parts, strict=True):
            try:
                _CRONSIM_FIELD[name].parse(part.upper())
            except (CronSimError, ValueError, IndexError):
                raise CronError(
                    f"bad {name} field {part!r} in cron expression {text!r}; "
                    f"{name} values are {_RANGES[name]}, with '*', lists 'a,b', "
                    "ranges 'a-b' and steps '*/n'"
                ) from None
        try:
            CronSim(text, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise CronError(f"cron expression {text!r} can never fire ({exc})") from None
        return cls(expression, text)

    @property
    def _fixed_time(self) -> bool:
        """Debian adjusts only jobs at a fixed time of day across DST changes."""
        parts = self.fields.split(" ")
        minute, hour = (parts[0], parts[1]) if len(parts) == 5 else (parts[1], parts[2])
        return not minute.startswith("*") and not hour.startswith("*")

    def iter_after(self, after: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Fire times in ``tz`` strictly after the aware instant ``after``, in order."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        if self._fixed_time and not _is_utc(tz):
            yield from self._iter_wall_clock(after, tz)
        else:
            yield from self._iter_aware(after.astimezone(tz))

    def next_after(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first fire time strictly after ``after``, or None if there is none."""
        return next(self.iter_after(after, tz), None)

    def next_times(self, after: datetime, tz: tzinfo, count: int) -> list[datetime]:
        return list(islice(self.iter_after(after, tz), count))

    def _iter_aware(self, start: datetime) -> Iterator[datetime]:
        # Only the real-time iteration: "0 * * * *" ticks every real hour, DST or not.
        # cronsim's own wall-clock fix-up is bypassed by passing the six-field form.
        fields = self.fields if len(self.fields.split(" ")) == 6 else f"0 {self.fields}"
        try:
            yield from CronSim(fields, start)
        except StopIteration:
            return

    def _iter_wall_clock(self, after: datetime, tz: tzinfo) -> Iterator[datetime]:
        # Walk wall-clock times, then place each in the zone the Debian way: a time in the
        # spring gap moves to the end of the gap, an ambiguous time takes its first
        # occurrence. Start an hour early so a wall time repeated in the autumn is seen.
        fields = self.fields if len(self.fields.split(" ")) == 6 else f"0 {self.fields}"
        after_utc = after.astimezone(UTC)
        local = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
        last: datetime | None = None
        for naive in CronSim(fields, local):
            placed = naive.replace(tzinfo=tz, fold=0)
            while _imaginary(placed):
                naive += timedelta(minutes=1)
                placed = naive.replace(tzinfo=tz, fold=0)
            # Compare instants, not wall clocks: same-zone datetimes compare ignoring fold.
            instant = placed.astimezone(UTC)
            if instant <= after_utc or (last is not None and instant <= last):
                continue
            last = instant
            yield placed


@functools.lru_cache(maxsize=8192)
def _parse(expression: str) -> CronExpression:
    # Expressions repeat across thousands of jobs; each is parsed once (errors are not cached).
    return CronExpression._parse(expression)


def _imaginary(dt: datetime) -> bool:
    return dt != dt.astimezone(UTC).astimezone(dt.tzinfo)


_UTC_NAMES = frozenset(
    {
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
        "GMT",
        "Etc/GMT",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "Etc/GMT0",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/Greenwich",
        "Greenwich",
    }
)


def _is_utc(tz: tzinfo) -> bool:
    """Zones that never change offset need no wall-clock handling (a fast path only)."""
    return tz is UTC or str(tz) in _UTC_NAMES
