"""Every error class of a schedule file, as the user reads it: ``path:line:col: error: message``.

Each case writes real YAML into a folder, scans it with ``Loader`` and pins the exact lines
``schedctl validate`` would print, so a change of position or wording is a visible change.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from engine.files.loader import Loader
from engine.scheduler.jobs import schedule_problem
from tests.conftest import MakePackage

TASK_CODE = {
    "jobs": """
        def nightly(fmt="pdf"):
            return fmt


        def ping():
            return "ok"
    """,
}


@pytest.fixture
def tasks_package(make_package: MakePackage) -> Path:
    """A ``tasks`` package with ``tasks.jobs:nightly`` and ``tasks.jobs:ping``."""
    return make_package("tasks", TASK_CODE)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problem_lines(folder: Path, loader: Loader | None = None) -> list[str]:
    return [str(problem) for problem in (loader or Loader()).scan([folder]).problems]


# One case per error class: {file name: YAML}, and the exact lines expected, where {dir}
# stands for the scanned folder.
CASES = [
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    crn: "0 2 * * *"
            """
        },
        ["{dir}/s.yaml:4:5: error: unknown field 'crn'; did you mean 'cron'?"],
        id="unknown-key-did-you-mean",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    retries: two
            """
        },
        ["{dir}/s.yaml:5:14: error: invalid retries: input should be a valid integer (got 'two')"],
        id="wrong-type-retries-string",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    paused: "yes"
            """
        },
        [
            "{dir}/s.yaml:5:13: error: invalid paused: input should be a valid boolean "
            "(got 'yes'); write true or false"
        ],
        id="wrong-type-paused-quoted-yes",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    labels: {team: ops, tier: 1}
            """
        },
        ["{dir}/s.yaml:5:31: error: invalid labels.tier: input should be a valid string (got 1)"],
        id="wrong-type-label-value-not-string",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    interval: 5m
            """
        },
        [
            "{dir}/s.yaml:5:5: error: a job needs exactly one of cron, interval or at "
            '(given: cron and interval); for example cron: "0 2 * * *" or interval: 5m'
        ],
        id="two-triggers",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
            """
        },
        [
            "{dir}/s.yaml:2:3: error: a job needs exactly one of cron, interval or at "
            '(given: none); for example cron: "0 2 * * *" or interval: 5m'
        ],
        id="no-trigger",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 25 * * *"
            """
        },
        [
            "{dir}/s.yaml:4:11: error: bad hour field '25' in cron expression '0 25 * * *'; "
            "hour values are 0-23, with '*', lists 'a,b', ranges 'a-b' and steps '*/n'"
        ],
        id="bad-cron-field",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    timezone: Europe/Berlinn
            """
        },
        [
            "{dir}/s.yaml:5:15: error: unknown timezone 'Europe/Berlinn'; "
            "did you mean 'Europe/Berlin'?"
        ],
        id="unknown-timezone-close-match",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    timezone: Mars/Olympus_Mons
            """
        },
        [
            "{dir}/s.yaml:5:15: error: unknown timezone 'Mars/Olympus_Mons'; "
            "use an IANA name such as 'Europe/Berlin'"
        ],
        id="unknown-timezone-no-close-match",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    cron: "0 3 * * *"
            """
        },
        [
            "{dir}/s.yaml:5:5: error: duplicate key 'cron' (first written on line 4); "
            "keep one of them"
        ],
        id="duplicate-key-in-mapping",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: os.path:join
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:3:11: error: task module 'os.path' is outside the allowed prefixes "
            "('tasks'); move the task under one of them or add its package to the "
            "task_modules setting (ENGINE_TASK_MODULES)"
        ],
        id="task-outside-allowed-prefixes",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.nosuch:run
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:3:11: error: task module 'tasks.nosuch' not found; check the path "
            "(tasks are imported from the current directory)"
        ],
        id="task-module-missing",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightlly
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:3:11: error: module 'tasks.jobs' has no callable 'nightlly'; "
            "did you mean 'nightly'?"
        ],
        id="no-such-callable-did-you-mean",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  -bad id:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:2:3: error: invalid job id '-bad id'; use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, at most 128 characters"
        ],
        id="invalid-job-id",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  - task: tasks.jobs:nightly
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:2:3: error: jobs is a mapping of job id to job, not a list; "
            "write 'jobs:' then '  my-job:' then '    task: tasks.module:function'"
        ],
        id="jobs-written-as-a-list",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: */5 * * * *
            """
        },
        [
            "{dir}/s.yaml:4:11: error: invalid YAML: a value starting with '*' is read as a "
            'YAML alias; quote the cron expression, e.g. cron: "*/5 * * * *"'
        ],
        id="unquoted-cron-starting-with-star",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    interval: 8:30
            """
        },
        [
            "{dir}/s.yaml:4:15: error: interval: 8:30 is read by YAML 1.1 as the number 510 "
            "(base 60); write a duration such as '8m30s' or '8h30m'"
        ],
        id="sexagesimal-interval-trap",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    max_instances: 3
            """
        },
        [
            "{dir}/s.yaml:5:20: error: max_instances only applies with concurrency: allow; "
            "add concurrency: allow or remove max_instances"
        ],
        id="max-instances-without-concurrency-allow",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    interval: 5 minutes
            """
        },
        [
            "{dir}/s.yaml:4:15: error: invalid duration '5 minutes'; write a number with a "
            "unit such as '30s', '5m', '1h30m', '2d', '1w', or an integer number of seconds"
        ],
        id="bad-duration",
    ),
    pytest.param(
        {
            "s.yaml": """
                defaults:
                  timezone: Europe/Berln
                  timeout: 10m
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                  heartbeat:
                    task: tasks.jobs:ping
                    interval: 30s
            """
        },
        [
            "{dir}/s.yaml:2:13: error: unknown timezone 'Europe/Berln'; "
            "did you mean 'Europe/Berlin'?"
        ],
        id="error-from-defaults-points-at-defaults-once",
    ),
    pytest.param(
        {
            "s.yaml": """
                defaults:
                  timeout: 10 minutes
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
            """
        },
        [
            "{dir}/s.yaml:2:12: error: invalid duration '10 minutes'; write a number with a "
            "unit such as '30s', '5m', '1h30m', '2d', '1w', or an integer number of seconds"
        ],
        id="bad-duration-in-defaults",
    ),
    pytest.param(
        {
            "a.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
            """,
            "team/b.yml": """
                # a second team declares the same id
                jobs:
                  other:
                    task: tasks.jobs:ping
                    interval: 30s
                  report:
                    task: tasks.jobs:ping
                    interval: 5m
            """,
        },
        [
            "{dir}/team/b.yml:6:3: error: job id 'report' is also declared at "
            "{dir}/a.yaml:2:3; job ids must be unique across files, rename one"
        ],
        id="duplicate-job-id-across-files-names-both",
    ),
    pytest.param(
        {
            "s.yaml": """
                jobs:
                  report:
                    task: tasks.jobs:nightly
                    crn: "0 2 * * *"
                  heartbeat:
                    task: tasks.jobs:ping
                    interval: 5 minutes
                  berlin:
                    task: tasks.jobs:nightly
                    cron: "0 2 * * *"
                    timezone: Europe/Berlinn
            """
        },
        [
            "{dir}/s.yaml:4:5: error: unknown field 'crn'; did you mean 'cron'?",
            "{dir}/s.yaml:7:15: error: invalid duration '5 minutes'; write a number with a "
            "unit such as '30s', '5m', '1h30m', '2d', '1w', or an integer number of seconds",
            "{dir}/s.yaml:11:15: error: unknown timezone 'Europe/Berlinn'; "
            "did you mean 'Europe/Berlin'?",
        ],
        id="several-problems-in-one-file-all-reported",
    ),
]


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize(("files", "expected"), CASES)
def test_problem_is_reported_at_its_place_with_a_fix(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    folder = tmp_path / "schedules"
    for name, text in files.items():
        write(folder, name, text)

    snapshot = Loader().scan([folder])

    assert [str(p) for p in snapshot.problems] == [line.format(dir=folder) for line in expected]
    assert snapshot.jobs.keys() <= {"other"}  # nothing of a broken declaration is kept


def test_task_module_that_fails_to_import_something_else_is_reported_as_that_failure(
    tmp_path: Path, make_package: MakePackage
) -> None:
    make_package(
        "vendor_tasks",
        {"billing": "import requests_missing\n\n\ndef invoice():\n    return 1\n"},
    )
    folder = tmp_path / "schedules"
    write(
        folder,
        "billing.yaml",
        """
        jobs:
          invoice:
            task: vendor_tasks.billing:invoice
            cron: "0 2 * * *"
        """,
    )

    lines = problem_lines(folder, Loader(task_modules=("vendor_tasks",)))

    assert lines == [
        f"{folder}/billing.yaml:3:11: error: task module 'vendor_tasks.billing' failed to "
        "import: ModuleNotFoundError: No module named 'requests_missing'"
    ]


PAYLOADS = [
    pytest.param('!!python/object/apply:os.system ["touch {marker}"]', id="object-apply"),
    pytest.param(
        "!!python/object/new:tuple [!!python/object/new:map "
        "[!!python/name:eval , [\"open('{marker}', 'w').close()\"]]]",
        id="object-new",
    ),
]
TAG_PROBLEM = (
    "error: YAML tag {tag!r} is not allowed; schedule files hold plain data "
    "(strings, numbers, booleans, dates, lists and mappings)"
)


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_object_tags_execute_nothing_and_are_reported_at_the_tag(
    tmp_path: Path, payload: str
) -> None:
    # Control: the payload is live, an unsafe loader really runs it.
    control = tmp_path / "control-marker"
    yaml.unsafe_load(payload.format(marker=control))
    assert control.exists()

    marker = tmp_path / "marker"
    folder = tmp_path / "schedules"
    path = folder / "evil.yaml"
    folder.mkdir()
    path.write_text(
        "jobs:\n"
        "  report:\n"
        "    task: tasks.jobs:nightly\n"
        '    cron: "0 2 * * *"\n'
        f"    args: {payload.format(marker=marker)}\n"
    )

    snapshot = Loader().scan([folder])

    assert not marker.exists()
    tag = payload.split(" ")[0]
    assert f"{path}:5:11: {TAG_PROBLEM.format(tag=tag)}" in [str(p) for p in snapshot.problems]
    assert snapshot.jobs == {}


@pytest.mark.usefixtures("tasks_package")
def test_refused_tag_is_the_only_problem_reported_for_that_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """
        jobs:
          report:
            task: tasks.jobs:nightly
            cron: "0 2 * * *"
            args: !!python/object/apply:os.system ["true"]
        """,
    )

    assert problem_lines(tmp_path) == [
        f"{path}:5:11: {TAG_PROBLEM.format(tag='!!python/object/apply:os.system')}"
    ]


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize("value", [".inf", ".nan", "100000000000000000"])
def test_out_of_range_interval_is_a_located_duration_problem(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        f"""
        jobs:
          report:
            task: tasks.jobs:nightly
            interval: {value}
        """,
    )

    lines = problem_lines(tmp_path)

    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:4:15: error: invalid duration ")


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize("field", ["jitter", "misfire_grace", "retry_delay"])
def test_negative_duration_is_refused(tmp_path: Path, field: str) -> None:
    write(
        tmp_path,
        "s.yaml",
        f"""
        jobs:
          report:
            task: tasks.jobs:nightly
            cron: "0 2 * * *"
            {field}: -5
        """,
    )

    snapshot = Loader().scan([tmp_path])

    assert snapshot.jobs == {}
    assert [(p.line, p.column) for p in snapshot.problems] == [(5, len(field) + 7)]


