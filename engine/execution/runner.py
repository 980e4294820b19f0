"""The local runner: every attempt of one scheduled run, recorded truthfully.

For each attempt: resolve the task (refusing anything a file or a database row should
not be able to reach), set ``current_run()``, capture what the task logs, apply the
timeout, and record the outcome with the failing attempt's traceback. Secret values of
the job's kwargs are masked wherever they reappear (error, traceback, logs).

``async def`` tasks run on the loop and are cancelled at their deadline. ``def`` tasks
run in ``TaskThreads``: the run is ``queued`` until its thread starts the code, and a
thread past its deadline is abandoned (counted as stuck, replaced), as Python cannot
stop it. A task's own ``TimeoutError`` is a failure like any other exception; only the
engine's deadline makes a ``timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import traceback as tb
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.errors import JobThreadsExhausted
from engine.execution import capture, context
from engine.execution.task import Task
from engine.execution.threads import Abandoned, TaskThreads
from engine.execution.watch import as_run
from engine.redact import mask_text
from engine.state.history import History, Run

__all__ = ["Runner", "run"]

log = logging.getLogger("schedctl.run")
TRACEBACK_CHARS = 16_000

Resolver = Callable[[Task], Callable[..., Any]]


def run(task: str, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
    """The textual target every APScheduler job names (``engine.execution.runner:run``);
    the engine's executor intercepts every job, so this is never called."""
    raise RuntimeError("engine.execution.runner:run is only a placeholder for APScheduler")


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )


