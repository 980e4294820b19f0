"""The throw-away project a scenario's engines serve: task code, schedule file, job plan.

Every task records its run first thing, through ``engine.current_run()``, as one line
appended to the scenario's task log (``TORTURE_LOG``) with a single ``write()`` on an
``O_APPEND`` descriptor, so lines from several processes and threads never interleave.
A SIGKILLed engine loses nothing written: the page cache survives the process.

Line: job id, scheduled time (ISO), attempt, task kind, the engine incarnation that ran it
(``TORTURE_INCARNATION``, inherited by any worker process), pid, wall time, monotonic time.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FAULT_JOBS", "SOAK_JOBS", "JobPlan", "write_project"]

GRACE_S = 5.0  # most jobs' misfire_grace: what a checker may call lost is bounded by it
PATIENT_GRACE_S = 30.0  # the others': a slow restart (busy machine) still runs late, not missed
HANG_S = 3600  # a hanging task sleeps "for ever": far beyond its timeout and any scenario

TASKS_SOURCE = '''
"""Torture-suite tasks: each records (job, scheduled time, attempt) before doing anything."""

import asyncio
import os
import threading
import time

import engine

_fd = None
_lock = threading.Lock()


def _record(kind):
    global _fd
    if _fd is None:
        with _lock:
            if _fd is None:
                _fd = os.open(
                    os.environ["TORTURE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                )
    run = engine.current_run()
    if run is None:
        fields = ("-", "-", "0")
    else:
        fields = (run.job_id, run.scheduled_at.isoformat(), str(run.attempt))
    line = "\\t".join(
        (
            *fields,
            kind,
            os.environ.get("TORTURE_INCARNATION", "?"),
            str(os.getpid()),
            f"{time.time():.6f}",
            f"{time.monotonic():.6f}",
        )
    )
    os.write(_fd, (line + "\\n").encode())


async def quick_async():
    _record("quick_async")


def quick_def():
    _record("quick_def")


def raising_def():
    _record("raising_def")
    raise RuntimeError("torture: this task fails on purpose")


async def raising_async():
    _record("raising_async")
    raise RuntimeError("torture: this task fails on purpose")


def hang_def(seconds):
    _record("hang_def")
    time.sleep(seconds)


async def hang_async(seconds):
    _record("hang_async")
    await asyncio.sleep(seconds)


def cpu_def(seconds):
    _record("cpu_def")
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2000))
    return total
'''


@dataclass(frozen=True)
class JobPlan:
    """One declared job of a scenario, and how the checker treats it."""

    id: str
    kind: str  # the task function in tasks/torture.py
    cron: str | None = None
    interval_s: float | None = None
    timeout_s: float | None = None
    seconds: float | None = None  # the task's argument, for hangs and CPU burners
    checked: bool = True  # healthy and quick: every due time must run (the lost check)
    grace_s: float = GRACE_S

    def yaml(self) -> str:
        lines = [f"  {self.id}:", f"    task: tasks.torture:{self.kind}"]
        if self.cron is not None:
            lines.append(f'    cron: "{self.cron}"')
        else:
            lines.append(f"    interval: {self.interval_s:g}s")
        lines.append(f"    misfire_grace: {self.grace_s:g}s")
        # Runs missed while down each get a record (or run late), never folded away, so
        # every scheduled time can be accounted for.
        lines.append("    coalesce: false")
        if self.timeout_s is not None:
            lines.append(f"    timeout: {self.timeout_s:g}s")
        if self.seconds is not None:
            lines.append(f"    args: [{self.seconds:g}]")
        return "\n".join(lines)


def _fault_jobs() -> tuple[JobPlan, ...]:
    every_second = "* * * * * *"
    jobs = [JobPlan(f"tick-async-{i:02d}", "quick_async", cron=every_second) for i in range(8)]
    jobs += [JobPlan(f"tick-def-{i:02d}", "quick_def", cron=every_second) for i in range(4)]
    # The same with a long grace: a run fired just before a kill and not written down is
    # due again after a restart of several seconds, and fires twice unless it was claimed.
    jobs += [
        JobPlan(f"patient-async-{i:02d}", "quick_async", cron=every_second, grace_s=PATIENT_GRACE_S)
        for i in range(8)
    ]
    jobs += [
        JobPlan(f"patient-def-{i:02d}", "quick_def", cron=every_second, grace_s=PATIENT_GRACE_S)
        for i in range(4)
    ]
    jobs += [
        JobPlan("every-1s-async", "quick_async", interval_s=1),
        JobPlan("every-1s-def", "quick_def", interval_s=1),
        JobPlan("every-2s-async", "quick_async", interval_s=2),
        JobPlan("every-2s-def", "quick_def", interval_s=2),
    ]
    return tuple(jobs)


FAULT_JOBS = _fault_jobs()

SOAK_JOBS = (
    *FAULT_JOBS,
    JobPlan("raise-def", "raising_def", cron="* * * * * *", checked=False),
    JobPlan("raise-async", "raising_async", cron="* * * * * *", checked=False),
    # Three def jobs whose every run outlives its timeout: each run keeps a thread.
    *(
        # Not checked: each run times out by design, and once a job holds its bounded share
        # of stuck threads its next runs fail at once, saying so (engine.execution.threads).
        JobPlan(
            f"hang-def-{i}",
            "hang_def",
            cron="* * * * * *",
            timeout_s=2,
            seconds=HANG_S,
            checked=False,
        )
        for i in range(3)
    ),
    *(
        JobPlan(f"hang-async-{i}", "hang_async", cron="* * * * * *", timeout_s=2, seconds=HANG_S)
        for i in range(2)
    ),
    *(
        JobPlan(f"cpu-{i}", "cpu_def", interval_s=2, timeout_s=5, seconds=0.25, checked=False)
        for i in range(2)
    ),
)


def write_project(root: Path, jobs: tuple[JobPlan, ...]) -> Path:
    """Create ``root`` with ``tasks/torture.py`` and ``schedules/torture.yaml``; return root."""
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "__init__.py").write_text("")
    (root / "tasks" / "torture.py").write_text(textwrap.dedent(TASKS_SOURCE).lstrip())
    (root / "schedules").mkdir(exist_ok=True)
    body = "\n".join(job.yaml() for job in jobs)
    (root / "schedules" / "torture.yaml").write_text(f"jobs:\n{body}\n")
    return root
