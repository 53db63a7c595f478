"""The stem's folders on the tail's paths, read from crafted layer tars (whiteouts too)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from registry_fakes import FakeRegistry, image_manifest, layer_blob, sha256

from imaged.pipeline.stemfs import (
    StemEntry,
    StemFileUnreadable,
    StemFs,
    StemPlatformsDiffer,
    apply_layer,
    apply_layer_files,
    missing_blobs,
    on_paths,
    read_stem_files,
    read_stem_fs,
)
from imaged.registry.append import OCI_INDEX, OCI_MANIFEST, encode_json
from imaged.registry.ref import ImageRef


def layer(
    *members: tuple[str, str, int, int, int] | tuple[str, str, int, int, int, str],
) -> io.BytesIO:
    """A gzip layer tar of (name, type, mode, uid, gid[, link target]) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, kind, mode, uid, gid, *target in members:
            info = tarfile.TarInfo(name)
            info.type = {"d": tarfile.DIRTYPE, "f": tarfile.REGTYPE, "l": tarfile.SYMTYPE}[kind]
            info.mode, info.uid, info.gid = mode, uid, gid
            info.linkname = target[0] if target else ""
            tar.addfile(info, io.BytesIO(b"") if kind == "f" else None)
    out.seek(0)
    return out


def read(*layers: io.BytesIO, roots: tuple[str, ...] = ("opt/app/src",)) -> StemFs:
    fs: StemFs = {}
    for one in layers:
        apply_layer(fs, one, roots)
    return fs


def test_folders_on_the_path_keep_their_mode_and_owner_the_rest_is_dropped() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 1000, 1001),
            ("opt/other/", "d", 0o755, 0, 0),
            ("opt/app/src/x.py", "f", 0o644, 0, 0),
            ("usr/bin/", "d", 0o755, 0, 0),
        )
    )
    assert fs == {
        "opt": StemEntry("dir", 0o755, 0, 0),
        "opt/app": StemEntry("dir", 0o700, 1000, 1001),
        "opt/app/src/x.py": StemEntry("file", 0o644, 0, 0),
    }


def test_a_whiteout_removes_the_path_and_everything_below() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 7, 7),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/", "d", 0o755, 0, 0), ("opt/.wh.app", "f", 0o644, 0, 0)),
    )
    assert fs == {"opt": StemEntry("dir", 0o755, 0, 0)}


def test_an_opaque_folder_hides_what_was_below_but_keeps_itself() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 7, 7),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/app/", "d", 0o750, 8, 8), ("opt/app/.wh..wh..opq", "f", 0o644, 0, 0)),
    )
    assert fs == {"opt": StemEntry("dir", 0o755, 0, 0), "opt/app": StemEntry("dir", 0o750, 8, 8)}


def test_a_symlink_replacing_a_folder_hides_what_was_below_it() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o755, 0, 0),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/app", "l", 0o777, 0, 0, "/srv")),
    )
    assert fs == {
        "opt": StemEntry("dir", 0o755, 0, 0),
        "opt/app": StemEntry("symlink", 0o777, 0, 0, "/srv"),
    }


def test_a_later_folder_entry_sets_the_mode_anew() -> None:
    fs = read(layer(("opt/", "d", 0o755, 0, 0)), layer(("opt/", "d", 0o1777, 3, 4)))
    assert fs["opt"] == StemEntry("dir", 0o1777, 3, 4)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("opt", True, id="above"),
        pytest.param("opt/app/src", True, id="at"),
        pytest.param("opt/app/src/a/b", True, id="below"),
        pytest.param("opt/ap", False, id="a-prefix-that-is-not-a-folder"),
        pytest.param("usr", False, id="elsewhere"),
    ],
)
def test_on_paths(path: str, expected: bool) -> None:
    assert on_paths(path, ["opt/app/src"]) is expected


# A multi-platform stem, and a stem whose blobs are gone (a fake registry) ------------------


def _put(fake: Any, repo: str, blobs: list[bytes]) -> tuple[str, int]:
    """A one-config image of `blobs` in `repo`, stored by digest: (digest, size)."""
    config = encode_json({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}})
    for blob in [*blobs, config]:
        fake.blobs[(repo, sha256(blob))] = blob
    body = encode_json(image_manifest(OCI_MANIFEST, config, blobs))
    fake.manifests[(repo, sha256(body))] = (OCI_MANIFEST, body)
    return sha256(body), len(body)


