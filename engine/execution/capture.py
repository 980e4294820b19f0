"""Per-run log capture: what a task logs through ``logging`` during an attempt.

A handler on the root logger files every record emitted while ``current_run()`` is set
under that run, keeping the last 100 (``print()`` output is not captured).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.execution.context import current_run

__all__ = ["close", "install", "open_run", "uninstall"]

KEPT = 100
MESSAGE_CHARS = 2000

_buffers: dict[str, tuple[deque[dict[str, Any]], Callable[[str], str] | None]] = {}
_lock = threading.Lock()
_installed = 0


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        run = current_run()
        if run is None:
            return
        found = _buffers.get(run.run_id)
        if found is None:
            return
        buffer, mask = found
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if mask is not None:
            message = mask(message)
        buffer.append(
            {
                "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname,
                "message": message[:MESSAGE_CHARS],
            }
        )


_handler = _Handler(level=logging.DEBUG)


def install() -> None:
    global _installed
    with _lock:
        _installed += 1
        if _installed == 1:
            logging.getLogger().addHandler(_handler)


def uninstall() -> None:
    global _installed
    with _lock:
        _installed = max(0, _installed - 1)
        if _installed == 0:
            logging.getLogger().removeHandler(_handler)


def open_run(run_id: str, mask: Callable[[str], str] | None = None) -> None:
    _buffers[run_id] = (deque(maxlen=KEPT), mask)


def close(run_id: str) -> list[dict[str, Any]]:
    found = _buffers.pop(run_id, None)
    return list(found[0]) if found else []


def add(run_id: str, level: str, message: str) -> None:
    """An engine note on the run's record (e.g. it blocked the event loop)."""
    found = _buffers.get(run_id)
    if found is not None:
        found[0].append({"at": datetime.now(UTC).isoformat(), "level": level, "message": message})
