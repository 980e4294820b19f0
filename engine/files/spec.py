"""The schedule file format (schema version 1) as frozen pydantic models. No I/O.

A ``FileSpec`` holds ``defaults`` and ``jobs``; each ``JobSpec`` is one job with exactly
one trigger: ``cron``, ``interval`` or ``at``. ``essence()`` is the canonical, location-free
form the reconciler compares; ``SCHEDULE_FIELDS`` are the ones that decide when it fires.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    create_model,
    field_serializer,
    model_validator,
)

from engine.errors import FieldError
from engine.files.cron import CronExpression
from engine.files.durations import format_duration, parse_duration

__all__ = [
    "JOB_ID_PATTERN",
    "MIN_INTERVAL",
    "OPTION_FIELDS",
    "SCHEDULE_FIELDS",
    "TRIGGER_FIELDS",
    "Concurrency",
    "Essence",
    "FileSpec",
    "JobDefaults",
    "JobSpec",
    "as_dict",
    "fingerprint",
    "fingerprint_text",
    "kept",
]

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_TASK_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*([.:][A-Za-z_]\w*)$")
TRIGGER_FIELDS = ("cron", "interval", "at")
SCHEDULE_FIELDS = ("cron", "interval", "at", "timezone", "start", "end", "jitter")
# The shortest interval a file may declare: shorter ones only load the event loop.
MIN_INTERVAL = timedelta(seconds=1)


class Concurrency(StrEnum):
    """What happens when a run is due while the previous run still goes."""

    FORBID = "forbid"  # skip the new run, recorded `skipped`
    ALLOW = "allow"  # run beside it, up to max_instances
    REPLACE = "replace"  # cancel the running one, recorded `cancelled`, and start


def _duration(value: object) -> timedelta:
    return parse_duration(value)


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|w|d|h|m|s)\s*)+$|^\d+$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "'30s', '5m', '1h30m', '2d', '1w', or a number of seconds",
}
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        import difflib

        close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else "; use an IANA name such as 'Europe/Berlin'"
        )
        raise ValueError(f"unknown timezone {name!r}{hint}") from None
    return name


def _check_cron(expression: str) -> str:
    CronExpression.parse(expression)
    return expression


def _check_task(path: str) -> str:
    if not _TASK_PATTERN.match(path):
        raise ValueError(
            f"task {path!r} is not a dotted path; write 'package.module:function' "
            "or 'package.module.function'"
        )
    return path


def _check_time(value: Any) -> Any:
    """Times are ISO 8601: a number (or a string of digits) is not read as a Unix time."""
    numeric = isinstance(value, int | float) or (
        isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
    )
    if numeric:
        raise ValueError(
            f"{value!r} is not a date and time; write ISO 8601, e.g. 2027-01-01T09:00:00 "
            "(read in the job's timezone) or 2027-01-01T09:00:00+01:00"
        )
    return value


TimezoneName = Annotated[StrictStr, AfterValidator(_check_timezone)]
Timestamp = Annotated[datetime, BeforeValidator(_check_time)]
CronText = Annotated[StrictStr, AfterValidator(_check_cron)]
TaskPath = Annotated[StrictStr, AfterValidator(_check_task)]


class _Options(BaseModel):
    """Every job field that `defaults` may set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: TimezoneName = "UTC"
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[StrictStr, Any] = Field(default_factory=dict)
    paused: StrictBool = False
    timeout: Duration | None = None
    retries: StrictInt = Field(default=0, ge=0)
    retry_delay: Duration = timedelta(seconds=10)
    concurrency: Concurrency = Concurrency.FORBID
    max_instances: StrictInt = Field(default=1, ge=1)
    misfire_grace: Duration = timedelta(minutes=1)
    coalesce: StrictBool = True
    jitter: Duration = timedelta(0)
    start: Timestamp | None = None
    end: Timestamp | None = None
    description: StrictStr | None = None
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    executor: Literal["local", "celery"] = "local"
    queue: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None


OPTION_FIELDS = tuple(_Options.model_fields)


