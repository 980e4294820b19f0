"""CrontabTrigger driven the way APScheduler 3 drives a trigger.

APScheduler calls ``get_next_fire_time(None, now)`` when a job is added or resumed, and
``get_next_fire_time(previous_fire_time, now)`` after each run, feeding back the previous
result; while catching up it keeps feeding results back as long as they are <= now.
"""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from engine.errors import CronError
from engine.scheduler.triggers import CrontabTrigger

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def scheduler_loop(
    trigger: CrontabTrigger, start: datetime, end: datetime, delay: timedelta = timedelta(0)
) -> list[datetime]:
    """Fire times in [start, end): first from ``now=start``, then each fire fed back as
    the previous fire time with ``now`` a moment after it (as after a job run)."""
    fires: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire.astimezone(UTC) + delay)
    return fires


def catch_up(trigger: CrontabTrigger, due: datetime, now: datetime) -> list[datetime]:
    """APScheduler's Job._get_run_times: every fire time from ``due`` up to ``now``."""
    run_times = []
    next_run_time: datetime | None = due
    while next_run_time is not None and next_run_time <= now:
        run_times.append(next_run_time)
        next_run_time = trigger.get_next_fire_time(next_run_time, now)
    return run_times


# --------------------------------------------------------------------------------------
# The headline, and the APScheduler pitfall it replaces.
# --------------------------------------------------------------------------------------


def test_weekdays_at_nine_fire_monday_to_friday_never_weekend() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", timezone="UTC")

    fires = scheduler_loop(trigger, utc(2027, 3, 1), utc(2027, 3, 15))

    assert [t.strftime("%a %d") for t in fires] == [
        "Mon 01",
        "Tue 02",
        "Wed 03",
        "Thu 04",
        "Fri 05",
        "Mon 08",
        "Tue 09",
        "Wed 10",
        "Thu 11",
        "Fri 12",
    ]
    assert all(t.time() == time(9) and t.utcoffset() == timedelta(0) for t in fires)


def test_apscheduler_from_crontab_shifts_weekdays_by_one_which_is_why_we_replace_it() -> None:
    # APScheduler 3 numbers days from Monday=0, so crontab's "1-5" means Tue..Sat there.
    trigger = CronTrigger.from_crontab("0 9 * * 1-5", timezone="UTC")

    fires = []
    fire = trigger.get_next_fire_time(None, utc(2027, 3, 1))
    while fire is not None and fire < utc(2027, 3, 8):
        fires.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)

    assert fires[0] == utc(2027, 3, 2, 9)
    assert [t.strftime("%a") for t in fires] == ["Tue", "Wed", "Thu", "Fri", "Sat"]


# --------------------------------------------------------------------------------------
# The shape of APScheduler's calls.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        pytest.param("UTC", utc(2027, 3, 1, 9), id="utc"),
        pytest.param("Europe/Berlin", datetime(2027, 3, 1, 9, tzinfo=BERLIN), id="berlin"),
        pytest.param("Europe/Berlin", utc(2027, 3, 1, 8), id="berlin-now-given-in-utc"),
    ],
)
def test_first_fire_is_now_itself_when_now_is_a_fire_time(zone: str, now: datetime) -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", timezone=zone)

    fire = trigger.get_next_fire_time(None, now)

    assert fire == now
    assert fire is not None
    assert fire.tzinfo == ZoneInfo(zone)


def test_first_fire_after_now_when_now_is_just_past_a_fire_time() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5")

    fire = trigger.get_next_fire_time(None, utc(2027, 3, 5, 9, 0, 0, 1))

    assert fire == utc(2027, 3, 8, 9)


def test_previous_fire_in_the_past_gives_the_next_after_it_not_after_now() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5")

    fire = trigger.get_next_fire_time(utc(2027, 3, 1, 9), utc(2027, 3, 5, 12))

    assert fire == utc(2027, 3, 2, 9)


def test_catching_up_after_downtime_sees_every_missed_run_once() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5")

    missed = catch_up(trigger, due=utc(2027, 3, 1, 9), now=utc(2027, 3, 5, 12))

    assert missed == [utc(2027, 3, d, 9) for d in (1, 2, 3, 4, 5)]
    assert trigger.get_next_fire_time(missed[-1], utc(2027, 3, 5, 12)) == utc(2027, 3, 8, 9)


