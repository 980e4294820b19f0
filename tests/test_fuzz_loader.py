"""Property-based fuzzing of the loader and ``schedctl validate`` (issue 6, "Must show").

Files are generated two ways: structurally (job mappings with random fields and values,
nasty scalars among them: values YAML cannot build, tags, anchors and merges, control
characters, huge numbers, dates at the calendar's edges, unicode), and as byte-level
mutations of valid files. For every file:

- no exception escapes the loader or ``validate``;
- every problem is exactly one ``path:line:col: error: message`` line, at a place in the file;
- every job the loader accepts round-trips through the state database (the real
  ``StateDB`` on SQLite: the spec read back is the same spec) and its first fire times
  compute with the engine's own trigger code, as the job store keeps them.

``make test`` runs ``FUZZ_EXAMPLES`` (default 1,000) cases per property, 2,000 in all;
``make fuzz`` runs 50,000 per property, 100,000 in all (``make fuzz FUZZ_EXAMPLES=N`` for
another number), with a fresh random seed each time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.util import datetime_to_utc_timestamp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.files.loader import Declared, FileResult, Loader
from engine.files.spec import JobSpec
from engine.scheduler.jobs import schedule_problem, trigger_for
from engine.state.db import StateDB
from engine.surfaces.cli import main as schedctl

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 1000,  # the suite's run is the same every time; `make fuzz` explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
# pytest's 60 s per test is for the rest of the suite; a loaded machine gets room here.
LIMIT = pytest.mark.timeout(max(180, EXAMPLES // 5))
LINE = re.compile(r"^(?P<file>[^\n]+):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): error: [^\r\n]+$")
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

TASKS = [
    "tasks.launch:go",
    "tasks.health:ping",
    "tasks.reports.nightly",
    "tasks.nope:x",
    "os:system",
]
FIELDS = [
    "task", "cron", "interval", "at", "timezone", "args", "kwargs", "paused", "timeout",
    "retries", "retry_delay", "concurrency", "max_instances", "misfire_grace", "coalesce",
    "jitter", "start", "end", "description", "labels", "executor", "queue",
    "crn", "<<", "x-extra", "",
]  # fmt: skip
# Scalars, written as YAML source: valid ones, and every kind that once escaped the loader.
NASTY = [
    "2027-02-30T09:00:00", "2027-13-01T00:00:00", "!!int abc", "!!float xyz", "!!bool maybe",
    "!!timestamp abc", "!!timestamp 2027-02-30", "!!binary ===", "!!null x", "!!str 5",
    "!!set {a}", "!!omap [a]", "!!python/object:os.system", "!!python/name:os.system ''",
    "!custom x", "9" * 4301, "-" + "9" * 4400, "0x" + "f" * 4000, "0o" + "7" * 5000,
    "0b" + "1" * 15000, '"\\ud800"', '"\\udfff x"', '"\\x07"', '"\\0"', '"\\e"', '"\\N"',
    "[" * 300 + "]" * 300, "[" * 70 + "]" * 70, "{a: " * 80 + "1" + "}" * 80,
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-11:00", "9999-12-31T23:59:59",
    "0001-01-01T00:00:00", "0001-01-01", "9999-12-31", "2027-01-01 09:00:00 +14",
    "2027-01-01T09:00:00.123456789Z", ".inf", "-.inf", ".nan", "1e400", "-0", "1_000",
    "1:30", "190:20:30", "0.000001", "1e-9", "1", "1s", "999ms", "30s", "5m", "1h30m", "2d",
    "1w", "5200w", "100000000000000000", "-5", "~", "null", "yes", "no", "on", "true",
    "maybe", '"0 2 * * *"', '"*/5 * * * *"', '"0 0 30 2 *"', '"@yearly"', '"61 * * * *"',
    '"* * * * * * *"', "UTC", "Pacific/Pago_Pago", "Pacific/Kiritimati", "Mars/Base",
    "Europe/Berlin", "forbid", "allow", "replace", "celery", "local", "[]", "{}", "[1, x]",
    "{k: v}", "{password: hunter2}", "'quoted ''x'''", "|\n      block\n      text",
    ">-\n      folded", "*nowhere", "&anchor value", "! x", "!!map {}", "!!seq []",
    "tasks.launch:go", "tasks.health:ping", "é", "\u202e", "\U0001f600", "\ufeff", "\u2028",
]  # fmt: skip


def _quoted(text: str) -> str:
    """Any Python string as a YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return json.dumps(text)


