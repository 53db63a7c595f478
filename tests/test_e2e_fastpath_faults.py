"""End to end: the fast path against registries that fail or refuse (issue 9, "Bad input gets
a clear error and loses nothing").

Each test has a private registry (tests/private_registry.py) and, where a refusal is
needed, the HTTP proxy of tests/fault_proxy.py in front of it. The first build goes to the
registry directly (the engine pushes the stem there); later builds name the proxy, whose
address reaches the same storage, so the stem is found with a HEAD and only imaged's own
client (the tail's blobs and manifest) meets the fault. Images are pulled through the
registry's own address and run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from e2e_support import docker, pull_fresh, run_id, set_build_env
from fault_proxy import Seen, fault_proxy
from private_registry import PrivateRegistry, private_registry

from imaged import Image, build
from imaged.config import load_settings
from imaged.errors import ImagedError, RegistryError, RegistryUnavailable, is_transient
from imaged.pipeline.build import ImageBuild
from imaged.registry.append import DOCKER_MANIFEST, STEM_MEDIA_TYPES
from imaged.registry.client import Existence, create_registry_client
from imaged.registry.ref import ImageRef

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

RUN = run_id()
BIG = 48 << 20  # incompressible bytes in the tail: an upload long enough to cut


@pytest.fixture(autouse=True)
def _env(infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_build_env(monkeypatch, infra)
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def registry(infra: Any, tmp_path: Path) -> Iterator[PrivateRegistry]:
    with private_registry(tmp_path / "registry") as own:
        yield own


def tree(root: Path, text: str = "print('v1')\n") -> Path:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(text)
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    return root


def image_at(infra: Any, registry: str, what: str, src: Path) -> Image:
    return (
        Image.from_base(infra.debian_base)
        .clone(name=f"fpfault-{what}-{RUN}", registry=registry)
        .with_source_folder(src, "/app")
    )


def on(address: str, uri: str) -> str:
    """``uri`` on the registry at ``address`` (the same storage behind the proxy)."""
    ref = ImageRef.parse(uri)
    return str(replace(ref, registry=address))


def registry_state(uri: str) -> tuple[str | None, list[str]]:
    """The manifest digest under ``uri`` (None when absent) and the blobs it names (every
    platform's config and layers) that the registry does not hold."""

    async def run() -> tuple[str | None, list[str]]:
        async with create_registry_client(load_settings()) as client:
            ref = ImageRef.parse(uri)
            if await client.manifest_exists(ref) is Existence.MISSING:
                return None, []
            media_type, body, digest = await client.get_manifest(ref, accept=STEM_MEDIA_TYPES)
            manifest = json.loads(body)
            children = [m["digest"] for m in manifest.get("manifests") or []]
            bodies = [manifest] if not children else []
            for child in children:
                pinned = replace(ref, tag=None, digest=child)
                bodies.append(json.loads((await client.get_manifest(pinned))[1]))
            missing = []
            for one in bodies:
                for blob in [one["config"], *one["layers"]]:
                    if await client.blob_exists(ref, blob["digest"]) is not Existence.EXISTS:
                        missing.append(blob["digest"])
            return digest, missing

    return anyio.run(run)


def runs(infra: Any, uri: str, command: str) -> str:
    pull_fresh(infra.docker_cli, uri)
    return docker(infra.docker_cli, "run", "--rm", uri, "sh", "-c", command).stdout


def first_build(infra: Any, registry: PrivateRegistry, what: str, src: Path) -> ImageBuild:
    """The image built straight into the registry: its stem is there afterwards."""
    first = build(image_at(infra, registry.address, what, src))
    assert (first.path, first.status) == ("fast", "pushed"), first.path_reason
    return first


# 1. A push cut off midway ------------------------------------------------------------------


def test_registry_killed_mid_tail_upload_fails_transiently_and_the_next_build_pushes(
    infra: Any, registry: PrivateRegistry, tmp_path: Path
) -> None:
    src = tree(tmp_path / "src")
    first_build(infra, registry, "kill", src)
    payload = os.urandom(BIG)
    (src / "big.bin").write_bytes(payload)
    killed: list[int] = []

    def kill_at_8_mib(seen: Seen, sent: int) -> None:
        if seen.is_upload_put and sent >= 8 << 20 and not killed:
            killed.append(sent)
            registry.kill()  # SIGKILL with 8 MiB of the tail's big layer received

    with fault_proxy(registry.address, on_body=kill_at_8_mib) as proxy:
        image = image_at(infra, proxy.address, "kill", src)
        with pytest.raises(ImagedError) as caught:
            build(image)
        message = str(caught.value)
        print(f"kill mid-upload: {type(caught.value).__name__}: {message}")
        assert killed, "the proxy never saw the big layer's upload"
        assert isinstance(caught.value, RegistryUnavailable)
        assert is_transient(caught.value)
        assert f"registry {proxy.address} is unreachable" in message
        assert f"to {image.name} did not complete" in message
        assert proxy.of("manifest_put") == []  # nothing named the cut blob
        registry.start()  # the same port and storage
        expected = build(image, dry_run=True).uri
        assert registry_state(on(registry.address, expected)) == (None, [])
        again = build(image)
    assert (again.path, again.status, again.uri) == ("fast", "pushed", expected)
    digest, missing = registry_state(on(registry.address, again.uri))
    assert digest == again.manifest_digest
    assert missing == []
    out = runs(infra, on(registry.address, again.uri), "sha256sum /app/src/big.bin")
    assert out.split()[0] == hashlib.sha256(payload).hexdigest()


# 2. Mounts and chunked uploads refused ----------------------------------------------------


def _no_mounts_no_chunks(seen: Seen) -> tuple[int, str] | None:
    if seen.is_mount:
        return 405, "UNSUPPORTED"
    if seen.method == "PATCH":
        return 405, "UNSUPPORTED"
    return None


def _no_mounts_no_monolithic(seen: Seen) -> tuple[int, str] | None:
    if seen.is_mount:
        return 404, "NAME_UNKNOWN"
    if seen.is_upload_put and seen.length > 0:
        return 405, "UNSUPPORTED"  # a body only through PATCH
    return None


@pytest.mark.parametrize(
    ("refuse", "uploads"),
    [
        pytest.param(_no_mounts_no_chunks, "monolithic", id="no-mount-no-patch"),
        pytest.param(_no_mounts_no_monolithic, "chunked", id="no-mount-no-monolithic"),
    ],
)
def test_refused_mounts_and_upload_kinds_fall_back(
    infra: Any, registry: PrivateRegistry, tmp_path: Path, refuse: Any, uploads: str
) -> None:
    src = tree(tmp_path / "src")
    first_build(infra, registry, f"refuse-{uploads}", src)
    (src / "app.py").write_text("print('v2')\n")
    with fault_proxy(registry.address, refuse=refuse) as proxy:
        second = build(image_at(infra, proxy.address, f"refuse-{uploads}", src))
    assert (second.path, second.status) == ("fast", "pushed"), second.path_reason
    patches = [s for s in proxy.seen if s.method == "PATCH"]
    if uploads == "chunked":
        assert patches and proxy.refused  # each body refused once, then sent in chunks
    else:
        assert patches == []
    print(f"{uploads}: refused {[(s.method, st, c) for s, st, c in proxy.refused]}; "
          f"mounts asked {len(proxy.of('mount'))}")
    digest, missing = registry_state(on(registry.address, second.uri))
    assert (digest, missing) == (second.manifest_digest, [])
    out = runs(infra, on(registry.address, second.uri), "python3 /app/src/app.py")
    assert out == "v2\n"


# 3. A manifest media type forbidden --------------------------------------------------------


def test_a_forbidden_manifest_media_type_names_it_and_loses_nothing(
    infra: Any, registry: PrivateRegistry, tmp_path: Path
) -> None:
    src = tree(tmp_path / "src")
    first_build(infra, registry, "mediatype", src)
    (src / "app.py").write_text("print('v3')\n")

    def forbid_docker_v2(seen: Seen) -> tuple[int, str] | None:
        if seen.is_manifest_put and seen.content_type == DOCKER_MANIFEST:
            return 400, "MANIFEST_INVALID"
        return None

    with fault_proxy(registry.address, refuse=forbid_docker_v2) as proxy:
        image = image_at(infra, proxy.address, "mediatype", src)
        with pytest.raises(RegistryError) as caught:
            build(image)
        message = str(caught.value)
        print(f"forbidden media type: {type(caught.value).__name__}: {message}")
        target = build(image, dry_run=True).uri
        assert not is_transient(caught.value)
        assert f"registry {proxy.address} refused manifest media type {DOCKER_MANIFEST}" in message
        assert f"for {target}" in message
        assert "MANIFEST_INVALID" in message
    assert registry_state(on(registry.address, target)) == (None, [])
    again = build(image_at(infra, registry.address, "mediatype", src))
    assert (again.path, again.status) == ("fast", "pushed")
    assert again.uri == on(registry.address, target)
    assert registry_state(again.uri) == (again.manifest_digest, [])
    assert runs(infra, again.uri, "python3 /app/src/app.py") == "v3\n"


# 4. A stem tag whose blobs are gone --------------------------------------------------------


def blob_files(registry: PrivateRegistry, digest: str) -> Path:
    hexa = digest.removeprefix("sha256:")
    return registry.root / "storage/docker/registry/v2/blobs/sha256" / hexa[:2] / hexa


def test_a_stem_whose_blobs_were_collected_is_rebuilt(
    infra: Any, registry: PrivateRegistry, tmp_path: Path
) -> None:
    import shutil

    src = tree(tmp_path / "src")
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"fpfault-gc-{RUN}", registry=registry.address)
        .with_commands(["echo gc > /gc.txt"])
        .with_source_folder(src, "/app")
    )
    first = build(image)
    assert (first.path, first.status) == ("fast", "pushed")
    assert first.stem_uri
    stem_layers = manifest_of(first.stem_uri)["layers"]
    gone = stem_layers[-1]["digest"]  # the RUN's layer: only the stem names it
    registry.kill()
    shutil.rmtree(blob_files(registry, gone))  # as a garbage collection that went wrong
    registry.start()
    assert registry_state(first.stem_uri)[1] == [gone]  # the tag stays, broken
    (src / "app.py").write_text("print('after gc')\n")
    events: list[dict[str, Any]] = []
    second = build(image, on_event=events.append)
    print(f"stem blobs collected: {second.path_reason}")
    assert [e["uri"] for e in events if e.get("event") == "parent_pushed"] == [first.stem_uri]
    assert f"the stem {first.stem_uri} was rebuilt: the registry lacks 1 of its blobs" in (
        second.path_reason
    )
    assert gone in second.path_reason
    assert (second.path, second.status) == ("fast", "pushed")
    assert registry_state(second.stem_uri or "")[1] == []
    assert registry_state(second.uri) == (second.manifest_digest, [])
    assert runs(infra, second.uri, "cat /gc.txt; python3 /app/src/app.py") == "gc\nafter gc\n"


def manifest_of(uri: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        async with create_registry_client(load_settings()) as client:
            _, body, _ = await client.get_manifest(uri)
            value: dict[str, Any] = json.loads(body)
            return value

    return anyio.run(get)
