"""schedctl: schedules as code, reconciled into a live APScheduler."""

from engine._version import __version__
from engine.cron import CronExpression
from engine.errors import CronError, JobRefused, Problem, SchedctlError, SpecError, TaskError
from engine.loader import Loader, Snapshot
from engine.spec import FileSpec, JobSpec

__all__ = [
    "CronError",
    "CronExpression",
    "FileSpec",
    "JobRefused",
    "JobSpec",
    "Loader",
    "Problem",
    "SchedctlError",
    "Snapshot",
    "SpecError",
    "TaskError",
    "__version__",
]
