"""render/layertar.py: deterministic layer blobs from the hashed file list."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest
from e2e_support import run_id, saved_blobs, set_build_env
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from infra import Infra

from imaged import Image, build
from imaged.digest.cache import DigestCache
from imaged.digest.encoding import EXEC_SUFFIX
from imaged.digest.files import DIR, FILE, SYMLINK
from imaged.digest.ignore import IgnoreRules
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeIndex
from imaged.errors import ContextChangedError
from imaged.render.context import FIXED_MTIME, staged_mtime_ns
from imaged.render.layertar import (
    BLOCKS,
    END_OF_ARCHIVE,
    LayerEntry,
    MemberCache,
    destination,
    ends_segment,
    file_entry,
    files_entries,
    layer_entries,
    part_target,
    split_entries,
    tar_header,
    tree_entries,
    with_parents,
    write_layer,
    write_layers,
)
from imaged.spec.layers import SourceFiles, SourceFolder

LONG = "d" * 60 + "/" + "n" * 120 + ".txt"  # a path past ustar's 100-byte name field
FILES: dict[str, tuple[bytes, int]] = {
    "main.py": (b"print('hi')\n", 0o644),
    "run.sh": (b"#!/bin/sh\necho run\n", 0o700),
    "empty.txt": (b"", 0o600),
    "with space/a b.txt": (b"spaces\n", 0o664),
    "caf\u00e9/\u00fcn\u00efc\u00f8de.txt": ("non-ASCII \u2603\n".encode(), 0o644),
    LONG: (b"long name\n", 0o755),
    "pkg/data.bin": (bytes(range(256)) * 40, 0o644),  # not a multiple of 512
}
LINKS = {"link": "main.py", "caf\u00e9/l\u00efnk": "../main.py", "longlink": "t" * 150}


def make_tree(root: Path, *, reverse: bool = False) -> Path:
    """The test tree; ``reverse`` creates it in the opposite order (another readdir order)."""
    items = sorted(FILES.items(), reverse=reverse)
    for rel, (data, mode) in items:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    for rel, target in sorted(LINKS.items(), reverse=reverse):
        os.symlink(target, root / rel)
    (root / "empty-folder").mkdir()
    (root / "pkg").chmod(0o700)  # folders are 0755 in the layer, whatever they are here
    return root


def index(root: Path) -> TreeIndex:
    return TreeIndex.build(root, IgnoreRules(), DigestCache())


@pytest.fixture
def tree(tmp_path: Path) -> TreeIndex:
    return index(make_tree(tmp_path / "src"))


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def contents(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isfile() else None
            if handle is not None:
                out[info.name] = handle.read()
    return out


DIR_MODE = 0o40755  # the mode field holds the type bits too, as Go's archive/tar writes it


def expected_rows() -> list[tuple[str, str, int, int, str, str]]:
    """(name, type, mode, mtime, link target, content sha) worked out from FILES and LINKS."""
    rows = [
        ("srv/", DIR, DIR_MODE, FIXED_MTIME, "", ""),
        ("srv/app/", DIR, DIR_MODE, FIXED_MTIME, "", ""),
    ]
    folders = {"empty-folder"}
    for rel, (data, mode) in FILES.items():
        sha = hashlib.sha256(data).hexdigest()
        exec_mode = 0o100755 if mode & 0o111 else 0o100644
        rows.append((f"srv/app/{rel}", FILE, exec_mode, staged_mtime_ns(sha) // 10**9, "", sha))
        parts = rel.split("/")[:-1]
        folders |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    for rel, target in LINKS.items():
        rows.append((f"srv/app/{rel}", SYMLINK, 0o120777, FIXED_MTIME, target, ""))
    rows += [(f"srv/app/{f}/", DIR, DIR_MODE, FIXED_MTIME, "", "") for f in folders]
    return sorted(rows, key=lambda r: os.fsencode(r[0].rstrip("/")))


def read_rows(data: bytes) -> list[tuple[str, str, int, int, str, str]]:
    kinds = {tarfile.REGTYPE: FILE, tarfile.SYMTYPE: SYMLINK, tarfile.DIRTYPE: DIR}
    files = contents(data)
    rows = []
    for info in members(data):
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        name = info.name + "/" if info.isdir() else info.name
        sha = hashlib.sha256(files[info.name]).hexdigest() if info.isfile() else ""
        rows.append((name, kinds[info.type], info.mode, int(info.mtime), info.linkname, sha))
    return rows


def test_entries_are_exactly_the_specified_ones(tree: TreeIndex) -> None:
    blob = write_layer(tree_entries(tree, "/srv/app"))
    assert read_rows(blob.data()) == expected_rows()


def test_the_same_inputs_give_the_same_bytes_whatever_the_readdir_order(tmp_path: Path) -> None:
    one = write_layer(tree_entries(index(make_tree(tmp_path / "a")), "/srv/app"))
    again = write_layer(tree_entries(index(make_tree(tmp_path / "a2")), "/srv/app"))
    other = write_layer(tree_entries(index(make_tree(tmp_path / "b", reverse=True)), "/srv/app"))
    assert one.data() == again.data() == other.data()
    assert (one.diff_id, one.digest) == (other.diff_id, other.digest)


def test_the_bytes_are_pinned() -> None:
    """A golden digest: a change of header or gzip bytes (a library, a field) is seen here."""
    entries = [
        LayerEntry("app", DIR, 0o755, FIXED_MTIME),
        LayerEntry("app/link", SYMLINK, 0o777, FIXED_MTIME, target="x"),
    ]
    blob = write_layer(entries)
    assert hashlib.sha256(gzip.decompress(blob.data())).hexdigest() == blob.diff_id[7:]
    assert blob.diff_id == (
        "sha256:"
        + hashlib.sha256(b"".join(tar_header(e) for e in entries) + END_OF_ARCHIVE).hexdigest()
    )


def tarinfo_of(entry: LayerEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    kinds = {FILE: tarfile.REGTYPE, SYMLINK: tarfile.SYMTYPE, DIR: tarfile.DIRTYPE}
    bits = {FILE: 0o100000, SYMLINK: 0o120000, DIR: 0o40000}[entry.type]
    info.type, info.mode, info.mtime, info.size = (
        kinds[entry.type],
        bits | entry.mode,
        entry.mtime,
        entry.size,
    )
    info.linkname = entry.target or ""
    info.uname = info.gname = ""
    return info


def blank_mode(header: bytes) -> bytes:
    """A header with the last block's mode and checksum fields blanked."""
    last = len(header) - 512
    return (
        header[: last + 100]
        + bytes(8)
        + header[last + 108 : last + 148]
        + bytes(8)
        + header[last + 156 :]
    )


