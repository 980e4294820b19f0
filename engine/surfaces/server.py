"""``schedctl serve``: the engine and its status API under uvicorn."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from types import FrameType

import uvicorn

from engine.errors import StateError
from engine.settings import Settings
from engine.state.db import StateDB
from engine.surfaces.app import create_app

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it stopped on; we exit 0 after a clean stop instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def preflight(settings: Settings) -> str | None:
    """What stops the state database from being used, in one line, or None.

    A SQLite file that is empty, not a database, corrupt or from a newer schedctl is
    refused here, before anything starts (a database server that is merely down is not:
    the engine waits for it).
    """
    try:
        db = StateDB(settings.database_url, reset=settings.reset_state)
    except StateError as exc:
        return str(exc)
    try:
        if db.dialect == "sqlite":
            db.migrate()
    except StateError as exc:
        return str(exc)
    except Exception:
        return None
    finally:
        db.close()
    return None


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; exit 0 after a clean stop, 2 on a state it refuses."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    refused = preflight(settings)
    if refused is not None:
        print(f"schedctl: error: {refused}", file=sys.stderr)
        return 2
    settings = replace(settings, reset_state=False)  # done by the preflight, once
    app = create_app(replace(settings, tune_process=True))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        lifespan="on",
        # Open requests get a second; the engine's own drain is its shutdown grace.
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
