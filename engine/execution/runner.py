"""The runner: what every job calls, referenced textually as ``engine.execution.runner:run``.

Each APScheduler job's callable is ``run`` with plain data (the task path and its
arguments), so every job serialises and every run is instrumented the same way. The
engine's executor intercepts the call and awaits ``execute()``: resolve the task, apply
the timeout, retry with a doubling delay, and record every attempt in the history.

Timeouts: an ``async def`` task is cancelled at its deadline. A ``def`` task runs in a
thread, which Python cannot stop: at the deadline the attempt is recorded ``timeout``
and stops counting as running, while the thread is left to finish on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.execution import context
from engine.state.history import History

__all__ = ["RunOptions", "execute", "resolve", "run"]

log = logging.getLogger("schedctl.run")


@dataclass(frozen=True)
class RunOptions:
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 10.0


def resolve(task: str) -> Callable[..., Any]:
    """``module:qualname`` -> the callable (no prefix rule: declared tasks were checked)."""
    module_name, _, qualname = task.partition(":")
    if not qualname:
        module_name, _, qualname = task.rpartition(".")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def run(
    task: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    concurrency: str = "forbid",
    max_instances: int = 1,
    options: dict[str, Any] | None = None,
) -> Any:
    """Call ``task`` once, synchronously: the textual target of every job.

    The engine's executor never calls this: it reads the same payload and runs it with
    the policy (``concurrency``, ``max_instances``, ``options``) applied.
    """
    result = resolve(task)(*(args or ()), **(kwargs or {}))
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )


_resolved: dict[str, tuple[Any, Callable[..., Any], bool]] = {}


def _callable(task: str) -> tuple[Callable[..., Any], bool]:
    """The task's callable and whether it is ``async``, looked up once per task path
    (again if its module was replaced in ``sys.modules``)."""
    found = _resolved.get(task)
    if found is None or sys.modules.get(found[0].__name__) is not found[0]:
        func = resolve(task)
        module = sys.modules[task.partition(":")[0] if ":" in task else task.rpartition(".")[0]]
        found = _resolved[task] = (module, func, _is_async(func))
    return found[1], found[2]


async def execute(
    job_id: str,
    scheduled_at: datetime,
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    options: RunOptions,
    history: History,
    threads: Executor,
) -> str:
    """Run all attempts of one scheduled run; return the final status."""
    status = "failed"
    for attempt in range(1, options.retries + 2):
        record = history.start(job_id, scheduled_at, attempt)
        log.debug("→ %s attempt %d (scheduled %s)", job_id, attempt, scheduled_at.isoformat())
        token = context.enter(
            context.RunContext(
                job_id, scheduled_at, attempt, f"{job_id}@{scheduled_at.timestamp():.6f}#{attempt}"
            )
        )
        try:
            func, is_async = _callable(task)
            if is_async:
                call: Any = func(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(
                    threads,
                    functools.partial(contextvars.copy_context().run, func, *args, **kwargs),
                )
            if options.timeout is None:
                await call
            else:
                await asyncio.wait_for(call, options.timeout)
        except TimeoutError:
            status, error = "timeout", f"still running after {options.timeout:g}s; cancelled"
        except asyncio.CancelledError:
            history.finish(record, "cancelled", "cancelled")
            log.info("← %s cancelled", job_id)
            raise
        except (Exception, SystemExit) as exc:  # a task's sys.exit() ends the run, not us
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            history.finish(record, "success")
            log.debug("← %s success", job_id)
            return "success"
        finally:
            context.leave(token)
        history.finish(record, status, error)
        if attempt <= options.retries:
            delay = options.retry_delay * 2 ** (attempt - 1)
            log.info("↻ %s %s (%s); retry in %gs", job_id, status, error, delay)
            await asyncio.sleep(delay)
        else:
            log.warning("← %s %s: %s", job_id, status, error)
    return status
