"""Tests for registry/append.py and the client's write calls: the config edit rules, a fake
Distribution API that refuses what real registries refuse, and real registries (docker)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from e2e_support import docker, pull_fresh, run_id
from infra import Infra
from private_registry import PrivateRegistry, private_registry
from registry_fakes import FakeRegistry, image_manifest, layer_blob, new_layer, sha256

from imaged.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
    is_transient,
)
from imaged.registry.append import (
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    ConfigEdit,
    HistoryEntry,
    NewLayer,
    append_layers,
    apply_env,
    edit_config,
    encode_json,
    resolve_workdir,
)
from imaged.registry.client import Existence, RegistryClient

pytestmark = pytest.mark.anyio

STEM_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2026-01-01T00:00:00Z",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Entrypoint": ["/bin/app"],
        "Cmd": ["serve"],
        "WorkingDir": "/srv",
        "Labels": {"keep": "yes", "dev.imaged.digest": "sha256:stem"},
    },
    "history": [{"created_by": "stem layer"}],
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("env", "pairs", "expected"),
    [
        pytest.param(["A=1"], [("B", "2")], ["A=1", "B=2"], id="append"),
        pytest.param(["A=1", "B=2"], [("A", "3")], ["A=3", "B=2"], id="replace-in-place"),
        pytest.param([], [("A", "1"), ("A", "2")], ["A=2"], id="later-wins"),
        pytest.param(["AB=1"], [("A", "x=y")], ["AB=1", "A=x=y"], id="prefix-is-not-a-match"),
        pytest.param(["a=1"], [("A", "2")], ["a=1", "A=2"], id="case-sensitive"),
    ],
)
def test_apply_env(env: list[str], pairs: list[tuple[str, str]], expected: list[str]) -> None:
    assert apply_env(env, pairs) == expected


@pytest.mark.parametrize(
    ("current", "requested", "expected"),
    [
        pytest.param("", "/app", "/app", id="absolute"),
        pytest.param("/srv", "/app/", "/app", id="trailing-slash"),
        pytest.param("/srv", "app", "/srv/app", id="relative"),
        pytest.param("", "app", "/app", id="relative-to-root"),
        pytest.param("/srv/a", "../b", "/srv/b", id="dotdot"),
        pytest.param("/", "//x//y", "/x/y", id="double-slashes"),
    ],
)
def test_resolve_workdir(current: str, requested: str, expected: str) -> None:
    assert resolve_workdir(current, requested) == expected


def test_edit_config_keeps_the_rest_and_appends() -> None:
    layer = new_layer({"app/main.py": b"print(1)\n"})
    edit = ConfigEdit(
        env=[("LANG", "C.UTF-8"), ("APP", "1")],
        workdir="/app",
        labels={"dev.imaged.digest": "sha256:new"},
    )
    new = edit_config(
        STEM_CONFIG | {"rootfs": {"type": "layers", "diff_ids": ["d0"]}}, [layer], edit
    )
    assert new["rootfs"]["diff_ids"] == ["d0", layer.diff_id]
    assert new["config"]["Env"] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "APP=1"]
    assert new["config"]["WorkingDir"] == "/app"
    assert new["config"]["Labels"] == {"keep": "yes", "dev.imaged.digest": "sha256:new"}
    assert new["config"]["Entrypoint"] == ["/bin/app"]
    assert new["config"]["Cmd"] == ["serve"]
    assert new["created"] == "2026-01-01T00:00:00Z"
    assert new["history"][1:] == [
        {"created_by": "COPY layers/1/ /app/ # buildkit", "comment": "buildkit.dockerfile.v0"},
        {
            "created_by": "ENV LANG=C.UTF-8 APP=1",
            "comment": "buildkit.dockerfile.v0",
            "empty_layer": True,
        },
        {"created_by": "WORKDIR /app", "comment": "buildkit.dockerfile.v0", "empty_layer": True},
        {
            "created_by": "LABEL dev.imaged.digest=sha256:new",
            "comment": "buildkit.dockerfile.v0",
            "empty_layer": True,
        },
    ]
    assert STEM_CONFIG["config"]["Env"] == ["PATH=/usr/bin:/bin", "LANG=C"]  # not changed


def test_history_must_match_the_layers() -> None:
    layer = new_layer({"a": b"a"})
    edit = ConfigEdit(history=[HistoryEntry("ENV A=1", empty_layer=True)])
    with pytest.raises(ValueError, match="0 entries with a layer for 1 layers"):
        edit_config(STEM_CONFIG, [layer], edit)


@pytest.mark.parametrize(
    ("media_type", "layer_type"),
    [
        pytest.param(DOCKER_MANIFEST, DOCKER_LAYER, id="docker-v2"),
        pytest.param(OCI_MANIFEST, OCI_LAYER, id="oci"),
    ],
)
async def test_append_to_a_manifest(media_type: str, layer_type: str) -> None:
    fake = FakeRegistry()
    fake.put_image("base", "stem", media_type, STEM_CONFIG)
    layer = new_layer({"app/main.py": b"print(1)\n"})
    edit = ConfigEdit(env=[("A", "1")], workdir="/app")
    async with fake.client() as client:
        pushed = await append_layers(
            client, fake.ref("base", "stem"), fake.ref("app", "v1"), [layer], edit
        )
        again = await append_layers(
            client, fake.ref("base", "stem"), fake.ref("app", "v2"), [layer], edit
        )
    mt, body = fake.manifests[("app", "v1")]
    manifest = json.loads(body)
    assert mt == media_type == manifest["mediaType"] == pushed.media_type
    assert pushed.digest == sha256(body) == again.digest  # deterministic
    assert manifest["layers"][-1] == {
        "mediaType": layer_type,
        "digest": layer.digest,
        "size": layer.size,
    }
    config = json.loads(fake.blobs[("app", manifest["config"]["digest"])])
    assert config["config"]["Env"][-1] == "A=1"
    assert {b.how for b in pushed.blobs} == {"mounted", "uploaded"}
    assert {b.how for b in again.blobs} == {"present"}
    assert pushed.uploaded_bytes == layer.size + manifest["config"]["size"]


async def test_same_repository_sends_only_the_tail() -> None:
    fake = FakeRegistry()
    fake.put_image("app", "stem", OCI_MANIFEST, STEM_CONFIG)
    layer = new_layer({"f": b"x"})
    async with fake.client() as client:
        pushed = await append_layers(
            client, fake.ref("app", "stem"), fake.ref("app", "v1"), [layer], ConfigEdit()
        )
    assert [b.how for b in pushed.blobs] == ["present", "uploaded", "uploaded"]
    assert len(fake.calls("HEAD")) == 2  # the tail layer and the config; the stem's is known
    assert ("app", "v1") in fake.manifests


async def test_refused_mount_falls_back_to_copy_and_upload() -> None:
    fake = FakeRegistry(mounts=False)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    layer = new_layer({"f": b"x"})
    async with fake.client() as client:
        pushed = await append_layers(
            client, fake.ref("base", "stem"), fake.ref("app", "v1"), [layer], ConfigEdit()
        )
    hows = {b.digest: b.how for b in pushed.blobs}
    assert hows[layer.digest] == "uploaded"
    assert "copied" in hows.values()  # the stem's layer, read from its repository
    assert len(fake.calls("DELETE")) == 1  # the upload the refused mount opened is cancelled
    assert fake.uploads == {}
    assert ("app", "v1") in fake.manifests


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(405, "UNSUPPORTED", id="405"),
        pytest.param(404, "NAME_UNKNOWN", id="404"),
        pytest.param(400, "UNSUPPORTED", id="400-unsupported"),
    ],
)
async def test_a_mount_answered_with_an_error_falls_back_to_copy(status: int, code: str) -> None:
    """Some registries answer a mount POST with an error, not 202: the blob is copied."""

    def refuse_mounts(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and "mount" in request.url.params:
            return httpx.Response(status, json={"errors": [{"code": code}]})
        return None

    fake = FakeRegistry(fail=refuse_mounts)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    layer = new_layer({"f": b"x"})
    async with fake.client() as client:
        pushed = await append_layers(
            client, fake.ref("base", "stem"), fake.ref("app", "v1"), [layer], ConfigEdit()
        )
    hows = {b.digest: b.how for b in pushed.blobs}
    assert hows[layer.digest] == "uploaded"
    assert "copied" in hows.values()  # the stem's layer, read from its repository
    assert ("app", "v1") in fake.manifests


async def test_a_stem_blob_corrupted_on_copy_is_an_error_and_no_manifest_is_put() -> None:
    fake = FakeRegistry(mounts=False)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    manifest = json.loads(fake.manifests[("base", "stem")][1])
    stem_layer = manifest["layers"][0]["digest"]
    fake.blobs[("base", stem_layer)] = b"rotten"
    async with fake.client() as client:
        with pytest.raises(RegistryError, match=f"sent blob {stem_layer} of base whose bytes"):
            await append_layers(
                client, fake.ref("base", "stem"), fake.ref("app", "v1"), [], ConfigEdit()
            )
    assert ("app", stem_layer) not in fake.blobs
    assert not [p for p in fake.calls("PUT") if "/manifests/" in p]


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-location", "absolute-location"])
async def test_refused_monolithic_upload_falls_back_to_chunks(absolute: bool) -> None:
    fake = FakeRegistry(monolithic=False, absolute_location=absolute)
    data = bytes(range(256)) * 40  # 10 KiB: three chunks of 4 KiB
    digest = sha256(data)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    async with fake.client() as client:
        how = await client.upload_blob(
            fake.ref("app", "x"), digest, stream, len(data), chunk_size=4096
        )
    assert how == "chunked"
    assert fake.blobs[("app", digest)] == data
    assert len(fake.calls("PATCH")) == 3


@pytest.mark.parametrize("status", [400, 415], ids=["400-manifest-invalid", "415"])
async def test_forbidden_media_type_is_an_error_naming_it(status: int) -> None:
    fake = FakeRegistry(forbid=frozenset({OCI_MANIFEST}), forbid_status=status)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    async with fake.client() as client:
        with pytest.raises(RegistryError) as caught:
            await append_layers(
                client,
                fake.ref("base", "stem"),
                fake.ref("app", "v1"),
                [new_layer({"f": b"x"})],
                ConfigEdit(),
            )
    message = str(caught.value)
    assert f"refused manifest media type {OCI_MANIFEST}" in message
    assert OCI_LAYER in message
    assert f"HTTP {status}" in message
    assert not is_transient(caught.value)


async def test_token_scopes_push_on_the_target_and_pull_on_the_mount_source() -> None:
    scopes: list[list[str]] = []

    def token_auth(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "auth.example.com":
            scopes.append(request.url.params.get_list("scope"))
            token = " ".join(scopes[-1])
            return httpx.Response(200, json={"token": token, "expires_in": 300})
        if request.headers.get("authorization", "").startswith("Bearer "):
            return None
        challenge = 'Bearer realm="https://auth.example.com/token",service="fake"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    fake = FakeRegistry(fail=token_auth)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    async with fake.client() as client:
        pushed = await append_layers(
            client,
            fake.ref("base", "stem"),
            fake.ref("app", "v1"),
            [new_layer({"f": b"x"})],
            ConfigEdit(),
        )
    assert "mounted" in {b.how for b in pushed.blobs}
    assert ["repository:app:pull,push", "repository:base:pull"] in scopes
    assert ["repository:app:pull,push"] in scopes
    assert ["repository:base:pull"] in scopes
    assert ("app", "v1") in fake.manifests


async def test_503_mid_upload_is_transient_and_no_manifest_is_put() -> None:
    def fail(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path:
            return httpx.Response(
                503, json={"errors": [{"code": "UNAVAILABLE", "message": "busy"}]}
            )
        return None

    fake = FakeRegistry(fail=fail)
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    layer = new_layer({"f": b"x"})
    async with fake.client() as client:
        with pytest.raises(RegistryUnavailable) as caught:
            await append_layers(
                client, fake.ref("base", "stem"), fake.ref("app", "v1"), [layer], ConfigEdit()
            )
    assert is_transient(caught.value)
    assert f"HTTP 503 UNAVAILABLE: busy for the upload of blob {layer.digest} in app" in str(
        caught.value
    )
    assert not [p for p in fake.calls("PUT") if "/manifests/" in p]


async def test_a_missing_stem_is_not_found() -> None:
    fake = FakeRegistry()
    async with fake.client() as client:
        with pytest.raises(RegistryNotFound, match="manifest stem in base not found"):
            await append_layers(
                client, fake.ref("base", "stem"), fake.ref("app", "v1"), [], ConfigEdit()
            )


async def test_get_manifest_checks_the_digest() -> None:
    fake = FakeRegistry()
    fake.put_image("base", "stem", OCI_MANIFEST, STEM_CONFIG)
    wrong = "sha256:" + "0" * 64
    fake.manifests[("base", wrong)] = fake.manifests[("base", "stem")]
    async with fake.client() as client:
        with pytest.raises(RegistryError, match=f"whose bytes have digest sha256:.* not {wrong}"):
            await client.get_manifest(f"{fake.host}/base@{wrong}")


async def test_get_blob_checks_the_digest() -> None:
    fake = FakeRegistry()
    digest = sha256(b"right")
    fake.blobs[("app", digest)] = b"wrong"
    async with fake.client() as client:
        with pytest.raises(
            RegistryError, match=f"sent blob {digest} of app whose bytes have digest"
        ):
            await client.get_blob(fake.ref("app", "x"), digest)


async def test_layer_media_type_must_match_the_stem() -> None:
    fake = FakeRegistry()
    fake.put_image("base", "stem", DOCKER_MANIFEST, STEM_CONFIG)
    blob = new_layer({"f": b"x"})
    layer = NewLayer(blob.digest, blob.size, blob.diff_id, blob.data, "x", media_type=OCI_LAYER)
    async with fake.client() as client:
        with pytest.raises(ValueError, match=f"its layers are {DOCKER_LAYER}"):
            await append_layers(
                client, fake.ref("base", "stem"), fake.ref("app", "v1"), [layer], ConfigEdit()
            )
    assert not fake.calls("PUT")


async def test_append_to_an_index() -> None:
    fake = FakeRegistry()
    digests = [
        fake.put_image("base", arch, OCI_MANIFEST, STEM_CONFIG | {"architecture": arch})
        for arch in ("amd64", "arm64")
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": d,
                "size": 1,
                "platform": {"os": "linux", "architecture": a},
            }
            for d, a in zip(digests, ("amd64", "arm64"), strict=True)
        ],
    }
    body = json.dumps(index).encode()
    fake.manifests[("base", "multi")] = (OCI_INDEX, body)
    layer = new_layer({"f": b"x"})
    async with fake.client() as client:
        pushed = await append_layers(
            client, fake.ref("base", "multi"), fake.ref("app", "v1"), [layer], ConfigEdit()
        )
    mt, new_body = fake.manifests[("app", "v1")]
    new_index = json.loads(new_body)
    assert mt == OCI_INDEX
    assert pushed.digest == sha256(new_body)
    assert [m["platform"]["architecture"] for m in new_index["manifests"]] == ["amd64", "arm64"]
    for entry in new_index["manifests"]:
        child = json.loads(fake.manifests[("app", entry["digest"])][1])
        assert child["layers"][-1]["digest"] == layer.digest
        config = json.loads(fake.blobs[("app", child["config"]["digest"])])
        assert config["architecture"] == entry["platform"]["architecture"]
        assert config["rootfs"]["diff_ids"][-1] == layer.diff_id
    assert [p for p in fake.calls("PUT") if "/manifests/" in p][
        -1
    ] == "/v2/app/manifests/v1"  # the tag last
    assert [b.how for b in pushed.blobs].count("uploaded") == 3  # one layer, two configs


# ---------------------------------------------------------------- real registries (docker)


async def push_stem(
    client: RegistryClient, ref: str, *, media_type: str = OCI_MANIFEST, arch: str = "amd64"
) -> str:
    """Push a one-layer image (no binaries) to `ref` with the client itself; its digest."""
    blob, diff_id = layer_blob({"stem.txt": f"stem {arch}\n".encode()})
    config = STEM_CONFIG | {
        "architecture": arch,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_body = encode_json(config)
    for data in (blob, config_body):
        await client.upload_blob(ref, sha256(data), data, len(data))
    body = encode_json(image_manifest(media_type, config_body, [blob]))
    return await client.put_manifest(ref, media_type, body)


def tail_edit() -> ConfigEdit:
    return ConfigEdit(
        env=[("GREETING", "hi there"), ("PATH", "/app/bin:/usr/local/bin:/usr/bin:/bin")],
        workdir="/app",
        labels={"dev.imaged.digest": "sha256:" + "1" * 64},
    )


def skopeo_json(*args: str) -> Any:
    done = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_real_append_to_the_debian_base_runs(infra: Infra) -> None:
    target = f"{infra.registry}/append-{run_id()}"
    layer = new_layer({"app/hello.txt": b"hello from the tail\n"})
    async with RegistryClient() as client:
        pushed = await append_layers(
            client, infra.debian_base, f"{target}:v1", [layer], tail_edit()
        )
        again = await append_layers(client, infra.debian_base, f"{target}:v2", [layer], tail_edit())
    hows = {b.digest: b.how for b in pushed.blobs}
    assert hows.pop(layer.digest) == "uploaded"
    assert sorted(hows.values()) == ["mounted", "uploaded"]  # the base layer, the config
    assert {b.how for b in again.blobs} == {"present"}
    assert again.digest == pushed.digest
    uri = f"{target}:v1"
    try:
        pull_fresh(infra.docker_cli, uri, env=infra.docker_env())
        out = docker(
            infra.docker_cli,
            "run",
            "--rm",
            uri,
            "sh",
            "-c",
            'cat hello.txt; echo "$GREETING:$PWD"',
            env=infra.docker_env(),
        ).stdout
    finally:
        docker(infra.docker_cli, "rmi", "-f", uri, check=False, env=infra.docker_env())
    assert out == "hello from the tail\nhi there:/app\n"
    config = skopeo_json("--config", f"docker://{uri}")
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["Env"] == [
        "PATH=/app/bin:/usr/local/bin:/usr/bin:/bin",
        "GREETING=hi there",
    ]
    assert config["config"]["Labels"] == {"dev.imaged.digest": "sha256:" + "1" * 64}
    assert config["history"][-4]["created_by"] == "COPY layers/1/ /app/ # buildkit"


async def test_real_append_with_basic_auth(infra: Infra, docker_config_dir: Path) -> None:
    repo = f"{infra.auth_registry}/append-auth-{run_id()}"
    layer = new_layer({"app/hello.txt": b"authorised\n"})
    async with RegistryClient(docker_config_dir=docker_config_dir) as client:
        await push_stem(client, f"{repo}-stem:s", media_type=DOCKER_MANIFEST)
        pushed = await append_layers(client, f"{repo}-stem:s", f"{repo}:v1", [layer], tail_edit())
    creds = f"{infra.auth_user}:{infra.auth_password}"
    raw = skopeo_json("--raw", "--creds", creds, f"docker://{repo}:v1")
    assert raw["mediaType"] == DOCKER_MANIFEST
    assert [la["mediaType"] for la in raw["layers"]] == [DOCKER_LAYER, DOCKER_LAYER]
    assert "mounted" in {b.how for b in pushed.blobs}
    config = skopeo_json("--config", "--creds", creds, f"docker://{repo}:v1")
    assert config["config"]["Entrypoint"] == ["/bin/app"]
    assert config["config"]["Cmd"] == ["serve"]


async def test_real_append_without_credentials_is_refused(infra: Infra) -> None:
    async with RegistryClient(docker_config_dir=Path("/nonexistent")) as client:
        with pytest.raises(
            RegistryAuthError, match=f"no credentials were found for {infra.auth_registry}"
        ):
            await append_layers(
                client,
                f"{infra.auth_registry}/none:s",
                f"{infra.auth_registry}/none:v1",
                [],
                ConfigEdit(),
            )


class RefuseMonolithic(httpx.AsyncBaseTransport):
    """The real transport, except that a PUT that carries a blob's bytes is answered 405."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.patches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        carries = int(request.headers.get("content-length") or 0) > 0
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path and carries:
            return httpx.Response(405, request=request)
        self.patches += request.method == "PATCH"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RefuseMounts(httpx.AsyncBaseTransport):
    """The real transport, except that a mount request loses its `mount` and `from`: the
    registry opens an upload instead (202), as one that refuses mounts does."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.deletes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "mount" in request.url.params:
            request.url = request.url.copy_with(query=None)
        self.deletes += request.method == "DELETE"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_real_refused_mount_streams_the_stem_blob(infra: Infra) -> None:
    transport = RefuseMounts()
    repo = f"{infra.registry}/append-nomount-{run_id()}"
    layer = new_layer({"app/hello.txt": b"copied\n"})
    async with RegistryClient(transport=transport) as client:
        await push_stem(client, f"{repo}-stem:s")
        pushed = await append_layers(client, f"{repo}-stem:s", f"{repo}:v1", [layer], tail_edit())
    assert sorted(b.how for b in pushed.blobs) == ["copied", "uploaded", "uploaded"]
    assert transport.deletes == 1  # the upload the registry opened instead was cancelled
    config = skopeo_json("--config", f"docker://{repo}:v1")
    assert config["rootfs"]["diff_ids"][-1] == layer.diff_id


async def test_real_chunked_upload_when_monolithic_is_refused(infra: Infra) -> None:
    transport = RefuseMonolithic()
    ref = f"{infra.registry}/append-chunked-{run_id()}:x"
    data = os.urandom(300_000)
    async with RegistryClient(transport=transport) as client:
        how = await client.upload_blob(ref, sha256(data), data, len(data), chunk_size=128 << 10)
        assert await client.get_blob(ref, sha256(data)) == data
    assert how == "chunked"
    assert transport.patches == 3


@pytest.fixture
def own_registry(infra: Infra, tmp_path: Path) -> Iterator[PrivateRegistry]:
    """A registry of this test's own, which it may kill (the infra marks the test docker)."""
    with private_registry(tmp_path / "registry") as registry:
        yield registry