def test_headers_equal_what_tarfile_writes_in_pax_format(tree: TreeIndex) -> None:
    """The encoder is ours (bytes stable across Pythons) and agrees with the stdlib's but
    for the mode, which carries the type bits as Go writes it (tarfile masks them off)."""
    for entry in tree_entries(tree, "/srv/app"):
        theirs = tarinfo_of(entry).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        ours = tar_header(entry)
        assert blank_mode(ours) == blank_mode(theirs), entry.path
        assert (
            tarfile.TarInfo.frombuf(ours[-512:], "utf-8", "strict").mode == tarinfo_of(entry).mode
        )


def test_only_long_or_non_ascii_names_get_a_pax_header(tree: TreeIndex) -> None:
    by_path = {e.path: e for e in tree_entries(tree, "/srv/app")}
    assert len(tar_header(by_path["srv/app/main.py"])) == 512
    for path in [f"srv/app/{LONG}", "srv/app/caf\u00e9", "srv/app/longlink"]:
        header = tar_header(by_path[path])
        assert header[156:157] == b"x", path
        assert len(header) > 512, path


def test_a_name_of_invalid_utf8_is_a_binary_pax_name(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad-\xff.txt")
    entries = [
        LayerEntry("app", DIR, 0o755, FIXED_MTIME),
        LayerEntry(f"app/{name}", SYMLINK, 0o777, 0, target="x"),
    ]
    header = tar_header(entries[1])
    assert b"hdrcharset=BINARY" in header
    assert b"path=app/bad-\xff.txt" in header
    with tarfile.open(
        fileobj=io.BytesIO(write_layer(entries).data()), errors="surrogateescape"
    ) as tar:
        assert tar.getnames() == ["app", f"app/{name}"]


def test_a_gzip_member_per_entry_readable_by_gzip_and_gnu_tar(
    tree: TreeIndex, tmp_path: Path
) -> None:
    entries = tree_entries(tree, "/srv/app")
    blob = write_layer(entries)
    assert len(blob.members) == len(entries) + 1  # and the end of the archive
    for member in blob.members:
        assert member[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0
        raw = zlib.decompress(member, 31)  # each one a complete member (CRC32 and ISIZE checked)
        assert len(raw) % 512 == 0
    assert gzip.decompress(blob.data())[-1024:] == END_OF_ARCHIVE
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(blob.data())
    listing = subprocess.run(
        ["tar", "-tvzf", str(path)], capture_output=True, text=True, check=True
    )
    assert len(listing.stdout.splitlines()) == len(entries)
    assert "srv/app/link -> main.py" in listing.stdout
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(path), "-C", str(out)], check=True)
    for rel, (data, mode) in FILES.items():
        got = out / "srv/app" / rel
        assert got.read_bytes() == data
        assert (got.stat().st_mode & 0o111 != 0) == bool(mode & 0o111)
    assert os.readlink(out / "srv/app/longlink") == LINKS["longlink"]


