"""Task code that appears or changes while ``schedctl serve`` runs (issue 6, item 9)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory, wait_for, write

pytestmark = pytest.mark.e2e


def test_new_task_code_is_found_on_sighup_and_changed_code_asks_for_a_restart(
    serve: ServeFactory, project: Path
) -> None:
    write(
        project / "schedules" / "late.yaml",
        """
        jobs:
          late:
            task: tasks.late:hello
            cron: "0 4 * * *"
        """,
    )
    server = serve(no_watch=True)
    errors = server.status()["last_reconcile"]["errors"]
    assert [e["message"] for e in errors] == [
        "task module 'tasks.late' not found; check the path (tasks are imported from the "
        "current directory)"
    ]
    # The module appears; the schedule file does not change. SIGHUP applies the job.
    write(project / "tasks" / "late.py", "def hello():\n    return None\n")
    server.send(signal.SIGHUP)
    server.wait_job("late", lambda job: job["task"] == "tasks.late:hello")
    assert server.status()["last_reconcile"]["errors"] == []

    # A function added to a module the engine imported: the error says to restart.
    write(
        project / "tasks" / "late.py", "def hello():\n    return None\n\n\ndef later():\n    pass\n"
    )
    write(
        project / "schedules" / "later.yaml",
        """
        jobs:
          later:
            task: tasks.late:later
            cron: "0 4 * * *"
        """,
    )
    server.send(signal.SIGHUP)

    def restart_asked() -> list[str]:
        found = server.status()["last_reconcile"]["errors"]
        return [e["message"] for e in found if "restart the engine" in e["message"]]

    (message,) = wait_for(restart_asked, what="an error asking for a restart")
    assert message == (
        "module 'tasks.late' has no callable 'later' (tasks/late.py changed on disk since the "
        "engine imported it; restart the engine to load the new code)"
    )
    assert "tasks/late.py changed on disk since the engine imported it" in server.log()
    assert "late" in server.jobs()  # the old code still resolves: the job keeps running
