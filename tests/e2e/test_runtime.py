"""Runtime jobs (added by an extension through ``engine.aps``) next to declared ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import SIGTERM_EXIT_CODES, ServeFactory, write

pytestmark = pytest.mark.e2e

EXTENSION = '''
"""An extension that uses the runtime API once, on the first start only."""

import pathlib

from engine import aps
from tasks import e2e


async def init_tasks(config):
    marker = pathlib.Path(config["marker"])
    if marker.exists():
        return
    await aps.add_interval_job(e2e.noop, "rt", hours=1, args=["runtime"])
    for job_id in config["pause"]:
        assert await aps.pause_job(job_id)
    marker.write_text("done")
'''

DECLARED = """
jobs:
  decl:
    task: tasks.e2e:noop
    cron: "0 * * * *"
    args: [{arg}]
  held:
    task: tasks.e2e:noop
    cron: "30 * * * *"
{extra}"""


def test_runtime_jobs_and_pauses_survive_reconciles_and_restarts(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "tasks" / "ext.py", EXTENSION)
    schedules = project / "schedules" / "jobs.yaml"
    write(schedules, DECLARED.format(arg="d1", extra=""))
    config = {"tasks.ext": {"marker": str(tmp_path / "ext-ran"), "pause": ["decl", "held"]}}
    env = {"ENGINE_EXTENSIONS": json.dumps(config)}
    started = datetime.now(UTC)
    server = serve(env=env)

    jobs = server.jobs()
    rt = jobs["rt"]
    assert rt["source"] == "runtime" and rt["args"] == ["runtime"]
    assert rt["file"] is None
    assert rt["next_run_time"] is not None
    assert started + timedelta(minutes=59) < datetime.fromisoformat(rt["next_run_time"])
    assert jobs["decl"]["paused"] and jobs["decl"]["next_run_time"] is None
    assert jobs["held"]["paused"] and jobs["held"]["next_run_time"] is None
    revision = server.status()["revision"]

    # Reconciling never touches the runtime job, and a runtime pause holds...
    extra = "  extra:\n    task: tasks.e2e:noop\n    cron: '0 0 * * *'\n"
    write(schedules, DECLARED.format(arg="d1", extra=extra))
    server.wait_job("extra", lambda j: True)
    jobs = server.jobs()
    assert jobs["rt"] == rt
    assert jobs["decl"]["paused"] and jobs["held"]["paused"]
    assert server.status()["revision"] != revision

    # ... until the declaration changes.
    write(schedules, DECLARED.format(arg="d2", extra=extra))
    decl = server.wait_job("decl", lambda j: j["args"] == ["d2"])
    assert not decl["paused"] and decl["next_run_time"] is not None
    assert server.jobs()["held"]["paused"]
    assert server.stop() in SIGTERM_EXIT_CODES

    # Across a restart: the runtime job comes back as it was, and so does the pause.
    server = serve(env=env)
    jobs = server.jobs()
    assert jobs["rt"]["source"] == "runtime"
    assert jobs["rt"]["next_run_time"] == rt["next_run_time"]
    assert jobs["held"]["paused"] and jobs["held"]["next_run_time"] is None
    assert not jobs["decl"]["paused"]

    # A declared job of the same id wins over the runtime job, with a warning.
    rt_declared = "  rt:\n    task: tasks.e2e:noop\n    cron: '15 * * * *'\n"
    write(schedules, DECLARED.format(arg="d2", extra=extra + rt_declared))
    job = server.wait_job("rt", lambda j: j["source"] == "declared")
    assert job["trigger"]["expression"] == "15 * * * *"
    assert job["args"] == []
    log = server.log()
    assert any("WARNING" in line and "'rt'" in line for line in log.splitlines()), log
