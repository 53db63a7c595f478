"""End to end: an image built FROM another Image gets its parent built first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import docker, run_id
from test_events import assert_declared

from imaged import Image, build
from imaged.events import BUILD_EVENTS
from imaged.render.dockerfile import base_reference

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
RUN = run_id()


@pytest.fixture(autouse=True)
def _env(infra: Any, tmp_path: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
        mp.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
        mp.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
        mp.delenv("IMAGED_REGISTRY", raising=False)
        yield


def family(infra: Any, tmp_path: Path, registry: str | None) -> tuple[Image, Image]:
    # Unique per test: a parent this process built already would be skipped, not built.
    (tmp_path / "parent.txt").write_text(f"from the parent {RUN} {tmp_path.name}\n")
    (tmp_path / "child.txt").write_text(f"from the child {RUN} {tmp_path.name}\n")
    parent = (
        Image.from_base(infra.debian_base)
        .with_source_file(tmp_path / "parent.txt", "/family")
        .clone(name=f"e2e-parent-{RUN}", registry=registry)
    )
    child = (
        Image.from_base(parent)
        .with_source_file(tmp_path / "child.txt", "/family")
        .clone(name=f"e2e-child-{RUN}", registry=registry)
    )
    return parent, child


def cat_family(infra: Any, uri: str) -> str:
    return docker(infra.docker_cli, "run", "--rm", uri, "sh", "-c", "cat /family/*.txt").stdout


def test_a_local_only_parent_is_built_before_its_child(infra: Any, tmp_path: Path) -> None:
    parent, child = family(infra, tmp_path, registry=None)
    result = build(child)
    assert result.status == "built"
    assert base_reference(child) == parent.uri
    assert cat_family(infra, result.uri) == (
        f"from the child {RUN} {tmp_path.name}\nfrom the parent {RUN} {tmp_path.name}\n"
    )


def test_a_parent_missing_from_the_registry_is_pushed_first(infra: Any, tmp_path: Path) -> None:
    parent, child = family(infra, tmp_path, registry=infra.registry)
    result = build(child)
    assert result.status == "pushed"
    parent_again = build(parent)
    assert parent_again.skipped  # the child's build pushed it
    docker(infra.docker_cli, "rmi", "-f", result.uri, parent.uri, check=False)
    assert "from the parent" in cat_family(infra, result.uri)


def test_a_local_parent_shared_by_two_children_is_built_once(infra: Any, tmp_path: Path) -> None:
    parent, child = family(infra, tmp_path, registry=None)
    sibling = Image.from_base(parent).with_workdir("/family").clone(name=f"e2e-sib-{RUN}")
    events: list[dict[str, Any]] = []
    first = build(child, on_event=events.append)
    second = build(sibling, on_event=events.append)
    assert (first.status, second.status) == ("built", "built")
    parents = [e for e in events if e["event"] == "parent_ready"]
    assert [e["status"] for e in parents] == ["built", "skipped"]
    # The parent's own progress is labelled as the parent's, never as a child's.
    assert sum(e["event"] == "build_done" for e in events) == 2  # one per child
    assert sum(e["event"] == "parent_build_done" for e in events) == 1  # the parent, once
    assert_declared(events, BUILD_EVENTS)
