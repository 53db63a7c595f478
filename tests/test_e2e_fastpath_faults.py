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
            _, body, digest = await client.get_manifest(ref, accept=STEM_MEDIA_TYPES)
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
        assert patches  # each body refused once, then sent in chunks
        assert {(s.method, st) for s, st, _ in proxy.refused} == {("PUT", 405)}
    else:
        assert patches == []
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


@pytest.mark.parametrize("new_process", [False, True])
def test_a_stem_whose_blobs_were_collected_is_rebuilt(
    infra: Any,
    registry: PrivateRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_process: bool,
) -> None:
    """The same process finds it at the manifest PUT; a new one when it first reads the
    stem (its blobs asked for before anything is pushed)."""
    import shutil

    from imaged.pipeline import fastpath

    src = tree(tmp_path / "src")
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"fpfault-gc{int(new_process)}-{RUN}", registry=registry.address)
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
    if new_process:
        for name in ("_STEMS", "_KNOWN", "_STEM_CHECKED", "_PRESENT", "_INDEXES"):
            monkeypatch.setattr(fastpath, name, type(getattr(fastpath, name))())
    events: list[dict[str, Any]] = []
    second = build(image, on_event=events.append)
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


# 5. A two-platform stem --------------------------------------------------------------------


def owned_app_layer() -> tuple[bytes, str]:
    """A layer holding only ``app/``, 0700 1000:1000 (gzip blob, diff_id)."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("app/")
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o700, 1000, 1000
        tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0), "sha256:" + hashlib.sha256(data).hexdigest()


def make_two_platform(stem_uri: str, *, arm_owns_app: bool) -> dict[str, str]:
    """Replace the stem's tag with a Docker manifest list: its own manifest as linux/amd64,
    and one for linux/arm64/v8 (the same layers, plus ``/app`` 0700 1000:1000 when
    ``arm_owns_app``). Returns platform -> manifest digest."""
    from imaged.registry.append import DOCKER_LAYER, DOCKER_LIST, encode_json

    def sha(body: bytes) -> str:
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def run() -> dict[str, str]:
        async with create_registry_client(load_settings()) as client:
            ref = ImageRef.parse(stem_uri)
            media_type, body, amd = await client.get_manifest(ref)
            assert media_type == DOCKER_MANIFEST
            manifest = json.loads(body)
            config = json.loads(await client.get_blob(ref, manifest["config"]["digest"]))
            config |= {"architecture": "arm64", "variant": "v8"}
            if arm_owns_app:
                blob, diff_id = owned_app_layer()
                await client.upload_blob(ref, sha(blob), blob, len(blob))
                layer = {"mediaType": DOCKER_LAYER, "digest": sha(blob), "size": len(blob)}
                manifest["layers"].append(layer)
                config["rootfs"]["diff_ids"].append(diff_id)
                config["history"].append({"created_by": "test: /app 0700 1000:1000"})
            config_body = encode_json(config)
            await client.upload_blob(ref, sha(config_body), config_body, len(config_body))
            manifest["config"] |= {"digest": sha(config_body), "size": len(config_body)}
            arm_body = encode_json(manifest)
            arm = await client.put_manifest(
                replace(ref, tag=None, digest=sha(arm_body)), media_type, arm_body
            )
            index = {
                "schemaVersion": 2,
                "mediaType": DOCKER_LIST,
                "manifests": [
                    {
                        "mediaType": media_type,
                        "digest": amd,
                        "size": len(body),
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": media_type,
                        "digest": arm,
                        "size": len(arm_body),
                        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    },
                ],
            }
            await client.put_manifest(ref, DOCKER_LIST, encode_json(index))
            return {"linux/amd64": amd, "linux/arm64/v8": arm}

    return anyio.run(run)


def config_of(uri: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        async with create_registry_client(load_settings()) as client:
            _, body, _ = await client.get_manifest(uri)
            digest = json.loads(body)["config"]["digest"]
            value: dict[str, Any] = json.loads(await client.get_blob(uri, digest))
            return value

    return anyio.run(get)


def multi_image(infra: Any, registry: PrivateRegistry, what: str, src: Path) -> Image:
    return (
        Image.from_base(infra.debian_base)
        .clone(name=f"fpfault-{what}-{RUN}", registry=registry.address)
        .with_commands(["echo multi > /multi.txt"])
        .with_source_folder(src, "/app")
        .with_env_vars({"MODE": "multi"})
    )


def test_a_two_platform_stem_gets_the_tail_on_each_platform(
    infra: Any, registry: PrivateRegistry, tmp_path: Path
) -> None:
    src = tree(tmp_path / "src")
    image = multi_image(infra, registry, "multi", src)
    first = build(image)
    assert (first.path, first.status) == ("fast", "pushed")
    stem_uri = first.stem_uri or ""
    stems = make_two_platform(stem_uri, arm_owns_app=False)
    (src / "app.py").write_text("print('multi')\n")
    second = build(image)
    assert (second.path, second.status) == ("fast", "pushed"), second.path_reason
    index = manifest_of(second.uri)
    platforms = {
        "/".join(
            filter(
                None,
                (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")),
            )
        ): m["digest"]
        for m in index["manifests"]
    }
    assert platforms.keys() == stems.keys()
    tails = []
    for platform, digest in platforms.items():
        mine, theirs = on_digest(second.uri, digest), on_digest(stem_uri, stems[platform])
        layers, stem_layers = manifest_of(mine)["layers"], manifest_of(theirs)["layers"]
        assert layers[: len(stem_layers)] == stem_layers
        tails.append(layers[len(stem_layers) :])
        config, stem_config = config_of(mine), config_of(theirs)
        assert config["architecture"] == stem_config["architecture"]
        assert config.get("variant") == stem_config.get("variant")
        n = len(stem_config["rootfs"]["diff_ids"])
        assert config["rootfs"]["diff_ids"][:n] == stem_config["rootfs"]["diff_ids"]
        assert len(config["rootfs"]["diff_ids"]) == n + len(tails[-1])
        assert "MODE=multi" in config["config"]["Env"]
        assert config["config"]["Labels"]["dev.imaged.digest"] == second.digest
    assert tails[0] == tails[1]
    assert len(tails[0]) >= 1
    amd = on_digest(second.uri, platforms["linux/amd64"])
    assert runs(infra, amd, "cat /multi.txt; python3 /app/src/app.py; echo $MODE") == (
        "multi\nmulti\nmulti\n"
    )
    assert registry_state(second.uri) == (second.manifest_digest, [])


def on_digest(uri: str, digest: str) -> str:
    ref = ImageRef.parse(uri)
    return str(replace(ref, tag=None, digest=digest))


def test_a_two_platform_stem_whose_platforms_differ_on_the_tail_takes_the_full_build(
    infra: Any, registry: PrivateRegistry, tmp_path: Path
) -> None:
    src = tree(tmp_path / "src")
    image = multi_image(infra, registry, "multidiff", src)
    first = build(image)
    assert first.path == "fast"
    make_two_platform(first.stem_uri or "", arm_owns_app=True)
    (src / "app.py").write_text("print('differ')\n")
    second = build(image)
    assert second.path == "full"
    assert second.path_reason == (
        f"the platforms of stem {first.stem_uri} differ on the tail's paths: /app is absent "
        "against dir 0700 1000:1000 on linux/amd64 and linux/arm64/v8; the full build "
        "follows each as BuildKit does"
    )
    assert second.status == "pushed"
    assert runs(infra, second.uri, "python3 /app/src/app.py") == "differ\n"