class Runner:
    def __init__(
        self,
        history: History,
        threads: TaskThreads,
        resolve: Resolver,
        stopping: Callable[[], bool] = lambda: False,
        may_start: Callable[[], bool] = lambda: True,
    ) -> None:
        self.history = history
        self.threads = threads
        self.resolve = resolve
        self.stopping = stopping
        # Checked again where the task's code starts: a leader frozen (SIGSTOP, a stalled
        # VM) between claiming a run and starting it has been replaced when it wakes up,
        # and must not start, 30 s late, what it claimed before the freeze.
        self.may_start = may_start
        self._resolved: dict[tuple[str, bool], tuple[Callable[..., Any], bool]] = {}

    def forget_resolved(self) -> None:
        """Resolve task paths afresh (after a reconcile: a module may have appeared)."""
        self._resolved.clear()

    def _callable(self, task: Task) -> tuple[Callable[..., Any], bool]:
        key = (task.ref, task.declared)
        found = self._resolved.get(key)
        if found is None:
            func = self.resolve(task)
            found = self._resolved[key] = (func, _is_async(func))
        return found

    async def execute(
        self, job_id: str, scheduled_at: datetime, task: Task, epoch: int | None = None
    ) -> str:
        """Run all attempts of one scheduled run; return the final status."""
        status = "failed"
        for attempt in range(1, task.retries + 2):
            status = await self._attempt(job_id, scheduled_at, attempt, task, epoch)
            if status == "success" or attempt > task.retries:
                break
            if self.stopping():
                log.info("↻ %s: no retry, the engine is stopping", job_id)
                break
            delay = task.retry_delay * 2 ** (attempt - 1)
            log.info("↻ %s %s; retry %d in %gs", job_id, status, attempt, delay)
            await asyncio.sleep(delay)
            if self.stopping():
                break
        return status

    async def _attempt(
        self, job_id: str, scheduled_at: datetime, attempt: int, task: Task, epoch: int | None
    ) -> str:
        try:
            func, is_async = self._callable(task)
        except Exception as exc:
            record = self.history.start(job_id, scheduled_at, attempt, epoch=epoch)
            error = self._mask(task, f"{type(exc).__name__}: {exc}")
            self.history.finish(record, "failed", error)
            log.warning("← %s failed: %s", job_id, error)
            return "failed"
        startable = not is_async or self.may_start()  # a def task's thread asks again
        record = self.history.start(
            job_id, scheduled_at, attempt, started=is_async and startable, epoch=epoch
        )
        run_id = record.run_id
        run_ctx = context.RunContext(job_id, scheduled_at.astimezone(task.tz), attempt, run_id)
        capture.open(run_id, lambda text: self._mask(task, text), task.tz)
        token = context.enter(run_ctx)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("→ %s attempt %d (scheduled %s)", job_id, attempt, scheduled_at.isoformat())
        future: Any = None
        try:
            try:
                timeout = _NO_TIMEOUT if task.timeout is None else asyncio.timeout(task.timeout)
                async with timeout as deadline:
                    if is_async:
                        if not startable:
                            raise _NotStarted
                        await as_run(func(*task.args, **task.kwargs), job_id, attempt)
                    else:
                        # The pool copies this context (current_run) into the thread.
                        future = self.threads.submit(
                            job_id,
                            functools.partial(func, *task.args, **task.kwargs),
                            on_start=functools.partial(self._begin, record),
                        )
                        await asyncio.wrap_future(future)
            except TimeoutError as exc:
                if not deadline.expired():  # the task's own TimeoutError: a failure
                    return self._end(record, run_id, task, "failed", _error(exc), _traceback(exc))
                if future is not None and self.threads.abandon(future) is Abandoned.NEVER_STARTED:
                    return self._end(
                        record,
                        run_id,
                        task,
                        "failed",
                        f"never started: no task thread was free within its "
                        f"{task.timeout:g}s timeout",
                    )
                return self._end(
                    record,
                    run_id,
                    task,
                    "timeout",
                    f"still running after {task.timeout:g}s; cancelled",
                )
            except asyncio.CancelledError:
                if future is not None and not future.done():
                    outcome = self.threads.abandon(future)
                    if outcome is Abandoned.NEVER_STARTED:
                        self._end(record, run_id, task, "cancelled", "cancelled before it started")
                    else:
                        self._end(
                            record,
                            run_id,
                            task,
                            "cancelled",
                            "cancelled; its thread could not be stopped and was left to finish",
                        )
                        future.add_done_callback(functools.partial(self._late, record, task))
                else:
                    self._end(record, run_id, task, "cancelled", "cancelled")
                raise
            except _NotStarted:
                return self._end(record, run_id, task, "failed", NOT_STARTED)
            except JobThreadsExhausted as exc:
                return self._end(record, run_id, task, "failed", str(exc))
            except (Exception, SystemExit) as exc:  # a task's sys.exit() ends the run, not us
                return self._end(record, run_id, task, "failed", _error(exc), _traceback(exc))
            return self._end(record, run_id, task, "success")
        finally:
            context.leave(token)

    def _begin(self, record: Run) -> None:
        """In the task's thread, right before its code: started, unless the lease is gone."""
        if not self.may_start():
            raise _NotStarted
        self.history.begin(record)

    def _end(
        self,
        record: Run,
        run_id: str,  # ``record.run_id``, made once per attempt
        task: Task,
        status: str,
        error: str | None = None,
        trace: str | None = None,
    ) -> str:
        logs = capture.close(run_id)
        if status != "success":  # logged within the run: the line names its job and attempt
            log.warning(
                "← %s attempt %d %s: %s",
                record.job_id,
                record.attempt,
                status,
                error and self._mask(task, error),
            )
        self.history.finish(
            record,
            status,
            self._mask(task, error) if error else None,
            traceback=self._mask(task, trace) if trace else None,
            logs=logs,
        )
        return status

    def _late(self, record: Run, task: Task, future: Any) -> None:
        """A cancelled ``def`` task's thread ended after all: say how, on its record."""
        if future.cancelled():
            return
        exc = future.exception()
        outcome = "returned" if exc is None else f"raised {_error(exc)}"
        record.error = self._mask(task, f"{record.error}; its thread then {outcome}")
        self.history.amend(record)

    def _mask(self, task: Task, text: str) -> str:
        return mask_text(text, task.secrets)


class _NoTimeout:
    """``asyncio.timeout(None)`` without its cost (a run with no timeout is the usual one)."""

    async def __aenter__(self) -> _NoTimeout:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def expired(self) -> bool:
        return False


_NO_TIMEOUT = _NoTimeout()

NOT_STARTED = "not started: this engine lost its leader lease before the run could start"


class _NotStarted(Exception):
    """The lease ended between the run's claim and the start of its code."""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _traceback(exc: BaseException) -> str:
    """The task's traceback: the engine's own frames (runner, thread pool) left out."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename.startswith(_ENGINE_DIR):
        trace = trace.tb_next
    text = "".join(tb.format_exception(type(exc), exc, trace or exc.__traceback__))
    if len(text) > TRACEBACK_CHARS:
        text = text[: TRACEBACK_CHARS // 4] + "\n...\n" + text[-3 * TRACEBACK_CHARS // 4 :]
    return text
