"""Stopping and restarting ``schedctl serve``: exit codes, state across restarts."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SIGTERM_EXIT_CODES, ServeFactory, Server, wait_for, write

pytestmark = pytest.mark.e2e


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _settled_hourly(server: Server) -> dict[str, Any]:
    return server.wait_job(
        "hourly",
        lambda j: (
            j["next_run_time"]
            and _ts(j["next_run_time"]) > datetime.now(UTC) + timedelta(minutes=50)
        ),
        what="hourly to be scheduled an hour ahead",
    )


PHASE = """
jobs:
  hourly:
    task: tasks.e2e:noop
    interval: {interval}
    args: [{arg}]
  nightly:
    task: tasks.e2e:noop
    cron: "0 3 * * *"
"""


def test_restart_keeps_the_phase(serve: ServeFactory, project: Path) -> None:
    schedules = project / "schedules"
    write(schedules / "phase.yaml", PHASE.format(interval="1h", arg="a"))
    server = serve()
    hourly = _settled_hourly(server)
    nightly = server.jobs()["nightly"]
    runs = server.job("hourly")["runs"]
    revision = server.status()["revision"]
    assert server.stop() in SIGTERM_EXIT_CODES  # the exit code has its own test

    # Unchanged files: the same next run times (not now + 1h), the same history.
    server = serve()
    jobs = server.jobs()
    assert jobs["hourly"]["next_run_time"] == hourly["next_run_time"]
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert server.job("hourly")["runs"] == runs
    assert server.status()["revision"] == revision
    assert server.stop() in SIGTERM_EXIT_CODES

    # Arguments edited while down: applied in place, the phase is kept.
    write(schedules / "phase.yaml", PHASE.format(interval="1h", arg="b"))
    server = serve()
    jobs = server.jobs()
    assert jobs["hourly"]["args"] == ["b"]
    assert jobs["hourly"]["next_run_time"] == hourly["next_run_time"]
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert server.stop() in SIGTERM_EXIT_CODES

    # Interval edited while down: rescheduled from the restart, nightly untouched.
    write(schedules / "phase.yaml", PHASE.format(interval="3h", arg="b"))
    restarted = datetime.now(UTC)
    server = serve()
    moved = server.wait_job(
        "hourly",
        lambda j: _ts(j["next_run_time"]) > restarted + timedelta(hours=2, minutes=59),
        what="hourly rescheduled 3h from the restart",
    )
    assert moved["trigger"]["expression"] == "3h"
    assert server.jobs()["nightly"]["next_run_time"] == nightly["next_run_time"]

    # A file broken while down: its jobs come back as last applied, and the error shows.
    assert server.stop() in SIGTERM_EXIT_CODES
    write(schedules / "phase.yaml", PHASE.format(interval="5h", arg="c") + "    colour: red\n")
    server = serve()
    jobs = server.jobs()
    assert jobs["nightly"]["next_run_time"] == nightly["next_run_time"]
    assert jobs["hourly"]["next_run_time"] == moved["next_run_time"]
    assert (jobs["hourly"]["trigger"]["expression"], jobs["hourly"]["args"]) == ("3h", ["b"])
    [error] = server.status()["last_reconcile"]["errors"]
    assert (error["line"], "unknown field 'colour'" in error["message"]) == (9, True), error

    # A job removed while down is gone after the restart.
    assert server.stop() in SIGTERM_EXIT_CODES
    write(schedules / "phase.yaml", "jobs: {}\n")
    server = serve()
    assert server.get("/jobs") == {"count": 0, "jobs": []}


def test_runs_missed_while_down(serve: ServeFactory, project: Path, tmp_path: Path) -> None:
    ran_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    down_yaml = f"""
        jobs:
          each:
            task: tasks.e2e:append
            interval: 1s
            args: ["{tmp_path / "each.txt"}"]
            misfire_grace: 1s
            coalesce: false
          coalesced:
            task: tasks.e2e:append
            interval: 1s
            args: ["{tmp_path / "coalesced.txt"}"]
            misfire_grace: 1s
          ran:
            task: tasks.e2e:noop
            at: "{ran_at.isoformat()}"
        """
    down = write(project / "schedules" / "down.yaml", down_yaml)
    server = serve()
    for job_id in ("each", "coalesced", "ran"):
        wait_for(lambda job_id=job_id: server.job(job_id)["runs"], what=f"{job_id} to run")
    # A one-shot due shortly after the stop: applied and saved, then the engine goes down.
    late_at = datetime.now(UTC) + timedelta(seconds=2)
    late_yaml = f"""
          late:
            task: tasks.e2e:noop
            at: "{late_at.isoformat()}"
            misfire_grace: 1s
        """
    write(down, down_yaml + late_yaml)
    server.wait_job("late", lambda j: j["next_run_time"] is not None)
    assert server.stop() in SIGTERM_EXIT_CODES
    stopped = datetime.now(UTC)
    assert stopped < late_at, "too slow to stop before 'late' was due"
    # Downtime: the point of this test is time passing while no engine runs; 'late' falls
    # due in it and is more than its misfire_grace (1s) late when the engine is back.
    time.sleep(max(3.0, (late_at - stopped).total_seconds() + 1.5))
    restarted = datetime.now(UTC)
    server = serve()

    def during_downtime(job_id: str) -> list[dict[str, Any]]:
        return [
            r
            for r in server.job(job_id)["runs"]
            if stopped < _ts(r["scheduled_at"]) < restarted - timedelta(seconds=1.5)
        ]

    # coalesce: false -> each run time of the downtime is accounted for; those more than
    # misfire_grace late when the engine came back are recorded missed, none ran late.
    each = wait_for(lambda: during_downtime("each"), what="missed runs")
    assert {r["status"] for r in each} == {"missed"}, each
    assert all(r["error"] and r["started_at"] is None for r in each)
    # coalesce: true -> the runs of the downtime collapse: nothing of it ran late.
    executed = [r for r in during_downtime("coalesced") if r["started_at"] is not None]
    assert executed == [], executed
    wait_for(
        lambda: any(
            r["status"] == "success" and _ts(r["scheduled_at"]) > stopped
            for r in server.job("coalesced")["runs"]
        ),
        what="coalesced to run again after the restart",
    )

    # One-shots: the one that ran stays listed, done, and does not run again; the one
    # that fell due while down is recorded missed and stays listed.
    ran = server.job("ran")
    assert ran["next_run_time"] is None
    assert [(r["status"], _ts(r["scheduled_at"])) for r in ran["runs"]] == [("success", ran_at)]
    late = wait_for(lambda: (j := server.job("late"))["runs"] and j, what="late recorded")
    assert late["next_run_time"] is None
    assert [(r["status"], _ts(r["scheduled_at"])) for r in late["runs"]] == [("missed", late_at)]


def test_removed_job_lets_its_running_run_finish(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "slow.txt"
    target = write(
        project / "schedules" / "slow.yaml",
        f"""
        jobs:
          slow:
            task: tasks.e2e:slow
            interval: 1s
            args: ["{marker}", 1.5]
        """,
    )
    server = serve()
    wait_for(
        lambda: marker.exists() and marker.read_text().splitlines()[-1] == "start",
        what="a run in progress",
    )
    target.unlink()
    wait_for(lambda: server.get("/jobs")["count"] == 0, what="the job removed")
    assert server.request("GET", "/jobs/slow").status_code == 404
    assert marker.read_text().splitlines()[-1] == "start", "the run was not cut short"
    wait_for(lambda: marker.read_text().splitlines()[-1] == "end", what="the run to finish")
    assert server.running


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(
            signal.SIGTERM,
            id="SIGTERM",
        ),
        pytest.param(
            signal.SIGINT,
            id="SIGINT",
        ),
    ],
)
def test_signal_stops_cleanly_with_exit_0(
    sig: signal.Signals, serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "slow.txt"
    write(
        project / "schedules" / "slow.yaml",
        f"""
        jobs:
          slow:
            task: tasks.e2e:slow
            interval: 1s
            args: ["{marker}", 1.0]
        """,
    )
    server = serve()
    wait_for(
        lambda: marker.exists() and marker.read_text().splitlines()[-1] == "start",
        what="a run in progress",
    )
    code = server.stop(sig)
    stopped = datetime.now(UTC)
    log = server.log()
    # A clean stop: the run in progress was let finish, and recorded as a success.
    assert marker.read_text().splitlines()[-1] == "end"
    assert "Application shutdown complete." in log
    assert "Traceback" not in log, log
    server = serve()
    runs = [
        r for r in server.job("slow")["runs"] if r["started_at"] and _ts(r["started_at"]) < stopped
    ]
    assert runs and {r["status"] for r in runs} == {"success"}, runs
    assert code == 0


def test_second_process_on_the_same_database_stands_by(serve: ServeFactory, project: Path) -> None:
    jobs_file = write(project / "schedules" / "phase.yaml", PHASE.format(interval="1h", arg="a"))
    leader = serve()
    hourly = _settled_hourly(leader)
    standby = serve()  # the same SQLite database: the file lock beside it is taken
    status = standby.status()
    assert (status["role"], status["scheduler"]) == ("standby", "stopped")
    assert (leader.status()["role"], leader.status()["scheduler"]) == ("single", "running")
    assert standby.get("/readyz") == {"status": "ready"}
    assert standby.jobs()["hourly"]["next_run_time"] == hourly["next_run_time"]
    assert status["revision"] == leader.status()["revision"]

    # The leader applies an edit; the standby shows it from the database.
    write(jobs_file, PHASE.format(interval="1h", arg="b"))
    leader.wait_job("hourly", lambda j: j["args"] == ["b"])
    standby.wait_job("hourly", lambda j: j["args"] == ["b"], timeout=10)

    # The leader stops: the standby takes over, with the same schedule.
    assert leader.stop() in SIGTERM_EXIT_CODES
    wait_for(
        lambda: standby.status()["role"] == "single", timeout=15, what="the standby to take over"
    )
    assert standby.status()["scheduler"] == "running"
    assert standby.jobs()["hourly"]["next_run_time"] == hourly["next_run_time"]
    write(jobs_file, PHASE.format(interval="1h", arg="c"))
    standby.wait_job("hourly", lambda j: j["args"] == ["c"], what="the new leader to watch")


def test_a_standby_taking_over_says_single_only_once_its_scheduler_runs(
    serve: ServeFactory, project: Path
) -> None:
    """A takeover restores the whole schedule before it fires (3,000 jobs here: long
    enough to be seen). A health check polling `/status` meanwhile must never read
    `role: single` with `scheduler: stopped`: the role changes when firing begins."""
    body = "".join(f"  job-{n:04d}: {{task: tasks.e2e:noop, interval: 1h}}\n" for n in range(3000))
    write(project / "schedules" / "many.yaml", f"jobs:\n{body}")
    leader = serve()
    wait_for(lambda: leader.status()["jobs"] == 3000, timeout=30, what="3,000 jobs")
    standby = serve()
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{standby.port}", timeout=5) as client:
            while not done.is_set():
                status = client.get("/status").json()
                seen.append((status["role"], status["scheduler"]))
                if seen[-1] == ("single", "running"):
                    return

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert leader.stop() in SIGTERM_EXIT_CODES
    poller.join(30)
    done.set()
    assert seen[-1] == ("single", "running"), "the standby did not take over"
    assert ("single", "stopped") not in seen, sorted(set(seen))
    assert seen[0] == ("standby", "stopped")


def test_broken_file_keeps_its_jobs_when_the_folder_is_spelled_differently(
    serve: ServeFactory, project: Path
) -> None:
    jobs_file = write(project / "schedules" / "phase.yaml", PHASE.format(interval="1h", arg="a"))
    server = serve(Path("schedules"))  # relative to the project folder, the cwd
    hourly = _settled_hourly(server)
    assert server.stop() in SIGTERM_EXIT_CODES
    write(jobs_file, PHASE.format(interval="1h", arg="b") + "    colour: red\n")
    server = serve(project / "schedules")  # the same folder, absolute
    assert server.status()["last_reconcile"]["errors"]
    jobs = server.jobs()
    assert sorted(jobs) == ["hourly", "nightly"], "an invalid file changes nothing it declared"
    assert jobs["hourly"]["next_run_time"] == hourly["next_run_time"]
