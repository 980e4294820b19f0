"""``schedctl run JOB_ID``: a declared job's task, once, here and now, in the foreground.

With the job's args, timeout and retries, through the same runner the engine uses; each
attempt's outcome, logs and traceback are printed. Nothing is recorded in any engine:
no database, no claim, no lease.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.execution import capture
from engine.execution.runner import Runner
from engine.execution.task import Task
from engine.execution.threads import TaskThreads
from engine.files.loader import Loader
from engine.files.tasks import resolve_task
from engine.scheduler.jobs import task_of
from engine.settings import Settings
from engine.state.history import History, Run

__all__ = ["run_once"]


def run_once(settings: Settings, job_id: str, out: TextIO = sys.stdout) -> int:
    """0 when the last attempt succeeded, 1 otherwise (or when the job is not declared)."""
    snapshot = Loader(settings.task_modules, settings.timezone).scan([settings.schedules_dir])
    declared = snapshot.jobs.get(job_id)
    if declared is None:
        for problem in snapshot.problems:
            print(problem, file=sys.stderr)
        print(
            f"error: no valid job {job_id!r} under {Path(settings.schedules_dir)}",
            file=sys.stderr,
        )
        return 1
    task = task_of(declared.spec)
    runs: list[Run] = []
    history = History(on_change=lambda run: None)
    threads = TaskThreads(2)

    def resolve(t: Task) -> Callable[..., Any]:
        return resolve_task(t.ref, settings.task_modules, celery=t.executor == "celery")

    runner = Runner(history, threads, resolve)
    logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    capture.install()
    try:
        status = asyncio.run(runner.execute(job_id, datetime.now(UTC), task))
    finally:
        capture.uninstall()
        threads.shutdown()
    runs = list(reversed(history.runs(job_id)))
    for run in runs:
        _show(run, out)
    return 0 if status == "success" else 1


def _show(run: Run, out: TextIO) -> None:
    took = f" in {run.duration_s:.3f}s" if run.duration_s is not None else ""
    line = f"attempt {run.attempt}: {run.status}{took}"
    if run.error:
        line += f": {run.error}"
    print(line, file=out)
    for record in run.logs or ():
        print(f"  {record['level']:<8} {record['message']}", file=out)
    if run.traceback:
        for text_line in run.traceback.rstrip().splitlines():
            print(f"  | {text_line}", file=out)
