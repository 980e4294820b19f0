"""Reconciling edited schedule files into a running ``schedctl serve`` (contract section 4)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServeFactory, Server, wait_for, write

pytestmark = pytest.mark.e2e


def _when(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["next_run_time"])


def _settled(server: Server, job_id: str, interval: timedelta) -> dict[str, Any]:
    """Wait until ``job_id`` is scheduled about one ``interval`` ahead."""
    return server.wait_job(
        job_id,
        lambda j: j["next_run_time"] and _when(j) > datetime.now(UTC) + interval * 0.9,
        what=f"{job_id} to be scheduled ~{interval} ahead",
    )


def _same_path(project: Path, shown: str, expected: Path) -> bool:
    return (project / shown).resolve() == expected.resolve()


TEAM = """
jobs:
  hourly:
    task: tasks.e2e:noop
    interval: {interval}
    args: [{arg}]
    kwargs: {{mode: fast}}
  nightly:
    task: tasks.e2e:noop
    cron: "0 3 * * *"
    timezone: Europe/Berlin
    description: nightly cleanup
"""

# The same two jobs: comments, keys and jobs reordered, flow and block styles swapped.
TEAM_REWRITTEN = """
# Team schedules. Comments and key order do not matter.

jobs:
  # the cron job first this time
  nightly:
    description: nightly cleanup   # trailing comment
    timezone: Europe/Berlin
    cron: "0 3 * * *"
    task: tasks.e2e:noop

  hourly:
    kwargs:
      mode: fast
    args:
      - {arg}
    interval: {interval}
    task: tasks.e2e:noop