def test_feeding_results_back_reproduces_the_cron_sequence_with_seconds() -> None:
    trigger = CrontabTrigger("*/10 * * * * *")

    fires = scheduler_loop(trigger, utc(2027, 3, 1, 0, 0, 5), utc(2027, 3, 1, 0, 1, 5))

    assert fires == [utc(2027, 3, 1, 0, 0, s) for s in (10, 20, 30, 40, 50)] + [
        utc(2027, 3, 1, 0, 1)
    ]


def test_timezone_as_name_or_zoneinfo_gives_the_same_fire_times() -> None:
    by_name = CrontabTrigger("0 9 * * 1-5", timezone="Europe/Berlin")
    by_object = CrontabTrigger("0 9 * * 1-5", timezone=BERLIN)
    start, end = utc(2027, 3, 1), utc(2027, 4, 1)

    fires = scheduler_loop(by_name, start, end)

    assert fires == scheduler_loop(by_object, start, end)
    assert fires[0].isoformat() == "2027-03-01T09:00:00+01:00"
    assert fires[-1].isoformat() == "2027-03-31T09:00:00+02:00"


def test_bad_expression_is_refused_when_the_trigger_is_built() -> None:
    with pytest.raises(CronError, match="day-of-week"):
        CrontabTrigger("0 9 * * 8")


# --------------------------------------------------------------------------------------
# Daylight saving time through the scheduler loop.
# --------------------------------------------------------------------------------------


def berlin_day(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=BERLIN)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=BERLIN)
    return start.astimezone(UTC), end.astimezone(UTC)


@pytest.mark.parametrize(
    ("expression", "day", "expected"),
    [
        pytest.param(
            "30 2 * * *", date(2027, 10, 31), ["2027-10-31T02:30:00+02:00"], id="autumn-0230"
        ),
        pytest.param(
            "30 2 * * *", date(2027, 3, 28), ["2027-03-28T03:00:00+02:00"], id="spring-0230"
        ),
        pytest.param(
            "0 1-3 * * *",
            date(2027, 10, 31),
            [
                "2027-10-31T01:00:00+02:00",
                "2027-10-31T02:00:00+02:00",
                "2027-10-31T03:00:00+01:00",
            ],
            id="autumn-fixed-hours-1-3",
        ),
        pytest.param(
            "0 1-3 * * *",
            date(2027, 3, 28),
            ["2027-03-28T01:00:00+01:00", "2027-03-28T03:00:00+02:00"],
            id="spring-fixed-hours-1-3",
        ),
        pytest.param(
            "0 1-3/1 * * *",
            date(2027, 10, 31),
            [
                "2027-10-31T01:00:00+02:00",
                "2027-10-31T02:00:00+02:00",
                "2027-10-31T03:00:00+01:00",
            ],
            id="autumn-fixed-hours-step",
        ),
        pytest.param(
            "0 */1 * * *",
            date(2027, 10, 31),
            [f"2027-10-31T{h:02}:00:00+02:00" for h in range(3)]
            + [f"2027-10-31T{h:02}:00:00+01:00" for h in range(2, 24)],
            id="autumn-wildcard-hours",
        ),
    ],
)
def test_scheduler_loop_over_berlin_dst_day(
    expression: str, day: date, expected: list[str]
) -> None:
    trigger = CrontabTrigger(expression, timezone="Europe/Berlin")
    start, end = berlin_day(day)

    fires = scheduler_loop(trigger, start, end, delay=timedelta(seconds=3))

    assert iso(fires) == expected


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 * * * *", "*/30 * * * *", "0 2,3 * * *"])
def test_scheduler_loop_across_berlin_autumn_never_repeats_an_instant(expression: str) -> None:
    trigger = CrontabTrigger(expression, timezone="Europe/Berlin")

    fires = scheduler_loop(trigger, utc(2027, 10, 29), utc(2027, 11, 3), delay=timedelta(seconds=1))

    instants = [t.astimezone(UTC) for t in fires]
    assert instants
    assert all(a < b for a, b in pairwise(instants))
    assert all(t.tzinfo is BERLIN for t in fires)


