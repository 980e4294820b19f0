"""Every error class of a schedule file, as the user reads it: ``path:line:col: error: message``.

Each case writes real YAML into a folder, scans it with ``Loader`` and pins the exact lines
``schedctl validate`` would print, so a change of position or wording is a visible change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from engine.files.loader import Loader
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