async def test_registry_killed_mid_upload_leaves_no_manifest(own_registry: PrivateRegistry) -> None:
    reg = own_registry.address
    chunk, count = os.urandom(1 << 20), 50  # 50 MiB, streamed slowly
    hasher = hashlib.sha256()
    for _ in range(count):
        hasher.update(chunk)
    digest = "sha256:" + hasher.hexdigest()

    async def slowly() -> AsyncIterator[bytes]:
        for index in range(count):
            if index == 8:
                own_registry.kill()  # 8 MiB in: as a crash would
            yield chunk
            await anyio.sleep(0.002)

    small = new_layer({"app/a.txt": b"a"})
    big = NewLayer(
        digest, len(chunk) * count, "sha256:" + "2" * 64, slowly, "COPY big /big # buildkit"
    )
    async with RegistryClient() as client:
        await push_stem(client, f"{reg}/app:stem")
        with pytest.raises(RegistryUnavailable) as caught:
            await append_layers(
                client, f"{reg}/app:stem", f"{reg}/app:v1", [small, big], tail_edit()
            )
    assert is_transient(caught.value)
    assert f"registry {reg} is unreachable" in str(caught.value)
    assert f"the upload of blob {digest} to app did not complete" in str(caught.value)
    own_registry.start()
    async with RegistryClient() as client:
        assert await client.manifest_exists(f"{reg}/app:v1") is Existence.MISSING
        assert await client.blob_exists(f"{reg}/app", digest) is Existence.MISSING
        assert await client.blob_exists(f"{reg}/app", small.digest) is Existence.EXISTS
        assert await client.manifest_exists(f"{reg}/app:stem") is Existence.EXISTS