def test_hourly_loop_gives_25_runs_on_berlin_autumn_day() -> None:
    trigger = CrontabTrigger("0 * * * *", timezone="Europe/Berlin")

    fires = scheduler_loop(trigger, *berlin_day(date(2027, 10, 31)))

    assert len(fires) == 25
    assert len({t.astimezone(UTC) for t in fires}) == 25


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param(
            "0 * * * *",
            "2027-10-31T03:00:00+01:00",
            id="hourly",
        ),
        pytest.param(
            "*/5 * * * *",
            "2027-10-31T02:10:00+01:00",
            id="every-5-min-now-is-a-fire-time",
        ),
        pytest.param(
            "30 2 * * *",
            "2027-11-01T02:30:00+01:00",
            id="daily-0230-already-ran",
        ),
        pytest.param("0 4 * * *", "2027-10-31T04:00:00+01:00", id="daily-0400"),
    ],
)
def test_now_in_the_repeated_hour_in_local_time_is_not_moved_back(
    expression: str, expected: str
) -> None:
    trigger = CrontabTrigger(expression, timezone="Europe/Berlin")
    now = datetime(2027, 10, 31, 2, 10, tzinfo=BERLIN, fold=1)  # 01:10 UTC

    fire = trigger.get_next_fire_time(None, now)

    assert fire is not None
    assert fire.isoformat() == expected
    assert fire.astimezone(UTC) >= now.astimezone(UTC)


# --------------------------------------------------------------------------------------
# start_date / end_date.
# --------------------------------------------------------------------------------------


def test_start_date_in_the_future_delays_the_first_fire() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", start_date=utc(2027, 3, 3))

    assert trigger.get_next_fire_time(None, utc(2027, 3, 1)) == utc(2027, 3, 3, 9)


def test_start_date_that_is_a_fire_time_is_included() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", start_date=utc(2027, 3, 3, 9))

    assert trigger.get_next_fire_time(None, utc(2027, 3, 1)) == utc(2027, 3, 3, 9)


def test_previous_fire_before_start_date_resumes_at_start_date() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", start_date=utc(2027, 3, 3))

    assert trigger.get_next_fire_time(utc(2027, 3, 1, 9), utc(2027, 3, 1, 10)) == utc(2027, 3, 3, 9)


def test_start_date_in_the_past_does_not_hold_back_now() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", start_date=utc(2027, 1, 1))

    assert trigger.get_next_fire_time(None, utc(2027, 3, 2, 10)) == utc(2027, 3, 3, 9)


def test_end_date_is_inclusive_and_nothing_fires_after_it() -> None:
    trigger = CrontabTrigger("0 9 * * 1-5", start_date=utc(2027, 3, 3), end_date=utc(2027, 3, 5, 9))

    fires = scheduler_loop(trigger, utc(2027, 3, 1), utc(2027, 12, 31))

    assert fires == [utc(2027, 3, 3, 9), utc(2027, 3, 4, 9), utc(2027, 3, 5, 9)]
    assert trigger.get_next_fire_time(utc(2027, 3, 5, 9), utc(2027, 3, 5, 9)) is None


def test_now_past_end_date_gives_none() -> None:
    trigger = CrontabTrigger("* * * * *", end_date=utc(2027, 3, 1))

    assert trigger.get_next_fire_time(None, utc(2027, 3, 1, 0, 0, 1)) is None


# --------------------------------------------------------------------------------------
# Pickling (job stores).
# --------------------------------------------------------------------------------------

PICKLE_CASES: dict[str, dict[str, Any]] = {
    "plain": {"expression": "0 9 * * 1-5"},
    "berlin-window": {
        "expression": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "start_date": utc(2027, 3, 1),
        "end_date": utc(2027, 12, 1),
    },
    "zoneinfo-object-seconds": {"expression": "*/20 * * * * *", "timezone": BERLIN},
    "datetime-utc-object": {"expression": "@hourly", "timezone": UTC},
    "jitter": {"expression": "@daily", "timezone": "America/New_York", "jitter": 12.5},
}


@pytest.mark.parametrize("kwargs", PICKLE_CASES.values(), ids=PICKLE_CASES.keys())
def test_pickle_round_trip_gives_the_same_fire_times(kwargs: dict[str, Any]) -> None:
    trigger = CrontabTrigger(**kwargs)
    clone = pickle.loads(pickle.dumps(trigger))
    start, end = utc(2027, 3, 27), utc(2027, 3, 29)
    trigger.jitter = clone.jitter = None  # compare the schedules, not random offsets

    assert isinstance(clone, CrontabTrigger)
    assert scheduler_loop(clone, start, end) == scheduler_loop(trigger, start, end)
    assert str(clone) == str(trigger)


@pytest.mark.parametrize("kwargs", PICKLE_CASES.values(), ids=PICKLE_CASES.keys())
def test_pickled_state_is_plain_data(kwargs: dict[str, Any]) -> None:
    trigger = CrontabTrigger(**kwargs)
    state = trigger.__getstate__()
    data = pickle.dumps(trigger)

    assert all(isinstance(v, str | datetime | float | int | None) for v in state.values())
    assert isinstance(state["timezone"], str)
    assert b"cronsim" not in data
    assert b"zoneinfo" not in data.lower()
    assert b"engine.files.cron" not in data


