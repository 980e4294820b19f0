"""Secret-looking values are shown as ``"***"``, at any depth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SECRET_WORDS", "redact"]

SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "auth",
)


def _secret(key: object) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of ``value`` where every mapping value under a secret-looking key is ``"***"``."""
    if isinstance(value, Mapping):
        return {k: "***" if _secret(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
