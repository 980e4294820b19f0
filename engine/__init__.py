"""schedctl: schedules as code, reconciled into a live APScheduler."""

from engine._version import __version__
from engine.errors import CronError, JobRefused, Problem, SchedctlError, SpecError, TaskError
from engine.execution.context import RunContext, current_run
from engine.files.cron import CronExpression
from engine.files.loader import Loader, Snapshot
from engine.files.spec import FileSpec, JobSpec

__all__ = [
    "CronError",
    "CronExpression",
    "FileSpec",
    "JobRefused",
    "JobSpec",
    "Loader",
    "Problem",
    "RunContext",
    "SchedctlError",
    "Snapshot",
    "SpecError",
    "TaskError",
    "__version__",
    "current_run",
]