def test_task_module_that_exits_while_importing_is_a_problem(
    tmp_path: Path, make_package: MakePackage
) -> None:
    make_package("tasks", {"legacy": "import sys\n\nsys.exit(0)\n"})
    path = write(
        tmp_path,
        "s.yaml",
        """
        jobs:
          legacy:
            task: tasks.legacy:main
            cron: "0 2 * * *"
        """,
    )

    assert problem_lines(tmp_path) == [
        f"{path}:3:11: error: task module 'tasks.legacy' failed to import: SystemExit: 0"
    ]


# -- values YAML cannot build (issue 6, item 1) ---------------------------------------------

# {value written after `at:` / in a job}: the line:col of the value and the start of the
# message. Each one escaped the loader as a bare ValueError, KeyError, AttributeError,
# OverflowError or RecursionError before.
UNBUILDABLE = [
    pytest.param(
        "at: 2027-02-30T09:00:00",
        (4, 9),
        "'2027-02-30T09:00:00' is not a valid date or time (day is out of range for month); "
        "write an ISO 8601 date and time such as 2027-01-01T09:00:00",
        id="february-30",
    ),
    pytest.param(
        "interval: 5m\n    start: 2027-13-01T00:00:00",
        (5, 12),
        "'2027-13-01T00:00:00' is not a valid date or time (month must be in 1..12)",
        id="month-13",
    ),
    pytest.param(
        "interval: !!int abc",
        (4, 15),
        "YAML cannot read 'abc' as !!int; write an integer such as 42",
        id="int-tag",
    ),
    pytest.param(
        "interval: !!float xyz",
        (4, 15),
        "YAML cannot read 'xyz' as !!float; write a number such as 1.5",
        id="float-tag",
    ),
    pytest.param(
        "interval: 5m\n    paused: !!bool maybe",
        (5, 13),
        "YAML cannot read 'maybe' as !!bool; write true or false",
        id="bool-tag",
    ),
    pytest.param(
        "at: !!timestamp abc",
        (4, 9),
        "'abc' is not a valid date or time (not a date); write an ISO 8601 date",
        id="timestamp-tag",
    ),
    pytest.param(
        "interval: " + "9" * 5000,
        (4, 15),
        "the integer '" + "9" * 37 + "...' has 5000 digits, more than 4300",
        id="int-over-4300-digits",
    ),
    pytest.param(
        "interval: 5m\n    args: [0x" + "f" * 4000 + "]",
        (5, 12),
        "the integer 0xffffffffffffffffff... has more than 4300 decimal digits",
        id="hex-int-over-4300-digits",
    ),
    pytest.param(
        'interval: 5m\n    description: "\\ud800"',
        (5, 18),
        "the string holds a lone surrogate escape \\ud800, which is no character",
        id="lone-surrogate",
    ),
    pytest.param(
        'interval: 5m\n    kwargs: {"\\udfff": 1}',
        (5, 14),
        "the string holds a lone surrogate escape \\udfff",
        id="lone-surrogate-key",
    ),
    pytest.param(
        "interval: 5m\n    args: " + "[" * 300 + "]" * 300,
        (5, 72),
        "invalid YAML: nested more than 64 levels deep",
        id="nested-300",
    ),
    pytest.param(
        "interval: 5m\n    args: " + "[" * 3000 + "]" * 3000,
        (5, 72),
        "invalid YAML: nested more than 64 levels deep",
        id="nested-3000",
    ),
    pytest.param(
        "at: 0001-01-01T00:00:00+05:00",
        (4, 9),
        "'0001-01-01T00:00:00+05:00' lies outside the years 1 to 9999 once its UTC offset",
        id="year-1-with-offset",
    ),
    pytest.param(
        "at: 9999-12-31T23:59:59-05:00",
        (4, 9),
        "'9999-12-31T23:59:59-05:00' lies outside the years 1 to 9999 once its UTC offset",
        id="year-9999-with-offset",
    ),
    pytest.param(
        "interval: 5m\n    start: 0001-01-01T00:00:00\n    end: 0001-01-01T01:00:00+05:00",
        (6, 10),
        "'0001-01-01T01:00:00+05:00' lies outside the years 1 to 9999",
        id="window-near-year-1",
    ),
]


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize(("written", "place", "message"), UNBUILDABLE)
def test_a_value_yaml_cannot_build_is_one_located_problem_and_other_files_still_load(
    tmp_path: Path, written: str, place: tuple[int, int], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"jobs:\n  broken:\n    task: tasks.jobs:nightly\n    {written}\n")
    other_bad = write(tmp_path, "other.yaml", "jobs:\n  typo:\n    task: tasks.jobs:nightly\n")
    write(tmp_path, "good.yaml", "jobs:\n  fine:\n    task: tasks.jobs:ping\n    interval: 5m\n")

    snapshot = Loader().scan([tmp_path])

    mine = [str(p) for p in snapshot.problems if p.file == str(bad)]
    assert len(mine) == 1, mine
    line, column = place
    assert mine[0].startswith(f"{bad}:{line}:{column}: error: {message}")
    assert "\n" not in mine[0]
    assert [p.file for p in snapshot.problems if p.file != str(bad)] == [str(other_bad)]
    assert list(snapshot.jobs) == ["fine"]


