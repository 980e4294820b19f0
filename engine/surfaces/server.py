"""``schedctl serve``: the engine and its status API under uvicorn."""

from __future__ import annotations

import os
import sys
from types import FrameType

import uvicorn

from engine.execution.logs import configure_logging
from engine.settings import Settings
from engine.surfaces.app import create_app

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it stopped on; we exit 0 after a clean stop instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; exit 0 after a clean stop, 2 on a bad log setting."""
    try:
        configure_logging(
            getattr(settings, "log_level", os.environ.get("ENGINE_LOG_LEVEL", "INFO")),
            getattr(settings, "log_format", os.environ.get("ENGINE_LOG_FORMAT", "text")),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # configure_logging sends uvicorn's records through our handler
        log_level=None,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
