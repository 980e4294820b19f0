"""Faults seen from outside: a broken state file, a stop while `def` tasks hang."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory, free_port, wait_for, write

pytestmark = pytest.mark.e2e


def test_serve_refuses_an_empty_state_file_with_one_line_and_exit_2(project: Path) -> None:
    state = project / ".engine" / "state.db"
    state.parent.mkdir()
    state.write_bytes(b"")
    found = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--port", str(free_port())],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 2, found.stderr
    lines = found.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in found.stderr, found.stderr
    assert ".engine/state.db" in lines[0] and "empty" in lines[0] and "--reset-state" in lines[0]
    assert state.read_bytes() == b""  # untouched


def test_sigterm_exits_within_the_grace_while_def_tasks_hang(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "slow.txt"
    write(
        project / "schedules" / "hang.yaml",
        f"""
        jobs:
          hangs:
            task: tasks.e2e:slow
            interval: 1s
            args: ["{marker}", 1000]
        """,
    )
    server = serve()
    wait_for(lambda: marker.exists(), timeout=10, what="a hanging run")
    started = time.monotonic()
    code = server.stop(timeout=30)
    took = time.monotonic() - started
    assert code == 0
    assert took <= 10 + 1 + 1.0, f"stopped after {took:.1f}s (grace 10 s)"  # + process exit
    log = server.log()
    assert "Traceback" not in log
    # Its record says what happened: stopped while in progress, not a success.
    again = serve()
    runs = again.job("hangs")["runs"]
    assert runs and runs[-1]["status"] in ("cancelled", "failed"), runs