class JobSpec(_Options):
    """One declared job: a task, exactly one trigger, and its options."""

    task: TaskPath
    cron: CronText | None = None
    interval: Duration | None = None
    at: Timestamp | None = None

    @model_validator(mode="after")
    def _rules(self) -> JobSpec:
        triggers = [name for name in TRIGGER_FIELDS if getattr(self, name) is not None]
        if len(triggers) != 1:
            given = " and ".join(triggers) if triggers else "none"
            raise FieldError(
                triggers[1] if len(triggers) > 1 else None,
                f"a job needs exactly one of cron, interval or at (given: {given}); "
                'for example cron: "0 2 * * *" or interval: 5m',
            )
        if self.interval is not None and self.interval < MIN_INTERVAL:
            raise FieldError(
                "interval",
                f"interval must be at least 1s; a shorter one only heats the machine "
                f"(got {format_duration(self.interval)}); write e.g. 1s, 30s or 5m",
            )
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise FieldError(
                "timeout", "timeout must be greater than zero; write e.g. 10m, or leave it out"
            )
        if self.max_instances != 1 and self.concurrency is not Concurrency.ALLOW:
            raise FieldError(
                "max_instances",
                "max_instances only applies with concurrency: allow; add concurrency: allow "
                "or remove max_instances",
            )
        if self.queue is not None and self.executor != "celery":
            raise FieldError(
                "queue", "queue only applies with executor: celery; add it or remove queue"
            )
        if self.start and self.end:
            zone = ZoneInfo(self.timezone)
            try:
                ordered = _aware(self.start, zone) < _aware(self.end, zone)
            except (OverflowError, ValueError):  # an instant beyond year 1 or 9999 in UTC
                raise FieldError(
                    "end",
                    "start or end lies outside the years 1 to 9999 in UTC; write a date "
                    "and time between 0001-01-02 and 9999-12-30",
                ) from None
            if not ordered:
                raise FieldError("end", "end must be after start")
        _share_parts(self)
        return self

    @property
    def trigger_type(self) -> Literal["cron", "interval", "date"]:
        if self.cron is not None:
            return "cron"
        return "interval" if self.interval is not None else "date"

    @field_serializer("args", "kwargs", "labels")
    def _canonical(self, value: Any) -> Any:
        # Mapping keys in a fixed order: reordering keys in a file changes nothing.
        return _sorted_keys(value)

    def essence(self) -> dict[str, Any]:
        """The canonical, JSON-ready form: what matters, nothing of where it was written."""
        return self.model_dump(mode="json")

    def canonical_json(self) -> str:
        """The essence as JSON text, the same for equal jobs (what the database keeps)."""
        return self.model_dump_json()

    def fingerprint(self) -> str:
        return fingerprint_text(self.canonical_json())


# A spec is frozen, and 100,000 of them are kept: what equal specs hold alike is shared
# between them (the set of fields the file gave; empty args, kwargs and labels; the text
# of a task, a zone, a cron line) rather than held once per job.
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_EMPTY_PARTS: dict[str, Any] = {"args": [], "kwargs": {}, "labels": {}}
_REPEATED_TEXT = ("task", "timezone", "cron")


def _share_parts(spec: JobSpec) -> None:
    given = spec.__pydantic_fields_set__
    key = frozenset(given)
    shared = _FIELDS_SETS.get(key)
    if shared is None and len(_FIELDS_SETS) < 4096:
        shared = _FIELDS_SETS[key] = set(key)
    if shared is not None:
        object.__setattr__(spec, "__pydantic_fields_set__", shared)
    values = spec.__dict__
    for name, empty in _EMPTY_PARTS.items():
        if not values[name]:
            values[name] = empty
    for name in _REPEATED_TEXT:  # many jobs run one task, in one zone, on one cron line
        text = values[name]
        if text is not None:
            values[name] = sys.intern(text)


_new, _set = object.__new__, object.__setattr__


def kept(spec: JobSpec) -> JobSpec:
    """``spec`` as it is kept for as long as its job lives: an equal copy whose fields
    share one key table with every other kept spec (CPython's key-sharing instance
    dicts), about 250 bytes a job where the dict pydantic builds takes 830."""
    copy = _new(JobSpec)
    for name, value in spec.__dict__.items():
        _set(copy, name, value)
    _set(copy, "__pydantic_fields_set__", spec.__pydantic_fields_set__)
    _set(copy, "__pydantic_extra__", spec.__pydantic_extra__)
    _set(copy, "__pydantic_private__", spec.__pydantic_private__)
    return copy


def _share_keys() -> None:
    # CPython lets a class's shared key table take new keys only while the class has made
    # few instances (each one made shrinks the room left), so the fields are put in it
    # now, in the order pydantic fills them, before any spec exists.
    first = _new(JobSpec)
    for name in JobSpec.model_fields:
        _set(first, name, None)


_share_keys()


def _aware(value: datetime, zone: ZoneInfo) -> datetime:
    """A naive window bound is read in the job's zone, as the scheduler reads it."""
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


JobDefaults = create_model(  # type: ignore[call-overload]
    "JobDefaults",
    __config__=ConfigDict(frozen=True, extra="forbid"),
    **{
        name: (field.annotation | None, None)  # type: ignore[operator]
        for name, field in _Options.model_fields.items()
    },
)
JobDefaults.__doc__ = "Fields applied under every job of the file; the job's own values win."


class FileSpec(BaseModel):
    """A whole schedule file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="schedctl schedule file")

    version: Literal[1] = 1
    defaults: JobDefaults | None = None  # type: ignore[valid-type]
    jobs: dict[Annotated[str, Field(pattern=JOB_ID_PATTERN)], JobSpec] = Field(default_factory=dict)


class Essence(Mapping[str, Any]):
    """A job's essence computed from its spec when asked, never kept: at 100k jobs the
    dicts would cost more than the jobs. ``materialize()`` gives the dict in one go."""

    __slots__ = ("spec",)

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def materialize(self) -> dict[str, Any]:
        return self.spec.essence()

    def __getitem__(self, key: str) -> Any:
        return self.materialize()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.materialize())

    def __len__(self) -> int:
        return len(JobSpec.model_fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Essence):
            return self.spec == other.spec
        return isinstance(other, Mapping) and self.materialize() == dict(other)

    __hash__ = None  # type: ignore[assignment]


def as_dict(essence: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of any essence, lazy or not."""
    return essence.materialize() if isinstance(essence, Essence) else dict(essence)


def fingerprint_text(text: str) -> str:
    """A short, stable hash of canonical JSON text."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def fingerprint(essence: Any) -> str:
    """A short, stable hash of JSON-ready data."""
    text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
