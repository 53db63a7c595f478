"""Tests for imaged.daemon.notify against real unix datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imaged.daemon.notify import SystemdNotifier

Send = Callable[[SystemdNotifier], bool]


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    # A short folder: tmp_path can exceed the 108-byte limit of a unix socket path.
    with tempfile.TemporaryDirectory(prefix="imn") as folder:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if request.param == "path":
            env_value = str(Path(folder, "notify.sock"))
            sock.bind(env_value)
        else:
            name = f"imaged-test-{uuid.uuid4().hex}"
            env_value = "@" + name
            sock.bind("\0" + name)
        sock.settimeout(2)
        with sock:
            yield sock, env_value


def received(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096))
        except BlockingIOError:
            return messages


SENDS = [
    pytest.param(lambda n: n.ready(), b"READY=1\n", id="ready"),
    pytest.param(lambda n: n.ready(status="up"), b"READY=1\nSTATUS=up\n", id="ready-status"),
    pytest.param(lambda n: n.status("building api"), b"STATUS=building api\n", id="status"),
    pytest.param(lambda n: n.stopping(), b"STOPPING=1\n", id="stopping"),
    pytest.param(lambda n: n.watchdog(), b"WATCHDOG=1\n", id="watchdog"),
    pytest.param(lambda n: n.status("a\nREADY=1"), b"STATUS=a READY=1\n", id="newline-in-value"),
    pytest.param(lambda n: n.notify(ERRNO="2", BUSERROR="x"), b"ERRNO=2\nBUSERROR=x\n", id="raw"),
]


@pytest.mark.parametrize(("send", "expected"), SENDS)
def test_messages_arrive_with_exact_bytes(
    listener: tuple[socket.socket, str], send: Send, expected: bytes
) -> None:
    sock, env_value = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": env_value})
    assert notifier.enabled
    assert send(notifier) is True
    assert sock.recv(4096) == expected


def test_messages_arrive_in_order(listener: tuple[socket.socket, str]) -> None:
    sock, env_value = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": env_value})
    assert notifier.status("starting")
    assert notifier.ready()
    assert notifier.watchdog()
    assert notifier.stopping()
    assert received(sock) == [b"STATUS=starting\n", b"READY=1\n", b"WATCHDOG=1\n", b"STOPPING=1\n"]


def test_reloading_sends_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, env_value = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": env_value})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second, end = sock.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    assert second.startswith(b"MONOTONIC_USEC=")
    assert before <= int(second.removeprefix(b"MONOTONIC_USEC=")) <= after
    assert end == b""


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="absent"),
        pytest.param({"NOTIFY_SOCKET": ""}, id="empty"),
        pytest.param({"NOTIFY_SOCKET": "vsock:2:1234"}, id="unsupported"),
    ],
)
def test_without_a_socket_every_call_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = SystemdNotifier.from_env(environ)
    assert not notifier.enabled
    assert notifier.ready(status="x") is False
    assert notifier.reloading() is False
    assert notifier.watchdog() is False


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "s"))
    assert SystemdNotifier.from_env().enabled
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not SystemdNotifier.from_env().enabled


def test_send_errors_are_logged_once_and_swallowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="imaged.daemon.notify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1


def test_invalid_field_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="invalid sd_notify field name"):
        SystemdNotifier.from_env({}).notify(**{"READY=1\nX": "1"})


PID = str(os.getpid())
INTERVALS = [
    pytest.param({"WATCHDOG_USEC": "30000000"}, 15.0, id="usec"),
    pytest.param({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": PID}, 2.5, id="pid-matches"),
    pytest.param({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, None, id="pid-mismatch"),
    pytest.param({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "x"}, None, id="pid-garbage"),
    pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero"),
    pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage"),
    pytest.param({}, None, id="absent"),
]


@pytest.mark.parametrize(("environ", "expected"), INTERVALS)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert SystemdNotifier.from_env({}).watchdog_interval(environ) == expected


def test_watchdog_interval_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert SystemdNotifier.from_env({}).watchdog_interval() == 0.5
