"""The ``Host`` header check: a browser tricked by DNS rebinding gets 400, not the API.

Modelled on Django's ``ALLOWED_HOSTS`` and Starlette's ``TrustedHostMiddleware``, which
cannot be used as is: it splits the port off at the first ``:``, so ``[::1]:8000`` never
matches. Allowed: the address the server binds (when that is every interface, the
machine's own name and addresses), ``localhost``, any loopback address (127.0.0.0/8,
``::1``), with or without a port, and the names of ``ENGINE_ALLOWED_HOSTS``
(``*.example.com`` for subdomains, ``*`` for any).

``create_app()`` and ``schedctl serve`` install it. An app that mounts ``engine.api.router``
itself decides about hosts on its own (for example with Starlette's middleware).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostCheck", "allowed_host", "host_of"]

_WILDCARDS = ("", "0.0.0.0", "::", "[::]")
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_of(header: str) -> str | None:
    """The host name or address of a ``Host`` header, without port; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        inside, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port[:1] == ":" and port[1:].isdigit())):
            return None
        return inside if _address(inside) is not None else None
    if value.count(":") > 1:  # a bare IPv6 address, without the brackets it should have
        return value if _address(value) is not None else None
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    name = name.rstrip(".")
    return name or None


def _address(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed_host(host: str, names: frozenset[str], suffixes: tuple[str, ...]) -> bool:
    """Whether ``host`` (as ``host_of`` gives it) may be answered."""
    if host == "localhost" or host in names:
        return True
    address = _address(host)
    if address is not None:
        return address.is_loopback or str(address) in names
    return host.endswith(suffixes) if suffixes else False


class HostCheck:
    """ASGI middleware: 400 with a JSON detail for a request whose Host is not allowed."""

    def __init__(self, app: ASGIApp, bound: str = "127.0.0.1", allowed: Iterable[str] = ()) -> None:
        self.app = app
        entries = {entry.lower() for entry in allowed}
        self.any = "*" in entries
        self.suffixes = tuple(sorted(entry[1:] for entry in entries if entry.startswith("*.")))
        names = {_normal(entry) for entry in entries if not entry.startswith("*")}
        names |= _bound_names(bound)
        self.names = frozenset(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        headers = [v for k, v in scope["headers"] if k == b"host"]
        header = headers[0] if len(headers) == 1 else None  # none, or an ambiguous two
        host = host_of(header.decode("latin-1")) if header is not None else None
        if host is not None and allowed_host(host, self.names, self.suffixes):
            await self.app(scope, receive, send)
            return
        shown = header.decode("latin-1")[:200] if header is not None else None
        detail = (
            f"Host {shown!r} is not allowed; add it to ENGINE_ALLOWED_HOSTS (comma-separated) "
            "if this server is meant to answer to that name"
            if shown
            else "a request needs exactly one Host header"
        )
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


def _normal(name: str) -> str:
    name = name.strip("[]").rstrip(".")
    address = _address(name)
    return str(address) if address is not None else name


def _bound_names(bound: str) -> set[str]:
    """The bound host; for every interface, also this machine's name and addresses."""
    names = {_normal(bound.lower())}
    if bound in _WILDCARDS:
        hostname = socket.gethostname().lower()
        names.add(hostname)
        with contextlib.suppress(OSError, UnicodeError):
            for *_, sockaddr in socket.getaddrinfo(hostname, None):
                names.add(_normal(str(sockaddr[0]).partition("%")[0]))
    return names
