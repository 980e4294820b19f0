"""What the engine puts in a Celery message for a run, and how a worker reads it back.

The task id names the attempt, ``<job>@<scheduled time, ISO 8601 in UTC>#<attempt>``, so
the same run always gets the same id (a resend is recognisable as one), and the
``schedctl`` header carries what the worker needs before the body runs: the run's key,
the misfire deadline, the job's zone (for ``current_run().scheduled_at``) and timeout.
No Celery import here: both sides share it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["HEADER", "RunHeader", "parse_task_id", "task_id_for"]

HEADER = "schedctl"
_ID = re.compile(r"^(?P<job>[A-Za-z0-9][A-Za-z0-9._-]{0,127})@(?P<at>[^#]+)#(?P<attempt>\d{1,6})$")
RunKey = tuple[str, float, int]


def task_id_for(job_id: str, scheduled_at: datetime, attempt: int) -> str:
    """The Celery task id of one attempt: ``<job>@<scheduled time, ISO in UTC>#<attempt>``."""
    return f"{job_id}@{scheduled_at.astimezone(UTC).isoformat()}#{attempt}"


def parse_task_id(task_id: str) -> RunKey | None:
    """The run a task id names, or None for a task id the engine did not make."""
    found = _ID.match(task_id or "")
    if found is None:
        return None
    try:
        when = datetime.fromisoformat(found["at"])
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return (found["job"], when.timestamp(), int(found["attempt"]))


@dataclass(frozen=True)
class RunHeader:
    """What the engine puts in the ``schedctl`` header of each message it sends."""

    job_id: str
    scheduled_at: float
    attempt: int
    deadline: float  # wall clock: a worker that has not started it by then never does
    timezone: str = "UTC"
    timeout: float | None = None

    def as_header(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "scheduled_at": self.scheduled_at,
            "attempt": self.attempt,
            "deadline": self.deadline,
            "timezone": self.timezone,
            "timeout": self.timeout,
        }

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.scheduled_at, self.attempt)

    @classmethod
    def parse(cls, task_id: str, value: Any) -> RunHeader | None:
        """The header of a message, checked against its task id; None if it is not ours.
        A message is untrusted input: anything malformed is refused, never guessed."""
        if not isinstance(value, dict):
            return None
        key = parse_task_id(task_id)
        number = (int, float)
        deadline, timeout = value.get("deadline"), value.get("timeout")
        zone = value.get("timezone", "UTC")
        if (
            key is None
            or (value.get("job_id"), value.get("scheduled_at"), value.get("attempt")) != key
            or not isinstance(deadline, number)
            or isinstance(deadline, bool)
            or not math.isfinite(deadline)
            or (timeout is not None and not isinstance(timeout, number))
            or not isinstance(zone, str)
        ):
            return None
        try:
            ZoneInfo(zone)
        except Exception:
            zone = "UTC"
        return cls(key[0], key[1], key[2], float(deadline), zone, timeout)