def _index(fake: Any, repo: str, tag: str, children: list[tuple[str, int, str]]) -> str:
    manifests = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }
        for digest, size, arch in children
    ]
    body = encode_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    for key in (tag, sha256(body)):
        fake.manifests[(repo, key)] = (OCI_INDEX, body)
    return sha256(body)


def _read(fake: Any, tmp_path: Path, digest: str) -> StemFs:
    async def run() -> StemFs:
        async with fake.client() as client:
            ref = ImageRef.parse(fake.ref("app", "stem"))
            return await read_stem_fs(client, ref, digest, ["app"], tmp_path)

    return anyio.run(run)


def test_a_two_platform_stem_that_agrees_on_the_tail_paths_reads_each_platform(
    tmp_path: Path,
) -> None:
    fake = FakeRegistry()
    base, _ = layer_blob({"app/a.txt": b"a"})
    arm_only, _ = layer_blob({"usr/lib/arm.so": b"arm"})  # off the tail's paths
    amd = _put(fake, "app", [base])
    arm = _put(fake, "app", [base, arm_only])
    digest = _index(fake, "app", "stem", [(*amd, "amd64"), (*arm, "arm64")])
    fs = _read(fake, tmp_path, digest)
    assert fs["app"] == StemEntry("dir", 0o755, 0, 0)
    blob_gets = [p for m, p in fake.log if m == "GET" and "/blobs/" in p]
    assert len(blob_gets) == 3  # amd64's layer, arm64's two (each platform read)


def test_a_two_platform_stem_that_differs_on_a_tail_path_is_refused(tmp_path: Path) -> None:
    fake = FakeRegistry()
    base, _ = layer_blob({"etc/x": b"x"})
    owned, _ = layer_blob({"app/a.txt": b"a"})
    amd = _put(fake, "app", [base])
    arm = _put(fake, "app", [base, owned])
    digest = _index(fake, "app", "stem", [(*amd, "amd64"), (*arm, "arm64")])
    with pytest.raises(StemPlatformsDiffer) as caught:
        _read(fake, tmp_path, digest)
    assert str(caught.value) == (
        "the platforms of stem registry.example.com/app:stem differ on the tail's paths: /app "
        "is absent against dir 0755 0:0 on linux/amd64 and linux/arm64; the full build "
        "follows each as BuildKit does"
    )
    assert not list((tmp_path / "stemfs").glob("*.json"))  # nothing cached


def test_missing_blobs_names_what_the_registry_lost_on_every_platform() -> None:
    fake = FakeRegistry()
    one, _ = layer_blob({"a": b"a"})
    two, _ = layer_blob({"b": b"b"})
    amd = _put(fake, "app", [one])
    arm = _put(fake, "app", [one, two])
    _index(fake, "app", "stem", [(*amd, "amd64"), (*arm, "arm64")])

    async def run() -> list[str]:
        async with fake.client() as client:
            return await missing_blobs(client, ImageRef.parse(fake.ref("app", "stem")))

    assert anyio.run(run) == []
    del fake.blobs[("app", sha256(two))]
    assert anyio.run(run) == [sha256(two)]


