"""A schedule in words (``trigger.description`` and the status page's Schedule column)."""

from __future__ import annotations

import pytest

from engine.files.describe import describe_schedule


@pytest.mark.parametrize(
    ("kind", "expression", "timezone", "words"),
    [
        ("cron", "0 9 * * 1-5", "Europe/Berlin", "At 09:00, Monday through Friday"),
        ("cron", "0 9 * * MON-FRI", "UTC", "At 09:00, Monday through Friday"),
        ("cron", "30 14 * * *", "UTC", "At 14:30"),
        ("cron", "0 9 * * 0", "UTC", "At 09:00, only on Sunday"),
        ("cron", "0 9 * * 7", "UTC", "At 09:00, only on Sunday"),  # 7 is Sunday too
        ("cron", "0 0 1 * 1", "UTC", "At 00:00, on day 1 of the month, or on Monday"),
        ("cron", "*/5 * * * *", "UTC", "Every 5 minutes"),
        ("cron", "*/10 * * * * *", "UTC", "Every 10 seconds"),  # leading seconds field
        ("cron", "@daily", "UTC", "At 00:00"),
        ("cron", "@hourly", "UTC", "Every hour"),
        ("cron", "@weekly", "UTC", "At 00:00, only on Sunday"),
        ("interval", "30s", "UTC", "Every 30 seconds"),
        ("interval", "1s", "UTC", "Every second"),
        ("interval", "5m", "UTC", "Every 5 minutes"),
        ("interval", "1h", "UTC", "Every hour"),
        ("interval", "1h30m", "UTC", "Every 1 hour 30 minutes"),
        ("interval", "2d", "UTC", "Every 2 days"),
        ("interval", "1w", "UTC", "Every week"),
        ("interval", "0.5s", "UTC", "Every 0.5 seconds"),
        (
            "date",
            "2027-01-01T09:00:00+01:00",
            "Europe/Berlin",
            "Once at 2027-01-01 09:00 (Europe/Berlin)",
        ),
        (
            "date",
            "2027-01-01T08:00:00+00:00",
            "Europe/Berlin",
            "Once at 2027-01-01 09:00 (Europe/Berlin)",
        ),
        ("date", "2027-06-01T12:00:30+00:00", "UTC", "Once at 2027-06-01 12:00:30 (UTC)"),
    ],
)
def test_schedules_in_words(kind: str, expression: str, timezone: str, words: str) -> None:
    assert describe_schedule(kind, expression, timezone) == words


@pytest.mark.parametrize(
    ("kind", "expression"),
    [
        ("cron", "0 0 0 * * * * *"),  # a runtime job's APScheduler fields: not a crontab
        ("cron", "61 * * * *"),
        ("interval", "soon"),
        ("date", "tomorrow"),
        ("calendar", "x"),
    ],
)
def test_what_cannot_be_described_is_shown_as_written(kind: str, expression: str) -> None:
    assert describe_schedule(kind, expression, "UTC") == f"{kind} {expression}"
