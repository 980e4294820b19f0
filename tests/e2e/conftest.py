"""End-to-end fixtures: ``schedctl serve`` as a real subprocess in a throw-away project.

Every test gets a project folder (``tasks/`` package + ``schedules/``) under ``tmp_path``
and a ``serve(...)`` factory that starts ``python -m engine serve`` there on a free port,
waits for ``GET /readyz`` to answer 200, and stops it with SIGTERM at teardown. The
server's log is attached to the report of a failing test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
POLL = 0.05

# The contract: exit status 0 after a clean stop on SIGTERM.
SIGTERM_EXIT_CODES = (0,)

TASKS_SOURCE = '''
"""Task code for the end-to-end tests; imported by the engine from the project folder."""

import asyncio
import pathlib
import time


def noop(*args, **kwargs):
    return None


def append(path, line="tick"):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{line}\\n")


def boom(message="boom"):
    raise RuntimeError(message)


async def nap(seconds):
    await asyncio.sleep(seconds)


def flaky(counter):
    """Fails on odd calls, succeeds on even ones: each run needs exactly one retry."""
    path = pathlib.Path(counter)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    if calls % 2 == 0:
        raise RuntimeError(f"flaky failure on call {calls + 1}")


def slow(marker, seconds):
    append(marker, "start")
    time.sleep(seconds)
    append(marker, "end")
'''


def write(path: Path, text: str) -> Path:
    """Write dedented ``text`` to ``path`` in place (truncate + write), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def write_atomic(path: Path, text: str) -> Path:
    """Save as editors and deploy tools do: write a hidden temporary file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    os.replace(tmp, path)
    return path


def swap_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically, as Kubernetes and git-sync do."""
    tmp = link.with_name(f"{link.name}.tmp-swap")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def wait_for(
    condition: Callable[[], T],
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = POLL,
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; got {value!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``schedctl serve`` subprocess and an HTTP client for its status API."""

    def __init__(
        self,
        project: Path,
        schedules: Path,
        database: str,
        log_path: Path,
        *,
        no_watch: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.project = project
        self.schedules = schedules
        self.database = database
        self.log_path = log_path
        self.no_watch = no_watch
        self.extra_env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.returncode: int | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Server:
        assert self.proc is None, "already started"
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--schedules",
            str(self.schedules),
            "--port",
            str(self.port),
        ]
        if self.database:
            argv += ["--database", self.database]
        if self.no_watch:
            argv.append("--no-watch")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, cwd=self.project, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close()
                raise AssertionError(
                    f"schedctl serve exited with {code} before ready:\n{self.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz").status_code == 200:
                    return self
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(
                    f"schedctl serve not ready within {START_TIMEOUT:g}s:\n{self.log()}"
                )
            time.sleep(POLL)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit; return the exit status (killed: -SIGKILL)."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close()
                raise AssertionError(
                    f"schedctl serve did not stop within {timeout:g}s of {sig!r}:\n{self.log()}"
                ) from None
        self.returncode = self.proc.returncode
        self._close()
        return self.returncode

    def _close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, *, polls: bool = True) -> str:
        """The server's output; ``polls=False`` drops the access lines of answered GETs."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "<no log>"
        if polls:
            return text
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if not ('"GET /' in line and '" 200 OK' in line)
        )

    # -- HTTP --------------------------------------------------------------------------

    def request(self, method: str, path: str) -> httpx.Response:
        assert self.client is not None, "not running"
        return self.client.request(method, path)

    def get(self, path: str, status: int = 200) -> Any:
        response = self.request("GET", path)
        assert response.status_code == status, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def jobs(self) -> dict[str, dict[str, Any]]:
        """``GET /jobs`` as ``{id: job}``; also checks the envelope."""
        body = self.get("/jobs")
        ids = [job["id"] for job in body["jobs"]]
        assert body["count"] == len(ids)
        assert ids == sorted(ids), "jobs are sorted by id"
        assert len(set(ids)) == len(ids), f"a job is listed twice: {ids}"
        return {job["id"]: job for job in body["jobs"]}

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/jobs/{job_id}")
        return body

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/status")
        return body

    def wait_job(
        self,
        job_id: str,
        check: Callable[[dict[str, Any]], Any],
        timeout: float = 5.0,
        what: str = "",
    ) -> dict[str, Any]:
        """Poll ``GET /jobs`` until ``job_id`` is listed and ``check(job)`` is truthy."""

        def probe() -> dict[str, Any] | None:
            job = self.jobs().get(job_id)
            return job if job is not None and check(job) else None

        return wait_for(probe, timeout, what or f"job {job_id!r} to match")

    def reconciles(self) -> float:
        """How many reconciles the engine has run (``schedctl_reconciles_total``): every one
        counts there, also those that changed nothing and so leave ``last_reconcile``."""
        text = self.request("GET", "/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("schedctl_reconciles_total{")
        )

    def wait_reconcile(self, since: float, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until a reconcile after the ``since``-th has run; then ``/status``."""
        wait_for(lambda: self.reconciles() > since, timeout, f"a reconcile after the {since:g}th")
        return self.status()


ServeFactory = Callable[..., Server]
_SERVERS = pytest.StashKey[list[Server]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for index, server in enumerate(item.stash.get(_SERVERS, [])):
            report.sections.append(
                (
                    f"schedctl serve log #{index + 1} (answered GETs omitted)",
                    server.log(polls=False),
                )
            )
    return report


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: ``tasks/`` (importable from the cwd) and an empty ``schedules/``."""
    root = tmp_path / "project"
    write(root / "tasks" / "__init__.py", "")
    write(root / "tasks" / "e2e.py", TASKS_SOURCE)
    (root / "schedules").mkdir()
    return root


@pytest.fixture
def serve(request: pytest.FixtureRequest, project: Path, tmp_path: Path) -> Iterator[ServeFactory]:
    """``serve(schedules=None, *, no_watch=False, env=None, database=None) -> Server``.

    Starts ``python -m engine serve`` in ``project`` and waits until ready. Every server
    of a test shares one SQLite database under ``tmp_path`` unless ``database`` is given
    (``""``: no ``--database`` flag). Servers still running at teardown get SIGTERM and
    must stop cleanly within 15 s.
    """
    servers: list[Server] = []
    request.node.stash[_SERVERS] = servers

    def start(
        schedules: Path | None = None,
        *,
        no_watch: bool = False,
        env: dict[str, str] | None = None,
        database: str | None = None,
    ) -> Server:
        server = Server(
            project,
            schedules or project / "schedules",
            f"sqlite:///{tmp_path / 'state.db'}" if database is None else database,
            tmp_path / f"serve-{len(servers) + 1}.log",
            no_watch=no_watch,
            env=env,
        )
        servers.append(server)
        return server.start()

    yield start

    failures = []
    for server in servers:
        if not server.running:
            continue
        code = server.stop(signal.SIGTERM)
        if code not in SIGTERM_EXIT_CODES or "Application shutdown complete." not in server.log():
            failures.append(f"exit status {code}:\n{server.log()}")
    assert not failures, "schedctl serve did not stop cleanly on SIGTERM: " + "\n".join(failures)
