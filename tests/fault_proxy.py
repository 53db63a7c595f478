"""An HTTP proxy in front of a real registry that refuses what some registries refuse.

Each request goes through ``refuse`` first (return ``(status, error code)`` to answer it
instead of the registry, or None to forward it); a request body is forwarded as it arrives,
and ``on_body`` sees the bytes forwarded so far (a test may kill the registry there: the
proxy then drops the client's connection without an answer, as a crashed registry does).
The Host header is kept, so the registry's Location headers name the proxy.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy received: method, path, query, Content-Type, body length."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    length: int

    @property
    def is_mount(self) -> bool:
        return self.method == "POST" and "mount" in self.query

    @property
    def is_upload_put(self) -> bool:
        return self.method == "PUT" and "/blobs/uploads/" in self.path

    @property
    def is_manifest_put(self) -> bool:
        return self.method == "PUT" and "/manifests/" in self.path


Refusal = Callable[[Seen], "tuple[int, str] | None"]


@dataclass
class FaultProxy:
    upstream: str  # host:port of the real registry
    refuse: Refusal = lambda seen: None
    on_body: Callable[[Seen, int], None] = lambda seen, sent: None
    seen: list[Seen] = field(default_factory=list)
    refused: list[tuple[Seen, int, str]] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Seen]:
        return [s for s in self.seen if getattr(s, f"is_{kind}")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass each proxy serves

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        seen = Seen(
            self.command,
            parts.path,
            parse_qs(parts.query),
            self.headers.get("Content-Type") or "",
            length,
        )
        self.proxy.seen.append(seen)
        refusal = self.proxy.refuse(seen)
        if refusal is not None:
            self._drain(length, chunked)
            status, code = refusal
            self.proxy.refused.append((seen, status, code))
            body = json.dumps(
                {"errors": [{"code": code, "message": f"refused by the test proxy ({code})"}]}
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=120)
        try:
            body = self._read_chunked() if chunked else None
            upstream.putrequest(self.command, self.path, skip_host=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body) if body is not None else length))
            upstream.endheaders()
            if body is not None:
                upstream.send(body)
            else:
                self._stream(upstream, seen, length)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            self._drop()
            return
        finally:
            upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", response.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, upstream: http.client.HTTPConnection, seen: Seen, length: int) -> None:
        sent = 0
        while sent < length:
            piece = self.rfile.read(min(1 << 20, length - sent))
            if not piece:
                raise ConnectionError("the client stopped sending")
            try:
                upstream.send(piece)
            except OSError:
                self._drain(length - sent - len(piece), False)
                raise
            sent += len(piece)
            self.proxy.on_body(seen, sent)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _drain(self, length: int, chunked: bool) -> None:
        if chunked:
            self._read_chunked()
        while length > 0:
            piece = self.rfile.read(min(1 << 20, length))
            if not piece:
                return
            length -= len(piece)

    def _drop(self) -> None:
        """No answer: the connection closes, as a registry that died mid-request."""
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@contextmanager
def fault_proxy(upstream: str, **options: object) -> Iterator[FaultProxy]:
    """A proxy on a free loopback port in front of ``upstream`` (host:port)."""
    proxy = FaultProxy(upstream, **options)  # type: ignore[arg-type]
    handler = type("Handler", (_Handler,), {"proxy": proxy})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    proxy.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
