"""The Celery message of a run: a task id that names the attempt, a header a worker checks."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.execution.celery_message import RunHeader, parse_task_id, task_id_for

WHEN = datetime(2027, 3, 29, 2, 30, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin"))


def test_the_task_id_names_job_time_in_utc_and_attempt_and_reads_back() -> None:
    task_id = task_id_for("nightly-report", WHEN, 2)
    assert task_id == "nightly-report@2027-03-29T00:30:00.123456+00:00#2"
    assert parse_task_id(task_id) == ("nightly-report", WHEN.timestamp(), 2)
    assert task_id_for("a", datetime(2027, 1, 1, tzinfo=UTC), 1) == "a@2027-01-01T00:00:00+00:00#1"


@pytest.mark.parametrize(
    "task_id",
    [
        "3f1c2b8e-8d5e-4c1a-9d0e-2f7a9b6c1d2e",  # a uuid: not the engine's
        "job@2027-01-01T00:00:00#1",  # naive time
        "job@not-a-time#1",
        "bad id@2027-01-01T00:00:00+00:00#1",
        "job@2027-01-01T00:00:00+00:00#x",
        "",
    ],
)
def test_task_ids_the_engine_did_not_make_are_not_read(task_id: str) -> None:
    assert parse_task_id(task_id) is None


def header(**changes: object) -> dict[str, object]:
    value: dict[str, object] = {
        "job_id": "nightly-report",
        "scheduled_at": WHEN.timestamp(),
        "attempt": 2,
        "deadline": WHEN.timestamp() + 60,
        "timezone": "Europe/Berlin",
        "timeout": 600.0,
    }
    value.update(changes)
    return value


def test_a_header_matching_its_task_id_is_read() -> None:
    found = RunHeader.parse(task_id_for("nightly-report", WHEN, 2), header())
    assert found == RunHeader(
        "nightly-report", WHEN.timestamp(), 2, WHEN.timestamp() + 60, "Europe/Berlin", 600.0
    )
    assert found.key == ("nightly-report", WHEN.timestamp(), 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "other-job"},  # a header lifted onto another run's message
        {"attempt": 1},
        {"scheduled_at": WHEN.timestamp() + 1},
        {"deadline": "soon"},
        {"deadline": float("nan")},
        {"deadline": True},
        {"timeout": "10m"},
        {"timezone": 5},
    ],
)
def test_a_header_that_does_not_match_its_task_id_is_refused(changes: dict[str, object]) -> None:
    assert RunHeader.parse(task_id_for("nightly-report", WHEN, 2), header(**changes)) is None


def test_an_unknown_zone_in_a_header_falls_back_to_utc() -> None:
    found = RunHeader.parse(task_id_for("nightly-report", WHEN, 2), header(timezone="Mars/Base"))
    assert found is not None and found.timezone == "UTC"
