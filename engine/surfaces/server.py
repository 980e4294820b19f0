"""``schedctl serve``: the engine and its status API under uvicorn.

The listening socket is bound before the engine starts, so a port in use or a host that
does not resolve is a bad setting (exit 2), not an engine that starts and then stops.
"""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import replace
from types import FrameType

import uvicorn

from engine.errors import SettingsError, StateError
from engine.execution.logs import configure_logging
from engine.settings import Settings
from engine.state.db import StateDB
from engine.surfaces.app import create_app

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it stopped on; we exit 0 after a clean stop instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:  # uvicorn says where it listens only if it bound itself
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info(
                "Listening on http://%s:%d (press CTRL+C to quit).", shown, port
            )


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
    """Run until SIGTERM or SIGINT; exit 0 after a clean stop, 2 on a state it refuses.

    Raises ``SettingsError`` when the address cannot be bound.
    """
    configure_logging(settings.log_level, settings.log_format)
    refused = preflight(settings)
    if refused is not None:
        print(f"schedctl: error: {refused}", file=sys.stderr)
        return 2
    settings = replace(settings, reset_state=False)  # done by the preflight, once
    sock = _bind(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # configure_logging sends uvicorn's records through our handler
        log_level=None,
        lifespan="on",
        # Open requests get a second; the engine's own drain is its shutdown grace.
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    with sock:
        server.run(sockets=[sock])
    return 0 if server.started else 1


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise SettingsError(
            "ENGINE_HOST/--host",
            f"cannot resolve {host!r} ({getattr(exc, 'strerror', None) or exc}); write an "
            "address of this machine such as '127.0.0.1' or '0.0.0.0'",
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SettingsError(
            "ENGINE_PORT/--port",
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port, "
            "or stop what holds it",
        ) from None
    sock.set_inheritable(True)
    return sock
