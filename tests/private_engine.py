"""A private dockerd a test may kill: its own roots in a temp folder, its own bridge, loopback TCP.

Started the way ``scripts/test-infra.sh`` starts the remote engine (separate data, exec and pid
roots, containerd namespaces, ``--iptables=false``) so the shared engines are never touched.
It needs root (dockerd, ``ip link``); without it the fixture fails when docker is required.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from infra import docker_required

START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _free_subnet() -> str:
    used = _run("ip", "-4", "-o", "addr").stdout
    for _ in range(50):
        subnet = f"10.214.{random.randrange(256)}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.214.x.0/24 subnet for a private bridge")


@dataclass
class PrivateEngine:
    """One dockerd on ``tcp://127.0.0.1:<port>`` with everything under ``root``."""

    root: Path
    cli: str
    port: int = field(default_factory=_free_port)
    bridge: str = field(default_factory=lambda: f"imgd{os.getpid() % 100000}")
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args], capture_output=True, text=True, env=self.env(), timeout=timeout
        )

    def create_bridge(self) -> None:
        subnet = _free_subnet()
        for argv in (
            ("ip", "link", "add", self.bridge, "type", "bridge"),
            ("ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge),
            ("ip", "link", "set", self.bridge, "up"),
        ):
            done = _run(*argv)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    def start(self) -> None:
        """Start dockerd (again, after a kill) and wait until it answers."""
        # A SIGKILL leaves both pid files behind; a killed containerd may linger as a zombie
        # until init reaps it, and dockerd would wait for that "running" containerd forever.
        (self.root / "dockerd.pid").unlink(missing_ok=True)
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)
        argv = [
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            *("--host", self.host, "--data-root", str(self.root / "data")),
            *("--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid")),
            *(f"--bridge={self.bridge}", "--iptables=false"),
            *("--containerd-namespace", f"{self.bridge}-ns"),
            *("--containerd-plugins-namespace", f"{self.bridge}-plugins"),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.docker("version", timeout=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not start; see {self.log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """``kill -9`` the engine, reap it, and wait for the containerd it manages to go
        (a dockerd started while the old containerd is still exiting would adopt it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self._kill_leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_leftovers()
        self._unmount_all()
        shutil.rmtree(self.root, ignore_errors=True)
        _run("ip", "link", "del", self.bridge)

    def _kill_leftovers(self) -> int:
        """SIGKILL containerd and shims this engine started (their argv names root); returns
        how many were still there."""
        marker = str(self.root).encode()
        found = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found += 1
                    os.kill(int(pid), signal.SIGKILL)
        return found

    def _unmount_all(self) -> None:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        inside = [m.split()[1] for m in mounts if m.split()[1].startswith(str(self.root))]
        for point in sorted(inside, reverse=True):
            _run("umount", "-l", point)


@contextmanager
def open_private_engine(cli: str) -> Iterator[PrivateEngine]:
    """A started private engine, stopped and removed (bridge, mounts, files) on exit."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        message = "a private dockerd needs root and iproute2"
        if docker_required():
            pytest.fail(message)
        pytest.skip(message)
    # A short path: containerd's socket path must stay under 108 bytes.
    engine = PrivateEngine(root=Path(tempfile.mkdtemp(prefix="imaged-pe-")), cli=cli)
    try:
        engine.create_bridge()
        engine.start()
        yield engine
    finally:
        engine.stop()
