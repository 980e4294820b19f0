"""``schedctl serve``: the engine and its status API under uvicorn.

The listening socket is bound before the engine starts, so a port in use or a host that
does not resolve is a bad setting (exit 2), not an engine that starts and then stops.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from dataclasses import replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from engine.errors import SettingsError, StateError
from engine.settings import Settings
from engine.state.db import StateDB
from engine.surfaces.app import create_app

__all__ = ["JsonFormatter", "serve"]

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


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
    _configure_logging(settings)
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
        log_level=settings.log_level.lower(),
        log_config=LOGGING_CONFIG if settings.log_format == "text" else None,
        lifespan="on",
        # Open requests get a second; the engine's own drain is its shutdown grace.
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.access").addFilter(_not_a_probe)
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


def _not_a_probe(record: logging.LogRecord) -> bool:
    """Probes and scrapes come every few seconds: they would drown the access log."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
        return args[2].partition("?")[0] not in PROBES
    return True


def _configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``at``, ``level``, ``logger``, ``message`` and what applies
    of ``job_id``, ``attempt``, ``exception`` and an access line's request fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("job_id", "attempt", "run_id"):
            if hasattr(record, name):
                line[name] = getattr(record, name)
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            line.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=repr)
