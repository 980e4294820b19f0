"""The runtime API's operations on the live scheduler: add, remove, pause, resume, run now.

A runtime job is data: its function's reference, its trigger and JSON arguments
(``codec``). Anything that cannot be saved that way is refused at once (``JobRefused``),
never later at start; so is an id already in use, unless ``replace_existing=True``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import obj_to_ref, ref_to_obj

from engine.errors import JobRefused, TaskError
from engine.files.tasks import resolve_task
from engine.scheduler.catalog import Entry, build_job
from engine.scheduler.codec import decode_runtime, encode_runtime
from engine.scheduler.jobs import runtime_task, trigger_zone

if TYPE_CHECKING:
    from engine.scheduler.facade import SchedulerFacade

__all__ = ["RuntimeOps", "prepare", "reference"]

log = logging.getLogger("schedctl.runtime")
DEFAULT_GRACE = 60
MIN_INTERVAL = timedelta(seconds=0.1)  # below this a job would only heat the machine
_JOB_OPTIONS = {"name", "misfire_grace_time", "coalesce", "max_instances", "next_run_time"}
_IGNORED = {"jobstore", "executor"}
_TRIGGERS: dict[str, type[BaseTrigger]] = {
    "cron": CronTrigger,
    "interval": IntervalTrigger,
    "date": DateTrigger,
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RuntimeOps:
    def __init__(self, facade: SchedulerFacade) -> None:
        self.facade = facade

    def add(
        self,
        func: Callable[..., Any] | str,
        job_id: str | None,
        trigger: BaseTrigger | str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        replace_existing: bool = False,
        **options: Any,
    ) -> str:
        job_id, data, next_run = prepare(func, job_id, trigger, args, kwargs, **options)
        return self.add_data(job_id, data, replace_existing, next_run)

    def add_data(
        self,
        job_id: str,
        data: dict[str, Any],
        replace_existing: bool = False,
        next_run: datetime | None = None,
    ) -> str:
        """Add a runtime job made of saved data (from ``prepare``, here or on a standby)."""
        existing = self.facade.catalog.get(job_id)
        if existing is not None:
            if existing.source == "declared":
                raise JobRefused(
                    f"job id {job_id!r} is declared in {existing.file}:{existing.line}; "
                    "declared jobs change in the files; pick another id for a runtime job"
                )
            if not replace_existing:
                raise JobRefused(
                    f"job id {job_id!r} exists already; pass replace_existing=True to replace it"
                )
        return self._put(job_id, data, next_run if next_run is not None else ..., paused=False)

    def _put(self, job_id: str, data: dict[str, Any], next_run: Any, paused: bool) -> str:
        """Add or replace the runtime job ``job_id`` made of ``data``."""
        facade = self.facade
        task, trigger, args, kwargs, options = decode_runtime(data)
        now = datetime.now(UTC)
        if next_run is ...:
            next_run = trigger.get_next_fire_time(None, now)
        if paused:
            next_run = None
        job = build_job(facade.scheduler, job_id, trigger, next_run, **options)
        tz = trigger_zone(trigger)
        entry = Entry(
            job_id,
            "runtime",
            runtime_paused=paused,
            task=runtime_task(task, args, kwargs, options["max_instances"], tz),
            runtime=data,
            tz=tz,
        )
        if facade.store.lookup_job(job_id) is not None:
            facade.store.remove_job(job_id)
        facade.catalog[job_id] = entry
        facade.calls += 1
        facade.store.add_job(job)
        facade.mark(job_id)
        if facade.scheduler.running:
            facade.scheduler.wakeup()
        return job_id

    def remove(self, job_id: str) -> bool:
        facade = self.facade
        entry = facade.catalog.get(job_id)
        if entry is None:
            return False
        if entry.source == "declared":
            log.warning(
                "Refused to remove job %r at runtime: it is declared in %s:%s; remove it from "
                "the files instead.",
                job_id,
                entry.file,
                entry.line,
            )
            return False
        del facade.catalog[job_id]
        if facade.store.lookup_job(job_id) is not None:
            facade._call(facade.store.remove_job, job_id)
        facade.mark(job_id)
        return True

    def pause(self, job_id: str) -> bool:
        facade = self.facade
        entry = facade.catalog.get(job_id)
        if entry is None:
            return False
        entry.runtime_paused = True
        job = facade.store.lookup_job(job_id)
        if job is not None and job.next_run_time is not None:
            job._modify(next_run_time=None)
            facade._call(facade.store.update_job, job)
        facade.mark(job_id)
        return True

    def resume(self, job_id: str) -> bool:
        facade = self.facade
        entry = facade.catalog.get(job_id)
        if entry is None:
            return False
        if entry.spec is not None and entry.spec.paused:
            log.warning(
                "Refused to resume job %r at runtime: it is paused in %s:%s; set paused: false "
                "there instead.",
                job_id,
                entry.file,
                entry.line,
            )
            return False
        entry.runtime_paused = False
        job = facade.store.lookup_job(job_id)
        if job is not None and job.next_run_time is None:
            next_run = job.trigger.get_next_fire_time(None, datetime.now(UTC))
            if next_run is None:
                facade._call(facade.store.remove_job, job_id)  # a runtime job leaves the catalog
            else:
                job._modify(next_run_time=next_run)
                facade._call(facade.store.update_job, job)
            if facade.scheduler.running:
                facade.scheduler.wakeup()
        facade.mark(job_id)
        return True

    def run_now(self, job_id: str) -> bool:
        """Start a run now; the schedule stays as it was."""
        entry = self.facade.catalog.get(job_id)
        if entry is None or entry.task is None:
            return False
        self.facade.dispatcher.run_now(job_id, entry.task)
        return True


def prepare(
    func: Callable[..., Any] | str,
    job_id: str | None,
    trigger: BaseTrigger | str,
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> tuple[str, dict[str, Any], datetime | None]:
    """(id, saved data, next run time or None) of a runtime job, or JobRefused at once."""
    task = func if isinstance(func, str) else reference(func)
    job_options = {k: v for k, v in options.items() if k in _JOB_OPTIONS}
    trigger_args = {k: v for k, v in options.items() if k not in _JOB_OPTIONS | _IGNORED}
    if isinstance(trigger, str):
        kind = _TRIGGERS.get(trigger)
        if kind is None:
            raise JobRefused(f"unknown trigger {trigger!r}; use 'cron', 'interval' or 'date'")
        try:
            trigger = kind(**trigger_args)
        except (TypeError, ValueError, LookupError) as exc:
            raise JobRefused(f"cannot build the {trigger!r} trigger: {exc}") from None
    elif trigger_args:
        raise JobRefused(f"unexpected arguments {sorted(trigger_args)}")
    if isinstance(trigger, IntervalTrigger) and trigger.interval < MIN_INTERVAL:
        raise JobRefused(
            f"an interval of {trigger.interval.total_seconds():g}s is below the minimum "
            f"of {MIN_INTERVAL.total_seconds():g}s"
        )
    for name in ("misfire_grace_time", "max_instances"):
        value = job_options.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise JobRefused(f"{name} must be a positive integer, not {value!r}")
    data = encode_runtime(
        task,
        trigger,
        list(args or ()),
        dict(kwargs or {}),
        {
            "misfire_grace_time": job_options.get("misfire_grace_time") or DEFAULT_GRACE,
            "coalesce": job_options.get("coalesce", True),
            "max_instances": job_options.get("max_instances", 1),
            "name": job_options.get("name") or task,
        },
    )
    if job_id is None:
        job_id = uuid.uuid4().hex
    elif not isinstance(job_id, str) or not _ID.match(job_id):
        raise JobRefused(
            f"job id {job_id!r} must be 1 to 128 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit"
        )
    next_run = job_options.get("next_run_time")
    if next_run is not None and not isinstance(next_run, datetime):
        raise JobRefused("next_run_time must be a datetime")
    return job_id, data, next_run


def reference(func: Callable[..., Any]) -> str:
    """``module:qualname`` of ``func``, or JobRefused if it cannot be found by name."""
    try:
        ref = obj_to_ref(func)
        found = ref_to_obj(ref)
    except Exception:
        found, ref = None, ""
    if found is not func and getattr(found, "__func__", None) is not func:
        name = getattr(func, "__qualname__", repr(func))
        raise JobRefused(
            f"cannot schedule {name}: the function must be importable by reference "
            "(a module-level function, not a lambda, a nested function or a bound method "
            "of a local object), so the job can be saved and run after a restart"
        )
    module = ref.partition(":")[0]
    if module.split(".")[0] in _stdlib() or type(func).__name__ == "builtin_function_or_method":
        raise JobRefused(
            f"cannot schedule {ref}: runtime jobs call your own functions, not the standard "
            "library's or builtins"
        )
    try:  # refused now what the runner would refuse at every run
        resolve_task(ref, None)
    except TaskError as exc:
        raise JobRefused(f"cannot schedule {ref}: {exc}") from None
    return ref


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"builtins"}
