"""Every exception schedctl raises, in one leaf module.

SchedctlError
├── SpecError(ValueError)          a value in a schedule file is wrong
│   ├── DurationError              "5 minutes" instead of "5m"
│   ├── CronError                  a crontab expression that does not parse
│   └── FieldError                 a rule across fields, located at one of them
├── TaskError(LookupError)         a task path that does not resolve
├── SettingsError(ValueError)      a setting (ENGINE_*, a flag) is wrong; names it
├── JobThreadsExhausted(RuntimeError)  a job's earlier runs still hold their threads
├── Problem                        (not an exception) one located problem of a file
├── JobRefused(ValueError)         the runtime API refuses a job (not serialisable, ...)
│   └── NotLeader                  a standby's change that no leader applied in time
└── StateError                     the state database cannot be used (one line: what, where)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CronError",
    "DurationError",
    "FieldError",
    "JobRefused",
    "JobThreadsExhausted",
    "NotLeader",
    "Problem",
    "SchedctlError",
    "SettingsError",
    "SpecError",
    "StateError",
    "TaskError",
]


class SchedctlError(Exception):
    """Base of every schedctl error."""


class SpecError(SchedctlError, ValueError):
    """A value in a schedule file is wrong; the message says what to write instead."""


class DurationError(SpecError):
    def __init__(self, value: object) -> None:
        super().__init__(
            f"invalid duration {value!r}; write a number with a unit such as '30s', '5m', "
            "'1h30m', '2d', '1w', or an integer number of seconds"
        )


class CronError(SpecError):
    """A crontab expression that does not parse."""


class FieldError(SpecError):
    """A rule that spans fields of a job; ``field`` is where the error is shown."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class TaskError(SchedctlError, LookupError):
    """A task path that does not resolve to a callable."""


class SettingsError(SchedctlError, ValueError):
    """A setting is wrong: ``setting`` is its name as the user wrote it (``ENGINE_PORT``,
    ``--port``, or the ``Settings`` field), and the message says what to write instead."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.setting, str(self).removeprefix(f"{self.setting}: ")))


class JobRefused(SchedctlError, ValueError):
    """The runtime API refuses to add a job, with the reason."""


class NotLeader(JobRefused):
    """A runtime change made on a standby that no leader applied within the wait."""


class StateError(SchedctlError):
    """The state database cannot be used; the message says what is wrong and where."""


class JobThreadsExhausted(SchedctlError, RuntimeError):
    """A ``def`` run is refused: earlier runs of its job are still stuck in their threads."""

    def __init__(self, job_id: str, stuck: int) -> None:
        if stuck == 1:
            what = "1 earlier run of this job is still stuck in its thread"
        else:
            what = f"{stuck} earlier runs of this job are still stuck in their threads"
        super().__init__(f"{what} after timing out; this run is refused until one returns")
        self.job_id = job_id
        self.stuck = stuck


@dataclass(frozen=True, order=True)
class Problem:
    """One problem of one schedule file, located at a line and column (both 1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }
