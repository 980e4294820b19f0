"""CronExpression against Debian/Vixie cron semantics.

Three kinds of checks:

* a brute-force reference matcher written here, independent of cronsim and of
  ``engine.files.cron``: it walks UTC days one by one and, on each day whose month and day
  fields match (with Debian's day-of-month / day-of-week OR rule and Sunday as 0 or 7),
  tries every minute of the day against the hour and minute sets;
* a hand-written table of expected fire times (crontab(5) examples and classic pitfalls);
* daylight-saving days in Europe/Berlin and America/New_York, both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from engine.errors import CronError
from engine.files.cron import CronExpression

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
CASABLANCA = ZoneInfo("Africa/Casablanca")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


# --------------------------------------------------------------------------------------
# The reference: Debian crontab(5) semantics, written from the man page.
# --------------------------------------------------------------------------------------

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}
_REFERENCE_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _reference_number(text: str, names: dict[str, int]) -> int:
    return names[text] if text in names else int(text)


def _reference_values(
    text: str, low: int, high: int, names: dict[str, int] | None = None
) -> frozenset[int]:
    """``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n`` and comma lists of those."""
    names = names or {}
    values: set[int] = set()
    for item in text.lower().split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        else:
            first_text, _, last_text = span.partition("-")
            first = _reference_number(first_text, names)
            last = _reference_number(last_text, names) if last_text else first
        assert low <= first <= last <= high, f"reference cannot read {text!r}"
        values.update(range(first, last + 1, int(step or 1)))
    return frozenset(values)


@dataclass(frozen=True)
class Reference:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    either_day: bool  # both day fields restricted: a day matching either one fires

    @classmethod
    def of(cls, expression: str) -> Reference:
        fields = _REFERENCE_MACROS.get(expression.lower(), expression).split()
        if len(fields) == 5:
            fields = ["0", *fields]
        second, minute, hour, dom, month, dow = fields
        weekdays = _reference_values(dow, 0, 7, _DAY_NAMES)
        if 7 in weekdays:
            weekdays |= {0}
        return cls(
            seconds=_reference_values(second, 0, 59),
            minutes=_reference_values(minute, 0, 59),
            hours=_reference_values(hour, 0, 23),
            days=_reference_values(dom, 1, 31),
            months=_reference_values(month, 1, 12, _MONTH_NAMES),
            weekdays=weekdays,
            either_day=not dom.startswith("*") and not dow.startswith("*"),
        )

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom_ok = day.day in self.days
        dow_ok = day.isoweekday() % 7 in self.weekdays
        return (dom_ok or dow_ok) if self.either_day else (dom_ok and dow_ok)

    def fire_times(self, after: datetime, count: int, max_days: int = 40 * 366) -> list[datetime]:
        """The first ``count`` UTC fire times strictly after ``after``, by brute force."""
        found: list[datetime] = []
        day = after.astimezone(UTC).date()
        for _ in range(max_days):
            if self.day_matches(day):
                midnight = datetime.combine(day, time(), tzinfo=UTC)
                for minute_of_day in range(24 * 60):
                    hour, minute = divmod(minute_of_day, 60)
                    if hour not in self.hours or minute not in self.minutes:
                        continue
                    for second in sorted(self.seconds):
                        candidate = midnight + timedelta(hours=hour, minutes=minute, seconds=second)
                        if candidate > after:
                            found.append(candidate)
                            if len(found) == count:
                                return found
            day += timedelta(days=1)
        return found


REFERENCE_EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "1-5,10-15/2 * * * *",
    "5 4 * * sun",
    "0 9 * * 1-5",
    "0 22 * * 1-5",
    "23 0-20/2 * * *",
    "0 */2 * * *",
    "15 14 1 * *",
    "0 4 8-14 * *",
    "0 4 8-14 * sat",
    "0 0 1 * 1",
    "0 0 1-7 * mon",
    "0 0 13 * fri",
    "0 0 1,15 * 3",
    "0 0 1,15 * *",
    "0 12 * jan,JUL *",
    "0 12 * FEB-apr mon-wed",
    "0 0 */10 * mon",
    "0 0 */2 * */3",
    "0 0 * * */2",
    "0 0 * * 0",
    "0 0 * * 7",
    "30 6 * * 5-7",
    "7 7 7 7 7",
    "0 0 31 2 mon",
    "0 0 29 2 *",
    "0 0 31 * *",
    "59 23 31 dec *",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "*/10 * * * * *",
    "30 */5 9 * * *",
    "0 0 0 1 1 *",
]

REFERENCE_STARTS = {
    "mon-2027-03-01": utc(2027, 3, 1),
    "year-end-with-fraction": datetime(2027, 12, 31, 23, 59, 30, 500_000, tzinfo=UTC),
    "leap-2028-02-28-noon": utc(2028, 2, 28, 12),
}
REFERENCE_COUNT = 8


@pytest.mark.parametrize("after", REFERENCE_STARTS.values(), ids=REFERENCE_STARTS.keys())
@pytest.mark.parametrize("expression", REFERENCE_EXPRESSIONS)
def test_next_times_match_brute_force_debian_reference(expression: str, after: datetime) -> None:
    expected = Reference.of(expression).fire_times(after, REFERENCE_COUNT)
    assert len(expected) == REFERENCE_COUNT

    actual = CronExpression.parse(expression).next_times(after, UTC, REFERENCE_COUNT)

    assert iso(actual) == iso(expected)


@pytest.mark.parametrize("expression", ["0 9 * * 1-5", "0 0 1 * 1", "*/15 * * * *", "@weekly"])
def test_zoneinfo_utc_gives_same_times_as_datetime_utc(expression: str) -> None:
    cron = CronExpression.parse(expression)
    after = utc(2027, 3, 1)

    assert cron.next_times(after, ZoneInfo("UTC"), 10) == cron.next_times(after, UTC, 10)


# --------------------------------------------------------------------------------------
# Hand-written expectations.
# --------------------------------------------------------------------------------------

SUNDAYS_IN_MARCH_2027 = ["2027-03-07T00:00:00+00:00", "2027-03-14T00:00:00+00:00"]

EXPLICIT_CASES = [
    pytest.param(
        "0 9 * * 1-5",
        utc(2027, 3, 1),
        UTC,
        [f"2027-03-{d:02}T09:00:00+00:00" for d in (1, 2, 3, 4, 5, 8)],
        id="weekdays-at-nine-skip-the-weekend",
    ),
    pytest.param(
        "0 9 * * 1-5",
        utc(2027, 3, 1),
        BERLIN,
        ["2027-03-01T09:00:00+01:00", "2027-03-02T09:00:00+01:00"],
        id="weekdays-at-nine-berlin-wall-clock",
    ),
    pytest.param(
        "0 0 1 * 1",
        utc(2027, 3, 1),
        UTC,
        [
            "2027-03-08T00:00:00+00:00",
            "2027-03-15T00:00:00+00:00",
            "2027-03-22T00:00:00+00:00",
            "2027-03-29T00:00:00+00:00",
            "2027-04-01T00:00:00+00:00",
            "2027-04-05T00:00:00+00:00",
        ],
        id="first-of-month-OR-every-monday",
    ),
    pytest.param(
        "0 0 1-7 * mon",
        utc(2027, 3, 31),
        UTC,
        [f"2027-04-{d:02}T00:00:00+00:00" for d in (1, 2, 3, 4, 5, 6, 7, 12)],
        id="days-1-7-OR-mondays-is-not-first-monday",
    ),
    pytest.param(
        "0 0 */10 * mon",
        utc(2027, 1, 1),
        UTC,
        [
            "2027-01-11T00:00:00+00:00",
            "2027-02-01T00:00:00+00:00",
            "2027-03-01T00:00:00+00:00",
            "2027-05-31T00:00:00+00:00",
            "2027-06-21T00:00:00+00:00",
            "2027-10-11T00:00:00+00:00",
            "2027-11-01T00:00:00+00:00",
        ],
        id="star-step-day-of-month-ANDs-with-monday",
    ),
    pytest.param(
        "7 7 7 7 7",
        utc(2027, 1, 1),
        UTC,
        [
            "2027-07-04T07:07:00+00:00",
            "2027-07-07T07:07:00+00:00",
            "2027-07-11T07:07:00+00:00",
            "2027-07-18T07:07:00+00:00",
            "2027-07-25T07:07:00+00:00",
            "2028-07-02T07:07:00+00:00",
            "2028-07-07T07:07:00+00:00",
        ],
        id="july-7th-OR-sundays-in-july",
    ),
    pytest.param(
        "0 0 31 2 mon",
        utc(2027, 1, 1),
        UTC,
        [f"2027-02-{d:02}T00:00:00+00:00" for d in (1, 8, 15, 22)] + ["2028-02-07T00:00:00+00:00"],
        id="impossible-day-OR-monday-still-fires-on-mondays",
    ),
    pytest.param(
        "*/10 * * * * *",
        utc(2027, 3, 1, 0, 0, 5),
        UTC,
        [
            "2027-03-01T00:00:10+00:00",
            "2027-03-01T00:00:20+00:00",
            "2027-03-01T00:00:30+00:00",
            "2027-03-01T00:00:40+00:00",
            "2027-03-01T00:00:50+00:00",
            "2027-03-01T00:01:00+00:00",
        ],
        id="leading-seconds-field-every-ten-seconds",
    ),
    pytest.param(
        "30 */5 9 * * *",
        utc(2027, 3, 1, 9, 54),
        UTC,
        ["2027-03-01T09:55:30+00:00", "2027-03-02T09:00:30+00:00"],
        id="leading-seconds-field-with-minute-step",
    ),
    pytest.param(
        "@weekly", utc(2027, 3, 1), UTC, SUNDAYS_IN_MARCH_2027, id="weekly-is-sunday-midnight"
    ),
    pytest.param("0 0 * * 0", utc(2027, 3, 1), UTC, SUNDAYS_IN_MARCH_2027, id="dow-0-is-sunday"),
    pytest.param("0 0 * * 7", utc(2027, 3, 1), UTC, SUNDAYS_IN_MARCH_2027, id="dow-7-is-sunday"),
    pytest.param("0 0 * * sun", utc(2027, 3, 1), UTC, SUNDAYS_IN_MARCH_2027, id="dow-sun"),
    pytest.param("0 0 * * SuN", utc(2027, 3, 1), UTC, SUNDAYS_IN_MARCH_2027, id="dow-SuN"),
    pytest.param(
        "0 0 1,15 * *",
        utc(2027, 1, 20),
        UTC,
        [
            "2027-02-01T00:00:00+00:00",
            "2027-02-15T00:00:00+00:00",
            "2027-03-01T00:00:00+00:00",
            "2027-03-15T00:00:00+00:00",
        ],
        id="first-and-fifteenth",
    ),
    pytest.param(
        "0 12 * jan,JUL *",
        utc(2027, 1, 30, 12),
        UTC,
        ["2027-01-31T12:00:00+00:00", "2027-07-01T12:00:00+00:00", "2027-07-02T12:00:00+00:00"],
        id="month-names-any-case",
    ),
    pytest.param(
        "5 4 * * sun",
        utc(2027, 3, 1),
        UTC,
        ["2027-03-07T04:05:00+00:00", "2027-03-14T04:05:00+00:00"],
        id="man-page-5-4-sundays",
    ),
    pytest.param(
        "0 22 * * 1-5",
        utc(2027, 3, 5, 22),
        UTC,
        ["2027-03-08T22:00:00+00:00", "2027-03-09T22:00:00+00:00"],
        id="man-page-22h-weekdays-from-friday-fire-time",
    ),
    pytest.param(
        "23 0-20/2 * * *",
        utc(2027, 3, 1, 19),
        UTC,
        ["2027-03-01T20:23:00+00:00", "2027-03-02T00:23:00+00:00", "2027-03-02T02:23:00+00:00"],
        id="man-page-23-past-every-second-hour",
    ),
    pytest.param(
        "0 0 29 2 *",
        utc(2027, 1, 1),
        UTC,
        ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"],
        id="leap-day-only-in-leap-years",
    ),
    pytest.param(
        "@yearly",
        utc(2027, 6, 1),
        UTC,
        ["2028-01-01T00:00:00+00:00", "2029-01-01T00:00:00+00:00"],
        id="yearly",
    ),
    pytest.param(
        "@monthly",
        utc(2027, 12, 31, 23, 59, 59),
        UTC,
        ["2028-01-01T00:00:00+00:00", "2028-02-01T00:00:00+00:00"],
        id="monthly-across-year-end",
    ),
    pytest.param(
        "@daily",
        utc(2027, 3, 1),
        UTC,
        ["2027-03-02T00:00:00+00:00", "2027-03-03T00:00:00+00:00"],
        id="daily-strictly-after-midnight",
    ),
    pytest.param(
        "@midnight",
        utc(2027, 3, 1),
        NEW_YORK,
        ["2027-03-01T00:00:00-05:00", "2027-03-02T00:00:00-05:00"],
        id="midnight-in-new-york",
    ),
    pytest.param(
        "@hourly",
        utc(2027, 3, 1, 0, 30),
        UTC,
        ["2027-03-01T01:00:00+00:00", "2027-03-01T02:00:00+00:00"],
        id="hourly",
    ),
]


@pytest.mark.parametrize(("expression", "after", "tz", "expected"), EXPLICIT_CASES)
def test_next_times_explicit_table(
    expression: str, after: datetime, tz: tzinfo, expected: list[str]
) -> None:
    times = CronExpression.parse(expression).next_times(after, tz, len(expected))

    assert iso(times) == expected


@pytest.mark.parametrize("spelling", ["0 0 * * 7", "0 0 * * sun", "0 0 * * SUN", "@weekly"])
def test_dow_zero_and_seven_and_sun_are_sunday(spelling: str) -> None:
    after = utc(2027, 3, 1)
    times = CronExpression.parse(spelling).next_times(after, UTC, 10)

    assert times == CronExpression.parse("0 0 * * 0").next_times(after, UTC, 10)
    assert {t.strftime("%A") for t in times} == {"Sunday"}


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("0 9 * * MON-FRI", "0 9 * * 1-5"),
        ("0 9 * * mon-fri", "0 9 * * 1-5"),
        ("0 9 * * Mon,Wed,FRI", "0 9 * * 1,3,5"),
        ("0 9 1 jan-Mar *", "0 9 1 1-3 *"),
        ("0  9\t* *   1-5", "0 9 * * 1-5"),
        ("@DAILY", "0 0 * * *"),
        ("@Annually", "@yearly"),
        ("0 0 * * 1-7", "0 0 * * *"),
    ],
)
def test_equivalent_spellings_fire_at_the_same_times(spelling: str, canonical: str) -> None:
    after = utc(2027, 1, 1)
    expected = CronExpression.parse(canonical).next_times(after, UTC, 20)

    assert CronExpression.parse(spelling).next_times(after, UTC, 20) == expected


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(utc(2027, 3, 1, 9), id="exactly-on-a-fire-time"),
        pytest.param(datetime(2027, 3, 1, 9, 0, 0, 1, tzinfo=UTC), id="one-microsecond-later"),
        pytest.param(datetime(2027, 3, 1, 8, 59, 59, 999_999, tzinfo=UTC), id="just-before"),
    ],
)
def test_fire_times_are_strictly_after_the_given_instant(after: datetime) -> None:
    first = CronExpression.parse("0 9 * * *").next_after(after, UTC)

    assert first is not None
    assert first > after
    assert first - after <= timedelta(days=1)
    assert first.time() == time(9)


def test_next_after_is_first_of_next_times() -> None:
    cron = CronExpression.parse("0 4 8-14 * sat")
    after = utc(2027, 5, 20, 13, 37)

    assert cron.next_after(after, BERLIN) == cron.next_times(after, BERLIN, 3)[0]


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronExpression.parse("* * * * *").next_after(datetime(2027, 3, 1), UTC)


# --------------------------------------------------------------------------------------
# Daylight saving time.
# --------------------------------------------------------------------------------------

BERLIN_SPRING = date(2027, 3, 28)  # 02:00 CET -> 03:00 CEST
BERLIN_AUTUMN = date(2027, 10, 31)  # 03:00 CEST -> 02:00 CET
NEW_YORK_SPRING = date(2027, 3, 14)  # 02:00 EST -> 03:00 EDT
NEW_YORK_AUTUMN = date(2027, 11, 7)  # 02:00 EDT -> 01:00 EST


def local_day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def fires_between(expression: str, tz: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in [start, end), both given in UTC."""
    fires = []
    for fire in CronExpression.parse(expression).iter_after(start - timedelta(microseconds=1), tz):
        if fire.astimezone(UTC) >= end:
            break
        fires.append(fire)
    return fires


