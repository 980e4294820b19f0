"""``schedctl serve``'s log: ENGINE_LOG_LEVEL, ENGINE_LOG_FORMAT, no probes in the access log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ServeFactory

pytestmark = pytest.mark.e2e


def served_lines(text: str) -> list[str]:
    """The server's own lines (the fixture writes a ``=====`` header before each start)."""
    return [line for line in text.splitlines() if line and not line.startswith("=====")]


def test_probes_are_not_written_to_the_access_log_but_other_requests_are(
    serve: ServeFactory,
) -> None:
    server = serve()
    for path in ("/healthz", "/readyz", "/metrics", "/metrics?x=1", "/jobs"):
        server.request("GET", path)
    server.stop()
    log = server.log()
    assert '"GET /jobs HTTP/1.1" 200 OK' in log
    assert " INFO " in log and " DEBUG " not in log  # the default level is INFO
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert f"GET {probe}" not in log, f"{probe} was written to the access log"


def test_json_log_format_writes_one_object_a_line(serve: ServeFactory) -> None:
    server = serve(env={"ENGINE_LOG_FORMAT": "json", "ENGINE_LOG_LEVEL": "debug"})
    server.request("GET", "/jobs")
    server.stop()
    entries = [json.loads(line) for line in served_lines(server.log())]
    fields = {"time", "level", "logger", "message", "job", "attempt", "run_id"}
    assert entries and all(fields <= set(entry) for entry in entries)
    assert any(e["logger"] == "uvicorn.access" and "GET /jobs" in e["message"] for e in entries)
    assert any(e["level"] == "DEBUG" for e in entries), "ENGINE_LOG_LEVEL=debug was ignored"


@pytest.mark.parametrize(
    ("setting", "value"), [("ENGINE_LOG_LEVEL", "loud"), ("ENGINE_LOG_FORMAT", "xml")]
)
def test_a_bad_log_setting_exits_2_naming_it(project: Path, setting: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env[setting] = value
    done = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--port", "1"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert setting in done.stderr and repr(value) in done.stderr
