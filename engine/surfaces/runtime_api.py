"""The async runtime API of ``app.state.scheduler``, as in the original design.

Every method runs on the event loop that owns the scheduler, so it may be awaited from
any request handler. ``add_*`` refuse a function that cannot be found by reference or
arguments that cannot be saved (``JobRefused``), at once, never later at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.engine import Engine
from engine.errors import JobRefused
from engine.scheduler.triggers import CrontabTrigger

__all__ = ["Scheduler"]

log = logging.getLogger("schedctl.runtime")


class Scheduler:
    """``app.state.scheduler``: add, remove, pause, resume and run jobs at runtime."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def _facade(self) -> Any:
        return self.engine.facade

    async def add_job(
        self, func: Callable[..., Any], job_id: str | None = None, **kwargs: Any
    ) -> str:
        """Any APScheduler ``add_job`` arguments: ``trigger`` ("cron", "interval", "date"
        or a trigger object) with its fields, ``args``, ``kwargs``, ``misfire_grace_time``..."""
        trigger = kwargs.pop("trigger", "date")
        args = kwargs.pop("args", None)
        call_kwargs = kwargs.pop("kwargs", None)
        job_id = job_id if job_id is not None else kwargs.pop("id", None)
        kwargs.pop("id", None)
        if isinstance(trigger, str):  # naive times and cron fields in the engine's zone
            kwargs.setdefault("timezone", self.engine.settings.timezone)
        return self._add(func, job_id, trigger, args, call_kwargs, **kwargs)

    async def add_cron_job(
        self,
        func: Callable[..., Any],
        job_id: str | None = None,
        minute: str = "0",
        hour: str = "*",
        day: str = "*",
        month: str = "*",
        day_of_week: str = "*",
        second: str = "0",
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Crontab semantics (Debian), as in schedule files: day_of_week 0 and 7 are Sunday."""
        expression = " ".join(str(f) for f in (second, minute, hour, day, month, day_of_week))
        trigger = CrontabTrigger(expression, self.engine.settings.timezone)
        return self._add(func, job_id, trigger, args, kwargs)

    async def add_interval_job(
        self,
        func: Callable[..., Any],
        job_id: str | None = None,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        if (
            max(seconds, minutes, hours, days, weeks) <= 0
            or min(seconds, minutes, hours, days, weeks) < 0
        ):
            raise JobRefused("an interval job needs at least one of seconds .. weeks above zero")
        return self._add(
            func,
            job_id,
            "interval",
            args,
            kwargs,
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days=days,
            weeks=weeks,
        )

    async def add_date_job(
        self,
        func: Callable[..., Any],
        job_id: str | None = None,
        run_date: datetime | str | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        return self._add(
            func,
            job_id,
            "date",
            args,
            kwargs,
            run_date=run_date or datetime.now(UTC),
            timezone=self.engine.settings.timezone,  # a naive run_date is read in it
        )

    def _add(
        self,
        func: Callable[..., Any],
        job_id: str | None,
        trigger: Any,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        **options: Any,
    ) -> str:
        job_id = self._facade.add_runtime(func, job_id, trigger, args, kwargs, **options)
        log.info("Runtime job %r added.", job_id)
        return str(job_id)

    async def remove_job(self, job_id: str) -> bool:
        return bool(self._facade.remove_runtime(job_id))

    async def pause_job(self, job_id: str) -> bool:
        return bool(self._facade.pause(job_id))

    async def resume_job(self, job_id: str) -> bool:
        return bool(self._facade.resume(job_id))

    async def run_job(self, job_id: str) -> bool:
        return bool(self._facade.run_now(job_id))

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.engine.job(job_id)

    async def get_jobs(self) -> list[dict[str, Any]]:
        return self.engine.jobs()
