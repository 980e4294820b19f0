"""``schedctl serve`` settings: flags first, then ``ENGINE_*`` variables (contract 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory, write

pytestmark = pytest.mark.e2e


def test_settings_from_flags_and_environment(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    write(project / "jobs2" / "__init__.py", "")
    write(project / "jobs2" / "work.py", "def run():\n    return None\n")
    write(
        project / "schedules" / "a.yaml",
        """
        jobs:
          flagged:
            task: jobs2.work:run
            cron: "0 9 * * *"
        """,
    )
    write(
        tmp_path / "from-env" / "b.yaml",
        """
        jobs:
          from-env:
            task: tasks.e2e:noop
            cron: "0 9 * * *"
        """,
    )
    env = {
        "ENGINE_SCHEDULES_DIR": str(tmp_path / "from-env"),  # --schedules wins
        "ENGINE_TIMEZONE": "Europe/Berlin",
        "ENGINE_TASK_MODULES": "tasks,jobs2",
        "ENGINE_HOST": "127.0.0.1",
    }
    server = serve(env=env, database="")  # no --database: SQLite under .engine/
    jobs = server.jobs()
    assert sorted(jobs) == ["flagged"]
    assert jobs["flagged"]["trigger"]["timezone"] == "Europe/Berlin"
    assert server.status()["last_reconcile"]["errors"] == []
    assert any((project / ".engine").glob("*.db")), "the default database is under .engine/"
