"""The loopback status endpoint (/status, /metrics, /healthz) and ``imaged status``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from test_metrics import check_histogram, parse_exposition

from imaged.cli.main import main as cli_main
from imaged.config import load_settings
from imaged.daemon.metrics import Metrics
from imaged.daemon.server import serve_status
from imaged.daemon.views import StatusSource
from imaged.errors import ConfigError
from imaged.events import Event

pytestmark = pytest.mark.timeout(20)

IMAGES = [
    {"name": "api", "state": "up to date", "tag": "3f2a", "why": "", "error": None},
    {"name": "worker", "state": "building", "tag": None, "why": "app.py changed", "error": None},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeDaemon:
    """A StatusSource (all that server.py reads), with the events it emits recorded."""

    def __init__(self) -> None:
        self.ready = False
        self.broken = False
        self.metrics = Metrics()
        self.queue_depth = 4
        self.events: list[dict[str, Any]] = []
        self.pool: dict[str, Any] = {}  # a pool's "engines" and "engine_status", when set

    def snapshot(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("state is broken")
        modules = {"/defs/bad.py": "boom"}
        return {"ready": self.ready, "images": IMAGES, "modules": modules, **self.pool}

    def is_ready(self) -> bool:
        return self.ready

    def render_metrics(self) -> str:
        self.metrics.queue_depth = self.queue_depth
        return self.metrics.render()

    def emit(self, event: Event) -> None:
        self.events.append(event.to_json())

    @property
    def status_address(self) -> str | None:
        """The address the last ``status_listening`` event named."""
        listening = [e["address"] for e in self.events if e["event"] == "status_listening"]
        return listening[-1] if listening else None


async def _serve(daemon: FakeDaemon, address: str) -> None:
    source: StatusSource = daemon  # mypy checks the fake against the protocol
    await serve_status(source, address, daemon.emit)


@asynccontextmanager
async def serving(daemon: FakeDaemon, address: str = "127.0.0.1:0") -> AsyncIterator[str]:
    """Run the server; yield its base URL once it listens."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve, daemon, address)
        with anyio.fail_after(5):
            while daemon.status_address is None:
                assert not daemon.events or daemon.events[-1]["event"] != "status_error"
                await anyio.sleep(0.005)
        yield f"http://{daemon.status_address}"
        tg.cancel_scope.cancel()


@asynccontextmanager
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        yield http


@contextmanager
def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def _raw_request(address: str, data: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(data)
        reply = b""
        try:
            while True:
                reply += await stream.receive()
        except anyio.EndOfStream:
            return reply


@pytest.mark.anyio
async def test_status_returns_the_state_as_json() -> None:
    daemon = FakeDaemon()
    async with serving(daemon) as base, client() as http:
        response = await http.get(f"{base}/status")
        with_query = await http.get(f"{base}/status?verbose=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == daemon.snapshot()
    assert with_query.json() == response.json()
    assert daemon.events[0] == {
        "event": "status_listening",
        "image": None,
        "address": daemon.status_address,
    }


@pytest.mark.anyio
async def test_metrics_are_prometheus_text_with_the_current_queue_depth() -> None:
    daemon = FakeDaemon()
    daemon.metrics.builds.inc("pushed")
    daemon.metrics.build_seconds.observe(0.4)
    async with serving(daemon) as base, client() as http:
        response = await http.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'imaged_builds_total{result="pushed"} 1' in text
    assert "imaged_queue_depth 4\n" in text
    assert 'imaged_build_seconds_bucket{le="+Inf"} 1' in text
    families = parse_exposition(text)
    check_histogram("imaged_build_seconds", families["imaged_build_seconds"])


@pytest.mark.anyio
async def test_healthz_is_503_until_ready_then_200() -> None:
    daemon = FakeDaemon()
    async with serving(daemon) as base, client() as http:
        starting = await http.get(f"{base}/healthz")
        daemon.ready = True
        ready = await http.get(f"{base}/healthz")
    assert (starting.status_code, starting.text) == (503, "starting\n")
    assert (ready.status_code, ready.text) == (200, "ok\n")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/nope", 404, id="unknown-path"),
        pytest.param("GET", "/", 404, id="root"),
        pytest.param("POST", "/status", 405, id="post"),
        pytest.param("DELETE", "/healthz", 405, id="delete"),
    ],
)
async def test_other_requests_are_refused(method: str, path: str, status: int) -> None:
    async with serving(FakeDaemon()) as base, client() as http:
        response = await http.request(method, f"{base}{path}")
    assert response.status_code == status


