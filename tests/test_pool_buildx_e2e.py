"""A pool of a ``buildx:NAME`` builder (the stand-in plugin, tests/fake_buildx.py, which builds
with the real local engine: real buildx is not installable here) and a real Docker engine (the
infra's "remote" dockerd): ``imaged build`` places images on both, each pushes from where it
was built (buildx ``--push``; the engine's own push), and each image pulls back and runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_support import docker, pull_fresh, set_build_env
from fake_buildx import install_fake_buildx

from imaged.builders.local import find_docker_cli
from imaged.cli.main import main as cli_main

pytestmark = pytest.mark.docker

DEFS = """
from imaged import Image

base = Image.from_base({base!r})
one = base.with_commands("echo one-{run} > /which && sleep 3").clone(
    name="px-one-{run}", registry={registry!r}
)
two = base.with_commands("echo two-{run} > /which && sleep 3").clone(
    name="px-two-{run}", registry={registry!r}
)
"""


@pytest.fixture(autouse=True)
def fresh_cli_probe() -> Iterator[None]:
    """Whether the docker CLI has buildx depends on DOCKER_CONFIG, which these tests point at
    the stand-in plugin: probe the CLI afresh (the probe is cached per path), before and after."""
    find_docker_cli.cache_clear()
    yield
    find_docker_cli.cache_clear()


def test_a_pool_of_buildx_and_a_docker_engine_builds_pushes_and_runs_on_both(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_build_env(monkeypatch, infra)
    fake = install_fake_buildx(
        tmp_path / "docker-config", docker_cli=infra.docker_cli, builders=("farm",)
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(fake.config_dir))
    remote = str(infra.remote_docker_host)
    monkeypatch.setenv("IMAGED_POOL", f"buildx:farm capacity=1,{remote} capacity=1")
    monkeypatch.setenv("IMAGED_FAST_PATH", "false")  # every image built by the pool
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    run = uuid.uuid4().hex[:10]
    defs = tmp_path / "defs.py"
    defs.write_text(DEFS.format(base=infra.debian_base, registry=infra.registry, run=run))

    result = CliRunner().invoke(cli_main, ["build", "--json", str(defs)])
    assert result.exit_code == 0, result.output
    lines = {line["name"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert list(lines) == [f"px-one-{run}", f"px-two-{run}"]
    assert {line["engine"] for line in lines.values()} == {"buildx:farm", remote}
    assert all(line["status"] == "pushed" and line["manifest_digest"] for line in lines.values())

    # buildx built and pushed its image itself (--push). The engine's image went to the remote
    # engine (this CLI has a buildx plugin, so the engine's build runs through the plugin's
    # default builder: no --builder, DOCKER_HOST the engine, --load) and the engine pushed it.
    calls = {call["args"][call["args"].index("-t") + 1]: call for call in fake.builds()}
    on_buildx = next(line for line in lines.values() if line["engine"] == "buildx:farm")
    on_engine = next(line for line in lines.values() if line["engine"] == remote)
    assert set(calls) == {on_buildx["uri"], on_engine["uri"]}
    pushed_by_buildx = calls[on_buildx["uri"]]["args"]
    assert pushed_by_buildx[:3] == ["build", "--builder", "farm"]
    assert "--push" in pushed_by_buildx
    assert on_buildx["timings"]["push"] == 0.0  # no push after the build: buildx did it
    built_on_engine = calls[on_engine["uri"]]
    assert "--builder" not in built_on_engine["args"]
    assert "--push" not in built_on_engine["args"]
    assert "--load" in built_on_engine["args"]
    assert built_on_engine["env"]["DOCKER_HOST"] == remote
    assert on_engine["timings"]["push"] > 0.0  # the engine's own push

    for name, line in lines.items():
        pull_fresh(infra.docker_cli, line["uri"])
        out = docker(infra.docker_cli, "run", "--rm", line["uri"], "cat", "/which").stdout
        assert out.strip() == f"{name.split('-')[1]}-{run}"
