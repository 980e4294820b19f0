"""JSON that never fails: what the status API and the read models send.

A value JSON cannot hold (NaN, a set, bytes, a lone surrogate, a 5,000-digit integer, a
``__repr__`` that raises, nesting deeper than 64) is shown as its ``repr``, never a 500.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

__all__ = ["dumps"]


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON; a value JSON cannot hold is its ``repr``."""
    try:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_shown
        )
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # NaN, a bad key, a lone surrogate ...
        text = json.dumps(
            _jsonable(content, 0), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 1000
_REPR.maxlevel = 8
_MAX_DEPTH = 64


def _shown(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return _REPR.repr(value)
    except Exception:  # a __repr__ that raises, an int too long to print
        return f"<{type(value).__name__} that cannot be shown>"


def _jsonable(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return _shown(value)
    if isinstance(value, str):
        return value if _encodable(value) else _shown(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() < 4000 else _shown(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _shown(value)
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) and _encodable(k) else _shown(k)): _jsonable(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    return _shown(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