@pytest.mark.anyio
async def test_malformed_request_line_gets_400() -> None:
    daemon = FakeDaemon()
    async with serving(daemon):
        assert daemon.status_address is not None
        reply = await _raw_request(daemon.status_address, b"HELLO\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


@pytest.mark.anyio
async def test_an_error_behind_one_url_is_a_500_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = FakeDaemon()
    async with serving(daemon) as base, client() as http:
        daemon.broken = True
        broken = await http.get(f"{base}/status")
        daemon.broken = False
        fixed = await http.get(f"{base}/status")
    assert broken.status_code == 500
    assert fixed.status_code == 200
    assert "status request failed" in caplog.text


@pytest.mark.anyio
async def test_port_in_use_emits_status_error_and_returns() -> None:
    daemon = FakeDaemon()
    with occupied_port() as port, anyio.fail_after(5):
        await _serve(daemon, f"127.0.0.1:{port}")
    assert daemon.status_address is None
    (event,) = daemon.events
    assert (event["event"], event["address"]) == ("status_error", f"127.0.0.1:{port}")
    assert event["error"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "address",
    [
        pytest.param("0.0.0.0:0", id="all-interfaces"),
        pytest.param("[::]:0", id="all-interfaces-v6"),
        pytest.param("10.1.2.3:0", id="other-host"),
        pytest.param("127.0.0.1:http", id="port-not-a-number"),
    ],
)
async def test_non_loopback_address_is_refused_without_binding(address: str) -> None:
    daemon = FakeDaemon()
    with anyio.fail_after(5):
        await _serve(daemon, address)
    assert daemon.status_address is None
    assert [e["event"] for e in daemon.events] == ["status_error"]
    assert "loopback" in daemon.events[0]["error"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.anyio
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_loopback_address_is_bracketed() -> None:
    daemon = FakeDaemon()
    async with serving(daemon, "[::1]:0") as base, client() as http:
        response = await http.get(f"{base}/healthz")
    assert daemon.status_address is not None
    assert daemon.status_address.startswith("[::1]:")
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("127.0.0.1:9477", "127.0.0.1:9477", id="ipv4-loopback"),
        pytest.param("localhost:9477", "localhost:9477", id="localhost"),
        pytest.param("[::1]:9477", "[::1]:9477", id="ipv6-loopback"),
        pytest.param("", None, id="empty-turns-it-off"),
    ],
)
def test_config_accepts_loopback_status_addresses(
    tmp_path: Path, value: str, expected: str | None
) -> None:
    settings = load_settings(
        config_file=_empty_config(tmp_path), environ={}, overrides={"status_address": value}
    )
    assert settings.status_address == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0.0.0.0:9477", id="all-interfaces"),
        pytest.param("192.168.1.10:9477", id="lan-address"),
        pytest.param("example.com:9477", id="hostname"),
        pytest.param("127.0.0.1", id="no-port"),
        pytest.param("127.0.0.1:http", id="port-not-a-number"),
    ],
)
def test_config_rejects_non_loopback_status_addresses(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"status_address.*loopback"):
        load_settings(
            config_file=_empty_config(tmp_path), environ={}, overrides={"status_address": value}
        )


def _empty_config(folder: Path) -> Path:
    path = folder / "imaged.toml"
    path.write_text("")
    return path


# -- imaged status ------------------------------------------------------------------------


@pytest.fixture
def no_config_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("IMAGED_CONFIG", "IMAGED_STATUS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("no_config_env")
def test_status_command_without_a_daemon_exits_1_naming_the_address() -> None:
    result = CliRunner().invoke(cli_main, ["status", "--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "no daemon answers at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output


@pytest.mark.anyio
@pytest.mark.usefixtures("no_config_env")
async def test_status_command_prints_one_row_per_image() -> None:
    daemon = FakeDaemon()
    async with serving(daemon):
        assert daemon.status_address is not None
        argv = ["status", "--address", daemon.status_address]
        result = await anyio.to_thread.run_sync(CliRunner().invoke, cli_main, argv)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "api\tup to date\t3f2a\t",
        "worker\tbuilding\t-\tapp.py changed",
        "/defs/bad.py\tdefinition error\tboom",
    ]


ENGINES = [
    {"engine": "tcp://a:2375", "state": "down", "running": 0, "capacity": 2, "labels": [],
     "builds": 3, "error": "connection refused"},
    {"engine": "buildx:arm", "state": "down", "running": 0, "capacity": 1, "labels": [],
     "builds": 0, "error": "failed to dial gRPC"},
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.usefixtures("no_config_env")
async def test_status_command_shows_each_engine_and_no_engine_available() -> None:
    daemon = FakeDaemon()
    daemon.pool = {"engines": ENGINES, "engine_status": "no engine available"}
    async with serving(daemon):
        assert daemon.status_address is not None
        argv = ["status", "--address", daemon.status_address]
        result = await anyio.to_thread.run_sync(CliRunner().invoke, cli_main, argv)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[3:] == [
        "engine tcp://a:2375\tdown\t0/2\tconnection refused",
        "engine buildx:arm\tdown\t0/1\tfailed to dial gRPC",
        "pool\tno engine available",
    ]


def test_the_live_table_shows_the_engine_of_each_build_and_each_engine() -> None:
    from rich.console import Console

    from imaged.cli.watch import _table
    from imaged.daemon.views import DaemonView
    from imaged.events import Building

    def render(view: DaemonView) -> str:
        source = FakeDaemon()
        source.snapshot = view.to_json  # type: ignore[method-assign]
        console = Console(width=220, record=True)
        console.print(_table(source))
        return console.export_text()

    view = DaemonView(engines=ENGINES)
    view.apply(
        Building(image="api", reason="edit", engine="tcp://a:2375", placement="last built here")
    )
    text = render(view)
    assert "engine" in text.splitlines()[2]  # a column of its own
    assert "tcp://a:2375" in text.splitlines()[4]
    assert "last built here" in text
    assert "engine down" in text
    assert "0/2 running" in text
    assert "connection refused" in text
    assert "no engine available" in text
    assert "engine" not in render(DaemonView())  # no pool: the table as before
