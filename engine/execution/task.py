"""What a run executes: a task reference with its arguments and run options. Plain data.

A declared job's ``Task`` is built once from its spec (not per fire); a runtime job's
from the data the runtime API saved. The runner and the executors read only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Task"]

_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Task:
    ref: str  # "package.module:function"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 10.0
    concurrency: str = "forbid"  # forbid | allow | replace
    max_instances: int = 1
    executor: str = "local"  # local | celery
    queue: str | None = None
    declared: bool = True  # declared: resolved under the allowed prefixes
    tz: tzinfo = _UTC  # the job's zone: every instant of the job is shown in it
    secrets: frozenset[str] = frozenset()  # secret values of kwargs, masked where they reappear

    @property
    def limit(self) -> int:
        """How many runs of the job may be in progress at once."""
        return self.max_instances if self.concurrency == "allow" else 1
