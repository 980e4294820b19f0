"""Redaction (contract section 5): secrets by key, URL passwords anywhere, and known
secret values wherever they reappear in a run's text."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.redact import (
    SECRET_WORDS,
    holds_secret,
    mask_text,
    mask_url_passwords,
    redact,
    redact_job,
    secret_digest,
    secret_values,
    spec_secret_digests,
)

# -- URL passwords --------------------------------------------------------------------------

URLS = [
    ("postgresql://user:hunter2@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg://app:p%40ss@db:5432/prod", "postgresql+psycopg://app:***@db:5432/prod"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("amqp://guest:guest@rabbit//", "amqp://guest:***@rabbit//"),
    ("https://bot:tok-123@api.example.com/x?y=1", "https://bot:***@api.example.com/x?y=1"),
    # a raw '/' in a database password: SQLAlchemy reads it so, and so do we
    ("mysql://u:ab/cd+ef=@h/db", "mysql://u:***@h/db"),
    (
        "connect to postgresql://a:one@h1/x failed, then postgresql://b:two@h2/y",
        "connect to postgresql://a:***@h1/x failed, then postgresql://b:***@h2/y",
    ),
    ("error: 'postgresql://u:pw123@h/db' refused", "error: 'postgresql://u:***@h/db' refused"),
    # nothing to mask
    ("https://example.com/path", "https://example.com/path"),
    ("https://user@example.com/", "https://user@example.com/"),
    ("https://example.com:8443/a", "https://example.com:8443/a"),
    ("mail ops@example.com at 09:00", "mail ops@example.com at 09:00"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "masked"), URLS)
def test_the_password_of_a_url_is_masked_in_any_text(text: str, masked: str) -> None:
    assert mask_url_passwords(text) == masked


# -- redact: keys and URL passwords, at any depth -----------------------------------------

SECRET_KEYS = [
    "password",
    "PASSWORD",
    "db_passwd",
    "DB_PWD",
    "client_secret",
    "token",
    "refreshToken",
    "api_key",
    "ApiKey",
    "private_key",
    "credentials",
    "Authorization",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_value_under_a_secret_looking_key_is_masked(key: str) -> None:
    assert redact({key: "value", "user": "bot"}) == {key: "***", "user": "bot"}
    assert redact({"outer": [{"inner": {key: {"nested": 1}}}]}) == {
        "outer": [{"inner": {key: "***"}}]
    }


def test_a_url_password_is_masked_in_args_non_secret_keys_and_nested_strings() -> None:
    url = "postgresql://app:hunter2@db/prod"
    shown = "postgresql://app:***@db/prod"
    value = {
        "dsn": url,
        "targets": [url, {"where": f"see {url}"}],
        "args": (url, 3, None, True),
    }
    assert redact(value) == {
        "dsn": shown,
        "targets": [shown, {"where": f"see {shown}"}],
        "args": [shown, 3, None, True],
    }
    assert redact([url]) == [shown]
    assert redact(url) == shown
    assert "hunter2" not in repr(redact(value))


def test_redact_is_idempotent() -> None:
    value = {"password": "x", "dsn": "postgresql://u:pw12@h/d", "list": ["redis://:abcd@h"]}
    once = redact(value)
    assert redact(once) == once


def test_redact_job_masks_args_labels_description_and_run_texts() -> None:
    url = "postgresql://app:hunter2@db/prod"
    job: dict[str, Any] = {
        "id": "a",
        "args": [url],
        "kwargs": {"dsn": url},
        "labels": {"team": "data", "auth_token": "t-1"},
        "description": f"copies {url}",
        "last_run": {"status": "failed", "error": f"cannot connect to {url}"},
        "runs": [{"status": "failed", "error": url, "traceback": url, "logs": None}],
    }
    shown = redact_job(job)
    assert "hunter2" not in repr(shown)
    assert shown["labels"] == {"team": "data", "auth_token": "***"}
    assert shown["last_run"]["error"] == "cannot connect to postgresql://app:***@db/prod"
    assert job["args"] == [url], "the input is not changed"


# -- known secret values in texts ---------------------------------------------------------


def test_secret_values_are_the_values_under_secret_keys_and_url_passwords() -> None:
    kwargs = {
        "password": "hunter2",
        "pin_token": 123456,
        "creds": {"user": "u", "pass": "long-enough"},
        "credentials": {"user": "svc-user", "key": ["k-abcdef", 42424242]},
        "dsn": "postgresql://app:db-pass@h/d",
        "note": "not a secret",
        "api_key": "abc",  # too short to mask safely everywhere
        "auth": None,
        "secret_flag": True,
    }
    assert secret_values(kwargs) == {
        "hunter2",
        "123456",
        "svc-user",
        "k-abcdef",
        "42424242",
        "db-pass",
    }
    assert secret_values(["redis://:cache-pw@h"], {}) == {"cache-pw"}


MASKED_TEXTS = [
    ("login failed for password hunter2", "login failed for password ***"),
    ("ValueError: bad token 'hunter2'", "ValueError: bad token '***'"),
    ("hunter2hunter2", "******"),
    ("pin 123456 rejected", "pin *** rejected"),
    ("dsn postgresql://app:other@h/d", "dsn postgresql://app:***@h/d"),
    ("nothing secret here", "nothing secret here"),
]


@pytest.mark.parametrize(("text", "masked"), MASKED_TEXTS)
def test_known_secrets_are_masked_wherever_they_reappear(text: str, masked: str) -> None:
    secrets = secret_values({"password": "hunter2", "pin_secret": 123456})
    assert mask_text(text, secrets) == masked


def test_a_secret_is_masked_also_as_repr_quotes_it_and_the_longest_first() -> None:
    secrets = frozenset({"it's\nme", "abcd", "abcdefgh"})
    text = 'KeyError: "it\'s\\nme" and abcdefgh'
    assert mask_text(text, secrets) == 'KeyError: "***" and ***'


def test_short_values_are_not_masked_in_texts() -> None:
    assert mask_text("a b c", {"a", "b"}) == "a b c"


# -- digests for plan ---------------------------------------------------------------------


def test_secret_digest_changes_with_a_secret_only() -> None:
    base = {"user": "bot", "password": "one", "dsn": "postgresql://a:pw-1@h/d"}
    assert secret_digest(base) == secret_digest({**base, "user": "other"})
    assert secret_digest(base) == secret_digest({**base, "dsn": "postgresql://a:pw-1@h2/d"})
    assert secret_digest(base) != secret_digest({**base, "password": "two"})
    assert secret_digest(base) != secret_digest({**base, "dsn": "postgresql://a:pw-2@h/d"})
    assert secret_digest({"user": "bot"}) is None
    assert secret_digest(["no", "secrets"]) is None


def test_secret_digest_is_short_hex_and_does_not_contain_the_secret() -> None:
    digest = secret_digest({"token": "hunter2"})
    assert digest is not None and len(digest) == 16
    int(digest, 16)


def test_spec_secret_digests_names_only_the_fields_holding_secrets() -> None:
    spec = {
        "task": "tasks.x:f",
        "cron": "0 * * * *",
        "args": ["postgresql://u:pw12@h/d"],
        "kwargs": {"token": "t"},
        "labels": {"team": "a"},
    }
    assert set(spec_secret_digests(spec)) == {"args", "kwargs"}


# -- the fast path: a value without secrets is not copied -----------------------------------

_KEYS = st.sampled_from(
    ["name", "team", "password", "DB_Token", "api_key", "auth_header", "note", "retries", "x"]
)
_TEXTS = st.sampled_from(
    ["plain", "", "see https://example.com/x", "postgresql://app:hunter2@db/prod", "a://:b@c"]
)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXTS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_KEYS | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=12,
)


def _masked_in_full(value: Any) -> Any:
    """What redaction gives when every value is walked and copied (the first release's)."""
    if isinstance(value, str):
        return mask_url_passwords(value)
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else _masked_in_full(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_masked_in_full(v) for v in value]
    return value


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_redaction_masks_what_a_full_walk_masks_and_copies_nothing_else(value: Any) -> None:
    """``redact`` answers a value with no secret in it with the value itself (the usual
    case, 100,000 times for a ``/specs``): that shortcut never lets a secret through, and
    the digests ``plan`` compares stay those of a full walk."""
    full = _masked_in_full(value)
    assert _plain(redact(value)) == full  # as JSON shows it: a tuple kept is a list
    if full != _plain(value):
        assert holds_secret(value)
    if not holds_secret(value):
        assert redact(value) is value
        assert secret_digest(value) is None
    spec = {"kwargs": value, "args": [value], "labels": {}}
    digests = {
        name: digest for name, field in spec.items() if (digest := secret_digest(field)) is not None
    }
    assert spec_secret_digests(spec) == digests


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (what redaction gives back for a tuple)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