def fires_on_local_day(expression: str, tz: tzinfo, day: date) -> list[datetime]:
    return fires_between(expression, tz, *local_day_bounds(day, tz))


@pytest.mark.parametrize(
    ("tz", "expression", "day", "expected"),
    [
        pytest.param(
            BERLIN, "30 2 * * *", BERLIN_SPRING, "2027-03-28T03:00:00+02:00", id="berlin-gap-0230"
        ),
        pytest.param(
            BERLIN, "0 2 * * *", BERLIN_SPRING, "2027-03-28T03:00:00+02:00", id="berlin-gap-0200"
        ),
        pytest.param(
            BERLIN, "59 2 * * *", BERLIN_SPRING, "2027-03-28T03:00:00+02:00", id="berlin-gap-0259"
        ),
        pytest.param(
            BERLIN, "0 3 * * *", BERLIN_SPRING, "2027-03-28T03:00:00+02:00", id="berlin-gap-end"
        ),
        pytest.param(
            BERLIN,
            "30 1 * * *",
            BERLIN_SPRING,
            "2027-03-28T01:30:00+01:00",
            id="berlin-before-gap",
        ),
        pytest.param(
            BERLIN,
            "30 2 * * *",
            BERLIN_AUTUMN,
            "2027-10-31T02:30:00+02:00",
            id="berlin-repeated-0230",
        ),
        pytest.param(
            BERLIN,
            "0 2 * * *",
            BERLIN_AUTUMN,
            "2027-10-31T02:00:00+02:00",
            id="berlin-repeated-0200",
        ),
        pytest.param(
            BERLIN,
            "0 3 * * *",
            BERLIN_AUTUMN,
            "2027-10-31T03:00:00+01:00",
            id="berlin-after-repeat",
        ),
        pytest.param(
            NEW_YORK,
            "30 2 * * *",
            NEW_YORK_SPRING,
            "2027-03-14T03:00:00-04:00",
            id="new-york-gap-0230",
        ),
        pytest.param(
            NEW_YORK,
            "0 2 * * *",
            NEW_YORK_SPRING,
            "2027-03-14T03:00:00-04:00",
            id="new-york-gap-0200",
        ),
        pytest.param(
            NEW_YORK,
            "30 1 * * *",
            NEW_YORK_AUTUMN,
            "2027-11-07T01:30:00-04:00",
            id="new-york-repeated-0130",
        ),
        pytest.param(
            NEW_YORK,
            "0 1 * * *",
            NEW_YORK_AUTUMN,
            "2027-11-07T01:00:00-04:00",
            id="new-york-repeated-0100",
        ),
        pytest.param(
            NEW_YORK,
            "30 2 * * *",
            NEW_YORK_AUTUMN,
            "2027-11-07T02:30:00-05:00",
            id="new-york-after-repeat",
        ),
        pytest.param(
            CASABLANCA,
            "30 2 * * *",
            date(2027, 2, 7),  # 03:00 +01 -> 02:00 +00
            "2027-02-07T02:30:00+01:00",
            id="casablanca-repeated-0230",
        ),
        pytest.param(
            CASABLANCA,
            "30 2 * * *",
            date(2027, 3, 14),  # 02:00 +00 -> 03:00 +01
            "2027-03-14T03:00:00+01:00",
            id="casablanca-gap-0230",
        ),
    ],
)
def test_fixed_time_fires_exactly_once_on_dst_day(
    tz: tzinfo, expression: str, day: date, expected: str
) -> None:
    assert iso(fires_on_local_day(expression, tz, day)) == [expected]


