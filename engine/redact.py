"""Secrets are never shown: masking for everything the engine prints or serves.

Modelled on Sentry's data scrubber, in three passes:

1. by key: a mapping value under a secret-looking key is ``"***"``, at any depth
   (``redact``);
2. by shape: the password of a URL is ``***`` in any string, wherever it sits
   (``postgresql://user:***@host/db``; ``redact`` and ``mask_text``);
3. by value: the secret values of a job's arguments (``secret_values``) are masked
   wherever they reappear in a text: a run's error, traceback or log (``mask_text``).

``secret_digest`` lets ``schedctl plan`` tell whether a secret changed without either side
showing it. Like the spec fingerprints and the revision, it is an unkeyed hash of content
that includes secrets: it hides them from a reader, not from someone who can guess them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MASK",
    "SECRET_WORDS",
    "holds_secret",
    "is_secret_key",
    "mask_text",
    "mask_url_passwords",
    "redact",
    "redact_job",
    "secret_digest",
    "secret_values",
    "spec_secret_digests",
]

MASK = "***"
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
MIN_SECRET_LENGTH = 4  # shorter values would mask common words and digits everywhere

# scheme://[user]:password@ -- the password runs to the '@' (SQLAlchemy reads URLs the
# same way, so a raw '/' in a database password is masked too).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<password>[^\s@'\"<>]+)(?=@)"
)


def is_secret_key(key: object) -> bool:
    """True when ``key`` looks like it names a secret (case-insensitive substring).

    Remembered per text key: a spec's few dozen field names are asked about for every job
    of every ``/specs`` and ``/jobs`` built."""
    found = _SECRET_KEYS.get(key) if type(key) is str else None
    if found is None:
        lowered = str(key).lower()
        found = any(word in lowered for word in SECRET_WORDS)
        if type(key) is str and len(_SECRET_KEYS) < _KEYS_KEPT:
            _SECRET_KEYS[key] = found
    return found


_SECRET_KEYS: dict[object, bool] = {}
_KEYS_KEPT = 4096  # keys come from files and API calls: the memory stays bounded


def holds_secret(value: Any) -> bool:
    """True when ``redact`` would mask anything in ``value`` (a value under a
    secret-looking key, or a URL password), found without copying anything."""
    kind = type(value)
    if kind is str:
        return "://" in value and _URL_PASSWORD.search(value) is not None
    if kind in _SCALARS:  # most of a spec's fields: answered before any ABC check
        return False
    if isinstance(value, Mapping):
        for key, item in value.items():
            if is_secret_key(key) or holds_secret(item):
                return True
    elif isinstance(value, list | tuple):
        for item in value:
            if holds_secret(item):
                return True
    return False


_SCALARS = frozenset({type(None), bool, int, float})


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "://" not in text:  # the fast path: most strings hold no URL at all
        return text
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets masked: values under secret-looking keys are
    ``"***"`` at any depth, and URL passwords are ``***`` in every string. A value that
    holds no secret (the usual one) is given back as it is: never modify the result."""
    return _masked(value) if holds_secret(value) else value


def _masked(value: Any) -> Any:
    """``redact``'s copy, made once ``value`` is known to hold a secret: one walk, not a
    look for secrets again at every level."""
    if isinstance(value, str):
        return mask_url_passwords(value)
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_key(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


_JOB_TEXT_FIELDS = ("args", "kwargs", "labels", "description")
_RUN_TEXT_FIELDS = ("error", "traceback", "logs")


def redact_job(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` (a Job dict of the status API) with its free-form fields redacted.

    ``kwargs`` is redacted where the Job is built; doing it again is harmless. Labels are
    free-form: a label whose key looks secret is masked, as in ``/specs``.
    """
    out = dict(job)
    for name in _JOB_TEXT_FIELDS:
        if name in out:
            out[name] = redact(out[name])
    if isinstance(out.get("last_run"), Mapping):
        out["last_run"] = _redact_run(out["last_run"])
    if isinstance(out.get("runs"), list):
        out["runs"] = [_redact_run(r) if isinstance(r, Mapping) else r for r in out["runs"]]
    return out


def _redact_run(run: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(run)
    for name in _RUN_TEXT_FIELDS:
        if out.get(name) is not None:
            out[name] = redact(out[name])
    return out


def secret_values(*values: Any) -> frozenset[str]:
    """Every secret held in ``values`` (a job's kwargs, its args): what ``mask_text`` hides.

    The values under secret-looking keys, at any depth (each scalar of a nested one, as a
    string: ``str()`` for numbers), and the password of each URL in any string; only those
    of at least 4 characters, since shorter ones would mask ordinary words.
    """
    found: set[str] = set()
    for value in values:
        _collect(value, False, found)
    kept = [s for s in found if len(s) >= MIN_SECRET_LENGTH]
    return frozenset(kept) if kept else _NO_SECRETS  # one empty set for every job (216 B)


_NO_SECRETS: frozenset[str] = frozenset()


def _collect(value: Any, secret: bool, found: set[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, secret or is_secret_key(key), found)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, secret, found)
    elif isinstance(value, str):
        if secret:
            found.add(value)
        elif "://" in value:
            found.update(m["password"] for m in _URL_PASSWORD.finditer(value))
    elif secret and value is not None and not isinstance(value, bool):
        found.add(str(value))


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` and every URL password masked.

    A secret is also found as ``repr`` would quote it (in a traceback's locals or an
    exception message that shows ``'...'`` with escapes).
    """
    variants: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            variants.add(secret)
            variants.add(repr(secret)[1:-1])
    if variants:
        # Longest first, so a secret that contains another is masked whole.
        pattern = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        text = re.sub(pattern, MASK, text)
    return mask_url_passwords(text)


def secret_digest(value: Any) -> str | None:
    """A short hash of the secrets in ``value`` and where they sit; None when it holds none.

    Two values have the same digest when their secrets are the same at the same places,
    whatever else differs: ``schedctl plan`` compares it to tell whether a secret changed
    while both sides show only ``***``.
    """
    parts: list[list[Any]] = []
    _secret_parts(value, [], False, parts)
    if not parts:
        return None
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _secret_parts(value: Any, path: list[Any], secret: bool, parts: list[list[Any]]) -> None:
    if secret:
        parts.append([path, _text_keys(value)])
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _secret_parts(value[key], [*path, str(key)], is_secret_key(key), parts)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _secret_parts(item, [*path, index], False, parts)
    elif isinstance(value, str) and "://" in value:
        passwords = [m["password"] for m in _URL_PASSWORD.finditer(value)]
        if passwords:
            parts.append([path, passwords])


def _text_keys(value: Any) -> Any:
    """``value`` with every mapping's keys as text: a secret mapping with keys of mixed
    types (``{1: ..., "a": ...}`` in YAML) could not be dumped with its keys sorted."""
    if isinstance(value, Mapping):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text_keys(v) for v in value]
    return value


def spec_secret_digests(spec: Mapping[str, Any]) -> dict[str, str]:
    """``secret_digest`` of each field of a job's spec that holds secrets."""
    digests: dict[str, str] = {}
    if not holds_secret(spec):  # the usual spec: no walk for each field
        return digests
    for name, value in spec.items():
        digest = secret_digest(value)
        if digest is not None:
            digests[str(name)] = digest
    return digests
