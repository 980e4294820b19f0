"""The ``schedctl`` command line, run as a user runs it: a subprocess in a project folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SCHEDCTL = Path(sys.executable).parent / "schedctl"
LAUNCHERS = {
    "python-m-engine": [sys.executable, "-m", "engine"],
    "schedctl-script": [str(SCHEDCTL)],
}

VALID_REPORTS = """
    defaults:
      timezone: Europe/Berlin
    jobs:
      nightly-report:
        task: tasks.reports:nightly
        cron: "0 2 * * *"
      weekday-summary:
        task: tasks.reports:nightly
        cron: "0 9 * * 1-5"
"""
VALID_HEALTH = """
    jobs:
      heartbeat:
        task: tasks.health:ping
        interval: 30s
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder as `schedctl` expects it: `tasks/` code and `schedules/` files."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").touch()
    (tmp_path / "tasks" / "reports.py").write_text("def nightly(fmt='pdf'):\n    return fmt\n")
    (tmp_path / "tasks" / "health.py").write_text("async def ping():\n    return 'ok'\n")
    write(tmp_path / "schedules" / "reports.yaml", VALID_REPORTS)
    write(tmp_path / "schedules" / "team" / "health.yml", VALID_HEALTH)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def run(cwd: Path, *args: str, launcher: str = "python-m-engine") -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [*LAUNCHERS[launcher], *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.out + result.err


@pytest.fixture(params=list(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> str:
    return request.param


# -- validate -----------------------------------------------------------------------------


def test_validate_valid_project_says_ok_with_counts(project: Path, launcher: str) -> None:
    result = run(project, "validate", launcher=launcher)

    assert (result.code, result.out, result.err) == (0, "OK: 3 jobs in 2 files\n", "")


def test_validate_given_paths_checks_just_those(project: Path) -> None:
    result = run(project, "validate", "schedules/team/health.yml")

    assert (result.code, result.out) == (0, "OK: 1 job in 1 file\n")


def test_validate_invalid_prints_one_located_line_per_problem_and_exits_1(
    project: Path, launcher: str
) -> None:
    write(
        project / "schedules" / "broken.yaml",
        """
        jobs:
          typo:
            task: tasks.reports:nightly
            crn: "0 2 * * *"
          bad-zone:
            task: tasks.reports:nightly
            cron: "0 2 * * *"
            timezone: Europe/Berlinn
          missing:
            task: tasks.nosuch:run
            interval: 5m
        """,
    )

    result = run(project, "validate", launcher=launcher)

    assert result.code == 1
    assert result.out.splitlines() == [
        "schedules/broken.yaml:4:5: error: unknown field 'crn'; did you mean 'cron'?",
        "schedules/broken.yaml:8:15: error: unknown timezone 'Europe/Berlinn'; "
        "did you mean 'Europe/Berlin'?",
        "schedules/broken.yaml:10:11: error: task module 'tasks.nosuch' not found; check the "
        "path (tasks are imported from the current directory)",
    ]
    assert result.err == "FAILED: 3 problem(s) in 1 of 3 file(s)\n"
    assert_no_traceback(result)


def test_validate_unreadable_yaml_is_a_located_error_not_a_crash(project: Path) -> None:
    write(project / "schedules" / "syntax.yaml", "jobs:\n  a: [unclosed\n")

    result = run(project, "validate")

    assert result.code == 1
    assert result.out.startswith("schedules/syntax.yaml:")
    assert ": error: invalid YAML: " in result.out
    assert_no_traceback(result)


def test_validate_missing_folder_exits_1(project: Path) -> None:
    result = run(project, "validate", "nowhere")

    assert (result.code, result.out) == (1, "nowhere:1:1: error: no such file or folder\n")
    assert_no_traceback(result)


def test_tasks_resolve_from_the_current_directory(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    schedules = str(project / "schedules")
    elsewhere = tmp_path_factory.mktemp("elsewhere")

    from_project = run(project, "validate", schedules, launcher="schedctl-script")
    from_elsewhere = run(elsewhere, "validate", schedules, launcher="schedctl-script")

    assert (from_project.code, from_project.out) == (0, "OK: 3 jobs in 2 files\n")
    assert from_elsewhere.code == 1
    assert "task module 'tasks.reports' not found" in from_elsewhere.out


def test_validate_infinite_interval_is_a_located_error_not_a_traceback(project: Path) -> None:
    write(
        project / "schedules" / "forever.yaml",
        """
        jobs:
          forever:
            task: tasks.reports:nightly
            interval: .inf
        """,
    )

    result = run(project, "validate")

    assert result.code == 1
    assert result.out.startswith("schedules/forever.yaml:4:15: error: ")
    assert_no_traceback(result)


def test_validate_task_module_that_exits_on_import_fails_validation(project: Path) -> None:
    (project / "tasks" / "legacy.py").write_text("import sys\n\nsys.exit(0)\n")
    write(
        project / "schedules" / "legacy.yaml",
        """
        jobs:
          legacy:
            task: tasks.legacy:main
            cron: "0 2 * * *"
        """,
    )

    result = run(project, "validate")

    assert result.code == 1
    assert "schedules/legacy.yaml:3:11: error: task module 'tasks.legacy'" in result.out


# -- next ---------------------------------------------------------------------------------

WEEKDAYS_AT_NINE = [
    "2027-03-01T09:00:00+00:00",
    "2027-03-02T09:00:00+00:00",
    "2027-03-03T09:00:00+00:00",
    "2027-03-04T09:00:00+00:00",
    "2027-03-05T09:00:00+00:00",
    "2027-03-08T09:00:00+00:00",
]


def test_next_cron_prints_the_next_fire_times(project: Path, launcher: str) -> None:
    result = run(
        project,
        "next",
        "--cron",
        "0 9 * * 1-5",
        "--tz",
        "UTC",
        "--after",
        "2027-03-01T00:00:00+00:00",
        "-n",
        "6",
        launcher=launcher,
    )

    assert (result.code, result.out.splitlines(), result.err) == (0, WEEKDAYS_AT_NINE, "")


def test_next_is_strictly_after_and_defaults_to_five(project: Path) -> None:
    result = run(
        project, "next", "--cron", "0 9 * * 1-5", "--tz", "UTC", "--after", WEEKDAYS_AT_NINE[0]
    )

    assert result.out.splitlines() == WEEKDAYS_AT_NINE[1:]


def test_next_job_uses_the_jobs_timezone_across_daylight_saving(project: Path) -> None:
    result = run(project, "next", "weekday-summary", "--after", "2027-03-25T12:00:00+00:00")

    assert result.code == 0
    assert result.out.splitlines() == [
        "2027-03-26T09:00:00+01:00",
        "2027-03-29T09:00:00+02:00",
        "2027-03-30T09:00:00+02:00",
        "2027-03-31T09:00:00+02:00",
        "2027-04-01T09:00:00+02:00",
    ]


def test_next_job_from_another_schedules_folder_fires_once_in_the_repeated_hour(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 2027-10-31 in Berlin: 02:00 happens twice (+02:00, then +01:00); it fires once.
    elsewhere = tmp_path_factory.mktemp("cwd")

    result = run(
        elsewhere,
        "next",
        "nightly-report",
        "--schedules",
        str(project / "schedules"),
        "--after",
        "2027-10-30T12:00:00+00:00",
        "-n",
        "2",
    )

    assert (result.code, result.out.splitlines()) == (
        0,
        ["2027-10-31T02:00:00+02:00", "2027-11-01T02:00:00+01:00"],
    )


def test_next_naive_after_is_read_in_the_zone(project: Path) -> None:
    # 08:30 in Berlin is before 09:00 that day; read as UTC it would be 09:30 in Berlin.
    result = run(
        project,
        "next",
        "--cron",
        "0 9 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2027-03-01T08:30:00",
        "-n",
        "1",
    )

    assert (result.code, result.out) == (0, "2027-03-01T09:00:00+01:00\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cron", "0 25 * * *"],
            "error: bad hour field '25' in cron expression '0 25 * * *'; hour values are "
            "0-23, with '*', lists 'a,b', ranges 'a-b' and steps '*/n'\n",
        ),
        (
            ["--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
            "error: unknown timezone 'Mars/Olympus'; use an IANA name such as 'Europe/Berlin'\n",
        ),
        (
            ["--cron", "0 9 * * *", "--after", "tomorrow"],
            "error: --after 'tomorrow' is not ISO 8601; write e.g. 2027-03-01T00:00:00+00:00\n",
        ),
        (["no-such-job"], "error: no valid job 'no-such-job' under schedules\n"),
        ([], "error: give either a JOB_ID or --cron EXPR\n"),
        (["--cron", "0 9 * * *", "-n", "0"], "error: -n must be at least 1\n"),
    ],
    ids=["bad-cron", "bad-tz", "bad-after", "unknown-job", "nothing-given", "zero-count"],
)
def test_next_bad_input_exits_1_with_an_error_and_no_traceback(
    project: Path, args: list[str], message: str
) -> None:
    result = run(project, "next", *args)

    assert (result.code, result.out, result.err) == (1, "", message)


# -- schema -------------------------------------------------------------------------------


def test_schema_prints_the_json_schema_of_a_schedule_file(project: Path, launcher: str) -> None:
    result = run(project, "schema", launcher=launcher)

    assert result.code == 0
    schema = json.loads(result.out)
    assert "jobs" in schema["properties"]
    assert "defaults" in schema["properties"]


def test_both_launchers_print_the_same(project: Path) -> None:
    commands = [
        ["validate"],
        ["schema"],
        ["next", "nightly-report", "--after", "2027-01-01T00:00:00"],
        ["next", "--cron", "nope"],
    ]
    for command in commands:
        assert run(project, *command, launcher="python-m-engine") == run(
            project, *command, launcher="schedctl-script"
        ), command