"""


def test_edits_touch_only_what_changed(serve: ServeFactory, project: Path) -> None:
    team = write(project / "schedules" / "team.yaml", TEAM.format(interval="1h", arg="v1"))
    server = serve()
    hourly = _settled(server, "hourly", timedelta(hours=1))
    nightly = server.jobs()["nightly"]
    assert {k: v for k, v in nightly["trigger"].items() if k != "description"} == {
        "type": "cron",
        "expression": "0 3 * * *",
        "timezone": "Europe/Berlin",
    }
    assert hourly["trigger"]["type"] == "interval"
    assert hourly["args"] == ["v1"] and hourly["kwargs"] == {"mode": "fast"}
    assert _same_path(project, hourly["file"], team) and hourly["source"] == "declared"
    status = server.status()
    assert status["jobs"] == 2 and status["last_reconcile"]["errors"] == []
    revision = status["revision"]
    assert revision

    # A changed argument applies in place: neither job's next run time moves.
    write(team, TEAM.format(interval="1h", arg="v2"))
    server.wait_job("hourly", lambda j: j["args"] == ["v2"], what="args v2")
    jobs = server.jobs()
    assert jobs["hourly"]["next_run_time"] == hourly["next_run_time"]
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    revision_v2 = server.status()["revision"]
    assert revision_v2 != revision

    # A changed interval reschedules that job, and only that job.
    edited_at = datetime.now(UTC)
    write(team, TEAM.format(interval="2h", arg="v2"))
    server.wait_job("hourly", lambda j: j["trigger"]["expression"] == "2h", what="interval 2h")
    hourly_2h = _settled(server, "hourly", timedelta(hours=2))
    assert hourly_2h["next_run_time"] != hourly["next_run_time"]
    assert _when(hourly_2h) >= edited_at + timedelta(hours=2) - timedelta(seconds=1)
    assert server.jobs()["nightly"]["next_run_time"] == nightly["next_run_time"]
    status = server.status()
    revision_2h = status["revision"]
    assert revision_2h not in (revision, revision_v2)

    # Comments, key order, job order and YAML style change nothing, revision included.
    count = server.reconciles()
    write(team, TEAM_REWRITTEN.format(interval="2h", arg="v2"))
    status = server.wait_reconcile(count)
    assert status["revision"] == revision_2h
    assert status["last_reconcile"]["errors"] == []
    jobs = server.jobs()
    assert jobs["hourly"]["next_run_time"] == hourly_2h["next_run_time"]
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert jobs["hourly"]["args"] == ["v2"] and jobs["hourly"]["kwargs"] == {"mode": "fast"}

    # A new job appears; the others stay as they were.
    write(
        team,
        TEAM_REWRITTEN.format(interval="2h", arg="v2")
        + "  extra:\n    task: tasks.e2e:noop\n    cron: '*/5 * * * *'\n",
    )
    extra = server.wait_job("extra", lambda j: True, what="the added job")
    assert extra["trigger"]["expression"] == "*/5 * * * *"
    assert _same_path(project, extra["file"], team)
    jobs = server.jobs()
    assert jobs["hourly"]["next_run_time"] == hourly_2h["next_run_time"]
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert server.status()["revision"] not in (revision_2h, revision_v2, revision)

    # Pausing holds the job; resuming a cron job brings back the same next run time.
    write(
        team,
        TEAM.format(interval="2h", arg="v2").replace("cleanup\n", "cleanup\n    paused: true\n"),
    )
    paused = server.wait_job("nightly", lambda j: j["paused"], what="nightly paused")
    assert paused["next_run_time"] is None
    assert "extra" not in server.jobs()

    # Removing the pause (and the extra job) goes back to the very same state.
    write(team, TEAM.format(interval="2h", arg="v2"))
    resumed = server.wait_job("nightly", lambda j: not j["paused"], what="nightly resumed")
    assert resumed["next_run_time"] == nightly["next_run_time"]
    assert server.jobs()["hourly"]["next_run_time"] == hourly_2h["next_run_time"]
    assert server.status()["revision"] == revision_2h

    # Renaming the file (one atomic rename) is not a remove + add: phases are kept.
    renamed = team.with_name("renamed.yaml")
    os.rename(team, renamed)
    moved = server.wait_job(
        "hourly", lambda j: _same_path(project, j["file"], renamed), what="the new file name"
    )
    assert moved["next_run_time"] == hourly_2h["next_run_time"]
    assert server.jobs()["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert server.status()["revision"] == revision_2h

    # Deleting the file removes its jobs.
    renamed.unlink()
    wait_for(lambda: server.get("/jobs")["count"] == 0, what="all jobs gone")
    assert server.status()["jobs"] == 0


def test_job_line_follows_the_file(serve: ServeFactory, project: Path) -> None:
    team = write(project / "schedules" / "team.yaml", TEAM.format(interval="1h", arg="v1"))
    server = serve()
    assert server.jobs()["nightly"]["line"] == 7
    count = server.reconciles()
    write(team, "# one\n# two\n# three\n" + TEAM.format(interval="1h", arg="v1").lstrip("\n"))
    server.wait_reconcile(count)
    server.wait_job("nightly", lambda j: j["line"] == 10, timeout=1, what="line 10")


def test_new_interval_job_first_fires_one_interval_later(
    serve: ServeFactory, project: Path
) -> None:
    write(
        project / "schedules" / "a.yaml",
        """
        jobs:
          hourly:
            task: tasks.e2e:noop
            interval: 1h
        """,
    )
    started = datetime.now(UTC)
    server = serve()
    job = server.job("hourly")
    # A run at start would be recorded within milliseconds; give it a moment to show.
    wait_for(
        lambda: server.job("hourly")["runs"] or datetime.now(UTC) > started + timedelta(seconds=1),
        what="a run or the end of the observation window",
    )
    job = server.job("hourly")
    assert job["runs"] == [], "an hourly job ran right after it was added"
    assert _when(job) >= started + timedelta(minutes=59)


TICK = """
jobs:
  tick:
    task: tasks.e2e:append
    interval: 1s
    args: ["{ticks}", "{arg}"]