@pytest.mark.usefixtures("tasks_package")
def test_an_unexpected_failure_reading_one_file_is_a_problem_of_that_file_only(
    tmp_path: Path,
) -> None:
    # The last resort: whatever escapes the checks (here a setup check that fails) is that
    # file's problem at 1:1, and the scan goes on.
    def broken_check(spec: object) -> tuple[str, str] | None:
        if "nightly" in str(getattr(spec, "task", "")):
            raise RuntimeError("boom\nsecond line")
        return None

    bad = write(
        tmp_path, "a.yaml", 'jobs:\n  r:\n    task: tasks.jobs:nightly\n    cron: "0 2 * * *"\n'
    )
    write(tmp_path, "b.yaml", "jobs:\n  p:\n    task: tasks.jobs:ping\n    interval: 5m\n")

    snapshot = Loader(job_check=broken_check).scan([tmp_path])

    assert [str(p) for p in snapshot.problems] == [
        f"{bad}:1:1: error: schedctl could not read this file (RuntimeError: boom second "
        "line); this is a bug in schedctl, please report it with the file"
    ]
    assert list(snapshot.jobs) == ["p"]


# -- reader errors (issue 6, item 2) --------------------------------------------------------


@pytest.mark.parametrize(
    ("character", "hint"),
    [
        ("\x07", 'remove it, or write it as the escape "\\x07" inside double quotes'),
        ("\ufffe", "remove it"),
    ],
    ids=["bell", "non-character"],
)
def test_a_character_yaml_refuses_deep_in_a_file_is_one_line_at_its_place(
    tmp_path: Path, character: str, hint: str
) -> None:
    # Position 12,300 of the file, on line 5, after a multi-byte character: a byte offset
    # or a count from the wrong line would put it elsewhere.
    head = 'jobs:\n  r:\n    task: tasks.jobs:nightly\n    cron: "0 2 * * *"\n    description: "é'
    filler = "x" * (12_300 - len(head))
    path = tmp_path / "s.yaml"
    path.write_text(head + filler + character + '"\n')
    column = 12_300 - head.rindex("\n")

    lines = problem_lines(tmp_path)

    code = f"U+{ord(character):04X}"
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:5:{column}: error: invalid YAML: ")
    assert code in lines[0] and lines[0].endswith(hint)


