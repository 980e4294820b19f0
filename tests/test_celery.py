"""``executor: celery`` end to end: real ``celery worker`` processes, the real Redis broker.

The engine runs in-process (its Celery app reaches Redis through a proxy the broker test
cuts) or as ``schedctl serve``; two prefork workers of 2 processes each serve the module.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from engine.state.db import StateDB
from tests.celery_support import (
    PACKAGE,
    REDIS_DB,
    Proxy,
    Worker,
    delete_keys,
    make_project,
    new_prefix,
    redis_or_skip,
)
from tests.harness import Running, eventually, running

pytest.importorskip("celery")

pytestmark = pytest.mark.timeout(120)


@dataclass
class CeleryEnv:
    root: Path
    db_url: str
    prefix: str
    proxy: Proxy
    workers: list[Worker]
    worker_env: dict[str, str]

    @property
    def worker_names(self) -> set[str]:
        return {w.name for w in self.workers}

    def worker_logs(self) -> str:
        return "".join(w.log() for w in self.workers)


@pytest.fixture(scope="module")
def cel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryEnv]:
    redis_or_skip()
    root = make_project(tmp_path_factory.mktemp("celery"))
    prefix = new_prefix()
    db_url = f"sqlite:///{root / 'state.db'}"
    setup = StateDB(db_url)
    setup.migrate()
    setup.close()
    proxy = Proxy()
    worker_env = {
        "CTASKS_BROKER": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "CTASKS_PREFIX": prefix,
        "ENGINE_DATABASE_URL": db_url,
    }
    saved = {k: os.environ.get(k) for k in ("CTASKS_BROKER", "CTASKS_PREFIX", "ENGINE_CELERY_APP")}
    # This process (the engine) reaches the broker through the proxy; the workers directly.
    os.environ["CTASKS_BROKER"] = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
    os.environ["CTASKS_PREFIX"] = prefix
    os.environ["ENGINE_CELERY_APP"] = f"{PACKAGE}.celery_app:app"
    sys.path.insert(0, str(root))
    workers = [Worker(root, "w1", worker_env), Worker(root, "w2", worker_env)]
    try:
        for worker in workers:
            worker.wait_ready()
        yield CeleryEnv(root, db_url, prefix, proxy, workers, worker_env)
    finally:
        for worker in workers:
            worker.stop()
        proxy.cut()
        delete_keys(prefix)
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@asynccontextmanager
async def engine_for(cel: CeleryEnv, name: str, jobs: str) -> AsyncIterator[Running]:
    schedules = cel.root / f"schedules-{name}"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(jobs)
    settings = Settings(
        schedules_dir=schedules,
        database_url=cel.db_url,
        task_modules=(PACKAGE,),
        watch=False,
        shutdown_grace=1.0,
    )
    async with running(settings) as engine:
        yield engine


def notes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def soon(seconds: float = 2.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def final(status: str) -> Any:
    return lambda runs: [r for r in runs if r["status"] == status]


async def test_a_celery_run_succeeds_on_a_worker_with_its_context_and_logs(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "hello.jsonl"
    jobs = f"""
jobs:
  c-hello:
    task: ctasks.jobs:hello
    executor: celery
    timezone: Europe/Berlin
    at: "{soon(1)}"
    kwargs: {{path: "{out}", greeting: bonjour}}
"""
    async with engine_for(cel, "hello", jobs) as engine:
        runs = await eventually(engine.until_runs("c-hello", final("success")), 30, "a success")
        run = runs[0]
        assert run["worker"] in cel.worker_names
        assert run["attempt"] == 1 and run["started_at"] and run["finished_at"]
        assert run["scheduled_at"].endswith("+01:00") or run["scheduled_at"].endswith("+02:00")
        assert [entry["message"] for entry in run["logs"]] == ["saying bonjour"]
        (note,) = notes(out)
        assert note["run"]["job_id"] == "c-hello" and note["run"]["attempt"] == 1
        assert datetime.fromisoformat(note["run"]["scheduled_at"]) == datetime.fromisoformat(
            run["scheduled_at"]
        )
        job = await engine.job("c-hello")
        assert job["executor"] == "celery"
        status = await engine.get("/status")
        assert status["executors"] == {"celery": "ok"}


async def test_a_failing_celery_task_is_recorded_with_its_traceback_and_secrets_masked(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "boom.jsonl"
    jobs = f"""
jobs:
  c-boom:
    task: ctasks.jobs:boom
    executor: celery
    at: "{soon(1)}"
    kwargs: {{path: "{out}", password: hunter2-secret}}
