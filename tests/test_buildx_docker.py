"""The buildx builder end to end: a stand-in docker-buildx plugin (real buildx is not
installable here, see tests/fake_buildx.py) building with the real engine and pushing to the
real registry that needs a login; the result is pulled back and run."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from e2e_support import docker, pull_fresh, set_build_env
from fake_buildx import FakeBuildx, install_fake_buildx

from imaged import Image, build
from imaged.builders.base import BuildRequest, SecretSource
from imaged.builders.buildx import BuildxBuilder
from imaged.config import Settings
from imaged.errors import ConfigError

pytestmark = pytest.mark.docker

SECRET_VALUE = "tok-" + uuid.uuid4().hex
PROXY = "http://proxy.invalid:3128"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.manifest.v1+json"
)


@pytest.fixture
def fake_buildx(infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBuildx:
    """The stand-in plugin in this test's own DOCKER_CONFIG, knowing the builder "farm"."""
    installed = install_fake_buildx(
        tmp_path / "user-docker-config", docker_cli=infra.docker_cli, builders=("farm",)
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(installed.config_dir))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("IMAGED_SECRET_TOK", SECRET_VALUE)  # must reach no child
    return installed


def _login_config(infra: Any) -> bytes:
    auth = f"{infra.auth_user}:{infra.auth_password}".encode()
    return json.dumps(
        {"auths": {infra.auth_registry: {"auth": base64.b64encode(auth).decode()}}}
    ).encode()


def _context(tmp_path: Path, infra: Any) -> Path:
    folder = tmp_path / "context"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"FROM {infra.debian_base}\n"
        # The nonce: BuildKit would reuse a step of an earlier run whose secret was another.
        f"RUN --mount=type=secret,id=tok echo {uuid.uuid4().hex} > /nonce "
        "&& sha256sum /run/secrets/tok | cut -d' ' -f1 > /secret-sha\n"
        'RUN echo "proxy=$HTTP_PROXY" > /proxy\n'
        'CMD ["cat", "/secret-sha", "/proxy"]\n'
    )
    return folder