@pytest.mark.parametrize(
    ("tz", "expression", "day", "step", "count"),
    [
        pytest.param(BERLIN, "0 * * * *", BERLIN_SPRING, 60, 23, id="berlin-spring-hourly"),
        pytest.param(BERLIN, "0 * * * *", BERLIN_AUTUMN, 60, 25, id="berlin-autumn-hourly"),
        pytest.param(BERLIN, "@hourly", BERLIN_AUTUMN, 60, 25, id="berlin-autumn-@hourly"),
        pytest.param(BERLIN, "*/30 * * * *", BERLIN_SPRING, 30, 46, id="berlin-spring-half"),
        pytest.param(BERLIN, "*/30 * * * *", BERLIN_AUTUMN, 30, 50, id="berlin-autumn-half"),
        pytest.param(BERLIN, "15 * * * *", BERLIN_AUTUMN, 60, 25, id="berlin-autumn-quarter"),
        pytest.param(NEW_YORK, "0 * * * *", NEW_YORK_SPRING, 60, 23, id="new-york-spring-hourly"),
        pytest.param(NEW_YORK, "0 * * * *", NEW_YORK_AUTUMN, 60, 25, id="new-york-autumn-hourly"),
        pytest.param(NEW_YORK, "*/30 * * * *", NEW_YORK_SPRING, 30, 46, id="new-york-spring-half"),
        pytest.param(NEW_YORK, "*/30 * * * *", NEW_YORK_AUTUMN, 30, 50, id="new-york-autumn-half"),
    ],
)
def test_wildcard_jobs_fire_every_real_interval_on_dst_day(
    tz: tzinfo, expression: str, day: date, step: int, count: int
) -> None:
    fires = [t.astimezone(UTC) for t in fires_on_local_day(expression, tz, day)]

    assert len(fires) == count
    assert {b - a for a, b in pairwise(fires)} == {timedelta(minutes=step)}