"""
    async with engine_for(cel, "boom", jobs) as engine:
        runs = await eventually(engine.until_runs("c-boom", final("failed")), 30, "a failure")
        run = runs[0]
        assert run["worker"] in cel.worker_names
        assert run["error"] == "RuntimeError: cannot log in with ***"
        assert "Traceback" in run["traceback"] and "in boom" in run["traceback"]
        assert "hunter2-secret" not in json.dumps(runs)
        [note] = notes(out)
        assert "***" in note["shown"][1] and "hunter2-secret" not in json.dumps(note["shown"])


async def test_a_def_task_past_its_timeout_is_stopped_on_the_worker(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "sleep.jsonl"
    jobs = f"""
jobs:
  c-slow:
    task: ctasks.jobs:sleeper
    executor: celery
    at: "{soon(1)}"
    timeout: 1s
    kwargs: {{path: "{out}", seconds: 30}}
"""
    async with engine_for(cel, "slow", jobs) as engine:
        runs = await eventually(engine.until_runs("c-slow", final("timeout")), 30, "a timeout")
        run = runs[0]
        assert run["duration_s"] < 6, run  # stopped there, not left to sleep 30 s
        assert "time limit" in run["error"]
        assert [n["event"] for n in notes(out)] == ["start"]  # the body never got further


async def test_a_failed_attempt_is_retried_by_the_engine_as_a_new_attempt(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "flaky.jsonl"
    jobs = f"""
jobs:
  c-flaky:
    task: ctasks.jobs:flaky
    executor: celery
    at: "{soon(1)}"
    retries: 2
    retry_delay: 300ms
    kwargs: {{path: "{out!s}"}}
"""
    async with engine_for(cel, "flaky", jobs) as engine:
        runs = await eventually(engine.until_runs("c-flaky", final("success")), 30, "a success")
        runs = await engine.runs("c-flaky")
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "success"), (1, "failed")]
        assert runs[0]["scheduled_at"] == runs[1]["scheduled_at"]
        assert [n["run"]["attempt"] for n in notes(out)] == [1, 2]


async def test_concurrency_forbid_holds_across_two_workers(cel: CeleryEnv, tmp_path: Path) -> None:
    out = tmp_path / "forbid.jsonl"
    jobs = f"""
jobs:
  c-forbid:
    task: ctasks.jobs:sleeper
    executor: celery
    cron: "* * * * * *"
    kwargs: {{path: "{out}", seconds: 1.6}}
