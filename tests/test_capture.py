"""Per-run log capture and the process log's formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from engine.execution import capture, context
from engine.execution.logs import (
    AccessFilter,
    JsonFormatter,
    RunTags,
    TextFormatter,
    configure_logging,
)
from engine.execution.threads import TaskThreads

T = TypeVar("T")
BERLIN = ZoneInfo("Europe/Berlin")
log = logging.getLogger("tasks.reports")


def run_context(job_id: str = "nightly", attempt: int = 1) -> context.RunContext:
    scheduled = datetime(2025, 7, 1, 3, 0, tzinfo=BERLIN)
    return context.RunContext(job_id, scheduled, attempt, f"{job_id}@{scheduled}#{attempt}")


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    """Capture installed, root at DEBUG so every record reaches handlers; all restored."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    capture.install()
    yield
    capture.uninstall()
    root.setLevel(level)


def in_run(run: context.RunContext | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` inside ``run`` (or outside any run for None), as the runner sets it."""
    if run is None:
        return fn(*args)
    token = context.enter(run)
    try:
        return fn(*args)
    finally:
        context.leave(token)


def test_records_of_a_run_are_kept_with_time_in_the_runs_zone_level_and_message() -> None:
    run = run_context()
    capture.open(run.run_id)
    in_run(run, log.warning, "disk at %d%%", 91)
    in_run(run, log.debug, "detail")
    log.error("outside any run")
    records = capture.close(run.run_id)
    assert [(r["level"], r["message"]) for r in records] == [
        ("WARNING", "disk at 91%"),
        ("DEBUG", "detail"),
    ]
    at = datetime.fromisoformat(records[0]["at"])
    assert at.utcoffset() == BERLIN.utcoffset(at.replace(tzinfo=None))  # shown in Berlin time
    assert abs(at.timestamp() - datetime.now().timestamp()) < 60
    assert capture.close(run.run_id) == []  # closed: nothing more is kept


async def test_concurrent_async_runs_each_keep_only_their_own_records() -> None:
    first, second = run_context("a"), run_context("b")

    async def task(name: str, gate: asyncio.Event, other: asyncio.Event) -> None:
        log.info("%s one", name)
        gate.set()
        await other.wait()  # interleave: both runs log while the other is in progress
        log.info("%s two", name)

    async def run(ctx: context.RunContext, gate: asyncio.Event, other: asyncio.Event) -> None:
        token = context.enter(ctx)
        try:
            await task(ctx.job_id, gate, other)
        finally:
            context.leave(token)

    capture.open(first.run_id)
    capture.open(second.run_id)
    a_started, b_started = asyncio.Event(), asyncio.Event()
    await asyncio.gather(run(first, a_started, b_started), run(second, b_started, a_started))
    assert [r["message"] for r in capture.close(first.run_id)] == ["a one", "a two"]
    assert [r["message"] for r in capture.close(second.run_id)] == ["b one", "b two"]


async def test_records_of_a_def_task_in_its_thread_are_kept() -> None:
    pool = TaskThreads(size=2)
    run = run_context("sync-job")
    capture.open(run.run_id)
    token = context.enter(run)
    try:
        future = pool.submit(run.job_id, log.warning, "from the %s", "thread")
    finally:
        context.leave(token)
    try:
        await asyncio.wrap_future(future)
        await asyncio.to_thread(log.warning, "not a run: to_thread copies no run context")
        assert [r["message"] for r in capture.close(run.run_id)] == ["from the thread"]
    finally:
        pool.shutdown()


def test_only_the_last_100_records_are_kept_and_long_messages_are_cut() -> None:
    run = run_context()
    buffer = capture.open(run.run_id)
    for n in range(130):
        in_run(run, log.info, "record %d", n)
    in_run(run, log.info, "x" * 5000)
    records = capture.close(run.run_id)
    assert len(records) == capture.MAX_RECORDS == 100
    assert records[0]["message"] == "record 31" and buffer.dropped == 31
    assert records[-1]["message"] == "x" * 2000 + "… [3000 more characters]"


def test_known_secret_values_are_masked_even_where_a_message_is_cut() -> None:
    run = run_context()
    secret = "hunter2-very-secret"
    capture.open(run.run_id, mask=lambda text: text.replace(secret, "***"))
    in_run(run, log.info, "connecting with %s", secret)
    in_run(run, log.info, "y" * 1990 + secret)  # the secret straddles the cut
    records = capture.close(run.run_id)
    assert records[0]["message"] == "connecting with ***"
    assert records[1]["message"] == "y" * 1990 + "***"
    assert all("hunter" not in r["message"] for r in records)


def test_an_exception_logged_in_a_run_keeps_its_traceback() -> None:
    run = run_context()
    capture.open(run.run_id)

    def task() -> None:
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")

    in_run(run, task)
    (record,) = capture.close(run.run_id)
    assert record["level"] == "ERROR"
    assert record["message"].startswith("lookup failed\nTraceback (most recent call last):")
    assert "KeyError: 'missing'" in record["message"]


def test_print_output_is_not_captured(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_context()
    capture.open(run.run_id)
    in_run(run, print, "printed, not logged")
    assert capture.close(run.run_id) == []
    assert "printed, not logged" in capsys.readouterr().out


def test_install_is_reference_counted_so_two_engines_can_share_it() -> None:
    root = logging.getLogger()
    capture.install()  # a second engine (the fixture installed the first)
    capture.uninstall()  # it stops: the first engine still captures
    run = run_context()
    capture.open(run.run_id)
    in_run(run, log.info, "still captured")
    assert [r["message"] for r in capture.close(run.run_id)] == ["still captured"]
    handlers = len(root.handlers)
    capture.uninstall()  # the last one: the handler leaves the root logger
    assert len(root.handlers) == handlers - 1
    capture.install()  # for the fixture's uninstall


LAST_RESORT = """
import logging
from engine.execution import capture

capture.install()
logging.getLogger("host.module").warning("the host's warning still shows")
logging.getLogger("host.module").info("below the last resort's level")
capture.uninstall()
"""


def test_installing_the_capture_keeps_pythons_last_resort_output_of_a_bare_host() -> None:
    """With no logging configured, Python prints warnings to stderr; the capture's root
    handler must not silence them (it would, were it counted as a handler)."""
    script = textwrap.dedent(LAST_RESORT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "the host's warning still shows\n"


def record(message: str, exc_info: Any = None) -> logging.LogRecord:
    return log.makeRecord(log.name, logging.WARNING, "f.py", 1, message, (), exc_info)


def test_run_tags_name_the_job_and_attempt_of_every_record_of_a_run() -> None:
    run = run_context("nightly", attempt=2)
    tags = RunTags()
    inside, outside = record("in"), record("out")
    assert in_run(run, tags.filter, inside) and tags.filter(outside)
    tagged = [
        [vars(r).get(key, "missing") for key in ("job", "attempt", "run_id")]
        for r in (inside, outside)
    ]
    assert tagged == [["nightly", 2, run.run_id], [None, None, None]]


def test_text_lines_of_a_run_end_with_its_job_and_attempt_and_show_its_traceback() -> None:
    run = run_context("nightly", attempt=3)
    formatter = TextFormatter()
    inside = in_run(run, formatter.format, record("slow disk"))
    assert inside.endswith(" WARNING tasks.reports: slow disk [job=nightly attempt=3]")
    assert formatter.format(record("idle")).endswith(" WARNING tasks.reports: idle")
    try:
        raise ValueError("bad row")
    except ValueError:
        failed = record("failed", sys.exc_info())
    lines = in_run(run, formatter.format, failed).splitlines()
    assert lines[0].endswith("failed [job=nightly attempt=3]")
    assert lines[-1] == "ValueError: bad row"


def test_json_lines_are_one_object_each_with_the_runs_fields_and_traceback() -> None:
    run = run_context("nightly", attempt=2)
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nrow")
    except ValueError:
        failed = record("two\nlines", sys.exc_info())
    line = in_run(run, formatter.format, failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {
        "time",
        "level",
        "logger",
        "message",
        "job",
        "attempt",
        "run_id",
        "traceback",
    }
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        log.name,
        "two\nlines",
    )
    assert (entry["job"], entry["attempt"], entry["run_id"]) == ("nightly", 2, run.run_id)
    assert entry["traceback"].endswith("ValueError: bad\nrow")
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
    plain = json.loads(formatter.format(record("idle")))
    assert (plain["job"], plain["attempt"], plain["run_id"]) == (None, None, None)
    assert "traceback" not in plain


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_process_log_lines_of_a_run_mask_its_secret_values(formatter: logging.Formatter) -> None:
    run = run_context()
    capture.open(run.run_id, mask=lambda text: text.replace("hunter2", "***"))
    try:
        line = in_run(run, formatter.format, record("password is hunter2"))
    finally:
        capture.close(run.run_id)
    assert "hunter2" not in line and "password is ***" in line


def access_record(path: str, status: int = 200) -> logging.LogRecord:
    """An access-log record exactly as uvicorn's HTTP protocol logs it."""
    args = ("127.0.0.1:5000", "GET", path, "1.1", status)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, "h11_impl.py", 1, '%s - "%s %s HTTP/%s" %d', args, None
    )


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/metrics?name=x"])
def test_probes_are_not_written_to_the_access_log(path: str) -> None:
    assert not AccessFilter().filter(access_record(path))


def test_other_requests_are_logged_with_their_status_phrase() -> None:
    record = access_record("/jobs?status=failed", 404)
    assert AccessFilter().filter(record)
    assert (
        record.getMessage() == '127.0.0.1:5000 - "GET /jobs?status=failed HTTP/1.1" 404 Not Found'
    )
    assert AccessFilter().filter(access_record("/healthz/extra"))


@pytest.fixture
def process_logging() -> Iterator[None]:
    """Restore the root and uvicorn loggers after ``configure_logging``."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level, list(lg.handlers), list(lg.filters), lg.propagate) for lg in loggers]
    yield
    for logger, level, handlers, filters, propagate in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.filters[:] = filters
        logger.propagate = propagate


@pytest.mark.usefixtures("process_logging")
def test_serve_logging_writes_json_lines_at_the_level_and_sends_uvicorn_through_it() -> None:
    stream = io.StringIO()
    configure_logging("warning", "JSON", stream)
    configure_logging("warning", "json", stream)  # again: replaces its handler, not adds one
    run = run_context("nightly", attempt=1)
    in_run(run, log.warning, "kept")
    log.info("below the level")
    logging.getLogger("uvicorn.error").error("from uvicorn")
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"], e["job"]) for e in entries] == [
        (log.name, "kept", "nightly"),
        ("uvicorn.error", "from uvicorn", None),
    ]
    access = logging.getLogger("uvicorn.access")
    assert access.propagate and not access.handlers
    assert any(isinstance(f, AccessFilter) for f in access.filters)


@pytest.mark.parametrize(
    ("level", "fmt", "named"),
    [("loud", "text", "ENGINE_LOG_LEVEL"), ("INFO", "yaml", "ENGINE_LOG_FORMAT")],
)
@pytest.mark.usefixtures("process_logging")
def test_a_bad_log_setting_is_refused_naming_it(level: str, fmt: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        configure_logging(level, fmt, io.StringIO())


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 3, 30, 1, 59, 59, 999_000, tzinfo=UTC),  # just before Berlin's DST
        datetime(2025, 3, 30, 1, 0, 0, 250_000, tzinfo=UTC),  # Berlin jumps to +02:00
        datetime(2025, 10, 26, 0, 59, 59, 500_000, tzinfo=UTC),  # the hour Berlin repeats
        datetime(2025, 10, 26, 1, 0, 0, 1_000, tzinfo=UTC),  # back to +01:00
        datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC),  # a whole second
    ],
    ids=str,
)
@pytest.mark.parametrize("zone", [BERLIN, UTC, ZoneInfo("America/St_Johns")], ids=str)
def test_record_times_are_exact_iso_with_the_zones_offset_at_that_instant(
    moment: datetime, zone: ZoneInfo
) -> None:
    created = moment.timestamp()
    expected = datetime.fromtimestamp(created, zone).isoformat(timespec="microseconds")
    assert capture.iso_time(created, zone) == expected
    assert capture.iso_time(created, zone) == expected  # the cached second gives the same


def test_record_times_match_datetime_for_many_instants() -> None:
    rng = random.Random(8)
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    for _ in range(2_000):
        created = start + rng.random() * 3 * 365 * 86_400
        for zone in (BERLIN, UTC):
            expected = datetime.fromtimestamp(created, zone).isoformat(timespec="microseconds")
            assert capture.iso_time(created, zone) == expected, created
