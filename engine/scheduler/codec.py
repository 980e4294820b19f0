"""Runtime jobs as data: a task reference, a trigger and JSON arguments. Never pickles.

What the state database keeps of a runtime job is a JSON object; decoding it builds
nothing but a trigger of a known kind and plain values, so a crafted row can at worst
name a function that the runner then refuses to call (``engine.execution.runner``).

The first release pickled runtime jobs; ``from_legacy_pickle`` reads such a row once,
with an unpickler that can build only datetimes, zones and the four trigger classes,
and the row is rewritten as JSON.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import sys
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from engine.errors import JobRefused
from engine.scheduler.triggers import CrontabTrigger

__all__ = ["check_json", "decode_runtime", "encode_trigger", "from_legacy_pickle"]

VERSION = 1
_TASK = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
_MAX_INT = 2**63 - 1
_MAX_DEPTH = 64
_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins"}


def check_json(value: Any, name: str, depth: int = 0) -> None:
    """Raise JobRefused unless ``value`` is a JSON value that survives a round trip."""
    if depth > _MAX_DEPTH:
        raise JobRefused(f"argument {name} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise JobRefused(f"argument {name} is a string that is not valid Unicode") from None
        return
    if isinstance(value, int):
        if not -_MAX_INT <= value <= _MAX_INT:
            raise JobRefused(f"argument {name} is an integer outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JobRefused(f"argument {name} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{name}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise JobRefused(f"argument {name} has a key {key!r} that is not a string")
            check_json(item, f"{name}[{key!r}]", depth + 1)
        return
    raise JobRefused(
        f"argument {name} is a {type(value).__name__}, which cannot be saved: runtime job "
        "arguments must be JSON values (strings, numbers, booleans, null, lists, "
        "string-keyed mappings)"
    )


def _zone_name(tz: tzinfo | None) -> str:
    if tz is None or tz is UTC or tz == UTC:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return tz.key
    key = getattr(tz, "zone", None) or getattr(tz, "key", None)  # pytz, dateutil
    if isinstance(key, str):
        ZoneInfo(key)
        return key
    raise JobRefused(f"timezone {tz!r} cannot be saved; use an IANA zone such as 'Europe/Berlin'")


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def encode_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """A trigger of a known kind as JSON data; JobRefused for any other."""
    if isinstance(trigger, CrontabTrigger):
        return {
            "type": "crontab",
            "expression": trigger.expression,
            "timezone": _zone_name(trigger.timezone),
            "start": _when(trigger.start_date),
            "end": _when(trigger.end_date),
            "jitter": trigger.jitter,
        }
    if isinstance(trigger, IntervalTrigger):
        return {
            "type": "interval",
            "seconds": trigger.interval.total_seconds(),
            "timezone": _zone_name(trigger.timezone),
            "start": _when(trigger.start_date),
            "end": _when(trigger.end_date),
            "jitter": trigger.jitter,
        }
    if isinstance(trigger, DateTrigger):
        return {
            "type": "date",
            "run_date": _when(trigger.run_date),
            "timezone": _zone_name(trigger.run_date.tzinfo),
        }
    if isinstance(trigger, CronTrigger):
        return {
            "type": "cron",
            "fields": {f.name: str(f) for f in trigger.fields},
            "timezone": _zone_name(trigger.timezone),
            "start": _when(trigger.start_date),
            "end": _when(trigger.end_date),
            "jitter": trigger.jitter,
        }
    raise JobRefused(
        f"a {type(trigger).__name__} trigger cannot be saved; use 'cron', 'interval' or 'date'"
    )


def _decode_trigger(data: Any) -> BaseTrigger:
    if not isinstance(data, dict):
        raise ValueError("trigger is not an object")
    kind = data.get("type")
    zone = ZoneInfo(_text(data.get("timezone", "UTC"), "timezone"))
    start = _parse_when(data.get("start"))
    end = _parse_when(data.get("end"))
    jitter = data.get("jitter")
    if jitter is not None and not isinstance(jitter, int | float):
        raise ValueError("jitter is not a number")
    if kind == "crontab":
        return CrontabTrigger(_text(data.get("expression"), "expression"), zone, start, end, jitter)
    if kind == "interval":
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError("interval seconds must be a positive number")
        return IntervalTrigger(
            seconds=seconds, start_date=start, end_date=end, timezone=zone, jitter=jitter
        )
    if kind == "date":
        run_date = _parse_when(data.get("run_date"))
        if run_date is None:
            raise ValueError("a date trigger needs run_date")
        return DateTrigger(run_date=run_date, timezone=zone)
    if kind == "cron":
        fields = data.get("fields")
        if not isinstance(fields, dict) or set(fields) - set(_CRON_FIELDS):
            raise ValueError("cron fields are not the eight of APScheduler's CronTrigger")
        return CronTrigger(
            **{k: _text(v, k) for k, v in fields.items()},
            start_date=start,
            end_date=end,
            timezone=zone,
            jitter=jitter,
        )
    raise ValueError(f"unknown trigger type {kind!r}")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 1000:
        raise ValueError(f"{name} is not a short string")
    return value


def _parse_when(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(_text(value, "date"))
    if parsed.tzinfo is None:
        raise ValueError("a saved time has no offset")
    return parsed


def encode_runtime(
    task: str,
    trigger: BaseTrigger,
    args: list[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    check_json(args, "args")
    check_json(kwargs, "kwargs")
    return {
        "version": VERSION,
        "task": task,
        "trigger": encode_trigger(trigger),
        "args": list(args),
        "kwargs": dict(kwargs),
        "options": {
            "misfire_grace_time": int(options.get("misfire_grace_time", 60)),
            "coalesce": bool(options.get("coalesce", True)),
            "max_instances": int(options.get("max_instances", 1)),
            "name": str(options.get("name") or task)[:200],
        },
    }


def decode_runtime(data: Any) -> tuple[str, BaseTrigger, list[Any], dict[str, Any], dict[str, Any]]:
    """(task, trigger, args, kwargs, options) of a saved runtime job; ValueError if bad."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("not a runtime job of a known version")
    task = _text(data.get("task"), "task")
    if not _TASK.match(task) or any(p.startswith("_") for p in re.split(r"[.:]", task)):
        raise ValueError(f"task {task!r} is not a public 'module:function' reference")
    if task.split(".")[0].split(":")[0] in _STDLIB:
        raise ValueError(f"task {task!r} is in the standard library; runtime jobs call your own")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("args must be a list and kwargs an object")
    try:
        check_json(args, "args")
        check_json(kwargs, "kwargs")
    except JobRefused as exc:
        raise ValueError(str(exc)) from None
    raw = data.get("options", {})
    if not isinstance(raw, dict):
        raise ValueError("options is not an object")
    grace, coalesce, instances = (
        raw.get("misfire_grace_time", 60),
        raw.get("coalesce", True),
        raw.get("max_instances", 1),
    )
    if isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= 10**7:
        raise ValueError("misfire_grace_time is not a positive integer")
    if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= 1000:
        raise ValueError("max_instances is not a positive integer")
    options = {
        "misfire_grace_time": grace,
        "coalesce": bool(coalesce),
        "max_instances": instances,
        "name": str(raw.get("name") or task)[:200],
    }
    return task, _decode_trigger(data.get("trigger")), args, kwargs, options


