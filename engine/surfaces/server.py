"""``schedctl serve``: the engine and its status API under uvicorn."""

from __future__ import annotations

import logging
from dataclasses import replace
from types import FrameType

import uvicorn

from engine.settings import Settings
from engine.surfaces.app import create_app

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it stopped on; we exit 0 after a clean stop instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; exit 0 after a clean stop."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(replace(settings, tune_process=True))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