def test_hourly_fires_in_both_copies_of_the_repeated_hour() -> None:
    fires = iso(fires_on_local_day("0 * * * *", BERLIN, BERLIN_AUTUMN))

    assert "2027-10-31T02:00:00+02:00" in fires
    assert "2027-10-31T02:00:00+01:00" in fires


def test_hourly_skips_the_missing_hour_without_a_substitute() -> None:
    fires = iso(fires_on_local_day("0 * * * *", BERLIN, BERLIN_SPRING))

    assert fires[:3] == [
        "2027-03-28T00:00:00+01:00",
        "2027-03-28T01:00:00+01:00",
        "2027-03-28T03:00:00+02:00",
    ]


DAILY_EXPRESSIONS = ["30 2 * * *", "0 2 * * *", "59 2 * * *", "30 1 * * *", "0 3 * * *", "@daily"]
DST_WINDOWS = {
    "berlin-spring": (BERLIN, date(2027, 3, 25), date(2027, 3, 31)),
    "berlin-autumn": (BERLIN, date(2027, 10, 28), date(2027, 11, 3)),
    "new-york-spring": (NEW_YORK, date(2027, 3, 11), date(2027, 3, 17)),
    "new-york-autumn": (NEW_YORK, date(2027, 11, 4), date(2027, 11, 10)),
}