def test_the_digests_and_size_are_those_of_the_bytes(tree: TreeIndex) -> None:
    blob = write_layer(tree_entries(tree, "/srv/app"))
    data = blob.data()
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    assert blob.size == len(data)
    sink = io.BytesIO()
    blob.write_to(sink)
    assert sink.getvalue() == data


def test_a_one_file_edit_compresses_one_member(tree: TreeIndex) -> None:
    cache = MemberCache()
    first = write_layer(tree_entries(tree, "/srv/app"), cache)
    assert (cache.compressed, cache.reused) == (len(first.entries), 0)
    (tree.root / "main.py").write_bytes(b"print('edited')\n")
    tree.update(["main.py"])
    second = write_layer(tree_entries(tree, "/srv/app"), cache)
    assert (cache.compressed, cache.reused) == (len(first.entries) + 1, len(first.entries) - 1)
    fresh = write_layer(tree_entries(tree, "/srv/app"))
    assert second.data() == fresh.data()
    assert second.diff_id == fresh.diff_id
    assert second.digest != first.digest


def plain_entries(tree: TreeIndex, dst: str) -> list[LayerEntry]:
    """tree_entries as it was before the folder cache: the listing, parents added."""
    prefix = dst.strip("/")
    out = []
    for entry in tree.listing():
        path = f"{prefix}/{entry.relpath}"
        if entry.type == FILE:
            digest, size = tree.contents[entry.relpath], entry.stat_key[0]
            source = os.path.join(tree.root, entry.relpath)
            out.append(file_entry(path, digest, size, executable=entry.executable, source=source))
        elif entry.type == SYMLINK:
            out.append(LayerEntry(path, SYMLINK, 0o777, FIXED_MTIME, target=entry.target))
        else:
            out.append(LayerEntry(path, DIR, 0o755, FIXED_MTIME))
    return with_parents(out, prefix)


def test_remembered_folders_give_the_entries_a_fresh_listing_gives(tree: TreeIndex) -> None:
    BLOCKS.clear()
    first = tree_entries(tree, "/srv/app")
    assert first == plain_entries(tree, "/srv/app")
    (tree.root / "pkg" / "data.bin").write_bytes(b"edited, and shorter\n")
    (tree.root / "pkg" / "new.txt").write_bytes(b"added\n")
    tree.update(["pkg/data.bin", "pkg/new.txt"])
    again = tree_entries(tree, "/srv/app")
    assert again == plain_entries(tree, "/srv/app")
    assert again != first
    by_path = {e.path: e for e in again}
    assert by_path["srv/app/pkg/data.bin"].size == len(b"edited, and shorter\n")
    # folders off the edited path are the very entries made before (not made again)
    kept = {e.path: e for e in first}
    unedited = "srv/app/caf\u00e9/\u00fcn\u00efc\u00f8de.txt"
    assert by_path[unedited] is kept[unedited]
    assert tree_entries(tree, "/other") == plain_entries(tree, "/other")  # by destination too


def test_an_unchanged_layer_is_not_read_again(tree: TreeIndex) -> None:
    cache = MemberCache()
    first = write_layer(tree_entries(tree, "/srv/app"), cache)
    for rel in FILES:
        (tree.root / rel).unlink()  # had it been read, this would be ContextChangedError
    again = write_layer(first.entries, cache)
    assert again.data() == first.data()
    assert again.diff_id == first.diff_id