# -- merge keys and x- keys (issue 6, item 3) -----------------------------------------------


@pytest.mark.usefixtures("tasks_package")
def test_a_key_written_beside_a_merge_overrides_the_merged_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        "s.yaml",
        """
        x-base: &base
          task: tasks.jobs:nightly
          interval: 5m
          retries: 1
        x-more: &more
          retries: 2
          timeout: 1m
          labels: {team: ops}
        jobs:
          override:
            <<: *base
            interval: 10m
          listed:
            <<: [*more, *base]
            labels: {team: web}
        """,
    )

    snapshot = Loader().scan([tmp_path])

    assert snapshot.problems == []
    override, listed = snapshot.jobs["override"].spec, snapshot.jobs["listed"].spec
    assert (override.interval, override.retries) == (timedelta(minutes=10), 1)
    # Of a merged list, the earlier mapping wins; the job's own keys win over both.
    assert (listed.retries, listed.timeout, listed.labels) == (
        2,
        timedelta(minutes=1),
        {"team": "web"},
    )


@pytest.mark.usefixtures("tasks_package")
def test_a_key_written_twice_by_hand_beside_a_merge_is_still_a_duplicate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """
        x-base: &base
          task: tasks.jobs:nightly
        jobs:
          twice:
            <<: *base
            interval: 5m
            interval: 10m
        """,
    )

    assert problem_lines(tmp_path) == [
        f"{path}:7:5: error: duplicate key 'interval' (first written on line 6); keep one of them"
    ]