@pytest.mark.parametrize("window", DST_WINDOWS.values(), ids=DST_WINDOWS.keys())
@pytest.mark.parametrize("expression", DAILY_EXPRESSIONS)
def test_daily_job_fires_once_per_local_date_across_dst(
    expression: str, window: tuple[tzinfo, date, date]
) -> None:
    tz, first_day, last_day = window
    start, _ = local_day_bounds(first_day, tz)
    _, end = local_day_bounds(last_day, tz)

    fires = fires_between(expression, tz, start, end)

    dates = [t.date() for t in fires]
    expected_dates = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    assert dates == expected_dates


INVARIANT_EXPRESSIONS = [
    "30 2 * * *",
    "0 2,3 * * *",
    "0,30 1-3 * * *",
    "0 * * * *",
    "*/30 * * * *",
    "*/20 1-3 * * *",
    "0 */2 * * *",
    "@hourly",
    "@daily",
    "*/10 * 2 * * *",
]


@pytest.mark.parametrize("window", DST_WINDOWS.values(), ids=DST_WINDOWS.keys())
@pytest.mark.parametrize("expression", INVARIANT_EXPRESSIONS)
def test_dst_fire_times_are_aware_real_increasing_and_after_start(
    expression: str, window: tuple[tzinfo, date, date]
) -> None:
    tz, first_day, _ = window
    after = datetime.combine(first_day, time(), tzinfo=tz).astimezone(UTC)

    fires = CronExpression.parse(expression).next_times(after, tz, 200)

    assert len(fires) == 200
    assert all(t.tzinfo is tz for t in fires)
    # A real instant: converting through UTC gives back the same wall time and offset.
    assert all(t.astimezone(UTC).astimezone(tz).isoformat() == t.isoformat() for t in fires)
    instants = [t.astimezone(UTC) for t in fires]
    assert instants[0] > after
    assert all(a < b for a, b in pairwise(instants))


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        pytest.param(
            "30 2 * * *",
            datetime(2027, 10, 30, 12, tzinfo=BERLIN),
            "2027-10-31T02:30:00+02:00",
            id="berlin-plain-local-after",
        ),
        pytest.param(
            "0 * * * *",
            datetime(2027, 10, 31, 2, 10, tzinfo=BERLIN, fold=1),
            "2027-10-31T03:00:00+01:00",
            id="berlin-hourly-after-second-0210",
        ),
        pytest.param(
            "30 2 * * *",
            datetime(2027, 10, 31, 2, 10, tzinfo=BERLIN, fold=1),
            "2027-11-01T02:30:00+01:00",
            id="berlin-fixed-after-second-0210",
        ),
        pytest.param(
            "30 1 * * *",
            datetime(2027, 11, 7, 1, 10, tzinfo=NEW_YORK, fold=1),
            "2027-11-08T01:30:00-05:00",
            id="new-york-fixed-after-second-0110",
        ),
    ],
)
def test_after_given_in_the_local_zone_is_honoured_as_an_instant(
    expression: str, after: datetime, expected: str
) -> None:
    tz = after.tzinfo
    assert tz is not None
    cron = CronExpression.parse(expression)

    first = cron.next_after(after, tz)

    assert first is not None
    assert first.isoformat() == expected
    assert first.astimezone(UTC) > after.astimezone(UTC)
    assert first == cron.next_after(after.astimezone(UTC), tz)


