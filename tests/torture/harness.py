"""Real engine processes under fault: start, SIGKILL, SIGSTOP/SIGCONT, restart, observe.

A ``World`` is one scenario's universe: a throw-away project folder, its replicas
(``python -m engine serve`` subprocesses, each in its own process group and on its own
port), a timeline of what was done to them, and background samplers:
- probes: ``/readyz`` and ``/status`` of every replica twice a second;
- history: the engine's run table every few seconds (it trims old runs);
- processes: RSS, threads and open descriptors of each engine's process group.

Hygiene: ``close()`` SIGCONTs frozen groups, SIGKILLs every group it started, reaps
them and stops the samplers, whatever state the scenario left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.torture.project import JobPlan, write_project
from tests.torture.proxy import PgProxy
from tests.torture.records import Execution, RunHistory, TaskLog

__all__ = ["Fault", "Incarnation", "Probe", "ProcSample", "Replica", "World", "wait_until"]

T = TypeVar("T")

START_TIMEOUT = 45.0  # a restart on a busy 2-core machine, with a database to migrate
PROBE_EVERY = 0.5
HISTORY_EVERY = 5.0
PROC_EVERY = 1.0
HTTP_TIMEOUT = 1.0


# Runs first in every engine process, then execs the engine: if this test process dies
# (even by SIGKILL), the kernel SIGKILLs the engine too, so no engine outlives its run.
# (PR_SET_PDEATHSIG survives exec; it fires when the thread that started the engine ends,
# which is after the scenario that started it.)
_ORPHAN_GUARD = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or os._exit(70); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Poll ``condition`` until it is truthy; its value, or None once ``timeout`` passed.

    Scenarios do not fail on a missed deadline: they note it and go on, and the checker
    reports what happened (a takeover that never came is a figure, not a crash).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fault:
    """Something done to the system, and from when firing is required again.

    ``serve_again_at``: the contract's allowance ends (takeover 15 s after a leader fault,
    the restarted process ready after a kill, 15 s after a database outage ends).
    """

    kind: str  # kill | leader-kill | leader-freeze | outage-cut | outage-freeze
    target: str | None  # the incarnation hit, for process faults
    start: float
    end: float  # when the fault was lifted (kill: the same instant)
    serve_again_at: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Incarnation:
    """One start of one replica: one process (group)."""

    name: str  # "r1#3": replica r1, third start
    replica: str
    pid: int
    port: int
    started_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    end: str | None = None  # killed | terminated | torn-down
    exit_seconds: float | None = None  # after SIGTERM


@dataclass(frozen=True, slots=True)
class Probe:
    at: float
    incarnation: str
    readyz: int | None  # None: no answer within the timeout
    role: str | None
    database: str | None


@dataclass(frozen=True, slots=True)
class ProcSample:
    at: float
    incarnation: str
    rss_kb: int
    threads: int
    fds: int
    processes: int


class Replica:
    """One replica slot: restarted as new incarnations, each its own process group."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.current: Incarnation | None = None
        self.frozen = False
        self.stopping = False  # we are ending it: an exit now is not a crash
        self.client: httpx.Client | None = None
        self.log_path = world.workdir / f"{name}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, wait: bool = True) -> Incarnation:
        assert not self.alive, f"{self.name} is running"
        self.starts += 1
        port = free_port()
        name = f"{self.name}#{self.starts}"
        argv = [sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), *self.world.entry, "serve"]
        argv += ["--schedules", str(self.world.project / "schedules"), "--port", str(port)]
        if self.world.database_url is not None:
            argv += ["--database", self.world.database_url]
        if not self.world.watch:
            argv.append("--no-watch")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        env.update(
            PYTHONUNBUFFERED="1",
            TORTURE_LOG=str(self.world.task_log.path),
            TORTURE_INCARNATION=name,
        )
        env.update(self.world.env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {name} {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                cwd=self.world.project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: faults hit every worker
            )
        self.frozen = False
        self.stopping = False
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT)
        self.current = Incarnation(name, self.name, self.proc.pid, port, time.time())
        self.world.incarnations.append(self.current)
        self.world.note("start", name)
        if wait:
            self.wait_ready()
        return self.current

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Wait for ``/readyz`` 200; the wall time it answered. Raises if it never does."""
        assert self.current is not None
        if self.current.ready_at is not None:
            return self.current.ready_at
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"{self.current.name} exited before ready:\n{self.tail()}")
            if self.readyz() == 200:
                self.current.ready_at = time.time()
                self.world.note("ready", self.current.name)
                return self.current.ready_at
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.current.name} not ready within {timeout:g}s:\n{self.tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> float:
        """SIGKILL the whole group (a pod or host dying); the wall time of the kill."""
        assert self.proc is not None and self.current is not None
        at = time.time()
        self.stopping = True
        self._signal(signal.SIGKILL)
        if self.frozen:
            self._signal(signal.SIGCONT)
        self.proc.wait()
        self._ended("killed", at)
        self.world.note("kill", self.current.name)
        return at

    def freeze(self) -> float:
        """SIGSTOP the whole group (a paused VM); the wall time of the freeze."""
        assert self.current is not None
        at = time.time()
        self._signal(signal.SIGSTOP)
        self.frozen = True
        self.world.note("freeze", self.current.name)
        return at

    def thaw(self) -> float:
        assert self.current is not None
        self._signal(signal.SIGCONT)
        self.frozen = False
        at = time.time()
        self.world.note("thaw", self.current.name)
        return at

    def terminate(self, timeout: float) -> float | None:
        """SIGTERM; the seconds until the process exited, or None (then it is SIGKILLed)."""
        assert self.proc is not None and self.current is not None
        self.stopping = True
        if self.frozen:
            self.thaw()
        sent = time.monotonic()
        at = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            took: float | None = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            took = None
            self._signal(signal.SIGKILL)
            self.proc.wait()
        self._signal(signal.SIGKILL)  # workers the engine may have left behind
        self.current.exit_seconds = took
        self._ended("terminated", at)
        self.world.note("terminate", self.current.name, exit_seconds=took)
        return took

    def teardown(self) -> None:
        """Whatever state it is in: thawed, killed with its group, reaped."""
        if self.proc is None:
            return
        self.stopping = True
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.current is not None and self.current.ended_at is None:
            self._ended("torn-down", time.time())

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the group we created: pgid == its leader's pid

    def _ended(self, how: str, at: float) -> None:
        assert self.current is not None
        self.current.ended_at = at
        self.current.end = how
        if self.client is not None:
            self.client.close()
        self.client = None
        self.proc = None
        self.frozen = False

    # -- observing -------------------------------------------------------------------------

    def crashed(self) -> int | None:
        """The exit status if the process ended without being told to, else None."""
        proc, current = self.proc, self.current
        if proc is None or current is None or self.stopping or current.end is not None:
            return None
        code = proc.poll()
        if code is None:
            return None
        current.ended_at = time.time()
        current.end = f"exited by itself ({code})"
        self.world.note("crash", current.name, code=code)
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def readyz(self) -> int | None:
        if self.client is None or self.frozen:
            return None
        try:
            return self.client.get("/readyz").status_code
        except httpx.HTTPError:
            return None

    def status(self) -> dict[str, Any] | None:
        if self.client is None or self.frozen:
            return None
        try:
            response = self.client.get("/status")
        except httpx.HTTPError:
            return None
        body: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return body

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


class World:
    """One scenario: its project, replicas, faults, timeline and samplers."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        jobs: tuple[JobPlan, ...],
        *,
        database_url: str | None,
        read_url: str,
        watch: bool = True,
        env: dict[str, str] | None = None,
        entry: tuple[str, ...] = ("-m", "engine"),
        sample_processes: bool = False,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.project = write_project(workdir / "project", jobs)
        self.jobs = jobs
        self.database_url = database_url  # what replicas get (None: the SQLite default)
        self.read_url = read_url  # where the checker reads the history (never the proxy)
        self.watch = watch
        self.env = dict(env or {})
        self.entry = entry
        self.task_log = TaskLog(workdir / "tasks.log")
        self.history = RunHistory(read_url)
        self.replicas: list[Replica] = []
        self.incarnations: list[Incarnation] = []
        self.faults: list[Fault] = []
        self.events: list[tuple[float, str, str | None, dict[str, Any]]] = []
        self.probes: list[Probe] = []
        self.proc_samples: list[ProcSample] = []
        self.began_at = time.time()
        self.settled_at: float | None = None  # the end of the checked window
        self.proxy: PgProxy | None = None  # between the replicas and PostgreSQL, if any
        self._sample_processes = sample_processes
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- setup and teardown -----------------------------------------------------------------

    def add_replicas(self, count: int) -> list[Replica]:
        added = [Replica(self, f"r{len(self.replicas) + i + 1}") for i in range(count)]
        self.replicas.extend(added)
        return added

    def start_sampling(self) -> None:
        loops: list[tuple[str, Callable[[], None], float]] = [
            ("probes", self._probe_once, PROBE_EVERY),
            ("history", lambda: self.history.read(time.time()), HISTORY_EVERY),
        ]
        if self._sample_processes:
            loops.append(("procs", self._sample_once, PROC_EVERY))
        for name, step, every in loops:
            thread = threading.Thread(
                target=self._every, args=(step, every), name=f"torture-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop_sampling(self) -> None:
        """The scenario is over: what the samplers saw so far is what the checker reads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def close(self) -> None:
        self.stop_sampling()
        for replica in self.replicas:
            replica.teardown()

    def _every(self, step: Callable[[], None], every: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):
                step()
            self._stop.wait(max(0.0, every - (time.monotonic() - started)))

    # -- timeline ---------------------------------------------------------------------------

    def note(self, kind: str, who: str | None = None, **detail: Any) -> float:
        at = time.time()
        with self._lock:
            self.events.append((at, kind, who, detail))
        return at

    def fault(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    # -- observing --------------------------------------------------------------------------

    def executions(self) -> list[Execution]:
        return self.task_log.refresh()

    def fires_since(self, wall: float, exclude: str | None = None) -> list[Execution]:
        """Task starts at or after ``wall``, optionally not by incarnation ``exclude``."""
        return [e for e in self.task_log.since(wall) if e.incarnation != exclude]

    def wait_fire(self, after: float, timeout: float, exclude: str | None = None) -> float | None:
        """The wall time of the first task start after ``after`` (not by ``exclude``)."""
        found = wait_until(lambda: self.fires_since(after, exclude), timeout, interval=0.1)
        return min(e.wall for e in found) if found else None

    def leader(self, timeout: float = 30.0) -> Replica | None:
        """The replica that says it fires (role leader or single), polled up to ``timeout``."""

        def find() -> Replica | None:
            for replica in self.replicas:
                status = replica.status()
                if status is not None and status.get("role") in ("leader", "single"):
                    return replica
            return None

        return wait_until(find, timeout, interval=0.1)

    def settle(self, seconds: float) -> None:
        """Let the system run undisturbed, read the history one last time, stop sampling."""
        time.sleep(seconds)
        self.settled_at = time.time()
        self.history.read(self.settled_at)
        self.stop_sampling()

    def _probe_once(self) -> None:
        for replica in list(self.replicas):
            replica.crashed()
            current = replica.current
            if current is None or not replica.alive:
                continue
            at = time.time()
            if replica.frozen:
                continue
            code = replica.readyz()
            status = replica.status() if code is not None else None
            with self._lock:
                self.probes.append(
                    Probe(
                        at,
                        current.name,
                        code,
                        (status or {}).get("role"),
                        (status or {}).get("database"),
                    )
                )

    def _sample_once(self) -> None:
        for replica in list(self.replicas):
            current = replica.current
            if current is None or not replica.alive or replica.frozen:
                continue
            sample = _sample_group(current.pid)
            if sample is not None:
                with self._lock:
                    self.proc_samples.append(ProcSample(time.time(), current.name, *sample))

    def first_ready(self) -> float | None:
        ready = [i.ready_at for i in self.incarnations if i.ready_at is not None]
        return min(ready) if ready else None


def _sample_group(pgid: int) -> tuple[int, int, int, int] | None:
    """(RSS kB, threads, open fds, processes) summed over the process group ``pgid``."""
    rss = threads = fds = count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            # Fields after the command name (which may hold spaces) in parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # field 5, pgrp
                continue
            with open(f"/proc/{entry.name}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{entry.name}/fd"))
            count += 1
        except (OSError, ValueError, IndexError):
            continue
    return (rss, threads, fds, count) if count else None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