scalars = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30).map(_quoted),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(
        st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=20
    ),  # plain, unquoted
)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
durations = st.one_of(
    st.sampled_from(["1s", "30s", "5m", "1h30m", "2d", "1w", "5200w", "1000ms", "90"]),
    st.integers(0, 10**10).map(str),
    st.floats(0, 10**10).map(repr),
)
instants = st.one_of(
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.sampled_from(["9999-12-31T23:59:59", "0001-01-01T00:00:00", "2027-01-01T09:00:00"]),
)
ZONES = ["UTC", "Europe/Berlin", "Pacific/Pago_Pago", "Pacific/Kiritimati", "America/St_Johns"]
CRONS = ["0 2 * * *", "*/5 * * * *", "0 9 * * 1-5", "@yearly", "*/10 * * * * *", "0 0 29 2 *"]
# Values a field takes when it is written right (most of the time), as YAML source.
VALID = {
    "task": st.sampled_from(["tasks.launch:go", "tasks.health:ping", "tasks.reports:nightly"]),
    "cron": st.sampled_from(CRONS).map(_quoted),
    "interval": durations,
    "at": instants,
    "start": instants,
    "end": instants,
    "timezone": st.sampled_from(ZONES),
    "args": st.lists(json_values, max_size=3).map(json.dumps),
    "kwargs": st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(json.dumps),
    "paused": st.sampled_from(["true", "false"]),
    "coalesce": st.sampled_from(["true", "false"]),
    "timeout": durations,
    "retries": st.integers(0, 5).map(str),
    "retry_delay": durations,
    "misfire_grace": durations,
    "jitter": durations,
    "concurrency": st.sampled_from(["forbid", "allow", "replace"]),
    "max_instances": st.integers(1, 3).map(str),
    "description": st.text(max_size=20).map(_quoted),
    "labels": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3).map(json.dumps),
    "executor": st.just("local"),
}


def value_for(name: str, clean: bool = False) -> st.SearchStrategy[str]:
    valid = VALID.get(name)
    if valid is None:
        return scalars
    return valid if clean else st.one_of(valid, valid, valid, scalars)


@st.composite
def job_text(draw: st.DrawFn, job_id: str, clean: bool) -> str:
    """One job; a clean one has only known fields with well-typed values (mostly valid)."""
    lines = [f"  {job_id}:"]
    if clean or draw(st.integers(0, 9)) > 0:
        lines.append(f"    task: {draw(value_for('task', clean))}")
    if clean or draw(st.integers(0, 9)) > 0:
        trigger = draw(st.sampled_from(["cron", "interval", "at"]))
        lines.append(f"    {trigger}: {draw(value_for(trigger, clean))}")
    if not clean and draw(st.integers(0, 4)) == 0:
        lines.append("    <<: *base")
    extras = sorted(set(VALID) - {"task", "cron", "interval", "at"}) if clean else FIELDS
    for name in draw(st.lists(st.sampled_from(extras), max_size=4, unique=True)):
        lines.append(f"    {name or 'x'}: {draw(value_for(name, clean))}")
    return "\n".join(lines)


@st.composite
def schedule_file(draw: st.DrawFn) -> str:
    parts = []
    clean = draw(st.integers(0, 2)) == 0
    if not clean and draw(st.booleans()):
        parts.append(
            "x-base: &base\n  task: tasks.launch:go\n"
            f"  {draw(st.sampled_from(FIELDS)) or 'x'}: {draw(scalars)}"
        )
    if not clean and draw(st.booleans()):
        parts.append(f"defaults:\n  {draw(st.sampled_from(FIELDS)) or 'x'}: {draw(scalars)}")
    ids = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["a", "b", "job-1", "J.2_x"]),
                st.sampled_from(["a", "b", "job-1", "J.2_x"]),
                st.text(max_size=8),
            ),
            max_size=4,
        )
    )
    if clean:
        ids = [f"job-{n}" for n in range(max(1, len(ids)))]
    jobs = [draw(job_text(json.dumps(i) if draw(st.booleans()) else i or "e", clean)) for i in ids]
    parts.append("jobs:" + ("\n" + "\n".join(jobs) if jobs else " " + draw(scalars)))
    return "\n".join(parts) + "\n"


VALID_SEEDS = [
    b'jobs:\n  nightly-report:\n    task: tasks.reports:nightly\n    cron: "0 2 * * *"\n'
    b"    args: [pdf]\n    kwargs: {recipients: [ops@example.com]}\n    retries: 2\n",
    b"defaults:\n  timezone: Europe/Berlin\n  timeout: 10m\njobs:\n  heartbeat:\n"
    b"    task: tasks.health:ping\n    interval: 30s\n    jitter: 1s\n",
    b"x-base: &base\n  task: tasks.launch:go\n  timezone: Pacific/Pago_Pago\njobs:\n"
    b"  launch:\n    <<: *base\n    at: 2027-01-01T09:00:00\n  window:\n    <<: *base\n"
    b"    interval: 1h\n    start: 2027-01-01T00:00:00\n    end: 2028-01-01T00:00:00+01:00\n",
]
SPECIAL_BYTES = b"\x00\x07\x1b\x7f\x80\xc3\xff\t\n\r :[]{}&*!\"'#%@`|>-,?~\\"


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = draw(
            st.one_of(
                st.binary(min_size=1, max_size=4),
                st.sampled_from(SPECIAL_BYTES).map(lambda b: bytes([b])),
                st.sampled_from(NASTY).map(str.encode),
            )
        )
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "replace":
            data[at : at + len(piece)] = piece
        else:
            start = draw(st.integers(0, len(data)))
            data[at:at] = data[start : start + draw(st.integers(1, 40))]
    return bytes(data)


