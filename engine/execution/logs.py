"""The process log's shape: each line names its run, text or JSON, no probes logged.

- ``RunTags``, a ``logging.Filter`` for handlers: sets ``job``, ``attempt`` and
  ``run_id`` on every record (None outside a run), so any format can print them.
- ``TextFormatter``: ``%(asctime)s %(levelname)s %(name)s: %(message)s``, plus
  `` [job=X attempt=N]`` for a record of a run.
- ``JsonFormatter``: one object a line, ``time`` (ISO 8601 with offset), ``level``,
  ``logger``, ``message``, ``job``, ``attempt``, ``run_id``, and ``traceback`` when the
  record carries an exception.
- ``AccessFilter``, on the ``uvicorn.access`` logger: ``/healthz``, ``/readyz`` and
  ``/metrics`` requests are not logged (a probe every few seconds drowns the log).

Both formatters mask the run's known secret values (the mask given to
``capture.open``) in the lines of that run.

``configure_logging(level, fmt)`` is for ``schedctl serve`` only: it owns the process.
Embedded in someone else's app, nothing here is installed and the engine's records
(loggers ``schedctl.*``) simply propagate to the host's logging configuration.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any

from engine.execution.capture import mask_of
from engine.execution.context import current_run

__all__ = [
    "PROBES",
    "TEXT_FORMAT",
    "AccessFilter",
    "JsonFormatter",
    "RunTags",
    "TextFormatter",
    "configure_logging",
    "parse_format",
    "parse_level",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROBES = ("/healthz", "/readyz", "/metrics")
FORMATS = ("text", "json")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def parse_level(value: str | int) -> int:
    """``ENGINE_LOG_LEVEL``: a level name in any case (``info``, ``WARNING``) or number."""
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    level = logging.getLevelNamesMapping().get(text)
    if level is None:
        raise ValueError(
            f"ENGINE_LOG_LEVEL: unknown level {value!r}; use one of {', '.join(_LEVELS)}"
        )
    return level


def parse_format(value: str) -> str:
    """``ENGINE_LOG_FORMAT``: ``text`` or ``json``."""
    text = value.strip().lower()
    if text not in FORMATS:
        raise ValueError(f"ENGINE_LOG_FORMAT: unknown format {value!r}; use text or json")
    return text


def _tags(record: logging.LogRecord) -> tuple[str | None, int | None, str | None]:
    """The record's run, from ``RunTags`` or else from the emitting context."""
    run_id = getattr(record, "run_id", None)
    if run_id is not None:
        return getattr(record, "job", None), getattr(record, "attempt", None), run_id
    run = current_run()
    if run is None:
        return None, None, None
    return run.job_id, run.attempt, run.run_id


class RunTags(logging.Filter):
    """Tags every record with ``job``, ``attempt`` and ``run_id`` (None outside a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.job, record.attempt, record.run_id = _tags(record)
        return True


class TextFormatter(logging.Formatter):
    """The text line, `` [job=X attempt=N]`` appended to the message of a run's record."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job, attempt, _ = _tags(record)
        return line if job is None else f"{line} [job={job} attempt={attempt}]"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        mask = mask_of(_tags(record)[2])
        return text if mask is None else mask(text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        job, attempt, run_id = _tags(record)
        mask = mask_of(run_id)
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .astimezone()
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message if mask is None else mask(message),
            "job": job,
            "attempt": attempt,
            "run_id": run_id,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args  # an access line: its request, as fields
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [record.exc_text, record.stack_info and self.formatStack(record.stack_info)]
        trace = "\n".join(part for part in parts if part)
        if trace:
            entry["traceback"] = trace if mask is None else mask(trace)
        return json.dumps(entry, ensure_ascii=False, default=repr)


class AccessFilter(logging.Filter):
    """On ``uvicorn.access``: drops the records of probe paths (query strings ignored) and
    shows the status with its phrase (``200 OK``), as uvicorn's own access format does."""

    def __init__(self, probes: Iterable[str] = PROBES) -> None:
        super().__init__()
        self.probes = frozenset(probes)

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' % (client, method, path?query, version, status)
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str)):
            return True
        if args[2].partition("?")[0] in self.probes:
            return False
        status = args[4]
        if isinstance(status, int):
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = ""
            record.msg = '%s - "%s %s HTTP/%s" %s'
            record.args = (*args[:4], f"{status} {phrase}".rstrip())
        return True


class _ServeHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (found again by its type)."""


def configure_logging(
    level: str | int = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Set up the process log for ``schedctl serve``: one handler on the root logger
    (``stream``, default stderr) in ``fmt``, root at ``level``, uvicorn's loggers sent
    through it (pass ``log_config=None`` to uvicorn), and probes out of the access log.

    Raises ``ValueError`` naming the setting for a bad level or format. Calling it again
    replaces the handler it installed, not the others.
    """
    level_no = parse_level(level)
    kind = parse_format(fmt)
    handler = _ServeHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RunTags())
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServeHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessFilter) for f in access.filters):
        access.addFilter(AccessFilter())
    return handler