"""


def test_broken_file_keeps_its_jobs_firing(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks.txt"
    a = write(project / "schedules" / "a.yaml", TICK.format(ticks=ticks, arg="v1"))
    b = write(
        project / "schedules" / "b.yaml",
        """
        jobs:
          other:
            task: tasks.e2e:noop
            cron: "0 * * * *"
        """,
    )
    server = serve()
    wait_for(lambda: server.job("tick")["runs"], what="tick to run")
    revision = server.status()["revision"]

    def successes() -> int:
        return sum(1 for r in server.job("tick")["runs"] if r["status"] == "success")

    # 1. An unknown field (and a changed argument) in a.yaml: nothing of a.yaml applies.
    write(a, TICK.format(ticks=ticks, arg="v2") + '    crn: "* * * * *"\n')
    status = wait_for(
        lambda: (s := server.status())["last_reconcile"]["errors"] and s, what="an error"
    )
    [error] = status["last_reconcile"]["errors"]
    assert _same_path(project, error["file"], a)
    assert (error["line"], error["column"]) == (6, 5)
    assert "unknown field 'crn'" in error["message"]
    assert "did you mean 'cron'?" in error["message"]
    assert status["revision"] == revision, "an invalid file counts with its last applied jobs"
    assert f"{error['file']}:6:5: error: unknown field 'crn'" in server.log()
    done = successes()
    wait_for(lambda: successes() >= done + 2, what="tick to keep firing while a.yaml is broken")
    tick = server.jobs()["tick"]
    assert tick["args"] == [str(ticks), "v1"]
    assert tick["trigger"]["expression"] == "1s"

    # 2. Other files still apply while a.yaml is broken; the error stays listed.
    write(
        b,
        """
        jobs:
          other:
            task: tasks.e2e:noop
            cron: "0 * * * *"
            labels: {team: ops}
        """,
    )
    server.wait_job("other", lambda j: j["labels"] == {"team": "ops"}, what="b.yaml applied")
    assert [e["line"] for e in server.status()["last_reconcile"]["errors"]] == [6]

    # 3. A YAML syntax error instead: located at the offending ':'.
    write(a, TICK.format(ticks=ticks, arg="v3").replace("interval: 1s", "interval: 1s: 2s"))
    status = wait_for(
        lambda: (s := server.status())["last_reconcile"]["errors"][0]["line"] == 4 and s,
        what="the syntax error",
    )
    [error] = status["last_reconcile"]["errors"]
    assert _same_path(project, error["file"], a)
    assert (error["line"], error["column"]) == (4, 17)
    assert "YAML" in error["message"]
    done = successes()
    wait_for(lambda: successes() > done, what="tick to keep firing")
    assert server.jobs()["tick"]["args"] == [str(ticks), "v1"]
    assert set(ticks.read_text().splitlines()) == {"v1"}

    # 4. Fixing the file clears the errors and applies the change it carries.
    write(a, TICK.format(ticks=ticks, arg="v2"))
    server.wait_job("tick", lambda j: j["args"] == [str(ticks), "v2"], what="args v2")
    assert server.status()["last_reconcile"]["errors"] == []
    wait_for(lambda: "v2" in ticks.read_text().splitlines(), what="a run with the new args")


def test_duplicate_id_across_files(serve: ServeFactory, project: Path) -> None:
    a = write(
        project / "schedules" / "a.yaml",
        """
        jobs:
          keep:
            task: tasks.e2e:noop
            cron: "0 * * * *"
          dup:
            task: tasks.e2e:noop
            interval: 1h
            args: [a]
        """,
    )
    server = serve()
    _settled(server, "dup", timedelta(hours=1))
    before = server.jobs()
    revision = server.status()["revision"]
    assert before["dup"]["args"] == ["a"]

    # A folder appears at once (one rename) with b.yaml, which declares dup too and a job
    # of its own, and c.yaml, which shares a new id 'twin' with b.yaml.
    stage = project / "schedules" / ".stage"
    write(
        stage / "b.yaml",
        """
        jobs:
          fresh:
            task: tasks.e2e:noop
            cron: "15 * * * *"
          dup:
            task: tasks.e2e:noop
            interval: 2h
            args: [b]
          twin:
            task: tasks.e2e:noop
            cron: "5 * * * *"
        """,
    )
    write(
        stage / "c.yaml",
        """
        jobs:
          twin:
            task: tasks.e2e:noop
            cron: "5 * * * *"
        """,
    )
    more = project / "schedules" / "more"
    os.rename(stage, more)
    b, c = more / "b.yaml", more / "c.yaml"
    server.wait_job("fresh", lambda j: True, what="b.yaml's other job")
    jobs = server.jobs()
    assert jobs["dup"] == before["dup"], "a duplicated id stays as it was"
    assert "twin" not in jobs, "an id declared twice from the start is not applied"
    status = server.status()
    errors = status["last_reconcile"]["errors"]
    dup_errors = [e for e in errors if "'dup'" in e["message"]]
    assert dup_errors, errors
    for error in dup_errors:
        assert {"file", "line", "column", "message"} <= set(error)
    text = " ".join(f"{e['file']}:{e['line']}:{e['column']} {e['message']}" for e in dup_errors)
    assert "a.yaml:5" in text and "b.yaml:5" in text, text
    assert any("'twin'" in e["message"] for e in errors), errors

    # Editing dup in a.yaml while it is duplicated still leaves it as it was.
    count = server.reconciles()
    write(a, a.read_text().replace("args: [a]", "args: [a2]"))
    server.wait_reconcile(count)
    assert server.jobs()["dup"] == before["dup"]

    # Removing the second declaration applies a.yaml's version, in place.
    write(b, b.read_text().replace("dup:", "gone:", 1).replace("args: [b]", "args: []"))
    server.wait_job("dup", lambda j: j["args"] == ["a2"], what="a.yaml's dup")
    assert server.jobs()["gone"]["trigger"]["expression"] == "2h"
    assert server.jobs()["dup"]["next_run_time"] == before["dup"]["next_run_time"]
    assert server.jobs()["keep"] == before["keep"]
    errors = server.status()["last_reconcile"]["errors"]
    assert errors and all("'twin'" in e["message"] for e in errors), errors
    c.unlink()
    server.wait_job("twin", lambda j: True, what="twin once declared once")
    assert server.status()["last_reconcile"]["errors"] == []
    assert server.status()["revision"] != revision

    # Moving a job between files (add the copy, then delete the original) keeps its phase.
    lines = a.read_text().splitlines(keepends=True)
    write(b, b.read_text() + "".join(lines[4:]))
    wait_for(lambda: server.status()["last_reconcile"]["errors"], what="the transient duplicate")
    write(a, "".join(lines[:4]))
    job = server.wait_job(
        "dup", lambda j: _same_path(project, j["file"], b), what="dup to come from b.yaml"
    )
    assert job["next_run_time"] == before["dup"]["next_run_time"]
    assert job["args"] == ["a2"]
    assert server.status()["last_reconcile"]["errors"] == []


def test_missing_schedules_folder_changes_nothing(serve: ServeFactory, project: Path) -> None:
    schedules = project / "schedules"
    write(schedules / "team.yaml", TEAM.format(interval="1h", arg="v1"))
    server = serve()
    before = server.jobs()
    status = server.status()

    # A deploy swaps the folder in two renames; an unmounted volume looks the same.
    os.rename(schedules, project / "schedules.old")
    status = wait_for(
        lambda: (s := server.status())["last_reconcile"]["errors"] and s, what="the error"
    )
    assert _same_path(project, status["last_reconcile"]["errors"][0]["file"], schedules)
    assert server.jobs() == before, "jobs changed while the folder was missing"
    os.rename(project / "schedules.old", schedules)
    wait_for(lambda: not server.status()["last_reconcile"]["errors"], what="the folder to be back")
    after = server.jobs()
    assert {k: j["next_run_time"] for k, j in after.items()} == {
        k: j["next_run_time"] for k, j in before.items()
    }