# --------------------------------------------------------------------------------------
# Parse errors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "hint"),
    [
        pytest.param("", "0 fields", id="empty"),
        pytest.param("   ", "0 fields", id="blank"),
        pytest.param("* * * *", "4 fields", id="four-fields"),
        pytest.param("* * * * * * *", "7 fields", id="seven-fields"),
        pytest.param("60 * * * *", "minute", id="minute-60"),
        pytest.param("-1 * * * *", "minute", id="minute-negative"),
        pytest.param("5-1 * * * *", "minute", id="minute-reversed-range"),
        pytest.param("*/0 * * * *", "minute", id="minute-step-zero"),
        pytest.param("1,,2 * * * *", "minute", id="minute-empty-list-item"),
        pytest.param("x * * * *", "minute", id="minute-letter"),
        pytest.param("0 24 * * *", "hour", id="hour-24"),
        pytest.param("0 0 0 * *", "day-of-month", id="dom-0"),
        pytest.param("0 0 32 * *", "day-of-month", id="dom-32"),
        pytest.param("0 0 * 13 *", "month", id="month-13"),
        pytest.param("0 0 * 0 *", "month", id="month-0"),
        pytest.param("0 0 * foo *", "month", id="month-bad-name"),
        pytest.param("0 0 * january *", "month", id="month-full-name"),
        pytest.param("0 0 * * 8", "day-of-week", id="dow-8"),
        pytest.param("0 0 * * funday", "day-of-week", id="dow-bad-name"),
        pytest.param("0 0 * * sunday", "day-of-week", id="dow-full-name"),
        pytest.param("0 0 * * mon,", "day-of-week", id="dow-trailing-comma"),
        pytest.param("60 * * * * *", "second", id="second-60"),
        pytest.param("@reboot", "macro", id="reboot"),
        pytest.param("@every 5m", "macro", id="every"),
        pytest.param("0 0 31 2 *", "never", id="february-31st"),
        pytest.param("0 0 30 2 *", "never", id="february-30th"),
        pytest.param("0 0 31 4,6,9,11 *", "never", id="31st-of-short-months"),
        pytest.param("0 0 31 2 */2", "never", id="february-31st-star-step-dow"),
    ],
)
def test_bad_expression_raises_cron_error_naming_the_problem(expression: str, hint: str) -> None:
    with pytest.raises(CronError, match=hint):
        CronExpression.parse(expression)


@pytest.mark.parametrize("value", [None, 5, b"0 9 * * *"])
def test_non_string_expression_raises_cron_error(value: object) -> None:
    with pytest.raises(CronError, match="string"):
        CronExpression.parse(value)  # type: ignore[arg-type]


def test_cron_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="hour"):
        CronExpression.parse("0 25 * * *")