@pytest.mark.usefixtures("tasks_package")
def test_a_merge_of_something_else_than_a_mapping_is_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """
        jobs:
          odd:
            <<: 5
            task: tasks.jobs:nightly
            interval: 5m
        """,
    )

    assert problem_lines(tmp_path) == [
        f"{path}:3:9: error: the merge key '<<' takes a mapping, an alias of one (<<: *base) "
        "or a list of them (<<: [*a, *b])"
    ]


# -- times the scheduler cannot hold (issue 6, item 5) --------------------------------------

OVERFLOWING = [
    pytest.param(
        "at: 9999-12-31T23:59:59\n    timezone: Pacific/Pago_Pago", (4, 9), id="at-9999-pago-pago"
    ),
    pytest.param(
        "interval: 1h\n    start: 9999-12-31T23:00:00\n    timezone: Pacific/Pago_Pago",
        (5, 12),
        id="interval-start-9999",
    ),
    pytest.param(
        'cron: "0 0 * * *"\n    start: 9999-12-31T00:00:00\n    timezone: Pacific/Pago_Pago',
        (5, 12),
        id="cron-start-9999",
    ),
]


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize(("written", "place"), OVERFLOWING)
def test_a_job_whose_fire_times_overflow_the_scheduler_is_refused_where_written(
    tmp_path: Path, written: str, place: tuple[int, int]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"jobs:\n  late:\n    task: tasks.jobs:nightly\n    {written}\n")

    lines = problem_lines(tmp_path, Loader(schedule_check=schedule_problem))

    line, column = place
    assert len(lines) == 1
    assert lines[0].startswith(
        f"{path}:{line}:{column}: error: the scheduler cannot compute this job's fire times ("
    )
    assert lines[0].endswith(
        "lie outside the years 1 to 9999 in UTC; write a date and time between 0001-01-02 "
        "and 9999-12-30"
    )


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize(
    "written",
    [
        "at: 9999-12-30T00:00:00\n    timezone: Pacific/Pago_Pago",
        "at: 0001-01-01T00:00:00\n    timezone: Pacific/Kiritimati",
        "interval: 1h\n    start: 0001-01-01T00:00:00\n    timezone: Pacific/Kiritimati",
        'cron: "0 0 * * *"\n    end: 9999-12-30T00:00:00\n    timezone: Pacific/Pago_Pago',
    ],
    ids=["at-9999-12-30", "at-year-1-east", "interval-from-year-1", "cron-until-9999"],
)
def test_times_near_the_calendar_edges_that_the_scheduler_holds_are_accepted(
    tmp_path: Path, written: str
) -> None:
    (tmp_path / "s.yaml").write_text(
        f"jobs:\n  edge:\n    task: tasks.jobs:nightly\n    {written}\n"
    )

    assert problem_lines(tmp_path, Loader(schedule_check=schedule_problem)) == []


