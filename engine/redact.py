"""Secret-looking values are shown as ``"***"``, at any depth."""

from __future__ import annotations

import re
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


def secret_values(kwargs: Mapping[str, Any]) -> frozenset[str]:
    """The values under secret-looking keys, at any depth, as text (for masking)."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or _secret(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, secret)
        elif secret and value is not None and len(str(value)) >= 4:
            found.add(str(value))

    walk(kwargs, False)
    return frozenset(found)


def mask_text(text: str, secrets: frozenset[str]) -> str:
    """``text`` with every known secret value shown as ``***``."""
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return text


_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)(?P<pw>[^\s/@]+)(?=@)")


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text) if "://" in text else text


def redact_deep(value: Any) -> Any:
    """``redact`` plus the password of every URL in every string, at any depth."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: "***" if _secret(k) else redact_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_deep(v) for v in value]
    return value
