"""Per-run log capture: what a task logs through ``logging`` is kept with its run.

``install()`` puts one handler on the root logger (reference-counted: two engines in
one process share it; ``uninstall()`` removes it with the last one). The runner opens a
buffer for each attempt, ``open(run_id, mask)``, and ``close(run_id)`` returns its
records, ``[{"at", "level", "message"}, ...]``. Every record emitted while
``engine.current_run()`` names that run is kept: from the task on the event loop, from
libraries it calls, and from ``def`` tasks (their threads run in a copy of the run's
context). Only the last ``MAX_RECORDS`` (100) of a run are kept, each message cut to
``MAX_MESSAGE`` (2,000) characters after masking, so the run's known secret values are
never cut into a visible half.

Not captured, by design: ``print()`` and anything written to stdout or stderr directly
(they are not records, and redirecting ``sys.stdout`` is process-wide: it would take
every thread's output, not only the run's); records from threads a task starts itself
(they do not inherit the run's context); records that never reach the root logger (a
logger's level drops them first: under ``schedctl serve`` the root level is
``ENGINE_LOG_LEVEL``, embedded it is the host's, Python's default being WARNING; or a
logger with ``propagate = False``).

The capture changes nothing else in the process: records still reach every other
handler, and when no other handler would have seen a record, Python's last-resort
handler still prints it, as it would without us.

Cost, for a run of the runner whose task logs one record through the text log handler:
26k more instructions, 1.16x the run without capture (cachegrind; 1.17x for a bare run
of a context and an asyncio task); in CPU time, best of alternating rounds on this shared
2-core machine, 0.93x-1.3x (``python -m tests.bench execution``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo

from engine.execution.context import current_run

__all__ = [
    "MAX_MESSAGE",
    "MAX_RECORDS",
    "RunLog",
    "as_record",
    "capturing",
    "close",
    "install",
    "iso_time",
    "mask_of",
    "note",
    "open",
    "uninstall",
]

MAX_RECORDS = 100
MAX_MESSAGE = 2_000

Mask = Callable[[str], str]

_formatter = logging.Formatter()


class RunLog:
    """The records of one attempt, newest ``limit`` kept."""

    __slots__ = ("_records", "dropped", "mask", "run_id", "tz")

    def __init__(
        self,
        run_id: str,
        mask: Mask | None = None,
        tz: tzinfo | None = None,
        limit: int = MAX_RECORDS,
    ) -> None:
        self.run_id = run_id
        self.mask = mask
        self.tz = tz  # None: the run's own zone, from its scheduled time
        self.dropped = 0  # records beyond the limit, oldest first
        self._records: deque[tuple[float, str, str]] = deque(maxlen=limit)

    def add(self, record: logging.LogRecord) -> None:
        """Keep ``record`` (called by the handler in the emitting thread)."""
        # A formatter that already ran (the process log's handler) left the message
        message: str | None = getattr(record, "message", None)
        if message is None:
            try:
                message = record.getMessage()
            except Exception:  # bad %-arguments: keep what was meant rather than nothing
                message = f"{record.msg} {record.args!r}"
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)  # cached, as Formatter
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
        if self.mask is not None:
            message = self.mask(message)
        if len(message) > MAX_MESSAGE:
            cut = len(message) - MAX_MESSAGE
            message = f"{message[:MAX_MESSAGE]}… [{cut} more characters]"
        records = self._records
        if len(records) == records.maxlen:
            self.dropped += 1
        records.append((record.created, record.levelname, message))

    def records(self) -> list[dict[str, str]]:
        """The kept records, oldest first, ``at`` in the run's zone with its offset."""
        if not self._records:  # the usual run logs nothing
            return []
        zone = self.tz or UTC
        return [
            {"at": iso_time(created, zone), "level": level, "message": message}
            for created, level, message in list(self._records)
        ]


_second: tuple[tzinfo, int, str, str] | None = None  # zone, second, its date-time, offset


