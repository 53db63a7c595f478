"""A minimal HTTP endpoint on loopback: /status (JSON), /metrics (Prometheus), /healthz."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketStream

if TYPE_CHECKING:
    from imaged.daemon.core import Daemon

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


def route(daemon: Daemon, path: str) -> bytes:
    """The response for one GET path."""
    if path == "/status":
        return _response("200 OK", json.dumps(daemon.state.to_json()), "application/json")
    if path == "/metrics":
        daemon.metrics.queue_depth = daemon.scheduler.queue_depth
        return _response("200 OK", daemon.metrics.render(), "text/plain; version=0.0.4")
    if path == "/healthz":
        ok = daemon.state.ready
        return _response(
            "200 OK" if ok else "503 Service Unavailable",
            "ok\n" if ok else "starting\n",
            "text/plain",
        )
    return _response("404 Not Found", "not found\n", "text/plain")


async def _handle(daemon: Daemon, stream: SocketStream) -> None:
    async with stream:
        request = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                chunk = await stream.receive(4096)
                if not chunk:
                    break
                request += chunk
        await stream.send(_answer(daemon, request.split(b"\r\n", 1)[0].split()))


def _answer(daemon: Daemon, request_line: list[bytes]) -> bytes:
    if len(request_line) < 2:
        return _response("400 Bad Request", "bad request\n", "text/plain")
    if request_line[0] != b"GET":
        return _response("405 Method Not Allowed", "GET only\n", "text/plain")
    try:
        return route(daemon, request_line[1].decode("ascii", "replace").split("?")[0])
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


async def serve_status(daemon: Daemon, address: str) -> None:
    """Serve until cancelled on ``127.0.0.1:PORT`` (loopback only).

    An address that is not loopback, or that cannot be bound, emits ``status_error`` and
    returns: the daemon goes on without its status endpoint.
    """
    try:
        host, port = _split_address(address)
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except (OSError, ValueError) as exc:
        daemon.emit("status_error", None, address=address, error=str(exc))
        return
    bound = listener.extra(SocketAttribute.local_address)
    daemon.status_address = _format_address(str(bound[0]), int(bound[1]))
    daemon.emit("status_listening", None, address=daemon.status_address)

    async def handler(stream: SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            await _handle(daemon, stream)

    async with listener:
        await listener.serve(handler)