@pytest.mark.parametrize(
    "cached",
    [
        pytest.param('{"version": 1, "entries": {"app": ["dir", 493]}}', id="short-row"),
        pytest.param('{"version": 1, "entries": {"app": "dir"}}', id="row-not-a-list"),
        pytest.param('{"version": 1, "entries": {"app": ["dir", "0755", 0, 0, null]}}', id="str"),
        pytest.param('{"version": 1, "entries": {"app": ["pipe", 493, 0, 0, null]}}', id="type"),
        pytest.param('{"version": 1, "entries": {"app": ["dir", 493, 0, 0, 7]}}', id="target"),
        pytest.param('{"version": 1, "entries": ["app"]}', id="entries-a-list"),
        pytest.param('{"version": 1}', id="no-entries"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"version": 1, "entr', id="truncated"),
    ],
)
def test_a_malformed_cache_file_is_a_miss(tmp_path: Path, cached: str) -> None:
    fake = FakeRegistry()
    owned, _ = layer_blob({"app/a.txt": b"a"})
    digest, _ = _put(fake, "app", [owned])
    first = _read(fake, tmp_path, digest)
    (cache_file,) = (tmp_path / "stemfs").glob("*.json")
    cache_file.write_text(cached)
    gets = len([p for m, p in fake.log if m == "GET" and "/blobs/" in p])
    assert _read(fake, tmp_path, digest) == first  # read from the stem again
    assert len([p for m, p in fake.log if m == "GET" and "/blobs/" in p]) == gets + 1
    assert _read(fake, tmp_path, digest) == first  # and cached again, well formed
    assert len([p for m, p in fake.log if m == "GET" and "/blobs/" in p]) == gets + 1


# The stem's account files -------------------------------------------------------------

PASSWD = b"root:x:0:0:root:/root:/bin/bash\napp:x:1234:777::/home/app:/bin/sh\n"


def content_layer(*members: tuple[str, str, bytes | str]) -> bytes:
    """A gzip layer of (name, "f" file content | "l" link target | "d" | "h" hard link)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "f":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "d": tarfile.DIRTYPE}[kind]
            info.linkname = data if isinstance(data, str) else ""
            tar.addfile(info)
    return out.getvalue()


def files_after(*layers: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for tar in layers:
        apply_layer_files(files, io.BytesIO(tar), ["etc/passwd", "etc/group"])
    return files


def test_account_files_follow_the_layers() -> None:
    first = content_layer(("etc", "d", b""), ("etc/passwd", "f", b"root:x:0:0::/:/bin/sh\n"))
    second = content_layer(("etc/passwd", "f", PASSWD), ("etc/group", "f", b"grp:x:777:\n"))
    assert files_after(first, second) == {"etc/passwd": PASSWD, "etc/group": b"grp:x:777:\n"}
    gone = content_layer(("etc/.wh.group", "f", b""))
    assert files_after(first, second, gone) == {"etc/passwd": PASSWD}
    opaque = content_layer(("etc/.wh..wh..opq", "f", b""))
    assert files_after(first, second, opaque) == {}
    link = content_layer(("etc/passwd", "l", "/usr/share/passwd"))
    assert files_after(first, link)["etc/passwd"] == b"\0unreadable"
    hard = content_layer(("etc/x", "f", b"x"), ("etc/passwd", "h", "etc/x"))
    assert files_after(first, hard)["etc/passwd"] == b"\0unreadable"
    linked_folder = content_layer(("etc", "l", "/private/etc"))
    assert files_after(first, linked_folder)["etc/passwd"] == b"\0unreadable"


def test_read_stem_files_reads_caches_and_refuses_a_link(tmp_path: Path) -> None:
    fake = FakeRegistry()
    blob = content_layer(("etc", "d", b""), ("etc/passwd", "f", PASSWD))
    digest, _ = _put(fake, "app", [blob])

    def read(state: Path) -> dict[str, bytes]:
        async def run() -> dict[str, bytes]:
            async with fake.client() as client:
                ref = ImageRef.parse(fake.ref("app", "stem"))
                paths = ["etc/group", "etc/passwd"]
                return await read_stem_files(client, ref, digest, paths, state)

        return anyio.run(run)

    assert read(tmp_path) == {"etc/passwd": PASSWD}
    gets = len([p for m, p in fake.log if m == "GET" and "/blobs/" in p])
    assert read(tmp_path) == {"etc/passwd": PASSWD}  # from the disk cache
    assert len([p for m, p in fake.log if m == "GET" and "/blobs/" in p]) == gets
    (cache_file,) = (tmp_path / "stemfs").glob("files-*.json")
    cache_file.write_text('{"version": 1, "files": {"etc/passwd": "not base64!"}}')
    assert read(tmp_path) == {"etc/passwd": PASSWD}  # a malformed file is a miss
    linked = content_layer(("etc", "d", b""), ("etc/passwd", "l", "../usr/passwd"))
    digest, _ = _put(fake, "app", [linked])
    with pytest.raises(StemFileUnreadable, match="/etc/passwd is not a plain file"):
        read(tmp_path / "other")
