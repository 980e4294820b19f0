"""The reconcile plan, table-driven: (live, desired) in, steps out, compared as tuples.

Pure: no clock, no files, no scheduler. Jobs are built from real ``JobSpec`` essences, so a
field that the spec serialises differently than expected shows up here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import pytest

from engine.files.loader import Loader
from engine.files.spec import JobSpec, fingerprint
from engine.reconciler import Change, Desired, LiveJob, Op, Plan, Step, plan

BASE: dict[str, Any] = {"task": "tasks.reports:nightly", "cron": "0 2 * * *"}


def essence(**fields: Any) -> dict[str, Any]:
    """The canonical form of a job: ``BASE`` with ``fields`` on top."""
    return JobSpec.model_validate({**BASE, **fields}).essence()


def want(file: str = "a.yaml", **fields: Any) -> Desired:
    """A job as the files declare it now."""
    body = essence(**fields)
    return Desired(body, fingerprint(body), file)


def have(file: str = "a.yaml", runtime_paused: bool = False, **fields: Any) -> LiveJob:
    """A declared job as the engine runs it now (its last applied declaration)."""
    body = essence(**fields)
    return LiveJob("declared", file, body, fingerprint(body), runtime_paused)


RUNTIME = LiveJob("runtime")


def steps(result: Plan) -> list[tuple[str, str]]:
    return [step.as_tuple() for step in result.steps]


def changes(step: Step) -> list[tuple[str, Any, Any]]:
    return [(c.field, c.old, c.new) for c in step.changes]


def only_step(result: Plan) -> Step:
    assert len(result.steps) == 1, steps(result)
    return result.steps[0]


# -- the whole table ----------------------------------------------------------------------

PLAN_CASES = [
    pytest.param({}, {}, set(), set(), [], id="nothing-declared-nothing-live"),
    pytest.param({"a": have()}, {"a": want()}, set(), set(), [], id="unchanged-job-no-step"),
    pytest.param({}, {"a": want()}, set(), set(), [("add", "a")], id="new-id-is-added"),
    pytest.param({"a": have()}, {}, set(), set(), [("remove", "a")], id="gone-id-is-removed"),
    pytest.param(
        {"a": have()},
        {"a": want(cron="0 3 * * *")},
        set(),
        set(),
        [("reschedule", "a")],
        id="cron-change-reschedules",
    ),
    pytest.param(
        {"a": have()},
        {"a": want(args=["pdf"])},
        set(),
        set(),
        [("modify", "a")],
        id="args-change-modifies",
    ),
    pytest.param(
        {"a": have()},
        {"a": want(paused=True)},
        set(),
        set(),
        [("pause", "a")],
        id="declared-pause",
    ),
    pytest.param(
        {"a": have(paused=True)},
        {"a": want()},
        set(),
        set(),
        [("resume", "a")],
        id="declared-resume",
    ),
    pytest.param(
        {"a": have(file="broken.yaml"), "b": have(file="ok.yaml")},
        {"b": want(file="ok.yaml")},
        {"broken.yaml"},
        set(),
        [],
        id="invalid-file-keeps-its-jobs",
    ),
    pytest.param(
        {"a": have(file="broken.yaml"), "b": have(file="ok.yaml")},
        {"b": want(file="ok.yaml", retries=3), "c": want(file="ok.yaml")},
        {"broken.yaml"},
        set(),
        [("modify", "b"), ("add", "c")],
        id="invalid-file-does-not-stop-other-files",
    ),
    pytest.param(
        {"a": have(file="one.yaml")},
        {},
        set(),
        {"a"},
        [],
        id="duplicate-id-keeps-its-live-job",
    ),
    pytest.param({}, {}, set(), {"a"}, [], id="duplicate-id-not-live-is-not-added"),
    pytest.param(
        {"a": have(file="one.yaml", runtime_paused=True)},
        {},
        set(),
        {"a"},
        [],
        id="duplicate-id-keeps-its-runtime-pause",
    ),
    pytest.param({"r": RUNTIME}, {}, set(), set(), [], id="runtime-job-is-never-removed"),
    pytest.param(
        {"r": RUNTIME, "a": have()},
        {},
        set(),
        set(),
        [("remove", "a")],
        id="removing-declared-jobs-leaves-runtime-jobs",
    ),
    pytest.param(
        {"r": RUNTIME},
        {},
        {"a.yaml"},
        {"r"},
        [],
        id="runtime-job-ignores-invalid-files-and-duplicates",
    ),
    pytest.param(
        {"a": RUNTIME},
        {"a": want()},
        set(),
        set(),
        [("add", "a")],
        id="declared-id-replaces-runtime-job",
    ),
    pytest.param(
        {"a": have(runtime_paused=True)},
        {"a": want()},
        set(),
        set(),
        [],
        id="runtime-pause-holds-while-declaration-unchanged",
    ),
    pytest.param(
        {"a": have(runtime_paused=True)},
        {"a": want(description="now with a description")},
        set(),
        set(),
        [("modify", "a")],
        id="runtime-paused-job-with-changed-declaration-is-modified",
    ),
    pytest.param(
        {"a": have(file="old.yaml")},
        {"a": want(file="new.yaml")},
        set(),
        set(),
        [("modify", "a")],
        id="job-moved-to-another-file",
    ),
    pytest.param(
        {"b": have(), "d": have(), "e": have(), "f": RUNTIME},
        {"e": want(cron="*/5 * * * *"), "c": want(), "a": want(), "b": want(paused=True)},
        set(),
        set(),
        [("add", "a"), ("pause", "b"), ("add", "c"), ("remove", "d"), ("reschedule", "e")],
        id="steps-are-sorted-by-id",
    ),
]


@pytest.mark.parametrize(("live", "desired", "invalid", "duplicates", "expected"), PLAN_CASES)
def test_plan_steps(
    live: Mapping[str, LiveJob],
    desired: Mapping[str, Desired],
    invalid: set[str],
    duplicates: set[str],
    expected: list[tuple[str, str]],
) -> None:
    result = plan(desired, live, frozenset(invalid), frozenset(duplicates))
    assert steps(result) == expected


# -- which fields reschedule and which apply in place --------------------------------------

SCHEDULE_CHANGES = [
    pytest.param({}, {"cron": "0 3 * * *"}, [("cron", "0 2 * * *", "0 3 * * *")], id="cron"),
    pytest.param(
        {"cron": None, "interval": "5m"},
        {"cron": None, "interval": "10m"},
        [("interval", "5m", "10m")],
        id="interval",
    ),
    pytest.param(
        {"cron": None, "at": "2027-01-01T09:00:00"},
        {"cron": None, "at": "2027-01-01T10:00:00"},
        [("at", "2027-01-01T09:00:00", "2027-01-01T10:00:00")],
        id="at",
    ),
    pytest.param(
        {}, {"timezone": "Europe/Berlin"}, [("timezone", "UTC", "Europe/Berlin")], id="timezone"
    ),
    pytest.param(
        {},
        {"start": "2027-01-01T00:00:00"},
        [("start", None, "2027-01-01T00:00:00")],
        id="start",
    ),
    pytest.param(
        {"end": "2030-01-01T00:00:00"},
        {"end": "2031-01-01T00:00:00"},
        [("end", "2030-01-01T00:00:00", "2031-01-01T00:00:00")],
        id="end",
    ),
    pytest.param({}, {"jitter": "30s"}, [("jitter", "0s", "30s")], id="jitter"),
    pytest.param(
        {},
        {"cron": None, "interval": "1h"},
        [("cron", "0 2 * * *", None), ("interval", None, "1h")],
        id="cron-to-interval",
    ),
    pytest.param(
        {},
        {"cron": "0 3 * * *", "args": ["pdf"], "paused": True},
        [("args", [], ["pdf"]), ("cron", "0 2 * * *", "0 3 * * *"), ("paused", False, True)],
        id="schedule-and-other-fields-together",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected_changes"), SCHEDULE_CHANGES)
def test_schedule_field_change_reschedules(
    before: dict[str, Any], after: dict[str, Any], expected_changes: list[tuple[str, Any, Any]]
) -> None:
    result = plan({"a": want(**after)}, {"a": have(**before)})
    step = only_step(result)
    assert step.as_tuple() == ("reschedule", "a")
    assert changes(step) == expected_changes
    assert step.desired == want(**after)


OTHER_CHANGES = [
    pytest.param({}, {"args": ["pdf"]}, [("args", [], ["pdf"])], id="args"),
    pytest.param(
        {"kwargs": {"to": "ops@example.com"}},
        {"kwargs": {"to": "dev@example.com"}},
        [("kwargs", {"to": "ops@example.com"}, {"to": "dev@example.com"})],
        id="kwargs",
    ),
    pytest.param({}, {"timeout": "10m"}, [("timeout", None, "10m")], id="timeout"),
    pytest.param({"retries": 1}, {"retries": 3}, [("retries", 1, 3)], id="retries"),
    pytest.param({}, {"retry_delay": "1m"}, [("retry_delay", "10s", "1m")], id="retry_delay"),
    pytest.param(
        {}, {"concurrency": "replace"}, [("concurrency", "forbid", "replace")], id="concurrency"
    ),
    pytest.param(
        {"concurrency": "allow"},
        {"concurrency": "allow", "max_instances": 3},
        [("max_instances", 1, 3)],
        id="max_instances",
    ),
    pytest.param({}, {"misfire_grace": "5m"}, [("misfire_grace", "1m", "5m")], id="misfire_grace"),
    pytest.param({}, {"coalesce": False}, [("coalesce", True, False)], id="coalesce"),
    pytest.param(
        {"description": "old"},
        {"description": "new"},
        [("description", "old", "new")],
        id="description",
    ),
    pytest.param({}, {"labels": {"team": "ops"}}, [("labels", {}, {"team": "ops"})], id="labels"),
    pytest.param(
        {},
        {"task": "tasks.reports:weekly"},
        [("task", "tasks.reports:nightly", "tasks.reports:weekly")],
        id="task",
    ),
    pytest.param(
        {},
        {"args": ["pdf"], "description": "d"},
        [("args", [], ["pdf"]), ("description", None, "d")],
        id="several-fields-sorted-by-name",
    ),
    pytest.param(
        {},
        {"args": ["pdf"], "paused": True},
        [("args", [], ["pdf"]), ("paused", False, True)],
        id="pause-together-with-another-field",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected_changes"), OTHER_CHANGES)
def test_other_field_change_modifies_in_place_naming_the_change(
    before: dict[str, Any], after: dict[str, Any], expected_changes: list[tuple[str, Any, Any]]
) -> None:
    result = plan({"a": want(**after)}, {"a": have(**before)})
    step = only_step(result)
    assert step.as_tuple() == ("modify", "a")
    assert changes(step) == expected_changes
    assert step.desired == want(**after)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(False, True, ("pause", "a"), id="pause"),
        pytest.param(True, False, ("resume", "a"), id="resume"),
    ],
)
def test_paused_flag_alone_pauses_or_resumes(
    before: bool, after: bool, expected: tuple[str, str]
) -> None:
    step = only_step(plan({"a": want(paused=after)}, {"a": have(paused=before)}))
    assert step.as_tuple() == expected
    assert step.changes == (Change("paused", before, after),)


# -- per-rule details ------------------------------------------------------------------------


def test_added_job_carries_what_to_add() -> None:
    step = only_step(plan({"a": want(file="x.yaml")}, {}))
    assert step.desired == want(file="x.yaml")
    assert step.changes == ()
    assert step.replaces_runtime is False


def test_removed_job_step_has_no_desired_state() -> None:
    step = only_step(plan({}, {"a": have()}))
    assert step == Step(Op.REMOVE, "a")


def test_declared_id_over_runtime_job_is_an_add_that_replaces_it() -> None:
    step = only_step(plan({"a": want()}, {"a": RUNTIME}))
    assert step.as_tuple() == ("add", "a")
    assert step.replaces_runtime is True
    assert step.desired == want()


def test_invalid_file_keeps_its_jobs_in_the_effective_state() -> None:
    live = {"a": have(file="broken.yaml", retries=2), "b": have(file="ok.yaml")}
    result = plan({"b": want(file="ok.yaml")}, live, frozenset({"broken.yaml"}))
    assert result.steps == ()
    assert result.kept == frozenset({"a"})
    assert set(result.effective) == {"a", "b"}
    assert result.effective["a"].essence == essence(retries=2)
    assert result.effective["a"].file == "broken.yaml"


def test_duplicate_id_is_kept_as_it_was() -> None:
    live = {"a": have(file="one.yaml", cron="*/5 * * * *")}
    result = plan({}, live, duplicate_ids=frozenset({"a"}))
    assert result.steps == ()
    assert result.kept == frozenset({"a"})
    assert result.effective["a"].essence == essence(cron="*/5 * * * *")


def test_runtime_jobs_are_not_part_of_the_effective_declared_state() -> None:
    result = plan({"a": want()}, {"a": have(), "r": RUNTIME})
    assert set(result.effective) == {"a"}
    assert result.kept == frozenset()


def test_job_moved_to_another_file_is_a_provenance_only_modify() -> None:
    step = only_step(plan({"a": want(file="new.yaml")}, {"a": have(file="old.yaml")}))
    assert step.as_tuple() == ("modify", "a")
    assert step.changes == ()
    assert step.desired is not None
    assert step.desired.file == "new.yaml"


def test_runtime_paused_job_moved_to_another_file_gets_no_pause_or_resume() -> None:
    live = {"a": have(file="old.yaml", runtime_paused=True)}
    step = only_step(plan({"a": want(file="new.yaml")}, live))
    assert step.as_tuple() == ("modify", "a")
    assert step.changes == ()


def test_plan_counts_every_operation() -> None:
    live = {"b": have(), "c": have(), "d": have(), "e": have(paused=True), "f": have()}
    desired = {
        "a": want(),
        "b": want(cron="0 4 * * *"),
        "c": want(args=[1]),
        "d": want(paused=True),
        "e": want(),
    }
    assert plan(desired, live).counts() == {
        "add": 1,
        "reschedule": 1,
        "modify": 1,
        "pause": 1,
        "resume": 1,
        "remove": 1,
    }


def test_empty_plan_counts_zero_for_every_operation() -> None:
    assert plan({"a": want()}, {"a": have()}).counts() == {op.value: 0 for op in Op}


# -- revision ---------------------------------------------------------------------------------


def test_revision_is_a_short_hex_hash() -> None:
    revision = plan({"a": want()}, {}).revision
    assert len(revision) == 12
    int(revision, 16)


def test_revision_does_not_depend_on_dict_order() -> None:
    jobs = {"a": want(), "b": want(cron="0 3 * * *"), "c": want(retries=1)}
    forward = plan(dict(jobs), {})
    backward = plan(dict(reversed(jobs.items())), {})
    assert forward.revision == backward.revision


def test_revision_is_the_same_before_and_after_applying() -> None:
    desired = {"a": want(), "b": want(interval="5m", cron=None)}
    first = plan(desired, {})
    live = {"a": have(), "b": have(interval="5m", cron=None)}
    assert plan(desired, live).revision == first.revision


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"cron": "0 3 * * *"}, id="schedule-field"),
        pytest.param({"args": ["pdf"]}, id="other-field"),
        pytest.param({"paused": True}, id="paused"),
    ],
)
def test_revision_changes_when_any_essence_changes(change: dict[str, Any]) -> None:
    before = plan({"a": want(), "b": want()}, {})
    after = plan({"a": want(), "b": want(**change)}, {})
    assert after.revision != before.revision


def test_revision_changes_when_a_job_is_added_or_removed() -> None:
    one = plan({"a": want()}, {}).revision
    two = plan({"a": want(), "b": want()}, {}).revision
    none = plan({}, {}).revision
    assert len({one, two, none}) == 3


def test_breaking_a_file_does_not_change_the_revision() -> None:
    desired = {"a": want(file="a.yaml"), "b": want(file="b.yaml", retries=2)}
    applied = plan(desired, {})
    live = {"a": have(file="a.yaml"), "b": have(file="b.yaml", retries=2)}
    # b.yaml now fails to parse: it contributes no desired jobs, but keeps its live ones.
    broken = plan({"a": want(file="a.yaml")}, live, frozenset({"b.yaml"}))
    assert broken.revision == applied.revision
    assert broken.steps == ()


def test_a_broken_file_counts_with_its_last_applied_jobs_not_its_new_content() -> None:
    live = {"a": have(file="a.yaml", retries=2)}
    broken = plan({}, live, frozenset({"a.yaml"}))
    assert broken.revision == plan({"a": want(file="a.yaml", retries=2)}, {}).revision
    assert broken.revision != plan({"a": want(file="a.yaml", retries=5)}, {}).revision


# -- essences come from parsed jobs, not bytes ------------------------------------------------

ORIGINAL = """
defaults:
  timezone: Europe/Berlin
