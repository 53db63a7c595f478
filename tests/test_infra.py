"""The test infra itself: loopback-only registries, auth, the Debian base, both engines."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from infra import Infra, InfraUnavailable, load_infra, write_docker_config

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it


def _listeners(port: int) -> list[str]:
    """The local addresses of sockets listening on ``port``, as /proc/net/tcp{,6} print them."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.rpartition(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.append(address)
    return found


def _port(address: str) -> int:
    port = urlsplit(f"//{address}").port
    assert port is not None, address
    return port


def _docker(infra: Infra, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [infra.docker_cli, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.docker
@pytest.mark.parametrize(
    "which",
    [
        pytest.param("registry", id="registry"),
        pytest.param("auth_registry", id="auth-registry"),
        pytest.param("remote_docker_host", id="remote-engine"),
    ],
)
def test_services_listen_on_loopback_only(infra: Infra, which: str) -> None:
    address: str | None = getattr(infra, which)
    if address is None:
        pytest.skip("no remote engine without root")
    host_port = address.removeprefix("tcp://")
    assert host_port.startswith("127.0.0.1:"), address
    assert _listeners(_port(host_port)) == [LOOPBACK_HEX]


@pytest.mark.docker
def test_plain_registry_answers_without_credentials(infra: Infra) -> None:
    response = httpx.get(f"http://{infra.registry}/v2/", timeout=5, trust_env=False)
    assert response.status_code == 200


@pytest.mark.docker
@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        pytest.param(None, 401, id="anonymous"),
        pytest.param("right", 200, id="right-password"),
        pytest.param("wrong", 401, id="wrong-password"),
    ],
)
def test_auth_registry_checks_the_password(
    infra: Infra, credentials: str | None, status: int
) -> None:
    password = {"right": infra.auth_password, "wrong": infra.auth_password + "x"}
    auth = (infra.auth_user, password[credentials]) if credentials else None
    response = httpx.get(f"http://{infra.auth_registry}/v2/", auth=auth, timeout=5, trust_env=False)
    assert response.status_code == status


@pytest.mark.docker
def test_debian_base_is_in_the_registry_and_runs_python_311(infra: Infra) -> None:
    assert infra.debian_base == infra.debian_base_for(major=3, minor=11)
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{infra.debian_base}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(inspect.stdout)["Os"] == "linux"
    probe = "import venv, ssl, sys; print(sys.version_info[:2])"
    run = _docker(
        infra, "run", "--rm", infra.debian_base, "python3", "-c", probe, env=infra.docker_env()
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(3, 11)"


@pytest.mark.docker
def test_ca_bundle_is_a_pem_file(infra: Infra) -> None:
    assert infra.ca_bundle is not None
    assert "-----BEGIN CERTIFICATE-----" in Path(infra.ca_bundle).read_text()


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_remote_engine_builds_with_network_and_pushes(infra: Infra, tmp_path: Path) -> None:
    if infra.remote_docker_host is None:
        pytest.skip("no remote engine without root")
    env = infra.remote_docker_env(DOCKER_BUILDKIT="1")
    marker = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"FROM {infra.debian_base}\n"
        # Plain-HTTP apt proves the RUN step has a network; the marker defeats the cache.
        f"RUN python3 -c \"import urllib.request as u; u.urlopen('http://deb.debian.org/debian/')\""
        f" && echo {marker} > /marker\n"
    )
    ref = f"{infra.registry}/imaged-test/infra-remote:{marker[:12]}"
    network = ("--network", infra.remote_build_network) if infra.remote_build_network else ()
    build = _docker(infra, "build", *network, "-t", ref, str(tmp_path), env=env)
    assert build.returncode == 0, build.stderr
    push = _docker(infra, "push", ref, env=env)
    assert push.returncode == 0, push.stderr
    tags = httpx.get(f"http://{infra.registry}/v2/imaged-test/infra-remote/tags/list", timeout=5)
    assert marker[:12] in tags.json()["tags"]
    assert _docker(infra, "image", "inspect", ref, env=infra.docker_env()).returncode != 0


@pytest.mark.docker
@pytest.mark.parametrize(
    ("config_fixture", "pushed"),
    [
        pytest.param("docker_config_dir", True, id="right-password"),
        pytest.param("wrong_docker_config_dir", False, id="wrong-password"),
    ],
)
def test_docker_config_fixtures_log_in_to_the_auth_registry(
    infra: Infra, request: pytest.FixtureRequest, config_fixture: str, pushed: bool
) -> None:
    config: Path = request.getfixturevalue(config_fixture)
    ref = f"{infra.auth_registry}/imaged-test/infra-auth:{uuid.uuid4().hex[:12]}"
    env = infra.docker_env(DOCKER_CONFIG=str(config))
    assert _docker(infra, "pull", "-q", infra.debian_base, env=env).returncode == 0
    assert _docker(infra, "tag", infra.debian_base, ref, env=env).returncode == 0
    push = _docker(infra, "push", ref, env=env)
    _docker(infra, "rmi", ref, env=env)
    assert (push.returncode == 0) is pushed, push.stderr


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(None, "no test infra state", id="missing"),
        pytest.param("{not json", "unreadable", id="not-json"),
        pytest.param('{"registry": "127.0.0.1:1"}', "incomplete", id="incomplete"),
    ],
)
def test_load_infra_explains_a_bad_state_file(
    tmp_path: Path, content: str | None, match: str
) -> None:
    path = tmp_path / "state.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InfraUnavailable, match=match):
        load_infra(path)


def test_load_infra_reads_fields_and_ignores_unknown_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {
        "registry": "127.0.0.1:5000",
        "auth_registry": "127.0.0.1:5001",
        "auth_user": "imaged",
        "auth_password": "pw",
        "docker_cli": "/usr/bin/docker",
        "debian_base_template": "127.0.0.1:5000/python:{major}.{minor}-slim-bookworm",
        "debian_base": "127.0.0.1:5000/python:3.11-slim-bookworm",
        "remote_docker_host": "tcp://127.0.0.1:2375",
        "dirs": {"registry": "/x"},
        "version": 1,
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    monkeypatch.setenv("DOCKER_HOST", "tcp://elsewhere:1")
    loaded = load_infra(path)
    assert loaded.debian_base_for(major=3, minor=12) == "127.0.0.1:5000/python:3.12-slim-bookworm"
    assert "DOCKER_HOST" not in loaded.docker_env()
    assert loaded.remote_docker_env()["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    assert loaded.state_file == path


def test_write_docker_config_encodes_basic_auth(tmp_path: Path) -> None:
    folder = write_docker_config(tmp_path / "cfg", registry="127.0.0.1:9", user="u", password="p:w")
    auths = json.loads((folder / "config.json").read_text())["auths"]
    assert auths == {"127.0.0.1:9": {"auth": "dTpwOnc="}}
