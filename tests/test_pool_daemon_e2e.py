"""The daemon with a pool of two real engines: a private dockerd (the only one killed) and the
infra's remote dockerd. The events, /status and /metrics say where each build ran and why; a
kill -9 of the engine mid-build moves the build to the other one; the restarted engine is
probed back up by the daemon while nothing builds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_daemon_e2e
from daemon_support import DaemonProcess, is_event, wait_for
from private_engine import PrivateEngine, open_private_engine
from test_daemon_e2e import Launch

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]
launch = test_daemon_e2e.launch  # the fixture that starts (and at teardown kills) a daemon

DEFS = """\
from imaged import Image
job = (
    Image.from_debian_base(python_version=(3, 11))
    .with_commands("echo run-{nonce}-started && sleep 6")
    .clone(name="{name}")
)
"""


@pytest.fixture
def private(infra: Any) -> Iterator[PrivateEngine]:
    with open_private_engine(infra.docker_cli) as started:
        pulled = started.docker("pull", infra.debian_base)
        assert pulled.returncode == 0, pulled.stderr
        yield started


def _get(daemon: DaemonProcess, path: str) -> httpx.Response:
    address = daemon.status_address()
    return httpx.get(f"http://{address}{path}", timeout=5, trust_env=False)


def _engines(daemon: DaemonProcess) -> dict[str, str]:
    return {e["engine"]: e["state"] for e in _get(daemon, "/status").json()["engines"]}


def test_the_daemon_fails_a_build_over_and_shows_each_engine(
    infra: Any,
    private: PrivateEngine,
    launch: Launch,
    tmp_path: Path,
) -> None:
    nonce = uuid.uuid4().hex[:10]
    name = f"pool-daemon-{nonce}"
    defs = tmp_path / "images.py"
    defs.write_text(DEFS.format(nonce=nonce, name=name))
    remote = str(infra.remote_docker_host)
    pool = f"{private.host} capacity=1,{remote} capacity=1"
    daemon = launch("watch", str(defs), "--json", "--registry", infra.registry, IMAGED_POOL=pool)

    placed = daemon.wait_event(
        lambda e: e.get("event") == "building" and e.get("engine") == private.host, 90
    )
    assert placed["placement"] == "least loaded (0/1)"
    time.sleep(2.5)  # the base is in the engine already: the RUN step sleeps by now
    private.kill()
    moved = daemon.wait_event(
        lambda e: e.get("event") == "building" and e.get("engine") == remote, 60
    )
    assert f"moved from {private.host} (down: " in moved["placement"]
    pushed = daemon.wait_event(is_event("pushed", name), 90)
    assert (pushed["engine"], pushed["placement"]) == (remote, moved["placement"])
    assert daemon.matching(lambda e: e.get("event") in ("failed", "retrying")) == []

    status = _get(daemon, "/status").json()
    assert _engines(daemon) == {private.host: "down", remote: "up"}
    assert status["engine_status"] == "1/2 engines up"
    (view,) = [v for v in status["images"] if v["name"] == name]
    assert (view["state"], view["engine"]) == ("up to date", remote)
    metrics = _get(daemon, "/metrics").text
    assert f'imaged_engine_up{{engine="{private.host}"}} 0' in metrics
    assert f'imaged_engine_up{{engine="{remote}"}} 1' in metrics
    assert f'imaged_engine_builds_total{{engine="{remote}"}} 1' in metrics

    private.start()
    assert wait_for(lambda: _engines(daemon)[private.host] == "up", 60, step=0.5), _engines(daemon)
