"""APScheduler 3 triggers built from specs: our crontab trigger, interval and date.

``CrontabTrigger`` replaces ``CronTrigger.from_crontab`` (Monday-based day-of-week, ANDed
day fields, wall-clock DST arithmetic). It pickles as plain data: the expression, the
zone name, the window and the jitter.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from engine.files.cron import CronExpression

__all__ = ["CrontabTrigger"]

_ONE_MICROSECOND = timedelta(microseconds=1)


def _zone(timezone: str | tzinfo) -> ZoneInfo:
    """Only IANA zones: they pickle by name and carry their DST rules."""
    if isinstance(timezone, ZoneInfo):
        return timezone
    if timezone is UTC:
        return ZoneInfo("UTC")
    if isinstance(timezone, str):
        return ZoneInfo(timezone)
    raise ValueError(
        f"timezone must be an IANA zone name such as 'Europe/Berlin', not {timezone!r}"
    )


class CrontabTrigger(BaseTrigger):
    """Fires on a crontab expression with Debian cron semantics, in one IANA zone."""

    __slots__ = ("_cron", "_memo", "end_date", "expression", "jitter", "start_date", "timezone")

    def __init__(
        self,
        expression: str,
        timezone: str | tzinfo = "UTC",
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        jitter: float | None = None,
    ) -> None:
        self.expression = expression
        self.timezone = _zone(timezone)
        self.start_date = start_date
        self.end_date = end_date
        self.jitter = jitter or None
        self._cron = CronExpression.parse(expression)
        # The last answer and the iterator that gave it: a job asks for the time after the
        # one it just fired at, twice per fire (APScheduler's run times, then its next run
        # time), so both asks are answered without building a new cron iterator.
        self._memo: tuple[datetime, datetime | None, Iterator[datetime] | None] | None = None

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Like APScheduler's own triggers: after a previous fire, the next one strictly
        # after it (so runs missed while down come back for misfire handling); otherwise
        # the first one at or after now.
        # Arithmetic in UTC: subtracting from a datetime in its zone would drop `fold`.
        if previous_fire_time is not None:
            after = previous_fire_time.astimezone(UTC)
        else:
            after = now.astimezone(UTC) - _ONE_MICROSECOND
        if self.start_date is not None and after < self.start_date:
            after = self.start_date.astimezone(UTC) - _ONE_MICROSECOND
        next_time = self._next_after(after)
        if next_time is None or (self.end_date is not None and next_time > self.end_date):
            return None
        return self._apply_jitter(next_time, self.jitter, now)

    def _next_after(self, after: datetime) -> datetime | None:
        """``self._cron.next_after(after, zone)``, remembered; ``after`` is in UTC."""
        memo = self._memo  # one read: a reader thread may ask at the same time
        if memo is not None:
            asked, answer, times = memo
            if after == asked:
                return answer
            if answer is not None and times is not None and after == answer:
                try:
                    following = next(times, None)
                except ValueError:  # the iterator is in use in another thread
                    following = self._cron.next_after(after, self.timezone)
                    self._memo = (after, following, None)
                    return following
                self._memo = (after, following, times)
                return following
        times = self._cron.iter_after(after, self.timezone)
        try:
            answer = next(times, None)
        except ValueError:  # pragma: no cover - a new iterator is ours alone
            answer = self._cron.next_after(after, self.timezone)
        self._memo = (after, answer, times)
        return answer

    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": 1,
            "expression": self.expression,
            "timezone": str(self.timezone),
            "start_date": self.start_date,
            "end_date": self.end_date,
            "jitter": self.jitter,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["expression"],
            state["timezone"],
            state["start_date"],
            state["end_date"],
            state["jitter"],
        )

    def __str__(self) -> str:
        return f"cron[{self.expression!r}, {self.timezone}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.expression!r}, timezone={str(self.timezone)!r})>"