# -- the checks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateDB]:
    # In memory-backed /dev/shm when there is one: the same SQLite, without a disk flush
    # per example.
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path_factory.mktemp("db")
    database = StateDB(f"sqlite:///{folder / 'state.db'}")
    database.migrate()
    yield database
    database.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


def check(data: bytes, db: StateDB, folder: Path, *, validate: bool, fuzzing: bool = True) -> None:
    loader = Loader(schedule_check=schedule_problem)
    result = loader.load_bytes("fuzz.yaml", data)  # an exception here fails the property
    if fuzzing:
        event("valid jobs" if result.jobs else "problems" if result.problems else "no jobs")
    _check_problems(result, data)
    _check_jobs(result, db)
    if validate:
        _check_validate(data, folder)


def _check_problems(result: FileResult, data: bytes) -> None:
    lines = data.count(b"\n") + 1
    for problem in result.problems:
        text = str(problem)
        assert len(text.splitlines()) == 1, text
        found = LINE.match(text)
        assert found is not None, text
        assert found["file"] == "fuzz.yaml", text
        assert problem.line <= lines, (text, lines)


def _check_jobs(result: FileResult, db: StateDB) -> None:
    if not result.jobs:
        return
    rows = [_row(job) for job in result.jobs.values()]
    db.write_jobs(rows, [])
    try:
        stored = {row.id: row for row in db.load_jobs()}
    finally:
        db.write_jobs([], [row["id"] for row in rows])
    for job_id, job in result.jobs.items():
        essence = stored[job_id].essence_json
        assert essence is not None
        back = JobSpec.model_validate_json(essence)
        assert back.canonical_json() == job.spec.canonical_json()
        _check_fires(back)


def _row(job: Declared) -> dict[str, Any]:
    return {
        "id": job.id,
        "source": "declared",
        "file": job.file,
        "line": job.line,
        "col": job.column,
        "essence": job.spec.canonical_json(),
        "runtime": None,
        "next_run_time": None,
        "runtime_paused": False,
        "done": False,
    }


def _check_fires(spec: JobSpec) -> None:
    """The first two fire times, by the engine's triggers, as the job store keeps them."""
    for now in (NOW, datetime.now(UTC)):
        trigger = trigger_for(spec, now)
        first = trigger.get_next_fire_time(None, now)
        if first is None:
            continue
        datetime_to_utc_timestamp(first)
        after = trigger.get_next_fire_time(first, first)
        if after is not None:
            assert after > first
            datetime_to_utc_timestamp(after)


def _check_validate(data: bytes, folder: Path) -> None:
    path = folder / "fuzz.yaml"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = schedctl(["validate", str(path)])
    printed = out.getvalue().splitlines()
    assert code in (0, 1), (code, out.getvalue(), err.getvalue())
    if code == 0:
        assert len(printed) == 1 and printed[0].startswith("OK: "), printed
        assert err.getvalue() == ""
        return
    assert printed, err.getvalue()
    for line in printed:
        assert LINE.match(line) is not None, line
    assert err.getvalue().startswith("FAILED: ") and len(err.getvalue().splitlines()) == 1


# -- the properties -----------------------------------------------------------------------


@LIMIT
@FUZZ
@given(text=schedule_file(), validate=st.integers(0, 9))
def test_structured_files_never_escape_and_every_job_round_trips(
    db: StateDB, folder: Path, text: str, validate: int
) -> None:
    check(text.encode("utf-8", "surrogatepass"), db, folder, validate=validate == 0)


@LIMIT
@FUZZ
@given(data=mutated_file(), validate=st.integers(0, 9))
def test_mutated_files_never_escape_and_every_job_round_trips(
    db: StateDB, folder: Path, data: bytes, validate: int
) -> None:
    check(data, db, folder, validate=validate == 0)


@pytest.mark.parametrize("seed", VALID_SEEDS)
def test_the_seeds_are_valid(db: StateDB, folder: Path, seed: bytes) -> None:
    result = Loader(schedule_check=schedule_problem).load_bytes("fuzz.yaml", seed)
    assert result.problems == () and result.jobs
    check(seed, db, folder, validate=True, fuzzing=False)