def test_pickle_keeps_window_and_jitter() -> None:
    trigger = CrontabTrigger(
        "0 9 * * *", "Europe/Berlin", utc(2027, 1, 1), utc(2028, 1, 1), jitter=7.5
    )

    clone = pickle.loads(pickle.dumps(trigger))

    assert (clone.expression, clone.timezone, clone.start_date, clone.end_date, clone.jitter) == (
        "0 9 * * *",
        BERLIN,
        utc(2027, 1, 1),
        utc(2028, 1, 1),
        7.5,
    )


def test_fixed_offset_timezone_is_refused_because_it_would_not_unpickle() -> None:
    with pytest.raises(ValueError, match="IANA zone"):
        CrontabTrigger("0 9 * * *", timezone=timezone(timedelta(hours=2)))


# --------------------------------------------------------------------------------------
# Jitter.
# --------------------------------------------------------------------------------------


def test_jitter_delays_each_fire_by_at_most_the_jitter() -> None:
    trigger = CrontabTrigger("0 9 * * *", jitter=30)
    slot = utc(2027, 3, 1, 9)

    fires = [trigger.get_next_fire_time(None, utc(2027, 3, 1, 8)) for _ in range(300)]

    offsets = [f - slot for f in fires if f is not None]
    assert len(offsets) == 300
    assert all(timedelta(0) <= o <= timedelta(seconds=30) for o in offsets)
    assert max(offsets) - min(offsets) > timedelta(seconds=10)  # really randomised


def test_jittered_fire_fed_back_does_not_skip_or_repeat_a_slot() -> None:
    trigger = CrontabTrigger("* * * * *", jitter=30)
    plain = CrontabTrigger("* * * * *")
    start, end = utc(2027, 3, 1), utc(2027, 3, 1, 1)

    fires = scheduler_loop(trigger, start, end)
    slots = scheduler_loop(plain, start, end)

    assert len(slots) == 60
    assert [f.replace(second=0, microsecond=0) for f in fires] == slots
    assert all(
        timedelta(0) <= f - s <= timedelta(seconds=30) for f, s in zip(fires, slots, strict=True)
    )


@pytest.mark.parametrize("jitter", [None, 0])
def test_no_jitter_gives_exact_fire_times(jitter: float | None) -> None:
    trigger = CrontabTrigger("0 9 * * *", jitter=jitter)

    assert trigger.get_next_fire_time(None, utc(2027, 3, 1)) == utc(2027, 3, 1, 9)


@pytest.mark.parametrize(
    ("expression", "zone"),
    [
        ("30 2 * * *", "Europe/Berlin"),  # fixed time: wall-clock DST handling
        ("0 * * * *", "Europe/Berlin"),
        ("*/20 1-3 * * *", "America/New_York"),
        ("15 1 * * 0", "America/New_York"),
        ("*/7 * * * * *", "UTC"),
    ],
)
def test_answers_kept_between_fires_equal_fresh_answers(expression: str, zone: str) -> None:
    """The trigger remembers its last answer and continues its iterator: across DST
    days, with the same question asked twice per fire as APScheduler does, every answer
    equals a fresh trigger's."""
    kept = CrontabTrigger(expression, zone)
    windows = [(utc(2026, 3, 5), utc(2026, 4, 1)), (utc(2026, 10, 22), utc(2026, 11, 5))]
    if zone == "UTC":
        windows = [(utc(2026, 3, 27), utc(2026, 3, 27, 2))]
    for begin, finish in windows:
        fire = kept.get_next_fire_time(None, begin)
        count = 0
        while fire is not None and fire < finish:
            now = fire + timedelta(milliseconds=3)
            following = kept.get_next_fire_time(fire, now)
            assert kept.get_next_fire_time(fire, now) == following  # asked again
            fresh = CrontabTrigger(expression, zone).get_next_fire_time(fire, now)
            assert following == fresh
            assert following is None or following.utcoffset() == fresh.utcoffset()
            if count % 3 == 0:  # another question in between (a read: "next 5 times")
                earlier = fire - timedelta(minutes=50)
                other = CrontabTrigger(expression, zone).get_next_fire_time(earlier, now)
                assert kept.get_next_fire_time(earlier, now) == other
            fire, count = following, count + 1
        assert count > 0
