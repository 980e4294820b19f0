"""A TCP proxy in front of PostgreSQL that can fail on command: database outages.

The replicas connect to the proxy instead of 127.0.0.1:5432, so an outage is played
without touching the shared server. The proxy runs an asyncio loop in a daemon thread of
the test process; ``outage(mode)`` and ``restore()`` are called from the test thread.

Two kinds of outage:
- ``cut``: every live connection is reset (as when the server or the link dies) and new
  connections are accepted and reset at once, so clients see errors immediately.
- ``freeze``: nothing is forwarded any more, in either direction, and new connections
  are accepted but not forwarded either (a partition: sockets stay open, packets go
  nowhere). ``restore()`` lets the held bytes through, as a healed network does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal

__all__ = ["Mode", "PgProxy"]

Mode = Literal["cut", "freeze"]
_CHUNK = 65536


class PgProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``outage()`` breaks it, ``restore()`` heals."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode | None = None  # None: forwarding
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- called from the test thread ------------------------------------------------------

    def start(self) -> PgProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def outage(self, mode: Mode) -> None:
        """Break the link now: ``cut`` resets every connection, ``freeze`` stops forwarding."""
        self._call(self._outage(mode))

    def restore(self) -> None:
        """Forward again (held bytes of a freeze go through; cut connections stay cut)."""
        self._call(self._restore())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._loop.close()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- on the proxy's loop --------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _outage(self, mode: Mode) -> None:
        assert self._flowing is not None
        self.mode = mode
        self._flowing.clear()
        if mode == "cut":
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()

    async def _restore(self) -> None:
        assert self._flowing is not None
        self.mode = None
        self._flowing.set()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _reset(writer)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        if self.mode == "cut":  # the outage began while we connected
            _reset(writer)
            _reset(up_writer)
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *pair: asyncio.StreamWriter,
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await source.read(_CHUNK)
                if not data:
                    break
                # Bytes read just before a freeze are held, not delivered.
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dead peer looks, not with a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
