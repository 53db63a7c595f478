"""The fast path's tail writer, without a registry: layers, config edit, re-hash on a race."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from registry_fakes import FakeRegistry, new_layer

from imaged import Image
from imaged.config import load_settings
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.pipeline.build import ImageBuild, _Fast, _Staging
from imaged.pipeline.fastpath import (
    FullBuildNeeded,
    Tail,
    push_tail,
    resolve_user,
    tail_roots,
    workdir_owner,
    write_tail,
)
from imaged.pipeline.route import route
from imaged.pipeline.stemfs import StemEntry
from imaged.registry.append import DOCKER_MANIFEST, HistoryEntry
from imaged.registry.ref import ImageRef

BASE = "127.0.0.1:5000/python:3.11-slim"


def app(tmp_path: Path) -> Image:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    # Unique content: a member the process-wide cache holds is not read again.
    (src / "pkg" / "a.py").write_text(f"A = 1  # {uuid.uuid4().hex}\n")
    return (
        Image.from_base(BASE)
        .clone(name="app", registry="127.0.0.1:5000")
        .with_env_vars({"A": "1"})
        .with_workdir("/srv")
        .with_source_folder(src, "rel")  # relative: under the workdir
        .with_workdir("/opt/app")
    )


def rows(data: bytes) -> dict[str, tuple[int, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {i.name.rstrip("/"): (i.mode & 0o7777, i.uid, i.gid) for i in tar}


def test_the_tail_layers_and_config_edit(tmp_path: Path) -> None:
    image = app(tmp_path)
    digest = hash_image(image, DigestCache())
    tail = route(image, load_settings()).tail
    assert tail_roots(tail, "/") == ["opt/app", "srv", "srv/rel/src"]
    known = {"srv": StemEntry("dir", 0o750, 5, 6), "opt": StemEntry("dir", 0o755, 0, 0)}
    out = write_tail(image, digest, tail, known, stem_workdir="/", split_bytes=8 << 20)
    workdir_srv, copy, workdir_opt = (rows(la.data) for la in out.layers)  # type: ignore[arg-type]
    assert workdir_srv == {}  # the stem has /srv: WORKDIR adds an empty layer
    assert copy["srv"] == (0o750, 5, 6)  # an existing parent keeps the stem's mode and owner
    assert copy["srv/rel/src/pkg/a.py"] == (0o644, 0, 0)
    assert workdir_opt == {"opt": (0o755, 0, 0), "opt/app": (0o755, 0, 0)}
    edit = out.edit(digest.digest)
    assert (edit.env, edit.workdir) == ((("A", "1"),), "/opt/app")
    assert edit.labels == {"dev.imaged.digest": digest.digest}
    assert [h.created_by for h in edit.history] == [
        'ENV A="1"',
        "WORKDIR /srv",
        "COPY layers/2/ rel/src/ # buildkit",
        "WORKDIR /opt/app",
        f"LABEL dev.imaged.digest={digest.digest}",
    ]


def test_a_file_where_a_folder_goes_is_a_full_build(tmp_path: Path) -> None:
    image = app(tmp_path)
    digest = hash_image(image, DigestCache())
    tail = route(image, load_settings()).tail
    with pytest.raises(
        FullBuildNeeded,
        match=r"layer 2 \(workdir /srv\) writes into /srv, which is a file in the stem",
    ):
        write_tail(
            image,
            digest,
            tail,
            {"srv": StemEntry("file", 0o644, 0, 0)},
            stem_workdir="/",
            split_bytes=1 << 20,
        )


def test_a_file_edited_after_hashing_is_hashed_again_and_said(tmp_path: Path) -> None:
    image = app(tmp_path)
    cache = DigestCache()
    first = hash_image(image, cache)
    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 2  # edited after the hash\n")
    events: list[dict[str, Any]] = []
    fast = _Fast(
        image,
        route(image, load_settings()),
        None,  # type: ignore[arg-type]  # writing needs no builder, no registry
        load_settings(),
        _Staging(cache, None, first),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        events.append,
    )
    result = ImageBuild(
        name="app", uri=image.uri_for(first.tag), tag=first.tag, digest=first.digest, status=""
    )

    async def write() -> Any:
        return await fast.write(first, {}, "/", result)

    digest, tail = anyio.run(write)
    assert digest.digest != first.digest
    assert result.tag == digest.tag
    assert [e["event"] for e in events] == ["rehashed"]
    assert (events[0]["old"], events[0]["new"]) == (first.tag, digest.tag)
    assert tail.layers


def test_a_layer_the_index_knows_is_written_only_when_its_bytes_are_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from imaged.pipeline import fastpath
    from imaged.render.layertar import MemberCache

    src = tmp_path / "big"
    token = uuid.uuid4().hex
    for i in range(200):
        (src / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 5}" / f"f{i:03d}.txt").write_text(f"{token} {i}\n" * 50)
    image = (
        Image.from_base(BASE).clone(name="big", registry="r:5000").with_source_folder(src, "/data")
    )
    tail = route(image, load_settings()).tail
    index = fastpath.LayerIndex(tmp_path / "state" / "layers.json")

    def written(idx: fastpath.LayerIndex) -> list[Any]:
        digest = hash_image(image, DigestCache())
        out = write_tail(image, digest, tail, {}, stem_workdir="/", split_bytes=16 << 10, index=idx)
        return out.layers

    first = written(index)
    assert len(first) > 3
    assert all(isinstance(la.data, bytes) for la in first)
    index.save()
    # A new process: an empty member cache, the index read back from disk.
    monkeypatch.setattr(fastpath, "MEMBERS", MemberCache())
    again = written(fastpath.LayerIndex(tmp_path / "state" / "layers.json"))
    assert [la.digest for la in again] == [la.digest for la in first]
    assert not any(isinstance(la.data, bytes) for la in again)

    async def bytes_of(source: Any) -> bytes:
        return b"".join([chunk async for chunk in source()])

    for layer in again[:2]:
        data = anyio.run(bytes_of, layer.data)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
        assert len(data) == layer.size
    (src / "d3" / "f003.txt").write_text("edited\n")
    edited = written(fastpath.LayerIndex(tmp_path / "state" / "layers.json"))
    assert sum(isinstance(la.data, bytes) for la in edited) == 1  # only the edited part


def test_a_blob_taken_as_there_but_gone_is_asked_about_and_sent_again() -> None:
    fake = FakeRegistry(check_blobs=True)
    fake.put_image("app", "stem", DOCKER_MANIFEST, {"config": {}})
    layer = new_layer({"app/main.py": f"print({uuid.uuid4().hex!r})\n".encode()})
    tail = Tail(layers=[layer], history=[HistoryEntry(layer.created_by)])
    stem = ImageRef.parse(fake.ref("app", "stem"))

    async def push(tag: str) -> int:
        async with fake.client() as client:
            target = ImageRef.parse(fake.ref("app", tag))
            pushed = await push_tail(client, stem, target, tail, "sha256:" + "0" * 64)
            return pushed.uploaded_bytes

    assert anyio.run(push, "v1") > layer.size  # the layer and the config
    heads = len(fake.calls("HEAD"))
    del fake.blobs[("app", layer.digest)]  # gone since (a garbage collection)
    assert anyio.run(push, "v2") > layer.size
    assert ("app", layer.digest) in fake.blobs
    assert ("app", "v2") in fake.manifests
    # not asked about on the first try (this process saw it there), then asked again
    assert fake.calls("HEAD")[heads:] == [f"/v2/app/blobs/{layer.digest}"]


def test_a_stem_kept_on_disk_is_read_back_only_while_its_digests_hold(tmp_path: Path) -> None:
    from imaged.pipeline import fastpath

    fake = FakeRegistry()
    digest = fake.put_image("app", f"stem-{uuid.uuid4().hex[:8]}", DOCKER_MANIFEST, {"a": 1})
    stem = ImageRef.parse(fake.ref("app", "stem"))

    async def read() -> dict[str, object]:
        fastpath._STEMS.clear()  # as a new process
        async with fake.client() as client:
            return (await fastpath.stem_image(client, stem, digest, tmp_path))[1]

    assert anyio.run(read)["a"] == 1
    gets = len(fake.calls("GET"))
    assert anyio.run(read)["a"] == 1
    assert len(fake.calls("GET")) == gets  # read back from the state directory
    (kept,) = (tmp_path / "stems").iterdir()
    kept.write_text(kept.read_text().replace('\\"a\\":1', '\\"a\\":2'))
    assert anyio.run(read)["a"] == 1  # bytes that lost their digest: read from the registry
    assert len(fake.calls("GET")) == gets + 2


def test_every_part_of_a_split_folder_keeps_the_stem_folders_mode_and_owner(
    tmp_path: Path,
) -> None:
    """The parts of a split folder each carry the folders above their entries; a folder
    the stem has (adopted with its mode and owner) is so in every part, not reset to
    0755 0:0 by the part that re-adds it."""
    src = tmp_path / "big"
    token = uuid.uuid4().hex
    for i in range(200):
        (src / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 5}" / f"f{i:03d}.txt").write_text(f"{token} {i}\n" * 50)
    image = (
        Image.from_base(BASE)
        .clone(name="split", registry="r:5000")
        .with_source_folder(src, "/app/data")
    )
    tail = route(image, load_settings()).tail
    known = {
        "app": StemEntry("dir", 0o700, 1000, 1000),
        "app/data": StemEntry("dir", 0o750, 7, 8),
        "app/data/big/d3": StemEntry("dir", 0o711, 9, 9),
    }
    digest = hash_image(image, DigestCache())
    out = write_tail(image, digest, tail, known, stem_workdir="/", split_bytes=16 << 10)
    parts = [rows(la.data) for la in out.layers]  # type: ignore[arg-type]
    assert len(parts) > 3
    for part in parts:
        assert part["app"] == (0o700, 1000, 1000)
        assert part["app/data"] == (0o750, 7, 8)
        assert part["app/data/big"] == (0o755, 0, 0)  # not in the stem: made by the COPY
        if "app/data/big/d3" in part:
            assert part["app/data/big/d3"] == (0o711, 9, 9)
    assert sum("app/data/big/d3" in part for part in parts) >= 2  # d3 is split too


# A WORKDIR under the stem's User ------------------------------------------------------

PASSWD = b"root:x:0:0:root:/root:/bin/bash\napp:x:1234:777::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\ngrp:x:777:\n"


@pytest.mark.parametrize(
    ("user", "owner"),
    [  # what BuildKit 20.10 made of each (a probe build, exported)
        ("app", (1234, 777)),
        ("1234", (1234, 1234)),  # a numeric user: gid the same number, not passwd's
        ("4321:88", (4321, 88)),
        ("app:root", (1234, 0)),
        ("root:grp", (0, 777)),
        ("4321:grp", (4321, 777)),
        ("nobody", None),
        ("app:nogroup", None),
    ],
)
def test_resolve_user(user: str, owner: tuple[int, int] | None) -> None:
    assert resolve_user(user, PASSWD, GROUP) == owner


def test_the_folders_a_workdir_makes_belong_to_the_owner_given(tmp_path: Path) -> None:
    image = app(tmp_path)
    digest = hash_image(image, DigestCache())
    tail = route(image, load_settings()).tail
    known = {"opt": StemEntry("dir", 0o751, 3, 4)}
    out = write_tail(
        image, digest, tail, known, stem_workdir="/", split_bytes=8 << 20, workdir_owner=(5, 6)
    )
    workdir_srv, copy, workdir_opt = (rows(la.data) for la in out.layers)  # type: ignore[arg-type]
    assert workdir_srv == {"srv": (0o755, 5, 6)}
    assert copy["srv"] == (0o755, 5, 6)  # the COPY's parent: the folder the WORKDIR made
    assert copy["srv/rel"] == (0o755, 0, 0)  # a COPY's missing parents are root's
    assert copy["srv/rel/src/pkg/a.py"] == (0o644, 0, 0)
    assert workdir_opt == {"opt": (0o751, 3, 4), "opt/app": (0o755, 5, 6)}  # only missing ones


def _user_stem(fake: Any, user: str, files: dict[str, bytes]) -> tuple[ImageRef, str]:
    from registry_fakes import image_manifest, layer_blob, sha256

    from imaged.registry.append import OCI_MANIFEST, encode_json

    blob, _ = layer_blob(files)
    config = encode_json({"config": {"User": user}, "rootfs": {"diff_ids": []}})
    fake.blobs[("app", sha256(blob))] = blob
    fake.blobs[("app", sha256(config))] = config
    body = encode_json(image_manifest(OCI_MANIFEST, config, [blob]))
    fake.manifests[("app", sha256(body))] = (OCI_MANIFEST, body)
    return ImageRef.parse(fake.ref("app", "stem")), sha256(body)


def _owner(fake: Any, stem: ImageRef, digest: str, user: str, image: Image, state: Path) -> Any:
    tail = route(image, load_settings()).tail
    config: dict[str, object] = {"config": {"User": user}}

    async def run() -> tuple[int, int]:
        async with fake.client() as client:
            return await workdir_owner(client, stem, digest, config, tail, state)

    return anyio.run(run)


def test_workdir_owner_reads_the_stems_accounts_only_for_a_name(tmp_path: Path) -> None:
    fake = FakeRegistry()
    stem, digest = _user_stem(fake, "app", {"etc/passwd": PASSWD, "etc/group": GROUP})
    image = app(tmp_path)
    assert _owner(fake, stem, digest, "app", image, tmp_path) == (1234, 777)
    assert any("/blobs/" in p for _, p in fake.log)  # the stem's layer read
    fake.log.clear()
    assert _owner(fake, stem, digest, "app:grp", image, tmp_path) == (1234, 777)  # read once
    assert _owner(fake, stem, digest, "99:7", image, tmp_path) == (99, 7)
    assert _owner(fake, stem, digest, "", image, tmp_path) == (0, 0)
    assert fake.log == []  # nothing to look up, nothing read
    with pytest.raises(FullBuildNeeded, match="User 'ghost' is not in its /etc/passwd"):
        _owner(fake, stem, digest, "ghost", image, tmp_path)


def test_a_tail_that_copies_an_account_file_takes_the_full_build(tmp_path: Path) -> None:
    fake = FakeRegistry()
    stem, digest = _user_stem(fake, "app", {"etc/passwd": PASSWD})
    (tmp_path / "passwd").write_bytes(PASSWD)
    image = app(tmp_path).with_source_file(tmp_path / "passwd", "/etc/")
    with pytest.raises(FullBuildNeeded, match="the tail copies into /etc, on /etc/passwd"):
        _owner(fake, stem, digest, "app", image, tmp_path)


def test_a_linked_account_file_takes_the_full_build(tmp_path: Path) -> None:
    fake = FakeRegistry()
    stem, digest = _user_stem(fake, "app", {"usr/passwd": PASSWD})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("etc/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "../usr/passwd"
        tar.addfile(info)
    from registry_fakes import image_manifest, sha256

    from imaged.registry.append import OCI_MANIFEST, encode_json

    manifest = json.loads(fake.manifests[("app", digest)][1])
    first = fake.blobs[("app", manifest["layers"][0]["digest"])]
    config = fake.blobs[("app", manifest["config"]["digest"])]
    fake.blobs[("app", sha256(raw.getvalue()))] = raw.getvalue()
    body = encode_json(image_manifest(OCI_MANIFEST, config, [first, raw.getvalue()]))
    fake.manifests[("app", sha256(body))] = (OCI_MANIFEST, body)
    with pytest.raises(FullBuildNeeded, match="/etc/passwd is not a plain file"):
        _owner(fake, stem, sha256(body), "app", app(tmp_path), tmp_path)


def test_the_stem_is_pinned_to_the_manifest_read_not_its_tag(tmp_path: Path) -> None:
    """The stem's tag re-pushed after the look-up: the tail still goes on the manifest the
    look-up read (repo@digest), never on a mix of two stems."""
    fake = FakeRegistry()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    image = (
        Image.from_base(BASE)
        .clone(name="app", registry=fake.host)
        .with_commands(["echo stem"])
        .with_source_folder(tmp_path / "src", "/app")
    )
    settings = load_settings()
    decision = route(image, settings)
    assert decision.stem is not None
    cache = DigestCache()
    stem_digest = hash_image(decision.stem, cache)
    first = fake.put_image("app", stem_digest.tag, DOCKER_MANIFEST, {"which": "first"})
    digest = hash_image(image, cache)
    result = ImageBuild(
        name="app", uri=image.uri_for(digest.tag), tag=digest.tag, digest=digest.digest, status=""
    )

    async def run() -> tuple[ImageRef, str, Any]:
        async with fake.client() as client:
            fast = _Fast(
                image,
                decision,
                None,  # type: ignore[arg-type]  # the stem is there: nothing is built
                settings,
                _Staging(cache, None, digest),
                client,
                client,
                None,
            )
            ref, manifest, _ = await fast.ensure_stem(False, result, stem_digest)
            fake.put_image("app", stem_digest.tag, DOCKER_MANIFEST, {"which": "second"})
            layer = new_layer({"app/main.py": b"print(1)\n"})
            tail = Tail(layers=[layer], history=[HistoryEntry(layer.created_by)])
            target = ImageRef.parse(result.uri)
            pushed = await push_tail(client, ref, target, tail, digest.digest)
            return ref, manifest, pushed

    ref, manifest, pushed = anyio.run(run)
    assert manifest == first
    _, body = fake.manifests[("app", digest.tag)]
    config_digest = json.loads(body)["config"]["digest"]
    assert json.loads(fake.blobs[("app", config_digest)])["which"] == "first"
    assert (ref.tag, ref.digest) == (None, first)
    assert pushed.image.digest == "sha256:" + hashlib.sha256(body).hexdigest()


def test_the_layer_index_is_keyed_on_the_compressor_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaged.pipeline import fastpath
    from imaged.render.layertar import folder_entry, layer_key, write_layer

    part = [folder_entry("opt"), folder_entry(f"opt/{uuid.uuid4().hex}")]
    index = fastpath.LayerIndex(tmp_path / "layers.json")
    blob = write_layer(part)
    index.put(layer_key(part), blob)
    index.save()
    again = fastpath.LayerIndex(tmp_path / "layers.json")
    assert again.get(layer_key(part)) == (blob.diff_id, blob.digest, blob.size)
    monkeypatch.setattr(fastpath, "WRITER", b"isal 9.9.9 level 3 format 1")  # an upgrade
    assert again.get(layer_key(part)) is None
    again.drop(layer_key(part))  # nothing under that key: nothing to save
    assert not again.added


def test_a_stem_blob_missing_from_its_repository_is_found_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that does not check blobs at a manifest PUT, a stem layer collected: a new
    process (its caches on disk) asks for the stem's blobs before anything is pushed and
    says which is missing (run() rebuilds the stem on that); a stem found whole is not
    asked about again in the process."""
    from imaged.errors import RegistryError
    from imaged.pipeline import fastpath

    fake = FakeRegistry()  # check_blobs off: it would keep a manifest naming a missing blob
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    image = (
        Image.from_base(BASE)
        .clone(name="app", registry=fake.host)
        .with_commands(["echo stem"])
        .with_source_folder(tmp_path / "src", "/app")
    )
    settings = load_settings(overrides={"state_dir": tmp_path / "state"})
    decision = route(image, settings)
    assert decision.stem is not None
    cache = DigestCache()
    stem_tag = hash_image(decision.stem, cache).tag
    stem_manifest = fake.put_image("app", stem_tag, DOCKER_MANIFEST, {"config": {}})

    async def run() -> ImageBuild:
        digest = hash_image(image, cache)
        result = ImageBuild(
            name="app",
            uri=image.uri_for(digest.tag),
            tag=digest.tag,
            digest=digest.digest,
            status="",
        )
        async with fake.client() as client:
            fast = _Fast(
                image,
                decision,
                None,
                settings,
                _Staging(cache, None, digest),  # type: ignore[arg-type]
                client,
                client,
                None,
            )
            await fast._run(digest, False, result)
        return result

    first = anyio.run(run)
    assert first.status == "pushed"
    heads = len(fake.calls("HEAD"))
    (tmp_path / "src" / "main.py").write_text("print(2)\n")
    second = anyio.run(run)  # the same process: the stem's blobs are not asked about again
    assert second.status == "pushed"
    stem_layer = json.loads(fake.manifests[("app", stem_manifest)][1])["layers"][0]["digest"]
    assert f"/v2/app/blobs/{stem_layer}" not in fake.calls("HEAD")[heads:]
    del fake.blobs[("app", stem_layer)]  # collected
    for name in ("_STEMS", "_KNOWN", "_STEM_CHECKED", "_PRESENT", "_INDEXES"):
        monkeypatch.setattr(fastpath, name, type(getattr(fastpath, name))())  # a new process
    (tmp_path / "src" / "main.py").write_text("print(3)\n")
    tags = {key for key in fake.manifests}
    with pytest.raises(RegistryError, match=f"lacks \\({stem_layer}\\)"):
        anyio.run(run)
    assert {key for key in fake.manifests} == tags  # nothing pushed on the broken stem
