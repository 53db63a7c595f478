"""A minimal HTTP endpoint on loopback: /status (JSON), /metrics (Prometheus), /healthz.

It reads a :class:`~imaged.daemon.views.StatusSource`, never the daemon itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

import anyio
from anyio.abc import SocketAttribute, SocketStream

from imaged.daemon.views import StatusSource
from imaged.events import Event, StatusError, StatusListening

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _response(status: str, body: str, content_type: str) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def route(source: StatusSource, path: str) -> bytes:
    """The response for one GET path."""
    if path == "/status":
        return _response("200 OK", json.dumps(source.snapshot()), "application/json")
    if path == "/metrics":
        return _response("200 OK", source.render_metrics(), "text/plain; version=0.0.4")
    if path == "/healthz":
        ok = source.is_ready()
        return _response(
            "200 OK" if ok else "503 Service Unavailable",
            "ok\n" if ok else "starting\n",
            "text/plain",
        )
    return _response("404 Not Found", "not found\n", "text/plain")


async def _handle(source: StatusSource, stream: SocketStream) -> None:
    async with stream:
        request = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                chunk = await stream.receive(4096)
                if not chunk:
                    break
                request += chunk
        await stream.send(_answer(source, request.split(b"\r\n", 1)[0].split()))


def _answer(source: StatusSource, request_line: list[bytes]) -> bytes:
    if len(request_line) < 2:
        return _response("400 Bad Request", "bad request\n", "text/plain")
    if request_line[0] != b"GET":
        return _response("405 Method Not Allowed", "GET only\n", "text/plain")
    try:
        return route(source, request_line[1].decode("ascii", "replace").split("?")[0])
    except Exception:  # a bug behind one URL must not take the daemon down
        log.exception("status request failed")
        return _response("500 Internal Server Error", "internal error\n", "text/plain")


def _split_address(address: str) -> tuple[str, int]:
    """``127.0.0.1:9477``, ``[::1]:9477`` or ``localhost:9477``; ValueError for others."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if host not in LOOPBACK_HOSTS or not port.isdigit():
        raise ValueError(f"{address!r} is not 127.0.0.1:PORT (imaged listens on loopback only)")
    return host, int(port)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_status(source: StatusSource, address: str, emit: Callable[[Event], None]) -> None:
    """Serve ``source`` until cancelled on ``127.0.0.1:PORT`` (loopback only).

    ``status_listening`` names the bound address (port 0 picks one). An address that is not
    loopback, or that cannot be bound, emits ``status_error`` and returns: the daemon goes on
    without its status endpoint.
    """
    try:
        host, port = _split_address(address)
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except (OSError, ValueError) as exc:
        emit(StatusError(address=address, error=str(exc)))
        return
    bound = listener.extra(SocketAttribute.local_address)
    emit(StatusListening(address=_format_address(str(bound[0]), int(bound[1]))))

    async def handler(stream: SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            await _handle(source, stream)

    async with listener:
        await listener.serve(handler)
