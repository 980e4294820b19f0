"""Engine settings: flags first, then ``ENGINE_*`` environment variables, then defaults.

Every value is checked when it is read, wherever it comes from (a flag, a variable,
``Settings(...)`` in code): a bad one raises ``SettingsError`` naming the setting as the
user wrote it (``--port``, ``ENGINE_PORT``, ``port``) and saying what to write instead.
A setting is never blamed on a schedule file. Each field carries its variable, its flag
and its parser in its metadata, so the table below is the one list of settings.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from engine.errors import DurationError, SettingsError
from engine.files.durations import parse_duration
from engine.redact import mask_url_passwords

__all__ = ["DEFAULT_URL", "Settings", "SettingsError", "parse_extensions", "url_from_env"]

DEFAULT_DATABASE = "sqlite:///.engine/state.db"
DEFAULT_URL = "http://127.0.0.1:8000"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_CELERY_APP = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Bad(ValueError):
    """A parser's complaint: what is wrong and what to write (the setting's name is added)."""


# -- parsers: each takes the raw text of a variable or flag, or a value given in code ----


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{value!r} is not {what}")
    return value.strip()


def _path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    text = _text(value, "a folder")
    if not text:
        raise _Bad("the value is empty; write the schedules folder, e.g. 'schedules'")
    return Path(text)


def _database_url(value: object) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = _text(value, "a database URL")
    shown = repr(mask_url_passwords(text))
    example = "write e.g. 'sqlite:///.engine/state.db' or 'postgresql://user:pass@host:5432/db'"
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise _Bad(f"{shown} is not a database URL; {example}") from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend not in ("sqlite", "postgresql"):
        raise _Bad(
            f"unsupported database {backend!r} in {shown}; schedctl keeps its state in "
            f"SQLite or PostgreSQL: {example}"
        )
    if backend == "postgresql":
        if url.drivername not in ("postgresql", "postgresql+psycopg"):
            raise _Bad(
                f"unsupported PostgreSQL driver {driver!r} in {shown}; write 'postgresql://...' "
                "(schedctl uses psycopg 3)"
            )
        if importlib.util.find_spec("psycopg") is None:
            raise _Bad(
                f"{shown} needs the psycopg driver, which is not installed; "
                "run: pip install 'schedctl[postgres]'"
            )
    return text


def _module_names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        names = tuple(part.strip() for part in value.split(","))
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        names = tuple(v.strip() for v in value)
    else:
        raise _Bad(f"{value!r} is not a list of module names")
    names = tuple(name for name in names if name)
    if not names:
        raise _Bad("no module is named; write a comma list of task packages, e.g. 'tasks,jobs'")
    for name in names:
        if not _MODULE.fullmatch(name):
            raise _Bad(
                f"{name!r} is not a module name; write dotted Python names separated by "
                "commas, e.g. 'tasks,jobs.nightly'"
            )
        if name.split(".")[0] in sys.stdlib_module_names:
            raise _Bad(
                f"{name!r} is in Python's standard library; name your own task packages, "
                "e.g. 'tasks'"
            )
    return names


def _timezone(value: object) -> str:
    text = _text(value, "a timezone name")
    try:
        ZoneInfo(text)
    except (LookupError, ValueError, OSError):
        close = difflib.get_close_matches(text, sorted(available_timezones()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _Bad(
            f"unknown timezone {text!r}; write an IANA name such as 'UTC' or 'Europe/Berlin'{hint}"
        ) from None
    return text


def _host(value: object) -> str:
    text = _text(value, "a host")
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise _Bad(f"{text!r} is not an address to bind; write e.g. '127.0.0.1' or '0.0.0.0'")
    return text


def _port(value: object) -> int:
    port = int(value) if isinstance(value, str) and re.fullmatch(r"\s*\d{1,5}\s*", value) else value
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _Bad(f"{value!r} is not a port; write an integer from 1 to 65535")
    return port


def parse_extensions(text: str) -> dict[str, dict[str, Any]]:
    """``"a,b"`` -> each with ``{}``; ``'{"a": {...}}'`` -> as written."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith(("{", "[", '"')):
        return {name.strip(): {} for name in text.split(",") if name.strip()}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        # The text may hold secrets (an extension's config): say where, not what.
        raise _Bad(
            f"the value is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "write a "
            'comma list of modules or a JSON object {"module": {"key": "value"}}'
        ) from None
    except (RecursionError, ValueError):  # nested too deep, an integer too long
        raise _Bad(
            "the value is not a JSON object schedctl can read; write a simpler one"
        ) from None
    return _extension_configs(loaded)


def _extension_configs(loaded: object) -> dict[str, dict[str, Any]]:
    if not isinstance(loaded, Mapping):
        raise _Bad(
            "the value must be a comma list of modules or a JSON object mapping each module "
            'to its config, e.g. {"myext": {"key": "value"}}'
        )
    configs = {}
    for name, config in loaded.items():
        if config is not None and not isinstance(config, Mapping):
            raise _Bad(
                f"the config of {name!r} must be an object, e.g. {{{json.dumps(name)}: {{}}}}"
            )
        configs[str(name)] = dict(config or {})
    return configs


def _extensions(value: object) -> dict[str, dict[str, Any]]:
    configs = parse_extensions(value) if isinstance(value, str) else _extension_configs(value)
    for name in configs:
        if not _MODULE.fullmatch(name):
            raise _Bad(f"{name!r} is not a module name; write a dotted Python name")
        try:
            found = importlib.util.find_spec(name)
        except ImportError:
            found = None
        except Exception as exc:  # its parent package failed to import
            raise _Bad(
                f"cannot look for extension module {name!r}: importing its package raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if found is None:
            raise _Bad(
                f"no extension module named {name!r}; check the name, and run from the folder "
                "that holds it (the current directory is on the import path)"
            )
    return configs


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad(f"{value!r} is not a boolean; write 'true' or 'false'")


def _seconds(minimum: float, *, zero: bool = False) -> Callable[[object], float]:
    """A duration parser: ``30s``, ``5m``, ``1h30m`` or a number of seconds."""
    least = f"at least {minimum:g}s" + (" (0 turns it off)" if zero else "")

    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise _Bad(f"{value!r} is not a duration")
        number = isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", value)
        try:
            seconds = parse_duration(float(str(value)) if number else value).total_seconds()
        except (DurationError, OverflowError):
            raise _Bad(
                f"{value!r} is not a duration; write a number with a unit such as '30s', "
                "'5m', '1h30m', or a number of seconds"
            ) from None
        if not math.isfinite(seconds) or (seconds < minimum and not (zero and seconds == 0)):
            raise _Bad(f"{value!r} is too short; write {least}")
        return seconds

    return parse


def _count(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number = re.fullmatch(r"\s*\d{1,9}\s*", value) if isinstance(value, str) else None
        count = int(value) if number else value  # type: ignore[call-overload]
        if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
            raise _Bad(f"{value!r} is not a count; write an integer of at least {minimum}")
        return count

    return parse


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value, f"one of {', '.join(choices)}")
        text = text.upper() if upper else text.lower()
        if text not in choices:
            raise _Bad(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _celery_app(value: object) -> str | None:
    if value is None:
        return None
    text = _text(value, "a Celery app")
    if not _CELERY_APP.fullmatch(text):
        raise _Bad(
            f"{text!r} does not name a Celery app; write 'module:attribute', e.g. "
            "'tasks.celery:app'"
        )
    return text


def _allowed_hosts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        entries = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        entries = [v.strip() for v in value]
    else:
        raise _Bad(f"{value!r} is not a list of host names")
    hosts = []
    for entry in (e.lower() for e in entries if e):
        if entry != "*" and not _host_pattern(entry):
            raise _Bad(
                f"{entry!r} is not a host name; write names or addresses without scheme, "
                "port or path, separated by commas (e.g. 'status.example.com,10.0.0.5'), "
                "'*.example.com' for its subdomains, or '*' for any"
            )
        hosts.append(entry.strip("[]").rstrip(".") if entry != "*" else entry)
    return tuple(hosts)


def _host_pattern(entry: str) -> bool:
    try:
        ipaddress.ip_address(entry.strip("[]"))
        return True
    except ValueError:
        pass
    name = entry[2:] if entry.startswith("*.") else entry
    return bool(_HOST_NAME.fullmatch(name))


def _client_url(value: object) -> str:
    """The running engine's base URL for the client commands (``--url``, ``ENGINE_URL``)."""
    text = _text(value, "a URL").rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise _Bad(f"{text!r} is not the engine's URL; write e.g. '{DEFAULT_URL}'")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _Bad(f"{text!r} has a bad port; write e.g. '{DEFAULT_URL}'") from None
    return text


def _meta(
    parse: Callable[[object], Any], env: str | None = None, flag: str | None = None
) -> dict[str, Any]:
    """A field's variable, flag and parser."""
    return {"env": env, "flag": flag, "parse": parse}


@dataclass(frozen=True)
class Settings:
    schedules_dir: Path = field(
        default=Path("schedules"), metadata=_meta(_path, "ENGINE_SCHEDULES_DIR", "--schedules")
    )
    database_url: str = field(
        default=DEFAULT_DATABASE,
        metadata=_meta(_database_url, "ENGINE_DATABASE_URL", "--database"),
    )
    task_modules: tuple[str, ...] = field(
        default=("tasks",), metadata=_meta(_module_names, "ENGINE_TASK_MODULES")
    )
    timezone: str = field(default="UTC", metadata=_meta(_timezone, "ENGINE_TIMEZONE"))
    host: str = field(default="127.0.0.1", metadata=_meta(_host, "ENGINE_HOST", "--host"))
    port: int = field(default=8000, metadata=_meta(_port, "ENGINE_PORT", "--port"))
    extensions: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, metadata=_meta(_extensions, "ENGINE_EXTENSIONS")
    )
    watch: bool = field(default=True, metadata=_meta(_bool, None, "--no-watch"))
    resync_interval: float = field(
        default=60.0, metadata=_meta(_seconds(0.1), "ENGINE_RESYNC_INTERVAL")
    )
    settle: float = field(default=0.05, metadata=_meta(_seconds(0, zero=True)))
    history_limit: int = field(default=100, metadata=_meta(_count(1), "ENGINE_HISTORY_LIMIT"))
    shutdown_grace: float = field(
        default=10.0, metadata=_meta(_seconds(0, zero=True), "ENGINE_SHUTDOWN_GRACE")
    )
    thread_pool_size: int = field(default=32, metadata=_meta(_count(1), "ENGINE_THREAD_POOL_SIZE"))
    log_level: str = field(
        default="INFO", metadata=_meta(_choice(LOG_LEVELS, upper=True), "ENGINE_LOG_LEVEL")
    )
    log_format: str = field(
        default="text", metadata=_meta(_choice(LOG_FORMATS), "ENGINE_LOG_FORMAT")
    )
    mass_removal_delay: float = field(
        default=60.0, metadata=_meta(_seconds(0, zero=True), "ENGINE_MASS_REMOVAL_DELAY")
    )
    celery_app: str | None = field(default=None, metadata=_meta(_celery_app, "ENGINE_CELERY_APP"))
    allowed_hosts: tuple[str, ...] = field(
        default=(), metadata=_meta(_allowed_hosts, "ENGINE_ALLOWED_HOSTS")
    )
    api_docs: bool = field(default=False, metadata=_meta(_bool, "ENGINE_API_DOCS"))
    stall_after: float = field(default=60.0, metadata=_meta(_seconds(0.1), "ENGINE_STALL_AFTER"))
    # Process-wide tuning (GC, switch interval, signals): off for a library, on in `serve`.
    tune_process: bool = field(default=False, metadata=_meta(_bool))
    url: str = field(default=DEFAULT_URL, metadata=_meta(_client_url, "ENGINE_URL", "--url"))
    # Move an empty or corrupt SQLite state file aside and start afresh (else: refuse).
    reset_state: bool = field(
        default=False, metadata=_meta(_bool, "ENGINE_RESET_STATE", "--reset-state")
    )
    # The leader lease's time limit: a frozen leader is replaced within it (and one try).
    lease_ttl: float = field(default=10.0, metadata=_meta(_seconds(0.5)))

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = _parse(spec.name, spec.metadata["parse"], getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Settings from ``ENGINE_*`` variables; ``flags`` (the command line's) win when not
        None. A bad value raises ``SettingsError`` naming the variable or the flag."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name, parse = spec.metadata["env"], spec.metadata["parse"]
            if name is not None and name in env:
                values[spec.name] = _parse(name, parse, env[name])
            if flags.get(spec.name) is not None:
                label = spec.metadata["flag"] or spec.name
                values[spec.name] = _parse(label, parse, flags.pop(spec.name))
        unknown = {key for key, value in flags.items() if value is not None}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def _parse(setting: str, parse: Callable[[object], Any], value: object) -> Any:
    try:
        return parse(value)
    except _Bad as exc:
        raise SettingsError(setting, str(exc)) from None


def url_from_env(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The engine URL of a client command: ``--url``, else ``ENGINE_URL``, else the default."""
    env = os.environ if env is None else env
    if flag is not None:
        return str(_parse("--url", _client_url, flag))
    return str(_parse("ENGINE_URL", _client_url, env.get("ENGINE_URL", DEFAULT_URL)))