jobs:
  nightly-report:
    task: tasks.reports:nightly
    cron: "0 2 * * *"
    args: [pdf]
    kwargs: {recipients: [ops@example.com], format: a4}
    labels: {team: ops, tier: gold}
  heartbeat:
    task: tasks.health:ping
    interval: 30s
"""

REWRITTEN = """
# Reports for the ops team.
jobs:
  heartbeat:          # every half minute
    interval: 30      # plain seconds
    task: tasks.health:ping
    timezone: Europe/Berlin

  nightly-report:
    kwargs:
      format: a4
      recipients:
        - ops@example.com   # the on-call list
    labels:
      tier: gold
      team: ops
    args: ["pdf"]
    cron: '0 2 * * *'
    task: tasks.reports:nightly
defaults: {timezone: Europe/Berlin}
"""


def fingerprints(text: str) -> dict[str, str]:
    result = Loader(check_tasks=False).load_bytes(
        "schedules/reports.yaml", textwrap.dedent(text).encode()
    )
    assert result.valid, result.problems
    return {job_id: job.fingerprint for job_id, job in result.jobs.items()}


def desired_from(text: str) -> dict[str, Desired]:
    result = Loader(check_tasks=False).load_bytes(
        "schedules/reports.yaml", textwrap.dedent(text).encode()
    )
    return {
        job_id: Desired(job.essence, job.fingerprint, job.file, job.line, job.column)
        for job_id, job in result.jobs.items()
    }


def test_comments_reordering_and_equivalent_spellings_keep_the_essence() -> None:
    assert fingerprints(REWRITTEN) == fingerprints(ORIGINAL)


def test_comment_only_edit_gives_no_step_and_the_same_revision() -> None:
    before = desired_from(ORIGINAL)
    live = {
        job_id: LiveJob("declared", d.file, d.essence, d.fingerprint)
        for job_id, d in before.items()
    }
    after = plan(desired_from(REWRITTEN), live)
    assert after.steps == ()
    assert after.revision == plan(before, {}).revision


def test_real_edit_changes_the_fingerprint_of_that_job_only() -> None:
    edited = ORIGINAL.replace('cron: "0 2 * * *"', 'cron: "0 3 * * *"')
    old, new = fingerprints(ORIGINAL), fingerprints(edited)
    assert new["nightly-report"] != old["nightly-report"]
    assert new["heartbeat"] == old["heartbeat"]
