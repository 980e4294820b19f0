"""Real Celery workers for the tests: a project with a Celery app, worker processes, a TCP
proxy in front of Redis that a test can cut (never the shared Redis server itself).

Every test session gets its own Redis key prefix (kombu's ``global_keyprefix``) on its
own database number, and deletes its keys at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11
PACKAGE = "ctasks"

APP_SOURCE = '''
"""The Celery app of the tests: its broker and key prefix come from the environment."""

import os

from celery import Celery

import engine.celery  # noqa: F401  (the worker side of schedctl: one import)

app = Celery("ctasks", broker=os.environ["CTASKS_BROKER"], include=["ctasks.jobs"])
app.conf.update(
    broker_transport_options={
        "global_keyprefix": os.environ["CTASKS_PREFIX"],
        "visibility_timeout": float(os.environ.get("CTASKS_VISIBILITY", "3600")),
    },
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
'''

JOBS_SOURCE = '''
"""Celery tasks of the tests; each appends what it saw to a file."""

import json
import logging
import pathlib
import time

import engine
from ctasks.celery_app import app

log = logging.getLogger("ctasks.jobs")


def _note(path, **fields):
    run = engine.current_run()
    fields["run"] = None if run is None else {
        "job_id": run.job_id,
        "scheduled_at": run.scheduled_at.isoformat(),
        "attempt": run.attempt,
        "run_id": run.run_id,
    }
    fields["at"] = time.time()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(fields) + "\\n")


@app.task
def hello(path, greeting="hello"):
    log.warning("saying %s", greeting)
    _note(path, event="hello")
    return greeting


@app.task(bind=True)
def boom(self, path, password=None):
    # What Celery shows of the arguments (events, Flower, celery inspect --safe)
    _note(path, event="boom", shown=[self.request.argsrepr, self.request.kwargsrepr])
    raise RuntimeError(f"cannot log in with {password}")


@app.task
def sleeper(path, seconds):
    _note(path, event="start")
    time.sleep(seconds)
    _note(path, event="end")


@app.task
def hold(path, release):
    """Runs until the file ``release`` exists (at most 60 s)."""
    _note(path, event="start")
    deadline = time.time() + 60
    while not pathlib.Path(release).exists() and time.time() < deadline:
        time.sleep(0.05)
    _note(path, event="end")


@app.task
def flaky(path):
    counter = pathlib.Path(path + ".count")
    calls = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(calls + 1))
    _note(path, event="call", calls=calls + 1)
    if calls == 0:
        raise RuntimeError("first call fails")


def plain(path):
    """Not a Celery task."""
'''


def redis_or_skip() -> None:
    """Skip (fail under CI=true) when the shared Redis server is not there."""
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        message = "Redis is not running on 127.0.0.1:6379 (start it: redis-server --daemonize yes)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def make_project(root: Path) -> Path:
    package = root / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "celery_app.py").write_text(textwrap.dedent(APP_SOURCE))
    (package / "jobs.py").write_text(textwrap.dedent(JOBS_SOURCE))
    return root


def delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def new_prefix() -> str:
    return f"schedctl-test-{uuid.uuid4().hex[:10]}:"


class Worker:
    """One ``celery worker`` process (its own process group, so a kill takes its pool)."""

    def __init__(
        self,
        project: Path,
        name: str,
        env: dict[str, str],
        *,
        queues: str = "celery",
        concurrency: int = 2,
        pool: str = "prefork",
    ) -> None:
        self.name = f"{name}@{socket.gethostname()}"
        self.log_path = project / f"worker-{name}.log"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"{PACKAGE}.celery_app:app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "-n",
            self.name,
            "-Q",
            queues,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=project,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"celery worker exited with {self.proc.returncode}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"celery worker not ready within {timeout:g}s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (a machine lost)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Proxy:
    """A TCP proxy to Redis on a fixed local port; ``cut()`` drops it, ``restore()`` reopens."""

    def __init__(self, target: tuple[str, int] = (REDIS_HOST, REDIS_PORT)) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
