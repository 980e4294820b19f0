"""``engine.current_run()``: the context of the run a task executes in, or None.

Set by the runner for each attempt, in ``async def`` tasks (a context variable of the
run's asyncio task) and in ``def`` tasks (the variable is copied into the worker thread).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import datetime

__all__ = ["RunContext", "current_run"]


@dataclass(frozen=True, slots=True)
class RunContext:
    """One attempt of one scheduled run of one job."""

    job_id: str
    scheduled_at: datetime  # aware, in the job's timezone
    attempt: int  # from 1
    run_id: str  # one per attempt


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "schedctl_run", default=None
)


def current_run() -> RunContext | None:
    """The run this code executes in, or None outside a run."""
    return _current.get()


def enter(context: RunContext) -> contextvars.Token[RunContext | None]:
    return _current.set(context)


def leave(token: contextvars.Token[RunContext | None]) -> None:
    _current.reset(token)
