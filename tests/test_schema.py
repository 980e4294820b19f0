"""``schedctl schema`` checked by an independent validator (jsonschema, draft 2020-12)
against every example file and tables of valid and invalid files, case by case against
the loader: what one accepts the other accepts, what one rejects the other rejects.

A YAML file is checked against the schema the way an editor or a CI step does it: the
YAML is read as data and turned into JSON (a YAML timestamp becomes its ISO 8601 text).

Loader-only, not expressible in a JSON Schema (so not in the tables): whether the task
imports and is a plain function under an allowed prefix, whether its signature takes the
args and kwargs, cron fields, timezone names, YAML itself (duplicate keys, forbidden tags,
values YAML cannot build, `1:30` read as base 60), job ids unique across files, rules
across `defaults` and a job (`max_instances` only with `concurrency: allow`, `queue`
only with `executor: celery`, `start` before `end`), a sub-second `interval` or one
written as text over a century, and a wrong type in `defaults` that every job overrides.
YAML 1.1 typing, which an editor's YAML 1.2 does not share, is the loader's too: `yes`
is a boolean, `2027-01-01` in a text field is a date, `.nan` is a number. In JSON, `2.0`
is the integer 2 (the loader wants `retries: 2`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from engine.files.loader import Loader
from engine.files.spec import OPTION_FIELDS, JobSpec
from tests.conftest import MakePackage

ROOT = Path(__file__).resolve().parent.parent
SCHEDCTL = Path(sys.executable).parent / "schedctl"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The schema as a user gets it: the output of `schedctl schema`."""
    done = subprocess.run(
        [str(SCHEDCTL), "schema"], capture_output=True, text=True, timeout=30, check=True
    )
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
def loader(make_package: MakePackage) -> Loader:
    make_package("tasks", {"jobs": "def go(*args, **kwargs):\n    pass\n"})
    return Loader()


