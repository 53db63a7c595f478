"""registry_cache across the two real engines: a step built on the remote engine is taken
from the registry by the local one, and the image is pushed as <repo>:imaged-latest."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from imaged.builders.base import BuildRequest
from imaged.builders.local import LocalBuilder
from imaged.builders.remote import RemoteBuilder
from imaged.config import Settings

pytestmark = pytest.mark.docker

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json"


def _build(builder: LocalBuilder, context: Path, tag: str) -> list[str]:
    lines: list[str] = []

    def sink(event: dict[str, Any]) -> None:
        if event["event"] == "build_output":
            lines.append(event["line"])

    request = BuildRequest("shared-cache", context, context / "Dockerfile", (tag,))
    anyio.run(lambda: builder.build(request, on_event=sink))
    return lines


def _run_step_cached(lines: list[str]) -> bool:
    steps = {m[1]: m[2] for line in lines if (m := re.match(r"^#(\d+) (\[[^\]]+\] .+)$", line))}
    cached = {m[1] for line in lines if (m := re.match(r"^#(\d+) CACHED", line))}
    return any(" RUN " in steps.get(step, "") for step in cached)


def test_a_step_built_on_one_engine_is_cached_on_the_other(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    nonce = uuid.uuid4().hex[:12]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {infra.debian_base}\nRUN echo {nonce} > /nonce && sleep 1\n"
    )
    repo = f"{infra.registry}/imaged-test/shared-cache-{nonce}"
    settings = Settings(docker_cli=infra.docker_cli, registry_cache=True)
    remote = RemoteBuilder(replace(settings, docker_host=infra.remote_docker_host))
    first = _build(remote, context, f"{repo}:remote")
    assert not _run_step_cached(first)
    latest = httpx.head(
        f"http://{infra.registry}/v2/{repo.split('/', 1)[1]}/manifests/imaged-latest",
        headers={"Accept": MANIFEST_TYPES},
        trust_env=False,
    )
    assert latest.status_code == 200

    second = _build(LocalBuilder(settings), context, f"{repo}:local")
    assert _run_step_cached(second), "\n".join(second[-30:])
    assert any(
        "importing cache manifest from " + f"{repo}:imaged-latest" in line for line in second
    )


def test_without_the_setting_the_other_engine_runs_the_step(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    nonce = uuid.uuid4().hex[:12]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {infra.debian_base}\nRUN echo {nonce} > /nonce\n")
    repo = f"{infra.registry}/imaged-test/shared-cache-{nonce}"
    settings = Settings(docker_cli=infra.docker_cli)
    remote = RemoteBuilder(replace(settings, docker_host=infra.remote_docker_host))
    _build(remote, context, f"{repo}:remote")
    second = _build(LocalBuilder(settings), context, f"{repo}:local")
    assert not _run_step_cached(second)
    assert not any("importing cache manifest" in line for line in second)