def _registry_digest(infra: Any, ref: str) -> str:
    repo, tag = ref.removeprefix(infra.auth_registry + "/").rsplit(":", 1)
    response = httpx.head(
        f"http://{infra.auth_registry}/v2/{repo}/manifests/{tag}",
        headers={"Accept": MANIFEST_TYPES},
        auth=(infra.auth_user, infra.auth_password),
        trust_env=False,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def test_buildx_builds_pushes_with_the_login_and_the_result_runs(
    infra: Any, fake_buildx: FakeBuildx, tmp_path: Path
) -> None:
    context = _context(tmp_path, infra)
    tag = f"{infra.auth_registry}/imaged-test/buildx:{uuid.uuid4().hex[:12]}"
    request = BuildRequest(
        image_name="buildx-e2e",
        context_dir=context,
        dockerfile=context / "Dockerfile",
        tags=(tag,),
        platforms=("linux/amd64",),
        secrets=(SecretSource("tok", SECRET_VALUE.encode()),),
        docker_config=_login_config(infra),
    )
    settings = Settings(docker_cli=infra.docker_cli, build_args=(("HTTP_PROXY", PROXY),))
    builder = BuildxBuilder(settings, builder_name="farm")
    events: list[dict[str, Any]] = []
    outcome = anyio.run(lambda: builder.build(request, on_event=events.append))

    assert outcome.manifest_digest == _registry_digest(infra, tag)
    assert outcome.image_id is None  # never loaded back into the client
    assert outcome.command[:5] == (infra.docker_cli, "buildx", "build", "--builder", "farm")
    pushed = [e for e in events if e["event"] == "ref_pushed"]
    assert [(e["ref"], e["digest"]) for e in pushed] == [(tag, outcome.manifest_digest)]

    [call] = fake_buildx.builds()
    assert "--push" in call["args"]
    assert "HTTP_PROXY" in call["args"]  # the name; buildx reads the value from its env
    assert call["env"]["HTTP_PROXY"] == PROXY
    assert PROXY not in json.dumps([c["argv"] for c in fake_buildx.calls()]) + json.dumps(events)
    # The registry login reached buildx through a private DOCKER_CONFIG, removed afterwards.
    assert call["logins"] == [infra.auth_registry]
    assert call["docker_config"] != str(fake_buildx.config_dir)
    assert not Path(call["docker_config"]).exists()
    everything = json.dumps(fake_buildx.calls()) + json.dumps(events)
    assert SECRET_VALUE not in everything
    assert infra.auth_password not in json.dumps([c["argv"] for c in fake_buildx.calls()])
    assert not any(key.startswith("IMAGED_SECRET") for key in call["env"])

    env = {**os.environ, "DOCKER_CONFIG": str(_write_login(tmp_path, infra))}
    pull_fresh(infra.docker_cli, tag, env=env)
    out = docker(infra.docker_cli, "run", "--rm", tag, env=env).stdout.split()
    assert out == [hashlib.sha256(SECRET_VALUE.encode()).hexdigest(), f"proxy={PROXY}"]


def _write_login(tmp_path: Path, infra: Any) -> Path:
    folder = tmp_path / "pull-config"
    folder.mkdir()
    (folder / "config.json").write_bytes(_login_config(infra))
    return folder


def test_check_reports_the_builder(infra: Any, fake_buildx: FakeBuildx) -> None:
    info = anyio.run(
        BuildxBuilder(Settings(docker_cli=infra.docker_cli), builder_name="farm").check
    )
    assert info["engine"] == "buildx:farm"
    assert info["driver"] == "docker-container"
    assert info["status"] == "running"
    assert fake_buildx.calls()[-1]["args"] == ["inspect", "farm"]


def test_a_missing_builder_is_a_clear_config_error(
    infra: Any, fake_buildx: FakeBuildx, tmp_path: Path
) -> None:
    builder = BuildxBuilder(Settings(docker_cli=infra.docker_cli), builder_name="nope")
    with pytest.raises(ConfigError, match="no buildx builder 'nope'") as info:
        anyio.run(builder.check)
    assert info.value.key == "buildx_builder"
    assert "docker buildx create --name nope" in str(info.value)
    context = _context(tmp_path, infra)
    request = BuildRequest(
        image_name="x",
        context_dir=context,
        dockerfile=context / "Dockerfile",
        tags=(f"{infra.registry}/imaged-test/buildx-nope:1",),
    )
    with pytest.raises(ConfigError, match="no buildx builder 'nope'"):
        anyio.run(builder.build, request)


def test_a_cli_without_the_plugin_says_how_to_install_it(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))
    builder = BuildxBuilder(Settings(docker_cli=infra.docker_cli), builder_name="farm")
    with pytest.raises(ConfigError, match="has no buildx plugin") as info:
        anyio.run(builder.check)
    assert "cli-plugins" in str(info.value)
    done = subprocess.run([infra.docker_cli, "buildx", "version"], capture_output=True, check=False)
    assert done.returncode != 0  # truly no plugin: the error came from the real CLI


def test_the_pipeline_builds_through_buildx_and_skips_what_exists(
    infra: Any, fake_buildx: FakeBuildx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_build_env(monkeypatch, infra)
    monkeypatch.setenv("IMAGED_BUILDER", "buildx")
    monkeypatch.setenv("IMAGED_BUILDX_BUILDER", "farm")
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    nonce = uuid.uuid4().hex[:12]
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"buildx-pipeline-{nonce}", registry=infra.registry)
        .with_commands(f"echo {nonce} > /nonce")
    )
    first = build(image)
    assert (first.status, first.builder) == ("pushed", "buildx")
    [call] = fake_buildx.builds()
    assert call["args"][call["args"].index("-t") + 1] == first.uri
    assert first.manifest_digest is not None
    pull_fresh(infra.docker_cli, first.uri)
    assert (
        docker(infra.docker_cli, "run", "--rm", first.uri, "cat", "/nonce").stdout.strip() == nonce
    )
    second = build(image)
    assert (second.status, second.uri) == ("skipped", first.uri)
    assert len(fake_buildx.builds()) == 1