def iso_time(created: float, zone: tzinfo) -> str:
    """``created`` (a POSIX time) in ISO 8601 with microseconds and the zone's offset.

    ``datetime.isoformat()`` costs more than all the rest of capturing a record, so the
    text down to the second is made once per second and zone, the microseconds added.
    """
    global _second
    second = int(created)
    micro = round((created - second) * 1_000_000)  # half to even, as datetime rounds
    if micro == 1_000_000:
        second, micro = second + 1, 0
    cached = _second
    if cached is None or cached[1] != second or cached[0] is not zone:
        text = datetime.fromtimestamp(second, zone).isoformat()  # no fraction at .0
        cached = _second = (zone, second, text[:19], text[19:])
    return f"{cached[2]}.{micro:06d}{cached[3]}"


class _CaptureHandler(logging.Handler):
    """Routes each record emitted during a run to that run's open buffer."""

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: a deque append is thread-safe, and this runs for every record
        # of the process, so it must cost next to nothing outside a run.
        if record.levelno >= logging.WARNING:
            _last_resort(record, self)
        run = current_run()
        if run is None:
            return False
        buffer = _buffers.get(run.run_id)
        if buffer is None:
            return False
        if buffer.tz is None:
            buffer.tz = run.scheduled_at.tzinfo
        try:
            buffer.add(record)
        except Exception:
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        self.handle(record)


def _last_resort(record: logging.LogRecord, ours: logging.Handler) -> None:
    """Do what ``Logger.callHandlers`` would have done had we not been installed: when no
    other handler is on the record's way up, hand it to ``logging.lastResort``."""
    resort = logging.lastResort
    if resort is None or record.levelno < resort.level:
        return
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(handler is not ours for handler in logger.handlers):
            return
        logger = logger.parent if logger.propagate else None
    resort.handle(record)


_buffers: dict[str, RunLog] = {}
_handler = _CaptureHandler()
_installs = 0
_install_lock = threading.Lock()


def install() -> None:
    """Start capturing (idempotent per call: pair every ``install`` with an ``uninstall``)."""
    global _installs
    with _install_lock:
        _installs += 1
        if _installs == 1:
            logging.getLogger().addHandler(_handler)


def uninstall() -> None:
    """Undo one ``install()``; the handler leaves the root logger with the last one."""
    global _installs
    with _install_lock:
        if _installs == 0:
            return
        _installs -= 1
        if _installs == 0:
            logging.getLogger().removeHandler(_handler)


def open(run_id: str, mask: Mask | None = None, tz: tzinfo | None = None) -> RunLog:
    """Open the buffer of one attempt; ``mask`` hides the run's known secret values in
    every message, ``tz`` is the zone of ``at`` (default: the run's scheduled time's)."""
    buffer = _buffers[run_id] = RunLog(run_id, mask, tz, MAX_RECORDS)
    return buffer


def close(run_id: str) -> list[dict[str, str]]:
    """Close the buffer of one attempt and return its records (empty if none was open)."""
    buffer = _buffers.pop(run_id, None)
    return buffer.records() if buffer is not None else []


@contextmanager
def capturing(run_id: str, mask: Mask | None = None, tz: tzinfo | None = None) -> Iterator[RunLog]:
    """``with capturing(run_id) as log:`` open around an attempt, closed however it ends;
    read ``log.records()`` after."""
    buffer = open(run_id, mask, tz)
    try:
        yield buffer
    finally:
        if _buffers.get(run_id) is buffer:
            del _buffers[run_id]


def mask_of(run_id: str | None) -> Mask | None:
    """The mask of an open run, for formatters that print the run's records."""
    if run_id is None:
        return None
    buffer = _buffers.get(run_id)
    return buffer.mask if buffer is not None else None


def note(run_id: str, record: logging.LogRecord) -> bool:
    """Add an engine note to an open run's records; False when the run has ended."""
    buffer = _buffers.get(run_id)
    if buffer is None:
        return False
    buffer.add(record)
    return True


def as_record(record: logging.LogRecord, zone: tzinfo | None) -> dict[str, str]:
    """``record`` as one entry of a run's ``logs``."""
    return {
        "at": iso_time(record.created, zone or UTC),
        "level": record.levelname,
        "message": record.getMessage(),
    }
