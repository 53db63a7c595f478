"""A private docker-registry a test may kill: its own config, storage and loopback port.

Configured as ``scripts/test-infra.sh`` configures the shared ones (filesystem storage, deletes
on, access log off), so the shared registries are never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from infra import docker_required

START_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateRegistry:
    """One ``docker-registry serve`` on ``127.0.0.1:<port>`` with everything under ``root``."""

    root: Path
    binary: str
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        with (self.root / "registry.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited; see {self.root / 'registry.log'}")
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.address}")

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def _answers(self) -> bool:
        try:
            url = f"http://{self.address}/v2/"
            return httpx.get(url, timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def private_registry(root: Path) -> Iterator[PrivateRegistry]:
    """Start a private registry under `root`; fail (docker required) or skip without one."""
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is not installed (scripts/test-infra.sh installs it)"
        if docker_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root.mkdir(parents=True, exist_ok=True)
    registry = PrivateRegistry(root=root, binary=binary)
    registry.start()
    try:
        yield registry
    finally:
        registry.kill()
