"""The JSON Schema of a schedule file (draft 2020-12), for editors and CI. No I/O.

It describes exactly what the loader reads: every file the loader accepts is valid
against it, and it rejects what a schema can express: unknown fields, two triggers or
none, bad job ids, wrong types, values out of range. Durations are strings such as
``30s`` or ``1h30m``, or numbers of seconds; times are ISO 8601 strings, naive ones
included, as an editor sees a YAML timestamp. What it cannot express stays the loader's
(``schedctl validate``): whether the task imports and its signature takes the arguments,
cron fields, timezone names, rules across ``defaults`` and a job (``max_instances`` only
with ``concurrency: allow``, ``queue`` only with ``executor: celery``, ``start`` before
``end``), a sub-second ``interval`` and the century limit of durations written as text.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any

from pydantic.fields import FieldInfo

from engine.files.durations import format_duration
from engine.files.spec import (
    _TASK_PATTERN,
    JOB_ID_PATTERN,
    OPTION_FIELDS,
    TRIGGER_FIELDS,
    JobSpec,
)

__all__ = ["DURATION_PATTERN", "SCHEMA_ID", "TIME_PATTERN", "file_schema"]

SCHEMA_ID = "urn:schedctl:schedule-file:v1"  # an absolute URI that claims no website

# The duration grammar of engine.files.durations, as the loader reads it: case-insensitive
# units, blanks anywhere (they are dropped), or digits alone for seconds.
_NUMBER = r"[0-9](?: *[0-9])*(?: *\. *[0-9](?: *[0-9])*)?"
_PART = _NUMBER + r" *(?:[Mm] *[Ss]|[WwDdHhMmSs])"
DURATION_PATTERN = rf"^\s*(?:{_PART}(?: *{_PART})*|[0-9](?: *[0-9])*)\s*$"
_POSITIVE = r"(?=[^1-9]*[1-9])"  # some digit is not zero: the duration is not 0
_MAX_SECONDS = 100 * 366 * 86400  # the loader's limit: a century

# ISO 8601 as the loader reads it (a YAML 1.1 timestamp or a string pydantic parses):
# a date, or a date and time with optional seconds, fraction and offset; naive allowed.
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
    r"(?:[ \t]*(?:[Zz]|[+-][0-9]{1,2}(?::?[0-9]{2})?))?)?$"
)


def _duration(*, positive: bool = False, minimum: float = 0) -> dict[str, Any]:
    """Text in the duration grammar, or a number of seconds (one schema: ``pattern``
    applies to strings only, ``minimum`` and ``maximum`` to numbers only)."""
    pattern = DURATION_PATTERN.replace("^", "^" + _POSITIVE, 1) if positive else DURATION_PATTERN
    found: dict[str, Any] = {"type": ["string", "number"], "pattern": pattern}
    if minimum:
        found["minimum"] = minimum
    elif positive:
        found["exclusiveMinimum"] = 0
    else:
        found["minimum"] = 0
    found["maximum"] = _MAX_SECONDS
    found["examples"] = ["30s", "5m", "1h30m", "2d", "1w", 30]
    return found


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (null is "not set", as for the loader)."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*kinds, "null"]}


_TIME = {"type": "string", "pattern": TIME_PATTERN, "examples": ["2027-01-01T09:00:00"]}
_TRIGGERS = {
    "cron": {"type": "string", "minLength": 1, "examples": ["0 2 * * *", "@daily"]},
    "interval": _duration(positive=True, minimum=1),
    "at": _TIME,
}

# Each field of a job: its JSON Schema and what it means. Nullable where the loader
# takes null as "not set".
_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "task": (
        {"type": "string", "pattern": _TASK_PATTERN.pattern},
        "The callable to run: 'package.module:function' or 'package.module.function', "
        "under an allowed prefix (setting task_modules, default 'tasks').",
    ),
    "cron": (
        _nullable(_TRIGGERS["cron"]),
        "A crontab expression: five fields (or six, seconds first) or a macro such as "
        "@daily. Exactly one of cron, interval or at.",
    ),
    "interval": (
        _nullable(_TRIGGERS["interval"]),
        "Run every this long: '30s', '5m', '1h30m', '2d', '1w' or seconds; at least 1s. "
        "Exactly one of cron, interval or at.",
    ),
    "at": (
        _nullable(_TRIGGERS["at"]),
        "Run once at this ISO 8601 time; a naive time is in the job's timezone. "
        "Exactly one of cron, interval or at.",
    ),
    "timezone": (
        {"type": "string", "minLength": 1, "examples": ["UTC", "Europe/Berlin"]},
        "IANA timezone for cron and a naive at (default: the setting timezone, UTC).",
    ),
    "args": ({"type": "array"}, "Positional arguments passed to the task."),
    "kwargs": ({"type": "object"}, "Keyword arguments passed to the task."),
    "paused": ({"type": "boolean"}, "Declared but not firing."),
    "timeout": (
        _nullable(_duration(positive=True)),
        "A run still going after this is cancelled and recorded 'timeout'.",
    ),
    "retries": (
        {"type": "integer", "minimum": 0},
        "Further attempts after a failed or timed-out attempt.",
    ),
    "retry_delay": (_duration(), "Wait before the first retry, doubling each time."),
    "concurrency": (
        {"enum": ["forbid", "allow", "replace"]},
        "When the previous run still goes: skip (forbid), run beside it up to "
        "max_instances (allow), or cancel it and start (replace).",
    ),
    "max_instances": (
        {"type": "integer", "minimum": 1},
        "Runs at once; only with concurrency: allow.",
    ),
    "misfire_grace": (
        _duration(),
        "A run that cannot start within this of its time is recorded 'missed'.",
    ),
    "coalesce": ({"type": "boolean"}, "Several missed runs collapse into one."),
    "jitter": (_duration(), "Random delay up to this."),
    "start": (_nullable(_TIME), "The job fires from this ISO 8601 time on."),
    "end": (_nullable(_TIME), "The job fires until this ISO 8601 time."),
    "description": (_nullable({"type": "string"}), "Free text."),
    "labels": (
        {"type": "object", "additionalProperties": {"type": "string"}},
        "Free-form string labels, shown in status.",
    ),
    "executor": (
        {"enum": ["local", "celery"]},
        "Where runs execute: in the engine's process, or handed to Celery workers.",
    ),
    "queue": (
        _nullable({"type": "string", "minLength": 1, "maxLength": 255}),
        "Celery only: the queue the run is sent to (default: Celery's default queue).",
    ),
}


def _default(field: FieldInfo) -> Any:
    """A field's default as a file would write it (``10s``, not ``PT10S``), or None."""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _property(name: str) -> dict[str, Any]:
    schema, description = _FIELDS[name]
    found = {"description": description, **schema}
    field = JobSpec.model_fields[name]
    if not field.is_required():
        default = _default(field)
        if default is not None:
            found["default"] = default
    return found