# -- the first release's pickles, read once ---------------------------------------------------

_ALLOWED = {
    ("datetime", "datetime"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("zoneinfo", "ZoneInfo"),
    ("zoneinfo._zoneinfo", "ZoneInfo"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("engine.scheduler.triggers", "CrontabTrigger"),
    ("apscheduler.triggers.interval", "IntervalTrigger"),
    ("apscheduler.triggers.date", "DateTrigger"),
    ("apscheduler.triggers.cron", "CronTrigger"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or module.startswith(
            ("apscheduler.triggers.cron.fields", "apscheduler.triggers.cron.expressions")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a saved job")


def from_legacy_pickle(blob: bytes) -> dict[str, Any]:
    """A v1 pickled runtime job as v2 data (ValueError for anything else)."""
    try:
        state = _SafeUnpickler(io.BytesIO(blob)).load()
    except Exception as exc:
        raise ValueError(f"the saved job does not unpickle safely ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError("the saved job is not a job's state")
    data = state.get("kwargs")
    trigger = state.get("trigger")
    if not isinstance(data, dict) or not isinstance(trigger, BaseTrigger):
        raise ValueError("the saved job has no task data or trigger")
    encoded = encode_runtime(
        str(data.get("task")),
        trigger,
        list(data.get("args") or []),
        dict(data.get("kwargs") or {}),
        {
            "misfire_grace_time": state.get("misfire_grace_time") or 60,
            "coalesce": state.get("coalesce", True),
            "max_instances": state.get("max_instances", 1),
            "name": state.get("name"),
        },
    )
    json.dumps(encoded)
    decode_runtime(encoded)  # what is written back must read back
    return encoded