"""
    async with engine_for(cel, "forbid", jobs) as engine:

        def enough(runs: list[dict[str, Any]]) -> bool:
            done = [r for r in runs if r["status"] == "success"]
            return len(done) >= 3 and any(r["status"] == "skipped" for r in runs)

        runs = await eventually(engine.until_runs("c-forbid", enough), 40, "3 runs and skips")
    spans: dict[str, list[float]] = {}
    for note in notes(out):
        spans.setdefault(note["run"]["run_id"], []).append(note["at"])
    done = sorted(times for times in spans.values() if len(times) == 2)
    assert len(done) >= 3
    for (_, end), (start, _) in itertools.pairwise(done):
        assert start >= end, f"two runs overlapped across the pool: {done}"
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert "still going (concurrency: forbid)" in skipped[0]["error"]


def test_a_message_delivered_again_starts_its_run_once(cel: CeleryEnv, tmp_path: Path) -> None:
    from ctasks.celery_app import app  # type: ignore[import-not-found]

    from engine.execution.celery_message import HEADER, RunHeader, task_id_for

    out = tmp_path / "dup.jsonl"
    when = datetime.now(UTC).replace(microsecond=0)
    db = StateDB(cel.db_url)
    claim = {"job_id": "c-dup", "scheduled_at": when.timestamp(), "worker": "celery"}
    assert db.claim_runs([claim], None)
    header = RunHeader("c-dup", when.timestamp(), 1, time.time() + 60).as_header()
    task_id = task_id_for("c-dup", when, 1)
    for _ in range(3):  # the same message three times: two workers race for it
        app.send_task(
            "ctasks.jobs.sleeper",
            kwargs={"path": str(out), "seconds": 0.5},
            task_id=task_id,
            headers={HEADER: header},
        )

    def refused() -> int:
        return cel.worker_logs().count(f"Not starting {task_id}")

    deadline = time.monotonic() + 30
    while refused() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    while not [r for r in db.load_runs_at("c-dup", when.timestamp()) if r.status == "success"]:
        assert time.monotonic() < deadline, db.load_runs_at("c-dup", when.timestamp())
        time.sleep(0.1)
    assert refused() == 2
    assert [n["event"] for n in notes(out)] == ["start", "end"]
    db.close()


def test_a_worker_stopped_while_the_database_is_slow_records_the_outcome_it_holds(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    """A pool process hands a run's outcome to its recorder and takes its next task; a
    worker stopped (SIGTERM to its main process, as Kubernetes does) while the database
    is locked still writes it before its pool process exits."""
    import sqlite3

    from ctasks.celery_app import app  # type: ignore[import-not-found]

    from engine.execution.celery_message import HEADER, RunHeader, task_id_for

    out = tmp_path / "slow.jsonl"
    worker = Worker(cel.root, "slowdb", cel.worker_env, queues="slowdb", concurrency=1)
    worker.wait_ready()
    when = datetime.now(UTC).replace(microsecond=0)
    db = StateDB(cel.db_url)
    claim = {"job_id": "c-slowdb", "scheduled_at": when.timestamp(), "worker": "celery"}
    assert db.claim_runs([claim], None)
    app.send_task(
        "ctasks.jobs.sleeper",
        kwargs={"path": str(out), "seconds": 0.3},
        task_id=task_id_for("c-slowdb", when, 1),
        headers={HEADER: RunHeader("c-slowdb", when.timestamp(), 1, time.time() + 60).as_header()},
        queue="slowdb",
    )
    locker = sqlite3.connect(str(cel.db_url.removeprefix("sqlite:///")), isolation_level=None)
    try:
        deadline = time.monotonic() + 30
        while [n["event"] for n in notes(out)] != ["start"]:  # claimed: the row is running
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.02)
        locker.execute("BEGIN IMMEDIATE")  # the database stops taking writes
        while [n["event"] for n in notes(out)] != ["start", "end"]:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.02)
        os.kill(worker.proc.pid, signal.SIGTERM)  # warm shutdown while the write waits
        # The database stays locked for 5 s, longer than a worker takes to stop (about
        # 2 s): a worker that did not wait for its outcome would be gone before the end.
        held = time.monotonic() + 5.0
        while worker.proc.poll() is None and time.monotonic() < held:
            time.sleep(0.05)
        assert [r.status for r in db.load_runs_at("c-slowdb", when.timestamp())] == ["running"]
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
    assert worker.proc.wait(timeout=30) == 0, worker.log()
    assert [r.status for r in db.load_runs_at("c-slowdb", when.timestamp())] == ["success"]
    db.close()


async def test_a_run_claimed_but_never_sent_is_not_sent_by_the_next_leader(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    """A leader killed between its claim and its send: the claim row is all that is left.
    The next leader follows it and records it missed after its grace; it never sends it."""
    import redis

    out = tmp_path / "orphan.jsonl"
    when = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    db = StateDB(cel.db_url)
    assert db.claim_runs(
        [{"job_id": "c-orphan", "scheduled_at": when.timestamp(), "worker": "celery"}], None
    )
    db.close()
    jobs = f"""
jobs:
  c-orphan:
    task: ctasks.jobs:hello
    executor: celery
    at: "{when.isoformat()}"
    misfire_grace: 2s
    kwargs: {{path: "{out}"}}
"""
    async with engine_for(cel, "orphan", jobs) as engine:
        runs = await eventually(engine.until_runs("c-orphan", final("missed")), 30, "missed")
        assert "no Celery worker started it within misfire_grace (2s)" in runs[0]["error"]
        assert len(runs) == 1
    client = redis.Redis(db=REDIS_DB)
    assert client.llen(f"{cel.prefix}celery") == 0  # nothing was sent for it, ever
    client.close()
    assert "c-orphan@" not in cel.worker_logs()
    assert notes(out) == []


def test_a_leader_killed_right_after_sending_is_followed_not_resent(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "killed.jsonl"
    release = tmp_path / "release"
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(
        f"""