def test_the_cache_drops_least_recently_used_members(tree: TreeIndex) -> None:
    cache = MemberCache(max_bytes=2000)
    entries = tree_entries(tree, "/srv/app")
    write_layer(entries, cache)
    assert cache.bytes <= 2000
    compressed = cache.compressed
    assert write_layer(entries, cache).data() == write_layer(entries).data()
    assert cache.compressed > compressed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda p: p.write_bytes(b"print('HI')\n"), "changed after it was hashed", id="same-size"
        ),
        pytest.param(
            lambda p: p.write_bytes(b"longer content\n"), "changed after it was hashed", id="grown"
        ),
        pytest.param(lambda p: p.unlink(), "disappeared after it was hashed", id="deleted"),
    ],
)
def test_a_file_changed_after_hashing_is_an_error_naming_it(
    tree: TreeIndex, change, message: str
) -> None:  # type: ignore[no-untyped-def]
    entries = tree_entries(tree, "/srv/app")
    change(tree.root / "main.py")
    with pytest.raises(ContextChangedError, match=f"main.py {message}"):
        write_layer(entries)


def test_source_files_and_destinations(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    sha = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    entries = files_entries([(tool, sha + EXEC_SUFFIX)], destination(".", "/usr/local/bin"))
    assert [(e.path, e.type, e.mode) for e in entries] == [
        ("usr", DIR, 0o755),
        ("usr/local", DIR, 0o755),
        ("usr/local/bin", DIR, 0o755),
        ("usr/local/bin/tool", FILE, 0o755),
    ]
    assert destination("/", "/") == ""
    assert destination("sub/../x", "/app") == "app/x"


# -- splitting


def synthetic(paths: list[str], sizes: list[int]) -> list[LayerEntry]:
    rows = [
        LayerEntry(p, FILE, 0o644, 0, s, digest=hashlib.sha256(p.encode()).hexdigest())
        for p, s in zip(paths, sizes, strict=True)
    ]
    return sorted(rows, key=lambda e: os.fsencode(e.path))


def part_keys(parts: list[list[LayerEntry]]) -> list[tuple[tuple[str, int, str | None], ...]]:
    return [tuple((e.path, e.size, e.digest) for e in p if e.type == FILE) for p in parts]


def part_target_of(parts: list[list[LayerEntry]]) -> int:
    files = [e for p in parts for e in p if e.type == FILE]
    return part_target(sum(e.tar_size for e in files) + 1024, SPLIT)


def cut_free(parts: list[list[LayerEntry]], split: int) -> bool:
    """Every part but the last ends where a segment ends (no part was cut for its size)."""
    files = [e for p in parts for e in p if e.type == FILE]
    target = part_target(sum(e.tar_size for e in files) + 1024, split)
    return all(ends_segment(p[-1], target) for p in parts[:-1])


SPLIT = 64 * 1024
names = st.lists(
    st.text("abcdefgh/", min_size=1, max_size=12).filter(
        lambda s: "//" not in s and not s.startswith("/") and not s.endswith("/")
    ),
    min_size=40,
    max_size=200,
    unique=True,
)


def tree_of(paths: list[str], sizes: list[int]) -> list[LayerEntry]:
    # a name can't be both a file and a folder: keep leaves only
    keep = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    return synthetic(keep, sizes[: len(keep)])


@settings(max_examples=60, deadline=None)
@given(paths=names, data=st.data())
def test_a_same_size_edit_changes_exactly_one_part(paths: list[str], data: st.DataObject) -> None:
    sizes = data.draw(st.lists(st.integers(0, 6000), min_size=len(paths), max_size=len(paths)))
    entries = tree_of(paths, sizes)
    assume(sum(e.tar_size for e in entries) > SPLIT)
    victim = data.draw(st.integers(0, len(entries) - 1))
    edited = list(entries)
    edited[victim] = dataclasses.replace(entries[victim], digest="0" * 64)
    before, after = (
        part_keys(split_entries(entries, split_bytes=SPLIT)),
        part_keys(split_entries(edited, split_bytes=SPLIT)),
    )
    assert len(before) == len(after) > 1
    assert sum(b != a for b, a in zip(before, after, strict=True)) == 1


def changed(before: list[list[LayerEntry]], after: list[list[LayerEntry]]) -> tuple[int, int]:
    old, new = part_keys(before), part_keys(after)
    return sum(p not in new for p in old), sum(p not in old for p in new)


@settings(max_examples=60, deadline=None)
@given(paths=names, data=st.data())
def test_a_resize_or_an_added_file_changes_at_most_two_parts(
    paths: list[str], data: st.DataObject
) -> None:
    sizes = data.draw(st.lists(st.integers(0, 6000), min_size=len(paths), max_size=len(paths)))
    entries = tree_of(paths, sizes)
    assume(sum(e.tar_size for e in entries) > SPLIT)
    victim = data.draw(st.integers(0, len(entries) - 1))
    resized = list(entries)
    resized[victim] = dataclasses.replace(
        entries[victim], size=data.draw(st.integers(0, 6000)), digest="1" * 64
    )
    added = synthetic(
        [e.path for e in entries] + ["zz-new" + str(data.draw(st.integers(0, 10**6)))],
        [e.size for e in entries] + [100],
    )
    before = split_entries(entries, split_bytes=SPLIT)
    for after in (
        split_entries(resized, split_bytes=SPLIT),
        split_entries(added, split_bytes=SPLIT),
    ):
        assume(len(before) > 1 and len(after) > 1)  # both past the threshold
        assume(cut_free(before, SPLIT) and cut_free(after, SPLIT))
        # Crossing a doubling of the part target re-cuts every part once, by design.
        assume(part_target_of(before) == part_target_of(after))
        gone, new = changed(before, after)
        assert gone <= 2
        assert new <= 2


def test_inserted_files_change_one_part_each() -> None:
    """Big and small files added anywhere: a rule that cut by running size would shift
    every part after the insertion; this one changes the part that takes the file (two,
    when the new file ends a segment itself, or when its segment is past the threshold and
    so cut in two, as one is here: the cut moves inside that segment only)."""
    rng = random.Random(7)
    paths = sorted(f"pkg{rng.randrange(50)}/mod{i}.py" for i in range(5000))
    entries = synthetic(paths, [rng.randrange(0, 8000) for _ in paths])
    split = 4 << 20
    before = split_entries(entries, split_bytes=split)
    assert len(before) > 4
    for n in range(12):
        new = f"pkg{rng.randrange(50)}/new{n}.py"
        added = synthetic([*paths, new], [e.size for e in entries] + [rng.choice([300, 90_000])])
        gone, fresh = changed(before, split_entries(added, split_bytes=split))
        assert 1 <= gone <= 2, new
        assert 1 <= fresh <= 2, new


def test_a_segment_past_the_threshold_is_cut_and_each_part_has_its_folders() -> None:
    entries = [LayerEntry("big", DIR, 0o755, FIXED_MTIME)]
    entries += synthetic([f"big/f{i:03}" for i in range(60)], [10_000] * 60)
    parts = split_entries(sorted(entries, key=lambda e: e.path), split_bytes=100_000)
    assert len(parts) >= 6
    for part in parts:
        assert part[0].path == "big"
        assert part[0].type == DIR
        assert sum(e.tar_size for e in part) <= 100_000 + 512
    files = [e.path for p in parts for e in p if e.type == FILE]
    assert files == sorted(f"big/f{i:03}" for i in range(60))


def test_a_part_carries_its_folders_as_the_whole_list_has_them() -> None:
    owned = LayerEntry("big", DIR, 0o700, FIXED_MTIME, uid=1000, gid=1000)  # a stem's folder
    entries = [owned, LayerEntry("big/sub", DIR, 0o755, FIXED_MTIME)]
    entries += synthetic([f"big/sub/f{i:03}" for i in range(60)], [10_000] * 60)
    parts = split_entries(sorted(entries, key=lambda e: e.path), split_bytes=100_000)
    assert len(parts) >= 6
    for part in parts:
        assert part[:2] == entries[:2]  # each a layer of its own, "big" keeping its owner
        assert part[0].uid == 1000
        assert part[0].mode == 0o700


def test_a_small_folder_is_one_layer(tree: TreeIndex) -> None:
    entries = tree_entries(tree, "/srv/app")
    assert split_entries(entries, split_bytes=1 << 20) == [entries]


def test_split_layers_are_each_a_layer_and_hold_every_file(tmp_path: Path) -> None:
    root = tmp_path / "big"
    rng = random.Random(3)
    for i in range(300):
        path = root / f"p{i % 7}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(0, 3000)))
    cache = MemberCache()
    entries = tree_entries(index(root), "/data")
    blobs = write_layers(entries, split_bytes=128 * 1024, cache=cache)
    assert len(blobs) > 2
    seen: dict[str, bytes] = {}
    for blob in blobs:
        names = [m.name for m in members(blob.data())]
        assert names[0] == "data"
        seen.update(contents(blob.data()))
    assert len(seen) == 300
    target = next(p for p in sorted(root.rglob("*.txt")) if p.stat().st_size > 0)
    target.write_bytes(bytes(target.stat().st_size))  # same size: the same parts
    tree = index(root)
    again = write_layers(tree_entries(tree, "/data"), split_bytes=128 * 1024, cache=cache)
    assert sum(a.digest != b.digest for a, b in zip(blobs, again, strict=True)) == 1
    shutil.rmtree(root)


# -- against BuildKit


def rows_of(tar_bytes: bytes, *, gz: bool) -> dict[str, tuple[object, ...]]:
    """path -> (type, mode, uid, gid, link target, content sha, file mtime); folder mtimes
    are left out: BuildKit's are not reproducible (README, "What reaches BuildKit"); so are
    owner names: the engine's Go tar writes root/root, ours are empty (numeric owners are
    what containerd and dockerd unpack by)."""
    out: dict[str, tuple[object, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz" if gz else "r:") as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isfile() else None
            sha = hashlib.sha256(handle.read()).hexdigest() if handle is not None else ""
            mtime = int(info.mtime) if not info.isdir() else None
            row = (info.type, info.mode, info.uid, info.gid, info.linkname, sha, mtime)
            out[info.name.rstrip("/")] = row
    return out


def test_the_layers_equal_those_buildkit_builds(
    infra: Infra, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_build_env(monkeypatch, infra)
    src = make_tree(tmp_path / "appsrc")
    extra = tmp_path / "extra.cfg"
    extra.write_text("extra=1\n")
    extra.chmod(0o750)
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"layertar-{run_id()}")
        .with_source_folder(src, "/srv")
        .with_source_file(extra, "/etc/app")
    )
    result = build(image)
    assert result.status == "built", result
    blobs = saved_blobs(infra.docker_cli, result.uri, tmp_path)
    order = json.loads(blobs["manifest.json"])[0]["Layers"]
    built = [rows_of(blobs[name], gz=False) for name in order[-2:]]
    digest = hash_image(image)
    ours = [
        rows_of(write_layer(layer_entries(layer, d)).data(), gz=True)
        for layer, d in zip(image.layers, digest.layers, strict=True)
        if isinstance(layer, SourceFolder | SourceFiles)
    ]
    for mine, theirs in zip(ours, built, strict=True):
        differ = {
            p: (mine.get(p), theirs.get(p))
            for p in mine.keys() | theirs.keys()
            if mine.get(p) != theirs.get(p)
        }
        assert differ == {}


def test_a_file_of_8_gib_or_more_gets_a_binary_size_field() -> None:
    big = LayerEntry("app/big.bin", FILE, 0o644, 0, size=9 << 30, digest="0" * 64)
    header = tar_header(big)
    assert len(header) == 512
    assert tarfile.TarInfo.frombuf(header, "utf-8", "strict").size == 9 << 30


def test_the_member_cache_is_shared_by_threads() -> None:
    """imaged build writes images in threads at once through one cache: lookups racing
    evictions raise nothing and the byte count stays the sum of the members kept."""
    import sys
    import threading

    from imaged.render.layertar import Member, _LayerResult

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    cache = MemberCache(max_bytes=64 * 10)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(20000):
                key = bytes([(seed + i) % 37])
                if cache.get(key) is None:
                    cache.put(key, Member(bytes(64 + (i % 3)), 64))
                cache.put_layer(key, cache.layer(key) or _LayerResult("d", "b", i))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert cache.bytes == sum(len(m.data) for m in cache._members.values())
    assert cache.bytes <= cache.max_bytes
