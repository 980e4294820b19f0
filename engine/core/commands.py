"""Runtime API changes across replicas: a standby hands them to the leader.

A standby writes a command row (``schedctl_commands``) and waits for its outcome; the
leader takes pending commands under its lease, applies them to its live scheduler and
writes the outcome back. A command no leader took within the wait is withdrawn, so
nothing changes later behind the caller's back (``NotLeader``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from engine.errors import JobRefused, NotLeader

if TYPE_CHECKING:
    from engine.core.engine import Engine

__all__ = ["apply_command", "hand_to_leader"]

log = logging.getLogger("schedctl.runtime")
WAIT_S = 5.0


def apply_command(engine: Engine, op: str, payload: dict[str, Any]) -> tuple[str, Any]:
    """Apply one command on the leader: ("done", result) or ("failed", reason)."""
    ops = engine.facade_runtime()
    try:
        if op == "add":
            job_id = ops.add_data(
                payload["job_id"], payload["data"], bool(payload.get("replace_existing"))
            )
            engine.event("runtime", job=job_id, action="add", detail="from a standby")
            return ("done", job_id)
        job_id = str(payload["job_id"])
        if op == "remove":
            result = ops.remove(job_id)
        elif op == "pause":
            result = ops.pause(job_id)
        elif op == "resume":
            result = ops.resume(job_id)
        elif op == "run":
            result = ops.run_now(job_id)
        else:
            return ("failed", f"unknown command {op!r}")
        if result:
            engine.event("runtime", job=job_id, action=op, detail="from a standby")
        return ("done", result)
    except JobRefused as exc:
        return ("failed", str(exc))
    except Exception as exc:
        log.exception("A runtime command from a standby failed.")
        return ("failed", f"{type(exc).__name__}: {exc}")


async def hand_to_leader(engine: Engine, op: str, payload: dict[str, Any]) -> Any:
    """On a standby: have the leader apply the change; its result, or JobRefused."""
    command_id = await engine.blocking(engine.db.submit_command, op, payload)
    deadline = time.monotonic() + WAIT_S
    while True:
        status, result = await engine.blocking(engine.db.command_result, command_id)
        if status == "done":
            return result
        if status == "failed":
            raise JobRefused(str(result))
        if time.monotonic() > deadline:
            if status == "pending" and await engine.blocking(engine.db.expire_command, command_id):
                raise NotLeader(
                    f"no leader applied the {op} within {WAIT_S:g}s; nothing was changed"
                )
            if time.monotonic() > deadline + WAIT_S:  # taken, but never answered
                raise NotLeader(f"the leader took the {op} but did not answer in time")
        await asyncio.sleep(0.05)