jobs:
  c-kill:
    task: ctasks.jobs:hold
    executor: celery
    at: "{soon(3)}"
    kwargs: {{path: "{out}", release: "{release}"}}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env.update(cel.worker_env)
    env.update(
        ENGINE_CELERY_APP=f"{PACKAGE}.celery_app:app",
        ENGINE_TASK_MODULES=PACKAGE,
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "serve.log"
    db = StateDB(cel.db_url)

    def serve(port: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "engine", "serve", "--schedules", str(schedules)]
        argv += ["--port", str(port), "--database", cel.db_url, "--no-watch"]
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv, cwd=cel.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def row_status() -> str | None:
        rows = [r for r in db.load_runs(100) if r.job_id == "c-kill"]
        return rows[0].status if rows else None

    first = serve(_free_port())
    try:
        deadline = time.monotonic() + 40
        while row_status() != "running":
            assert time.monotonic() < deadline and first.poll() is None, log_path.read_text()
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # sent, started, and the leader is gone
        first.wait(timeout=10)
    port = _free_port()
    second = serve(port)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        while "Following 1 Celery run(s)" not in log_path.read_text():
            assert time.monotonic() < deadline + 20 and second.poll() is None, log_path.read_text()
            time.sleep(0.1)
        release.touch()  # the run ends only now, under the second leader
        while True:
            assert time.monotonic() < deadline + 20 and second.poll() is None, log_path.read_text()
            try:
                runs = client.get("/jobs/c-kill").json().get("runs", [])
            except (httpx.TransportError, ValueError):
                runs = []
            if any(r["status"] == "success" for r in runs):
                break
            time.sleep(0.1)
        assert [(r["attempt"], r["status"]) for r in runs] == [(1, "success")]
        client.close()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
        db.close()
    assert [n["event"] for n in notes(out)] == ["start", "end"]
    received = [
        line
        for line in cel.worker_logs().splitlines()
        if "Task ctasks.jobs.hold[c-kill@" in line and line.endswith("received")
    ]
    assert len(received) == 1  # sent once, by the first leader


async def test_broker_down_fails_runs_with_the_reason_and_comes_back_by_itself(
    cel: CeleryEnv, tmp_path: Path
) -> None:
    out = tmp_path / "broker.jsonl"
    jobs = f"""
jobs:
  c-broker:
    task: ctasks.jobs:hello
    executor: celery
    cron: "* * * * * *"
    kwargs: {{path: "{out}"}}
"""
    async with engine_for(cel, "broker", jobs) as engine:
        await eventually(engine.until_runs("c-broker", final("success")), 30, "a success")
        cel.proxy.cut()
        try:
            runs = await eventually(
                engine.until_runs("c-broker", final("failed")), 30, "a failed send"
            )
            assert "could not send the run to Celery's broker" in runs[0]["error"]
            assert (await engine.get("/status"))["executors"] == {"celery": "unreachable"}
            assert (await engine.get("/healthz"))["status"] == "ok"  # the engine goes on
        finally:
            cel.proxy.restore()
        back = time.time()

        async def recovered() -> bool:
            status = (await engine.get("/status"))["executors"]
            runs = await engine.runs("c-broker")
            fresh = [
                r
                for r in runs
                if r["status"] == "success"
                and datetime.fromisoformat(r["scheduled_at"]).timestamp() > back
            ]
            return status == {"celery": "ok"} and bool(fresh)

        await eventually(recovered, 30, "sends succeed again")


async def test_a_worker_lost_mid_run_is_recorded_and_its_redelivery_never_starts(
    cel: CeleryEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.execution import celery_executor

    monkeypatch.setattr(celery_executor, "LOST_AFTER", 4.0)
    out = tmp_path / "lost.jsonl"
    env = {**cel.worker_env, "CTASKS_VISIBILITY": "2"}
    doomed = Worker(cel.root, "doomed", env, queues="lost", concurrency=1).wait_ready()
    spare: Worker | None = None
    jobs = f"""
jobs:
  c-lost:
    task: ctasks.jobs:sleeper
    executor: celery
    queue: lost
    at: "{soon(1)}"
    kwargs: {{path: "{out}", seconds: 20}}
"""
    try:
        async with engine_for(cel, "lost", jobs) as engine:
            await eventually(engine.until_runs("c-lost", final("running")), 30, "running")
            doomed.kill()  # the whole worker, mid-run: the message was not acknowledged
            runs = await eventually(engine.until_runs("c-lost", final("failed")), 30, "lost")
            assert runs[0]["error"].startswith(f"worker lost: {doomed.name}")
            spare = Worker(cel.root, "spare", env, queues="lost", concurrency=1).wait_ready()
            spare_log = spare
            await eventually(
                lambda: "Not starting c-lost@" in spare_log.log(), 40, "the redelivery refused"
            )
            assert [(r["attempt"], r["status"]) for r in await engine.runs("c-lost")] == [
                (1, "failed")
            ]
        assert [n["event"] for n in notes(out)] == ["start"]
    finally:
        doomed.stop()
        if spare is not None:
            spare.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