def as_json(text: str) -> Any:
    """The YAML text as the JSON an editor or CI tool validates."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return convert(yaml.safe_load(text))


def schema_errors(validator: Draft202012Validator, text: str) -> list[str]:
    return [error.message for error in validator.iter_errors(as_json(text))]


def loader_errors(loader: Loader, text: str) -> list[str]:
    result = loader.load_bytes("case.yaml", text.encode())
    return [problem.message for problem in result.problems]


def job(*lines: str) -> str:
    """A file with one job `j` running tasks.jobs:go, plus ``lines`` in its body."""
    return "jobs:\n  j:\n    task: tasks.jobs:go\n" + "".join(f"    {line}\n" for line in lines)


# -- example files ------------------------------------------------------------------------


def example_files() -> list[tuple[str, str]]:
    """Every schedule file in schedules/ and every schedule file shown in README.md."""
    found = [
        (path.relative_to(ROOT).as_posix(), path.read_text())
        for path in sorted((ROOT / "schedules").rglob("*.y*ml"))
    ]
    readme = (ROOT / "README.md").read_text()
    for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S), 1):
        if re.search(r"^jobs:", block, re.M):
            found.append((f"README.md yaml block {number}", block))
    return found


EXAMPLES = example_files()


def test_the_examples_are_found() -> None:
    names = [name for name, _ in EXAMPLES]
    assert "schedules/reports.yaml" in names
    assert "schedules/team/health.yaml" in names
    assert sum(name.startswith("README.md") for name in names) >= 2


@pytest.fixture
def repo_tasks(monkeypatch: pytest.MonkeyPatch) -> Loader:
    """A loader that imports the repository's own tasks/ package, as `make run` does."""
    for name in [m for m in sys.modules if m == "tasks" or m.startswith("tasks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(ROOT))
    return Loader()


@pytest.mark.parametrize(("name", "text"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_every_example_file_is_valid_against_the_schema_and_for_the_loader(
    validator: Draft202012Validator, repo_tasks: Loader, name: str, text: str
) -> None:
    assert schema_errors(validator, text) == []
    assert loader_errors(repo_tasks, text) == []


# -- valid and invalid files, case by case ------------------------------------------------

VALID = {
    "empty file": "",
    "only comments": "# nothing scheduled yet\n# see README\n",
    "explicit null document": "---\n...\n",
    "version 1": "version: 1\njobs: {}\n",
    "jobs null": "jobs:\n",
    "defaults null": "defaults:\n" + job("cron: '0 2 * * *'"),
    "defaults with durations as number and text": (
        "defaults:\n  retry_delay: 30\n  misfire_grace: 10s\n  jitter: 0\n  timeout: 1h30m\n"
        + job("interval: 5m", "retries: 2")
    ),
    "defaults with every option": (
        "defaults:\n  timezone: Europe/Berlin\n  args: [1]\n  kwargs: {a: 1}\n  paused: true\n"
        "  timeout: 10m\n  retries: 1\n  retry_delay: 1m\n  concurrency: allow\n"
        "  max_instances: 2\n  misfire_grace: 2m\n  coalesce: false\n  jitter: 5s\n"
        "  start: 2027-01-01T00:00:00\n  end: 2028-01-01\n  description: d\n"
        "  labels: {team: ops}\n  executor: celery\n  queue: reports\n" + job("interval: 1h")
    ),
    "naive at": job("at: 2027-01-01T09:00:00"),
    "at with offset": job("at: 2027-01-01T09:00:00+01:00"),
    "at in UTC with Z and a fraction": job("at: 2027-01-01T09:00:00.250Z"),
    "at with a space": job("at: 2027-01-01 09:00:00"),
    "at as a date": job("at: 2027-01-01"),
    "at quoted without seconds": job("at: '2027-01-01T09:00'"),
    "start and end naive": job(
        "cron: '0 * * * *'", "start: 2027-01-01T00:00:00", "end: 2027-02-01"
    ),
    "interval 30s": job("interval: 30s"),
    "interval 1h30m": job("interval: 1h30m"),
    "interval 2d": job("interval: 2d"),
    "interval 1w": job("interval: 1w"),
    "interval integer": job("interval: 90"),
    "interval integer as text": job("interval: '90'"),
    "interval decimal": job("interval: 1.5h"),
    "interval upper case with blanks": job("interval: ' 1 H 30 M '"),
    "interval float of seconds": job("interval: 2.5"),
    "interval 1ms600s": job("interval: 1ms600s"),
    "cron macro": job("cron: '@daily'"),
    "a null trigger is not set": job("cron:", "interval: 5m", "at: null"),
    "null where the field is optional": job(
        "interval: 5m", "timeout:", "description:", "start:", "end:", "queue:"
    ),
    "x- anchors with merge keys": (
        "x-base: &base\n  task: tasks.jobs:go\n  retries: 2\n  labels: {team: ops}\n"
        "x-anything: [1, {a: b}]\n"
        "jobs:\n  one:\n    <<: *base\n    interval: 10s\n  two:\n    <<: *base\n"
        "    cron: '0 * * * *'\n"
    ),
    "executor celery with queue": job("cron: '0 2 * * *'", "executor: celery", "queue: reports"),
    "concurrency allow with max_instances": job(
        "interval: 1m", "concurrency: allow", "max_instances: 3"
    ),
    "concurrency replace": job("interval: 1m", "concurrency: replace"),
    "args and kwargs of any shape": job(
        "interval: 1m", "args: [1, two, [3], {four: 4}, null]", "kwargs: {a: {b: [1, 2]}, c: null}"
    ),
    "labels": job("interval: 1m", "labels: {team: ops, tier: '1'}"),
    "ids of every allowed character": (
        "jobs:\n"
        "  A.b_c-9:\n    task: tasks.jobs:go\n    interval: 1m\n"
        "  123:\n    task: tasks.jobs:go\n    interval: 1m\n"
        f"  {'x' * 128}:\n    task: tasks.jobs:go\n    interval: 1m\n"
    ),
    "task as a dotted path": "jobs:\n  j:\n    task: tasks.jobs.go\n    interval: 1m\n",
    "zero durations where zero is allowed": job(
        "interval: 1m", "jitter: 0s", "retry_delay: 0", "misfire_grace: 0m"
    ),
}

INVALID = {
    "unknown job field": job("interval: 1m", "colour: red"),
    "typo of a field": job("interval: 1m", "retires: 2"),
    "typo of a trigger": job("crn: '0 2 * * *'"),
    "unknown top-level key": "job:\n  j:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "unknown defaults field": "defaults:\n  retires: 2\n" + job("interval: 1m"),
    "task in defaults": "defaults:\n  task: tasks.jobs:go\n" + job("interval: 1m"),
    "trigger in defaults": "defaults:\n  interval: 1m\n" + job(),
    "two triggers": job("cron: '0 2 * * *'", "interval: 1m"),
    "three triggers": job("cron: '0 2 * * *'", "interval: 1m", "at: 2027-01-01T00:00:00"),
    "no trigger": job("retries: 1"),
    "only null triggers": job("cron:", "interval: null"),
    "no task": "jobs:\n  j:\n    interval: 1m\n",
    "id starting with a dash": "jobs:\n  -j:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "id with a blank": "jobs:\n  my job:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "id with a slash": "jobs:\n  a/b:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "id of 129 characters": f"jobs:\n  {'x' * 129}:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "id not ASCII": "jobs:\n  café:\n    task: tasks.jobs:go\n    interval: 1m\n",
    "file is a list": "- task: tasks.jobs:go\n  interval: 1m\n",
    "file is a string": "just text\n",
    "jobs is a list": "jobs:\n  - task: tasks.jobs:go\n    interval: 1m\n",
    "job is null": "jobs:\n  j:\n",
    "job is a string": "jobs:\n  j: tasks.jobs:go\n",
    "defaults is a list": "defaults: [1]\n" + job("interval: 1m"),
    "version 2": "version: 2\n" + job("interval: 1m"),
    "task not a dotted path": "jobs:\n  j:\n    task: go now\n    interval: 1m\n",
    "task a number": "jobs:\n  j:\n    task: 5\n    interval: 1m\n",
    "cron a number": job("cron: 5"),
    "cron empty": job("cron: ''"),
    "interval 0": job("interval: 0"),
    "interval 0s": job("interval: 0s"),
    "interval 0h0m": job("interval: 0h0m"),
    "interval 0 as text": job("interval: '0'"),
    "interval negative": job("interval: -5"),
    "interval without unit after a unit": job("interval: 1h30"),
    "interval unknown unit": job("interval: 5 parsecs"),
    "interval a word": job("interval: often"),
    "interval a boolean": job("interval: true"),
    "interval a list": job("interval: [1m]"),
    "interval over a century": job("interval: 4000000000"),
    "timeout 0": job("interval: 1m", "timeout: 0"),
    "timeout 0s": job("interval: 1m", "timeout: 0s"),
    "retry_delay negative": job("interval: 1m", "retry_delay: -1"),
    "retry_delay null": job("interval: 1m", "retry_delay:"),
    "misfire_grace a word": job("interval: 1m", "misfire_grace: soon"),
    "jitter a boolean": job("interval: 1m", "jitter: false"),
    "at a word": job("at: tomorrow"),
    "at without minutes": job("at: '2027-01-01T09'"),
    "at compact": job("at: '20270101T090000'"),
    "start a word": job("interval: 1m", "start: next week"),
    "end a list": job("interval: 1m", "end: [2027]"),
    "retries negative": job("interval: 1m", "retries: -1"),
    "retries a word": job("interval: 1m", "retries: two"),
    "retries null": job("interval: 1m", "retries:"),
    "max_instances 0": job("interval: 1m", "concurrency: allow", "max_instances: 0"),
    "concurrency unknown": job("interval: 1m", "concurrency: sometimes"),
    "executor unknown": job("interval: 1m", "executor: kubernetes"),
    "queue empty": job("interval: 1m", "executor: celery", "queue: ''"),
    "queue a number": job("interval: 1m", "executor: celery", "queue: 5"),
    "paused a word": job("interval: 1m", "paused: maybe"),
    "coalesce a number": job("interval: 1m", "coalesce: 2"),
    "args a mapping": job("interval: 1m", "args: {a: 1}"),
    "kwargs a list": job("interval: 1m", "kwargs: [1]"),
    "labels a list": job("interval: 1m", "labels: [ops]"),
    "label value a number": job("interval: 1m", "labels: {tier: 1}"),
    "description a number": job("interval: 1m", "description: 5"),
    "timezone a number": job("interval: 1m", "timezone: 5"),
    "wrong type in defaults": "defaults:\n  retries: many\n" + job("interval: 1m"),
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_files_are_accepted_by_the_schema_and_the_loader(
    validator: Draft202012Validator, loader: Loader, text: str
) -> None:
    assert (schema_errors(validator, text), loader_errors(loader, text)) == ([], [])


def test_a_key_written_beside_a_merge_key_overrides_it_for_the_schema_and_the_loader(
    validator: Draft202012Validator, loader: Loader
) -> None:
    text = (
        "x-base: &base\n  task: tasks.jobs:go\n  retries: 2\n"
        "jobs:\n  j:\n    <<: *base\n    retries: 3\n    interval: 10s\n"
    )
    assert (schema_errors(validator, text), loader_errors(loader, text)) == ([], [])


@pytest.mark.parametrize("text", INVALID.values(), ids=INVALID.keys())
def test_invalid_files_are_rejected_by_the_schema_and_the_loader(
    validator: Draft202012Validator, loader: Loader, text: str
) -> None:
    assert schema_errors(validator, text), "the schema accepts it"
    assert loader_errors(loader, text), "the loader accepts it"


# Every field of a job given each of these values (written as YAML), beside `task` and a
# trigger: whatever the loader accepts, the schema must accept too.
GRID_VALUES = (
    "0", "1", "-1", "0.5", "1.5", "30", "2.0", "4000000000", "true", "yes", "null", "''",
    "abc", "' 1 h '", "5m", "0s", "1h30", "1w", "500ms", "10S", "2027-01-01",
    "2027-01-01T09:00:00", "2027-01-01 09:00:00+01:00", "'2027-01-01T09:00'", "[1]",
    "[]", "{a: 1}", "{a: b}", "{}", "forbid", "allow", "replace", "local", "celery", "UTC",
    "Europe/Berlin", "'0 2 * * *'", "'@daily'", "tasks.jobs:go",
)  # fmt: skip
# Where the loader would be more lenient than the contract: nothing now (a number for a
# time was read as a Unix timestamp, and `interval` had no minimum of 1s).
LOADER_LAXNESS: set[tuple[str, str]] = set()


def files_setting(name: str, value: str) -> list[str]:
    """Files whose one job sets field ``name`` to ``value`` and is otherwise valid."""
    if name == "task":
        return [f"jobs:\n  j:\n    task: {value}\n    interval: 1h\n"]
    if name in ("cron", "interval", "at"):
        return [job(f"{name}: {value}")]
    return [job(trigger, f"{name}: {value}") for trigger in ("interval: 1h", "cron: '@daily'")]


def test_the_loader_accepts_nothing_the_schema_rejects(
    validator: Draft202012Validator, loader: Loader
) -> None:
    disagree = {
        (name, value)
        for name in JobSpec.model_fields
        for value in GRID_VALUES
        for text in files_setting(name, value)
        if not loader_errors(loader, text) and schema_errors(validator, text)
    }
    assert disagree <= LOADER_LAXNESS


# -- what the schema says -----------------------------------------------------------------


def test_the_schema_is_draft_2020_12_with_an_id_and_a_title(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:schedctl:schedule-file:v1"
    assert schema["title"] == "schedctl schedule file"


def test_the_schema_describes_every_field_of_a_job_and_of_defaults(
    schema: dict[str, Any],
) -> None:
    job_schema = schema["$defs"]["job"]
    defaults = schema["properties"]["defaults"]
    assert set(job_schema["properties"]) == set(JobSpec.model_fields)
    assert set(defaults["properties"]) == set(OPTION_FIELDS)
    assert all(field["description"] for field in job_schema["properties"].values())


def test_defaults_are_shown_as_a_file_writes_them(schema: dict[str, Any]) -> None:
    fields = schema["$defs"]["job"]["properties"]
    shown = {name: fields[name].get("default") for name in fields}
    assert shown["retry_delay"] == "10s"
    assert shown["misfire_grace"] == "1m"
    assert shown["jitter"] == "0s"
    assert shown["concurrency"] == "forbid"
    assert shown["max_instances"] == 1
    assert shown["coalesce"] is True
    assert shown["timeout"] is None
    assert "PT" not in json.dumps(schema)


def test_the_schema_uses_no_format_so_every_validator_reads_it_alike(
    schema: dict[str, Any],
) -> None:
    # Editors check `format` (date-time, duration) where Python validators often do not;
    # the old schema's `date-time` refused naive times there. Patterns say it instead.
    text = json.dumps(schema)
    assert '"format"' not in text


def test_each_invalid_case_fails_the_schema_for_its_own_reason(
    validator: Draft202012Validator,
) -> None:
    # Spot checks that the tables do not pass by accident (e.g. a broken `task` line).
    assert schema_errors(validator, job("interval: 1m")) == []
    assert any("colour" in e for e in schema_errors(validator, INVALID["unknown job field"]))
    assert any("-j" in e for e in schema_errors(validator, INVALID["id starting with a dash"]))
    two = schema_errors(validator, INVALID["two triggers"])
    assert len(two) == 1 and "valid under each of" in two[0]


def test_a_schedule_written_from_the_readme_table_is_valid(
    validator: Draft202012Validator,
) -> None:
    text = textwrap.dedent(
        """
        jobs:
          report:
            task: tasks.reports:nightly
            cron: "0 2 * * *"
            timeout: 10m
            retries: 2
            retry_delay: 30s
        """
    )
    assert schema_errors(validator, text) == []
