"""``imaged build`` with a pool of the shared local dockerd and the infra's second ("remote")
dockerd: independent images build at once (their builds overlap in time), a parent that four
children are built FROM is built exactly once, and the output keeps definition order."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from e2e_support import set_build_env

import imaged.pipeline.build as pipeline_build
from imaged.cli.main import main as cli_main

pytestmark = pytest.mark.docker
SLEEP_SECONDS = 4

DEFS = """
from imaged import Image

parent = Image.from_base({base!r}).with_commands("echo parent-{run} > /parent").clone(
    name="cc-parent-{run}", registry={registry!r}
)
"""
CHILD = """
child{i} = Image.from_base(parent).with_commands(
    "echo child-{i}-{run}-started && sleep {sleep} && echo {i} > /child"
).clone(name="cc-child{i}-{run}", registry={registry!r})
"""


def _tag_exists(registry: str, uri: str) -> bool:
    repo, tag = uri.removeprefix(registry + "/").rsplit(":", 1)
    return httpx.head(f"http://{registry}/v2/{repo}/manifests/{tag}").status_code == 200


def test_build_runs_independent_images_at_once_and_a_shared_parent_once(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_build_env(monkeypatch, infra)
    local = infra.docker_host or "unix:///var/run/docker.sock"
    remote = str(infra.remote_docker_host)
    monkeypatch.setenv("IMAGED_POOL", f"{local} capacity=2,{remote} capacity=2")
    monkeypatch.setenv("IMAGED_FAST_PATH", "false")  # every image built by the pool
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    run = uuid.uuid4().hex[:10]
    defs = tmp_path / "defs.py"
    fields = {"base": infra.debian_base, "registry": infra.registry, "run": run}
    children = "".join(CHILD.format(i=i, sleep=SLEEP_SECONDS, **fields) for i in range(4))
    defs.write_text(DEFS.format(**fields) + children)

    # The CLI's own abuild calls, with a recorder of their events (when each was sent).
    events: list[tuple[float, dict[str, Any]]] = []
    real = pipeline_build.abuild  # the CLI imports it when it builds (lazily)

    async def recording(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("on_event") is None:  # the CLI's calls; the pipeline's own pass theirs
            kwargs["on_event"] = lambda event: events.append((time.monotonic(), event))
        return await real(*args, **kwargs)

    monkeypatch.setattr(pipeline_build, "abuild", recording)
    result = CliRunner().invoke(cli_main, ["build", "--json", str(defs)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    names = [f"cc-parent-{run}", *(f"cc-child{i}-{run}" for i in range(4))]
    assert [line["name"] for line in lines] == names  # definition order, parents first
    assert all(line["status"] == "pushed" for line in lines), lines
    assert all(_tag_exists(infra.registry, line["uri"]) for line in lines)
    assert {line["engine"] for line in lines[1:]} == {local, remote}  # spread over both

    # The parent: one build, whoever asked first (its own call or a child's).
    parent_uri = lines[0]["uri"]
    started = [
        e
        for _, e in events
        if e["event"] in ("build_started", "parent_build_started") and parent_uri in e["argv"]
    ]
    assert len(started) == 1, started

    # The four children's builds overlap: each started before any of them finished.
    def when(kind: str, name: str) -> float:
        [at] = [t for t, e in events if e["event"] == kind and e.get("image") == name]
        return at

    starts = [when("build_started", name) for name in names[1:]]
    ends = [when("build_done", name) for name in names[1:]]
    assert max(starts) < min(ends), (starts, ends)