@pytest.mark.parametrize(
    ("index_type", "child_type", "layer_type"),
    [
        pytest.param(OCI_INDEX, OCI_MANIFEST, OCI_LAYER, id="oci-index"),
        pytest.param(DOCKER_LIST, DOCKER_MANIFEST, DOCKER_LAYER, id="docker-manifest-list"),
    ],
)
async def test_real_append_to_an_index(
    infra: Infra, own_registry: PrivateRegistry, index_type: str, child_type: str, layer_type: str
) -> None:
    reg = own_registry.address
    archs = ("amd64", "arm64")
    layer = new_layer({"app/hello.txt": b"every platform\n"})
    async with RegistryClient() as client:
        children = [
            await push_stem(client, f"{reg}/base:{arch}", media_type=child_type, arch=arch)
            for arch in archs
        ]
        entries = []
        for arch, digest in zip(archs, children, strict=True):
            _, body, _ = await client.get_manifest(f"{reg}/base@{digest}")
            platform = {"architecture": arch, "os": "linux"}
            entries.append(
                {"mediaType": child_type, "digest": digest, "size": len(body), "platform": platform}
            )
        index = {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}
        await client.put_manifest(f"{reg}/base:multi", index_type, encode_json(index))
        pushed = await append_layers(
            client, f"{reg}/base:multi", f"{reg}/app:v1", [layer], tail_edit()
        )
    raw = skopeo_json("--raw", f"docker://{reg}/app:v1")
    assert raw["mediaType"] == index_type
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == list(archs)
    assert [m["digest"] for m in raw["manifests"]] == list(pushed.manifests)
    for arch in archs:
        config = skopeo_json("--config", "--override-arch", arch, f"docker://{reg}/app:v1")
        assert config["architecture"] == arch
        assert config["rootfs"]["diff_ids"][-1] == layer.diff_id
        assert config["config"]["WorkingDir"] == "/app"
        child = skopeo_json(
            "--raw",
            "--override-arch",
            arch,
            f"docker://{reg}/app@{pushed.manifests[archs.index(arch)]}",
        )
        assert child["layers"][-1] == {
            "mediaType": layer_type,
            "digest": layer.digest,
            "size": layer.size,
        }
    uri = f"{reg}/app:v1"
    try:  # the engine checks each layer's diff_id against the config when it pulls
        pull_fresh(infra.docker_cli, uri, env=infra.docker_env())
    finally:
        docker(infra.docker_cli, "rmi", "-f", uri, check=False, env=infra.docker_env())
