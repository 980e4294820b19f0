"""The async runtime API of ``app.state.scheduler``, as in the original design.

Every method works on every replica: on the leader it changes the live scheduler; on a
standby it hands the change to the leader through the database and returns once the
leader has applied it (``NotLeader`` if none did within 5 s; nothing changes then).
``add_*`` refuse, at once, a function that cannot be found by reference, arguments that
are not JSON values, and an id in use (unless ``replace_existing=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.core.commands import hand_to_leader
from engine.core.engine import Engine
from engine.errors import JobRefused
from engine.scheduler.runtime import prepare
from engine.scheduler.triggers import CrontabTrigger

__all__ = ["Scheduler"]

log = logging.getLogger("schedctl.runtime")


class Scheduler:
    """``app.state.scheduler``: add, remove, pause, resume and run jobs at runtime."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        replace = bool(kwargs.pop("replace_existing", False))
        if isinstance(trigger, str):  # naive times and cron fields in the engine's zone
            kwargs.setdefault("timezone", self.engine.settings.timezone)
            if trigger == "date":
                kwargs.setdefault("run_date", datetime.now(UTC))
        return await self._add(func, job_id, trigger, args, call_kwargs, replace, **kwargs)

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
        replace_existing: bool = False,
    ) -> str:
        """Crontab semantics (Debian), as in schedule files: day_of_week 0 and 7 are Sunday."""
        expression = " ".join(str(f) for f in (second, minute, hour, day, month, day_of_week))
        try:
            trigger = CrontabTrigger(expression, self.engine.settings.timezone)
        except ValueError as exc:
            raise JobRefused(str(exc)) from None
        return await self._add(func, job_id, trigger, args, kwargs, replace_existing)

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
        replace_existing: bool = False,
    ) -> str:
        if (
            max(seconds, minutes, hours, days, weeks) <= 0
            or min(seconds, minutes, hours, days, weeks) < 0
        ):
            raise JobRefused("an interval job needs at least one of seconds .. weeks above zero")
        return await self._add(
            func,
            job_id,
            "interval",
            args,
            kwargs,
            replace_existing,
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days=days,
            weeks=weeks,
            timezone=self.engine.settings.timezone,
        )

    async def add_date_job(
        self,
        func: Callable[..., Any],
        job_id: str | None = None,
        run_date: datetime | str | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        replace_existing: bool = False,
    ) -> str:
        return await self._add(
            func,
            job_id,
            "date",
            args,
            kwargs,
            replace_existing,
            run_date=run_date or datetime.now(UTC),
            timezone=self.engine.settings.timezone,  # a naive run_date is read in it
        )

    async def _add(
        self,
        func: Callable[..., Any],
        job_id: str | None,
        trigger: Any,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        replace_existing: bool,
        **options: Any,
    ) -> str:
        job_id, data, next_run = prepare(func, job_id, trigger, args, kwargs, **options)
        engine = self.engine
        if engine.leading:
            job_id = engine.facade_runtime().add_data(job_id, data, replace_existing, next_run)
            engine.event("runtime", job=job_id, action="add")
        else:
            payload = {"job_id": job_id, "data": data, "replace_existing": replace_existing}
            job_id = str(await hand_to_leader(engine, "add", payload))
        log.info("Runtime job %r added.", job_id)
        return job_id

    async def _change(self, op: str, job_id: str) -> bool:
        engine = self.engine
        if not engine.leading:
            return bool(await hand_to_leader(engine, op, {"job_id": job_id}))
        ops = engine.facade_runtime()
        method = {
            "remove": ops.remove,
            "pause": ops.pause,
            "resume": ops.resume,
            "run": ops.run_now,
        }
        done = bool(method[op](job_id))
        if done:
            engine.event("runtime", job=job_id, action=op)
        return done

    async def remove_job(self, job_id: str) -> bool:
        return await self._change("remove", job_id)

    async def pause_job(self, job_id: str) -> bool:
        return await self._change("pause", job_id)

    async def resume_job(self, job_id: str) -> bool:
        return await self._change("resume", job_id)

    async def run_job(self, job_id: str) -> bool:
        return await self._change("run", job_id)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.engine.job(job_id)

    async def get_jobs(self) -> list[dict[str, Any]]:
        return await self.engine.jobs_async()
