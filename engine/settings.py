"""Engine settings: flags first, then ``ENGINE_*`` environment variables, then defaults."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Settings", "parse_extensions"]

DEFAULT_DATABASE = "sqlite:///.engine/state.db"


@dataclass(frozen=True)
class Settings:
    schedules_dir: Path = Path("schedules")
    database_url: str = DEFAULT_DATABASE
    task_modules: tuple[str, ...] = ("tasks",)
    timezone: str = "UTC"
    host: str = "127.0.0.1"
    port: int = 8000
    extensions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    watch: bool = True
    resync_interval: float = 60.0
    settle: float = 0.05
    history_limit: int = 100
    shutdown_grace: float = 10.0
    thread_pool_size: int = 32
    tune_process: bool = False  # gc and switch-interval tuning: `schedctl serve` sets it
    reset_state: bool = False  # move a broken SQLite state file aside and start afresh
    lease_ttl: float = 10.0  # the leader lease's time limit, seconds
    stall_after: float = 60.0  # a due run waiting this long makes /healthz answer 503
    mass_removal_delay: float = 60.0  # seconds; 0 turns the guard off

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ENGINE_*`` variables; ``overrides`` (flags) win when not None."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if "ENGINE_SCHEDULES_DIR" in env:
            values["schedules_dir"] = Path(env["ENGINE_SCHEDULES_DIR"])
        if "ENGINE_DATABASE_URL" in env:
            values["database_url"] = env["ENGINE_DATABASE_URL"]
        if "ENGINE_TASK_MODULES" in env:
            values["task_modules"] = tuple(
                m.strip() for m in env["ENGINE_TASK_MODULES"].split(",") if m.strip()
            )
        if "ENGINE_TIMEZONE" in env:
            values["timezone"] = env["ENGINE_TIMEZONE"]
        if "ENGINE_HOST" in env:
            values["host"] = env["ENGINE_HOST"]
        if "ENGINE_PORT" in env:
            values["port"] = int(env["ENGINE_PORT"])
        if "ENGINE_EXTENSIONS" in env:
            values["extensions"] = parse_extensions(env["ENGINE_EXTENSIONS"])
        if env.get("ENGINE_RESET_STATE", "").lower() in ("1", "true", "yes"):
            values["reset_state"] = True
        if "ENGINE_RESYNC_INTERVAL" in env:
            values["resync_interval"] = float(env["ENGINE_RESYNC_INTERVAL"])
        settings = replace(cls(), **values)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "schedules_dir" in given:
            given["schedules_dir"] = Path(given["schedules_dir"])
        if isinstance(given.get("extensions"), str):
            given["extensions"] = parse_extensions(given["extensions"])
        return replace(settings, **given)


def parse_extensions(text: str) -> dict[str, dict[str, Any]]:
    """``"a,b"`` -> each with ``{}``; ``'{"a": {...}}'`` -> as written."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("ENGINE_EXTENSIONS must be a comma list or a JSON object")
        return {str(k): dict(v or {}) for k, v in loaded.items()}
    return {name.strip(): {} for name in text.split(",") if name.strip()}
