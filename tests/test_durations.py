"""Durations as schedule files write them, and back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import DurationError, SpecError
from engine.files.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172_800),
        ("1w", 604_800),
        ("1w2d3h4m5s", 788_645),
        ("500ms", 0.5),
        ("1.5h", 5400),
        ("0s", 0),
        (90, 90),
        ("90", 90),
        (1.5, 1.5),
        (0, 0),
        (" 5m ", 300),
        ("1h 30m", 5400),
        ("5M", 300),
        (timedelta(minutes=2), 120),
    ],
    ids=repr,
)
def test_parse_duration_reads_what_users_write(written: object, seconds: float) -> None:
    assert parse_duration(written) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "written",
    [True, False, "5 minutes", "", "   ", "-5s", None, "1.5", "5m30", "m", "5y", [5], {"s": 5}],
    ids=repr,
)
def test_parse_duration_refuses_the_rest_with_a_hint(written: object) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(written)

    assert isinstance(raised.value, SpecError)
    assert str(raised.value) == (
        f"invalid duration {written!r}; write a number with a unit such as '30s', '5m', "
        "'1h30m', '2d', '1w', or an integer number of seconds"
    )


def test_parse_duration_refuses_a_negative_number_of_seconds() -> None:
    with pytest.raises(DurationError):
        parse_duration(-5)


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86_400, "1d"),
        (604_800, "1w"),
        (694_861, "1w1d1h1m1s"),
        (1.5, "1.5s"),
        (0.25, "0.25s"),
    ],
)
def test_format_duration_is_the_shortest_spelling(seconds: float, written: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == written


@pytest.mark.parametrize("written", ["30s", "5m", "1h30m", "2d", "1w", "1w1d1h1m1s", "1.5s"])
def test_format_of_a_parsed_duration_gives_the_same_text(written: str) -> None:
    assert format_duration(parse_duration(written)) == written


@pytest.mark.parametrize(
    "seconds",
    [0, 1, 45, 61, 3599, 5400, 90_061, 1_209_600, 0.5, 12.25, 3600.5],
)
def test_parse_of_a_formatted_duration_gives_the_same_duration(seconds: float) -> None:
    delta = timedelta(seconds=seconds)

    assert parse_duration(format_duration(delta)) == delta


@pytest.mark.parametrize("seconds", [1_234_567.5, 0.000001], ids=["large-fraction", "microsecond"])
def test_parse_of_a_formatted_fractional_duration_round_trips(seconds: float) -> None:
    delta = timedelta(seconds=seconds)

    assert parse_duration(format_duration(delta)) == delta