# -- the shortest interval (issue 6, item 6) ------------------------------------------------


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize("value", ["0.000001", "0.5", "999ms", "0.999s"])
def test_an_interval_below_one_second_is_refused(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        f"""
        jobs:
          spin:
            task: tasks.jobs:ping
            interval: {value}
        """,
    )

    lines = problem_lines(tmp_path)

    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:4:5: error: interval must be at least 1s; ")


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize("value", ["1", "1s", "1000ms", "1.5"])
def test_an_interval_of_one_second_or_more_is_accepted(tmp_path: Path, value: str) -> None:
    write(tmp_path, "s.yaml", f"jobs:\n  tick:\n    task: tasks.jobs:ping\n    interval: {value}\n")

    assert problem_lines(tmp_path) == []


@pytest.mark.usefixtures("tasks_package")
@pytest.mark.parametrize(
    ("field", "value"), [("at", "1800000000"), ("start", "30"), ("end", "'1800000000.5'")]
)
def test_a_number_is_not_read_as_a_time(tmp_path: Path, field: str, value: str) -> None:
    # Contract section 2: times are ISO 8601; a number was silently read as a Unix time.
    trigger = "" if field == "at" else "    interval: 1h\n"
    path = write(
        tmp_path,
        "s.yaml",
        f"jobs:\n  report:\n    task: tasks.jobs:nightly\n{trigger}    {field}: {value}\n",
    )

    lines = problem_lines(tmp_path)

    row = 4 if field == "at" else 5
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:{row}:")
    assert "write ISO 8601, e.g. 2027-01-01T09:00:00" in lines[0]


# -- positions when YAML and the user's tools count lines differently (found by the fuzzer) --


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ('jobs:\r  r:\r    task: tasks.jobs:nightly\r    cron: "0 2 * * *"\r'
         '    retries: x\r', (1, 76)),
        ('jobs:\n  r:\n    description: "a\u2028b\x85c"\n    task: tasks.jobs:nightly\n'
         '    cron: "0 2 * * *"\n    retries: x\n', (6, 14)),
    ],
    ids=["carriage-returns", "line-and-next-line-separators"],
)  # fmt: skip
@pytest.mark.usefixtures("tasks_package")
def test_a_problem_is_placed_by_newlines_whatever_else_yaml_reads_as_a_line_break(
    tmp_path: Path, text: str, place: tuple[int, int]
) -> None:
    # YAML also ends lines at \r, NEL, LS and PS; editors, grep and CI annotations count \n.
    path = tmp_path / "s.yaml"
    path.write_bytes(text.encode())

    lines = problem_lines(tmp_path)

    line, column = place
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:{line}:{column}: error: invalid retries: ")
    assert text.split("\n")[line - 1][column - 1 :].startswith("x")