def file_schema() -> dict[str, Any]:
    """The JSON Schema of a schedule file."""
    missing = set(JobSpec.model_fields) ^ set(_FIELDS)
    if missing:  # a field was added to the model: describe it here too
        raise RuntimeError(f"schema fields out of step with JobSpec: {sorted(missing)}")
    job_fields = {name: _property(name) for name in JobSpec.model_fields}
    # Exactly one trigger is set (a null one is not set, as for the loader).
    trigger_choice = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in TRIGGER_FIELDS
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "schedctl schedule file",
        "description": (
            "A schedctl schedule file (schema version 1): optional defaults and a mapping "
            "of job id to job. An empty file, or one of only comments, declares no jobs. "
            "Check everything with `schedctl validate`."
        ),
        "type": ["object", "null"],
        "properties": {
            "version": {"const": 1, "description": "The schema version: 1.", "default": 1},
            "defaults": _nullable(
                {
                    "type": "object",
                    "description": "Any job field but task and the trigger, applied under "
                    "every job of the file; the job's own values win.",
                    "properties": {name: job_fields[name] for name in OPTION_FIELDS},
                    "additionalProperties": False,
                }
            ),
            "jobs": _nullable(
                {
                    "type": "object",
                    "description": "Job id -> job; ids are unique across all files.",
                    "propertyNames": {"pattern": JOB_ID_PATTERN},
                    "additionalProperties": {"$ref": "#/$defs/job"},
                }
            ),
        },
        "patternProperties": {
            "^x-": {"description": "Ignored: a place for YAML anchors (`&base`)."}
        },
        "additionalProperties": False,
        "$defs": {
            "job": {
                "type": "object",
                "description": "One job: a task and exactly one of cron, interval or at.",
                "properties": job_fields,
                "required": ["task"],
                "additionalProperties": False,
                "oneOf": trigger_choice,
            }
        },
    }
