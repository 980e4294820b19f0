"""The worker side of ``executor: celery``: one line in your Celery app, ``import engine.celery``.

Loaded in a worker process, it gives every run the engine sends (a message carrying the
``schedctl`` header; other messages are left alone):

- **at most one start**: before the task's body, the worker claims the start in the
  engine's state database (``ENGINE_DATABASE_URL``, the engine's own URL; a SQLite file
  for workers on the engine's host): ``queued -> running`` with the worker's name, only
  if the run is still queued and within its ``misfire_grace``. A message delivered again
  (``acks_late`` after a lost worker, a duplicate publish), a run already started or
  recorded missed, finds nothing to claim: it is acknowledged and its body never runs;
- ``engine.current_run()`` inside the task, and the task's ``logging`` records on the
  run's record (the last 100, at the worker's log level);
- the outcome on the run's record: ``success``; ``failed`` with the error and traceback
  (secret values of the job's kwargs masked); ``timeout`` when Celery's time limit stops
  the task (the soft limit raises in the task; the hard one, a second later, kills the
  pool process and is recorded by the worker's main process);
- a heartbeat while the task runs (``changed_at`` every few seconds), so the engine can
  tell a run whose worker died from a long one.

How: Celery lets a process patch the base ``Task``'s hooks (its tracer looks for hooks
"monkey patched" onto ``celery.app.task.Task``), so the start claim is a ``before_start``
installed on every task of every app in the process, and the outcome comes from the
``task_failure`` and ``task_postrun`` signals. A task class that defines its own
``before_start`` must call ``super().before_start(...)``. ``install(app)`` is the same
import, spelled for those who prefer a call.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import celery.app.task as _celery_task
from celery import signals
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from engine.execution import capture, context
from engine.execution.celery_message import HEADER, RunHeader, parse_task_id
from engine.redact import mask_text, secret_values
from engine.settings import DEFAULT_DATABASE
from engine.state import celery_rows
from engine.state.celery_rows import Outcome, RunKey
from engine.state.db import StateDB

__all__ = ["install"]

log = logging.getLogger("schedctl.celery")
HEARTBEAT_S = 2.0
TRACEBACK_CHARS = 16_000
BATCH = 500  # outcomes in one transaction, at most
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # a database that failed an outcome's write
FLUSH_S = 15.0  # how long a stopping process waits for its outcomes to be written


# -- per process: the database, the recorder ------------------------------------------------


class _Process:
    """What one worker process (a prefork child, or the main process) holds.

    The start claim is on the task's path (the body must not run before it); everything
    after is not: the pool process hands the outcome to its recorder thread and takes its
    next task. The recorder writes what has piled up in one transaction, and beats for the
    runs still running (or whose outcome is not written yet)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        url = os.environ.get("ENGINE_DATABASE_URL") or DEFAULT_DATABASE
        self.db = StateDB(url, autocommit=True)
        self.claims = celery_rows.Writer(self.db)  # the task's path: one statement per claim
        self.records = celery_rows.Writer(self.db)  # the recorder thread's
        self.lock = threading.Lock()
        self.running: dict[RunKey, str] = {}  # run -> worker name
        self.outcomes: queue.SimpleQueue[Outcome | threading.Event] = queue.SimpleQueue()
        self._recorder = threading.Thread(
            target=self._record_loop, name="schedctl-recorder", daemon=True
        )
        self._recorder.start()
        capture.install()

    def record(self, outcome: Outcome) -> None:
        """Write this outcome soon, off the task's path (``flush`` waits for it)."""
        self.outcomes.put(outcome)

    def flush(self, timeout: float) -> bool:
        """Wait until every outcome handed over so far is written (or given up on)."""
        done = threading.Event()
        self.outcomes.put(done)
        return done.wait(timeout)

    def _record_loop(self) -> None:
        beat_at = time.monotonic() + HEARTBEAT_S
        while True:
            try:
                first = self.outcomes.get(timeout=max(0.0, beat_at - time.monotonic()))
            except queue.Empty:
                first = None
            if first is not None:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(self.outcomes.get_nowait())
                    except queue.Empty:
                        break
                try:
                    self._write([o for o in batch if isinstance(o, Outcome)])
                except Exception:  # the recorder outlives anything a write can raise
                    log.exception("Could not record the outcome of %d run(s)", len(batch))
                for marker in batch:
                    if isinstance(marker, threading.Event):
                        marker.set()
            if time.monotonic() >= beat_at:
                self._heartbeat()
                beat_at = time.monotonic() + HEARTBEAT_S

    def _write(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        for delay in (*RETRY_DELAYS, None):
            try:
                written = self.records.finish_many(outcomes)
                break
            except Exception as exc:
                if delay is None:
                    log.error("Could not record the outcome of %d run(s): %s", len(outcomes), exc)
                    written = [True] * len(outcomes)  # nothing more to say of them
                    break
                time.sleep(delay)
        for outcome, ok in zip(outcomes, written, strict=True):
            if not ok:
                log.warning(
                    "The outcome of %s (%s) was not recorded: the engine recorded the run "
                    "already (it stopped hearing from this worker).",
                    _run_id(outcome.key),
                    outcome.status,
                )
        with self.lock:
            for outcome in outcomes:
                self.running.pop(outcome.key, None)

    def _heartbeat(self) -> None:
        with self.lock:
            by_worker: dict[str, list[RunKey]] = {}
            for key, worker in self.running.items():
                by_worker.setdefault(worker, []).append(key)
        for worker, keys in by_worker.items():
            try:
                celery_rows.heartbeat(self.db, keys, worker)
            except Exception as exc:
                log.warning("Could not record the heartbeat of %d run(s): %s", len(keys), exc)


_process: _Process | None = None
_process_lock = threading.Lock()


def _here() -> _Process:
    global _process
    with _process_lock:
        if _process is None or _process.pid != os.getpid():  # a forked child starts afresh
            _process = _Process()
        return _process


# -- one task ------------------------------------------------------------------------------


@dataclass
class _Active:
    header: RunHeader
    worker: str
    secrets: frozenset[str]
    run_id: str
    token: Any
    traceback: str | None = None
    logs: list[dict[str, Any]] | None = None  # closed when the body ends, before Celery's lines

    def close_logs(self) -> list[dict[str, Any]]:
        if self.logs is None:
            self.logs = capture.close(self.run_id)
        return self.logs

    def mask(self, text: str) -> str:
        return mask_text(text, self.secrets)


_local = threading.local()


def _active(task_id: str | None) -> _Active | None:
    found: dict[str, _Active] = getattr(_local, "active", {})
    return found.get(task_id) if task_id else None


def _before_start(self: Any, task_id: str, args: Any, kwargs: Any) -> None:
    """Claim the start of an engine's run before the body; refuse it (Ignore) if taken."""
    request = self.request
    raw = (getattr(request, "headers", None) or {}).get(HEADER)
    if raw is None:
        raw = getattr(request, HEADER, None)
    if raw is None:
        return  # not a run the engine sent: none of our business
    header = RunHeader.parse(task_id, raw)
    if header is None:
        log.error("Refusing task %s: its schedctl header does not match its id.", task_id)
        raise Ignore()
    worker = str(getattr(request, "hostname", None) or f"celery@{os.uname().nodename}")
    now = time.time()
    if now > header.deadline:
        log.warning(
            "Not starting %s: %.3fs past its misfire_grace; the engine records it missed.",
            task_id,
            now - header.deadline,
        )
        raise Ignore()
    process = _here()
    try:
        won = process.claims.claim_start(header.key, worker, now)
    except Exception as exc:
        # The start cannot be proven unique: do not run; the broker may deliver it again.
        log.error("Cannot claim the start of %s (%s); handing the message back.", task_id, exc)
        raise Reject(f"state database unreachable: {exc}", requeue=True) from None
    if not won:
        log.warning(
            "Not starting %s: it was started before or recorded already (a redelivered "
            "message); it runs at most once.",
            task_id,
        )
        raise Ignore()
    scheduled = datetime.fromtimestamp(header.scheduled_at, UTC).astimezone(
        ZoneInfo(header.timezone)
    )
    run_id = _run_id(header.key)
    secrets = secret_values(args, kwargs)
    active = _Active(header, worker, secrets, run_id, None)
    capture.open(run_id, active.mask, scheduled.tzinfo)
    active.token = context.enter(
        context.RunContext(header.job_id, scheduled, header.attempt, run_id)
    )
    if not hasattr(_local, "active"):
        _local.active = {}
    _local.active[task_id] = active
    with process.lock:
        process.running[header.key] = worker


def _on_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    active = _active(task_id)
    if active is not None:  # in the process that ran the body
        active.close_logs()
        text = getattr(einfo, "traceback", None)
        if isinstance(text, str):
            if len(text) > TRACEBACK_CHARS:
                text = text[: TRACEBACK_CHARS // 4] + "\n...\n" + text[-3 * TRACEBACK_CHARS // 4 :]
            active.traceback = active.mask(text)
        return
    # In the worker's main process: the pool process was killed (hard time limit, lost).
    key = parse_task_id(task_id or "")
    if key is None or not isinstance(exception, TimeLimitExceeded | _worker_lost()):
        return
    if isinstance(exception, TimeLimitExceeded):
        status, error = (
            "timeout",
            (
                f"still running at the worker's hard time limit ({exception}s); its process was "
                "stopped"
            ),
        )
    else:
        status, error = "failed", f"worker lost: {type(exception).__name__}: {exception}"
    try:
        celery_rows.settle_by_worker(_here().db, key, status, error)
    except Exception as exc:
        log.error("Could not record the end of %s: %s", task_id, exc)


def _on_success(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    active = _active(getattr(request, "id", None))
    if active is not None:
        active.close_logs()


def _worker_lost() -> type[BaseException]:
    from billiard.exceptions import WorkerLostError

    return WorkerLostError


def _on_postrun(
    sender: Any = None,
    task_id: str | None = None,
    state: str | None = None,
    retval: Any = None,
    **_: Any,
) -> None:
    active = _active(task_id)
    if active is None:
        return
    _local.active.pop(task_id, None)
    try:
        status, error = _outcome(active, state, retval)
        logs = active.close_logs()
        _record(_here(), active, status, error, logs)
    finally:
        context.leave(active.token)


def _outcome(active: _Active, state: str | None, retval: Any) -> tuple[str, str | None]:
    if state == "SUCCESS":
        return "success", None
    if isinstance(retval, SoftTimeLimitExceeded | TimeLimitExceeded):
        limit = active.header.timeout
        return "timeout", (
            f"still running after {limit:g}s; stopped by the worker's time limit"
            if limit
            else f"stopped by the worker's time limit ({type(retval).__name__})"
        )
    if state == "RETRY":
        return "failed", (
            "the task asked Celery to retry it; schedctl retries a run as the job declares "
            "(retries:, retry_delay:)"
        )
    if isinstance(retval, BaseException):
        return "failed", active.mask(f"{type(retval).__name__}: {retval}")
    return "failed", active.mask(f"the task ended {state}: {retval!r}"[:2000])


def _record(
    process: _Process, active: _Active, status: str, error: str | None, logs: list[Any]
) -> None:
    trace = active.traceback if status != "success" else None
    process.record(Outcome(active.header.key, active.worker, status, error, trace, logs))


def _run_id(key: RunKey) -> str:
    job_id, scheduled_at, attempt = key
    return f"{job_id}@{scheduled_at:.6f}#{attempt}"


def _warm(**_: Any) -> None:
    try:
        _here()
    except Exception as exc:  # said again, with the task's id, by the first claim
        log.warning("Cannot open the engine's state database yet: %s", exc)


def _flush(**_: Any) -> None:
    """A stopping process writes the outcomes it still holds first."""
    process = _process
    if process is not None and process.pid == os.getpid() and not process.flush(FLUSH_S):
        log.error("Stopping with run outcomes not recorded after %.0fs.", FLUSH_S)


_installed = False


def install(app: Any = None) -> None:
    """Install the worker side (idempotent); ``import engine.celery`` does it already."""
    global _installed
    if _installed:
        return
    _installed = True
    _celery_task.Task.before_start = _before_start
    signals.task_success.connect(_on_success, weak=False)
    signals.task_failure.connect(_on_failure, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    # A pool process opens its database when it starts, not on its first task.
    signals.worker_process_init.connect(_warm, weak=False)
    signals.worker_process_shutdown.connect(_flush, weak=False)  # a prefork pool process
    signals.worker_shutdown.connect(_flush, weak=False)  # solo and threads pools
    atexit.register(_flush)


install()
