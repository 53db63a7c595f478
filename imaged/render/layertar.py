"""Deterministic OCI layer blobs for a file layer, from the hashed file list (the fast path).

The entries come from the same :class:`TreeIndex` listing and content digests the image
digest was computed from, with the metadata staging gives them (:mod:`imaged.render.context`):
owner 0:0 with empty names, files 0644 or 0755, folders 0755, symlinks 0777; a file's mtime
is :func:`staged_mtime_ns` of its content in whole seconds (the engine's layer tar keeps
seconds), folders and symlinks :data:`FIXED_MTIME`. tests/test_layertar.py builds the same
layers with BuildKit and compares them entry by entry: they differ only in folder mtimes
(BuildKit's are not reproducible: README, "What reaches BuildKit") and in owner names
(the engine's Go tar writes root/root; ours are empty, the numeric 0:0 is what unpacks).

Headers are encoded here, not by :mod:`tarfile`, so the bytes do not move with Python: POSIX
ustar, with a PAX header only for a name or link target that is longer than its field or not
ASCII. The gzip stream has one member per entry (its header, content and padding), each a
complete gzip member (no name, mtime 0, OS 255) that :class:`MemberCache` keeps, so a
one-file edit compresses one file again. The diff_id, the blob digest and size are taken in
the same pass. A big folder is split into several layers (:func:`split_entries`) so that an
edit re-uploads one part.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from isal import isal_zlib

from imaged.digest.encoding import EXEC_SUFFIX
from imaged.digest.files import DIR, FILE, SYMLINK
from imaged.digest.image_digest import LayerDigest
from imaged.digest.trees import TreeIndex
from imaged.errors import ContextChangedError
from imaged.render.context import FIXED_MTIME, staged_mtime_ns
from imaged.spec.layers import CodeBundle, SourceFiles, SourceFolder

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
LEVEL = 2  # ISA-L's levels are 0-3; 2 is within a few % of zlib -6 in size, ~5x faster
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS 255 (unknown, as
# Go's compress/gzip writes it): nothing in it depends on the machine or the time.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_READ = 1 << 20
PART_DIVISOR = 16
MAX_PARTS = 32
_TYPEFLAG = {FILE: b"0", SYMLINK: b"2", DIR: b"5"}
# The mode field carries the file type bits too, as Go's archive/tar writes them for the
# engine's layers (0o100644, 0o40755, 0o120777), so the entries equal BuildKit's.
_TYPE_BITS = {FILE: 0o100000, SYMLINK: 0o120000, DIR: 0o40000}


@dataclass(frozen=True)
class LayerEntry:
    """One tar entry of a layer: ``path`` has no leading or trailing slash. Its header, tar
    size and sort key are worked out once, when it is made."""

    path: str
    type: str
    mode: int
    mtime: int
    size: int = 0
    target: str | None = None  # a symlink's target
    digest: str | None = None  # a file's content sha256 (hex)
    source: str | None = None  # where a file's bytes are read from
    uid: int = 0  # a folder the stem already has keeps its owner (and mode)
    gid: int = 0
    header: bytes = field(init=False, repr=False, compare=False)  # :func:`tar_header`
    tar_size: int = field(init=False, repr=False, compare=False)  # headers and padding too
    key: bytes = field(init=False, repr=False, compare=False)  # the path's bytes: tar order
    member_key: bytes = field(init=False, repr=False, compare=False)  # what its member is of
    cut_hash: int = field(init=False, repr=False, compare=False)  # :func:`ends_segment`'s draw

    def __post_init__(self) -> None:
        header = _tar_header(self)
        key = os.fsencode(self.path)
        put = object.__setattr__
        put(self, "header", header)
        put(self, "tar_size", len(header) + _padded(self.size if self.type == FILE else 0))
        put(self, "key", key)
        put(self, "member_key", header + (self.digest or "").encode())
        put(self, "cut_hash", int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    @property
    def name(self) -> str:
        """The name in the tar: a folder's ends with ``/``."""
        return f"{self.path}/" if self.type == DIR else self.path


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def destination(dst: str, workdir: str = "/") -> str:
    """The layer path of a COPY destination: ``"."`` under ``/app`` is ``"app"``."""
    path = posixpath.normpath(posixpath.join("/", workdir, dst))
    return path.lstrip("/")


def folder_entry(path: str) -> LayerEntry:
    return LayerEntry(path, DIR, 0o755, FIXED_MTIME)


def file_entry(path: str, digest: str, size: int, *, executable: bool, source: str) -> LayerEntry:
    mtime = staged_mtime_ns(digest) // 10**9
    mode = 0o755 if executable else 0o644
    return LayerEntry(path, FILE, mode, mtime, size, digest=digest, source=source)


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


class _Blocks:
    """Each folder's entries (everything below it, sorted), by (tree root, layer prefix,
    folder, its Merkle digest): the digest fixes every name, kind, exec bit, content digest
    (so size and staged mtime) and link target below it, so a one-file edit makes only the
    entries of the folders on its path again. Least recently used dropped past LIMIT."""

    LIMIT = 1 << 15

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[str, str, str, str], list[LayerEntry]] = OrderedDict()

    def get(self, key: tuple[str, str, str, str]) -> list[LayerEntry] | None:
        with self._lock:
            rows = self._rows.get(key)
            if rows is not None:
                self._rows.move_to_end(key)
            return rows

    def put(self, key: tuple[str, str, str, str], rows: list[LayerEntry]) -> None:
        with self._lock:
            self._rows[key] = rows
            while len(self._rows) > self.LIMIT:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        """Forget every folder (a file that changed after it was hashed may have left an
        entry whose size is not its content's)."""
        with self._lock:
            self._rows.clear()


BLOCKS = _Blocks()


def tree_entries(tree: TreeIndex, dst: str) -> list[LayerEntry]:
    """The entries of ``COPY <tree>/ <dst>/`` (``dst`` absolute or a layer path), sorted,
    with ``dst`` and its parents. Each folder's entries are remembered (:data:`BLOCKS`)."""
    prefix = destination(dst)
    above = prefix.split("/") if prefix else []
    head = [folder_entry("/".join(above[: i + 1])) for i in range(len(above))]
    return head + _folder_rows(tree, "", prefix, str(tree.root))


def _folder_rows(tree: TreeIndex, rel: str, prefix: str, root: str) -> list[LayerEntry]:
    key = (root, prefix, rel, tree.folder_digest(rel))
    rows = BLOCKS.get(key)
    if rows is not None:
        return rows
    items: list[tuple[bytes, list[LayerEntry]]] = []
    for child in tree.children.get(rel, ()):
        entry = tree.entries.get(child)
        path = _join(prefix, child)
        if entry is None or entry.type == DIR:
            folder = folder_entry(path)
            items.append((folder.key, [folder]))
            items.append((folder.key + b"/", _folder_rows(tree, child, prefix, root)))
        elif entry.type == FILE:
            source = os.path.join(root, child)
            digest, size = tree.contents[child], entry.stat_key[0]
            made = file_entry(path, digest, size, executable=entry.executable, source=source)
            items.append((made.key, [made]))
        else:
            link = LayerEntry(path, SYMLINK, 0o777, FIXED_MTIME, target=entry.target)
            items.append((link.key, [link]))
    items.sort(key=lambda item: item[0])
    rows = [e for _, block in items for e in block]
    BLOCKS.put(key, rows)
    return rows


def files_entries(files: Sequence[tuple[Path, str]], dst: str) -> list[LayerEntry]:
    """The entries of ``COPY`` of single files (path, digest with its exec suffix) into
    ``dst``, as ``with_source_files`` stages them; sizes are read from the files now (a later
    change is caught when they are read, by their digest)."""
    prefix = destination(dst)
    out = []
    for path, digest in files:
        executable = digest.endswith(EXEC_SUFFIX)
        sha = digest.removesuffix(EXEC_SUFFIX)
        size = _size_of(path)
        rel = _join(prefix, path.name)
        out.append(file_entry(rel, sha, size, executable=executable, source=str(path)))
    return with_parents(out, prefix)


def _size_of(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError as exc:
        raise ContextChangedError(f"{path} disappeared after it was hashed") from exc


def with_parents(entries: Iterable[LayerEntry], prefix: str) -> list[LayerEntry]:
    """``entries`` with ``prefix`` and every folder above an entry, sorted by path bytes."""
    by_path = {e.path: e for e in entries}
    done: set[str] = set()
    for path in [f"{prefix}/", *by_path] if prefix else list(by_path):
        folder = path.rpartition("/")[0]
        if not folder or folder in done:  # sorted input: siblings share their parents
            continue
        done.add(folder)
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            above = "/".join(parts[:i])
            if above not in by_path:
                by_path[above] = folder_entry(above)
    return sorted(by_path.values(), key=sort_key)


def sort_key(entry: LayerEntry) -> bytes:
    return entry.key


# -- tar headers


def tar_header(entry: LayerEntry) -> bytes:
    """The header block(s) of ``entry``: a PAX header first when a name does not fit ustar
    (encoded once, when the entry is made)."""
    return entry.header


def _tar_header(entry: LayerEntry) -> bytes:
    name, link = os.fsencode(entry.name), os.fsencode(entry.target or "")
    if _fits(name) and _fits(link):  # the common case: no PAX header
        return _ustar(entry, name, link)
    records = _pax_records(name, link)
    pax = _pax_header(records) if records else b""
    return pax + _ustar(entry, _fit(name), _fit(link))


def _pax_records(name: bytes, link: bytes) -> list[tuple[bytes, bytes]]:
    records = [(k, v) for k, v in ((b"path", name), (b"linkpath", link)) if not _fits(v)]
    if any(not _is_utf8(v) for _, v in records):
        records.insert(0, (b"hdrcharset", b"BINARY"))
    return records


def _fits(value: bytes) -> bool:
    return len(value) <= 100 and value.isascii()


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fit(value: bytes) -> bytes:
    """A ustar field's stand-in for a name the PAX header carries (as tarfile writes it)."""
    if _fits(value):
        return value
    return os.fsdecode(value).encode("ascii", "replace")[:100]


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _pax_header(records: list[tuple[bytes, bytes]]) -> bytes:
    payload = b"".join(_pax_record(k, v) for k, v in records)
    head = _block(b"././@PaxHeader", b"x", 0, len(payload), 0, b"")
    return head + payload + bytes(_padded(len(payload)) - len(payload))


def _ustar(entry: LayerEntry, name: bytes, link: bytes) -> bytes:
    size = entry.size if entry.type == FILE else 0
    mode = _TYPE_BITS[entry.type] | entry.mode
    owner = (entry.uid, entry.gid)
    return _block(name, _TYPEFLAG[entry.type], mode, size, entry.mtime, link, owner)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _block(
    name: bytes,
    typeflag: bytes,
    mode: int,
    size: int,
    mtime: int,
    link: bytes,
    owner: tuple[int, int] = (0, 0),
) -> bytes:
    """One ustar header block: numeric owner (0:0 unless given), empty uname/gname, no
    device numbers."""
    numbers = b"%07o\0%07o\0%07o\0%s%s" % (
        mode,
        owner[0],
        owner[1],
        _octal(size, 12) if size < 8**11 else _base256(size, 12),
        _octal(mtime, 12),
    )
    # the checksum: the sum of the block's bytes with its own field as spaces (the padding
    # is zeros; the tail's sum is a constant)
    checksum = sum(name) + sum(numbers) + sum(typeflag) + sum(link) + _TAIL_SUM + 8 * 32
    return b"".join(
        (
            name.ljust(100, b"\0"),
            numbers,
            b"%06o\0 " % checksum,
            typeflag,
            link.ljust(100, b"\0"),
            _USTAR_TAIL,
        )
    )


# magic and version; empty uname, gname (64); devmajor, devminor empty, not "0000000"
# (tarfile changed this in 3.11.x) (16); prefix (unused: long names go to PAX), padding
_USTAR_TAIL = b"ustar\x0000" + bytes(64) + bytes(16) + bytes(155 + 12)
_TAIL_SUM = sum(_USTAR_TAIL)


def _base256(value: int, width: int) -> bytes:
    """GNU's binary size field for a file of 8 GiB or more (tar, Go and tarfile read it)."""
    return b"\x80" + value.to_bytes(width - 1, "big")


# -- gzip members


@dataclass(frozen=True, slots=True)
class Member:
    """One entry's compressed gzip member, and the size of the tar bytes it holds."""

    data: bytes
    raw_size: int


class _MemberWriter:
    """Deflates one entry's tar bytes into a complete gzip member, hashing them for the
    running diff_id as they pass."""

    def __init__(self, diff: hashlib._Hash) -> None:
        self.diff = diff
        self.deflate = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, -15)
        self.parts = [GZIP_HEADER]
        self.crc = 0
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.diff.update(data)
        self.crc = isal_zlib.crc32(data, self.crc)
        self.size += len(data)
        self.parts.append(self.deflate.compress(data))

    def finish(self) -> Member:
        self.parts.append(self.deflate.flush())
        self.parts.append(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        return Member(b"".join(self.parts), self.size)


def compress_member(data: bytes) -> bytes:
    """``data`` as one gzip member, as :class:`_MemberWriter` writes it."""
    writer = _MemberWriter(hashlib.sha256())
    writer.feed(data)
    return writer.finish().data


def _member_of(entry: LayerEntry, header: bytes, diff: hashlib._Hash) -> Member:
    writer = _MemberWriter(diff)
    writer.feed(header)
    if entry.type == FILE:
        for chunk in _verified_chunks(entry):
            writer.feed(chunk)
        writer.feed(bytes(_padded(entry.size) - entry.size))
    return writer.finish()


def _verified_chunks(entry: LayerEntry) -> Iterator[bytes]:
    """The file's bytes; they must be those the digest was taken of (size, then sha256)."""
    assert entry.source is not None
    sha, seen = hashlib.sha256(), 0
    try:
        with open(entry.source, "rb") as f:
            while seen < entry.size and (chunk := f.read(min(_READ, entry.size - seen))):
                sha.update(chunk)
                seen += len(chunk)
                yield chunk
            extra = f.read(1)
    except FileNotFoundError as exc:
        raise ContextChangedError(f"{entry.source} disappeared after it was hashed") from exc
    if seen != entry.size or extra or sha.hexdigest() != entry.digest:
        raise ContextChangedError(f"{entry.source} changed after it was hashed")


# -- the member cache and the layer writer


@dataclass(frozen=True, slots=True)
class _LayerResult:
    diff_id: str
    digest: str
    size: int

    def fields(self) -> tuple[str, str, int]:
        return self.diff_id, self.digest, self.size


class MemberCache:
    """Compressed members by (tar header, content digest), least recently used dropped past
    ``max_bytes``; and each whole layer's digests by its members, so an unchanged layer of a
    split folder is neither read nor hashed again.

    ``compressed`` counts the members compressed, ``reused`` those taken from the cache.
    One cache is shared by the images ``imaged build`` writes in threads at once: a lock
    keeps each call whole (a lookup never meets an eviction, the byte count stays true).
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.compressed = 0
        self.reused = 0
        self._members: OrderedDict[bytes, Member] = OrderedDict()
        self._layers: OrderedDict[bytes, _LayerResult] = OrderedDict()

    def get(self, key: bytes) -> Member | None:
        with self._lock:
            member = self._members.get(key)
            if member is not None:
                self._members.move_to_end(key)
                self.reused += 1
            return member

    def put(self, key: bytes, member: Member) -> None:
        with self._lock:
            self.compressed += 1
            old = self._members.pop(key, None)
            self.bytes += len(member.data) - (len(old.data) if old else 0)
            self._members[key] = member
            while self.bytes > self.max_bytes and len(self._members) > 1:
                _, dropped = self._members.popitem(last=False)
                self.bytes -= len(dropped.data)

    def layer(self, key: bytes) -> _LayerResult | None:
        with self._lock:
            return self._layers.get(key)

    def put_layer(self, key: bytes, result: _LayerResult) -> None:
        with self._lock:
            self._layers[key] = result
            self._layers.move_to_end(key)
            while len(self._layers) > 4096:
                self._layers.popitem(last=False)


@dataclass(frozen=True)
class LayerBlob:
    """A written layer: its gzip stream as members (join them, or :meth:`write_to`), its
    diff_id (sha256 of the tar), its blob digest (sha256 of the stream) and size."""

    entries: tuple[LayerEntry, ...]
    members: tuple[bytes, ...] = field(repr=False)
    diff_id: str
    digest: str
    size: int

    def write_to(self, out: IO[bytes] | BinaryIO) -> None:
        for member in self.members:
            out.write(member)

    def data(self) -> bytes:
        return b"".join(self.members)


def layer_key(entries: Sequence[LayerEntry]) -> bytes:
    """What a layer's bytes are a function of: each entry's header and content digest (the
    key :func:`write_layer` caches the layer's digests under)."""
    return hashlib.sha256(b"\0".join([e.member_key for e in entries])).digest()


def write_layer(entries: Sequence[LayerEntry], cache: MemberCache | None = None) -> LayerBlob:
    """The layer blob of ``entries`` (sorted, parents included: :func:`tree_entries`).

    A layer whose members are all in ``cache`` is returned as it was. Otherwise a member in
    the cache is reused and its tar bytes reach the diff_id by inflating it (they are the
    blob's bytes by construction, so the file is not read again); the rest are read,
    checked against their digests and compressed.
    """
    cache = cache or MemberCache()
    headers = [e.header for e in entries]
    keys = [e.member_key for e in entries]
    layer_key = hashlib.sha256(b"\0".join(keys)).digest()
    known = cache.layer(layer_key)
    if known is not None:
        cached = [cache.get(k) for k in keys]
        if all(cached):
            members = [m.data for m in cached if m is not None] + [end_member()]
            return LayerBlob(tuple(entries), tuple(members), *known.fields())
    diff = hashlib.sha256()
    members = [
        _cached_member(entry, header, key, cache, diff)
        for entry, header, key in zip(entries, headers, keys, strict=True)
    ]
    diff.update(END_OF_ARCHIVE)
    members.append(end_member())
    known = _digests(members, diff)
    cache.put_layer(layer_key, known)
    return LayerBlob(tuple(entries), tuple(members), *known.fields())


def _cached_member(
    entry: LayerEntry, header: bytes, key: bytes, cache: MemberCache, diff: hashlib._Hash
) -> bytes:
    member = cache.get(key)
    if member is None:
        member = _member_of(entry, header, diff)
        cache.put(key, member)
    else:
        diff.update(isal_zlib.decompress(member.data, 31))
    return member.data


@functools.cache
def end_member() -> bytes:
    """The last member: the two zero blocks that end a tar."""
    return compress_member(END_OF_ARCHIVE)


def _digests(members: list[bytes], diff: hashlib._Hash) -> _LayerResult:
    blob = hashlib.sha256()
    for member in members:
        blob.update(member)
    size = sum(len(m) for m in members)
    return _LayerResult(f"sha256:{diff.hexdigest()}", f"sha256:{blob.hexdigest()}", size)


# -- a file layer's entries, and big folders split


def layer_entries(
    layer: SourceFolder | SourceFiles | CodeBundle, digest: LayerDigest, *, workdir: str = "/"
) -> list[LayerEntry]:
    """The entries BuildKit's ``COPY`` of ``layer`` makes, from the digest's own file lists;
    a relative destination is taken from ``workdir``, the one in effect at that layer."""
    if isinstance(layer, SourceFiles):
        files = dict(digest.files)
        rows = [(path, files[str(path)]) for path in layer.files]
        return files_entries(rows, destination(layer.dst, workdir))
    target = layer.target if isinstance(layer, SourceFolder) else layer.dst
    return tree_entries(digest.trees[0], destination(target, workdir))


def ends_segment(entry: LayerEntry, target_bytes: int) -> bool:
    """Whether ``entry`` ends a segment: with odds (its tar size)/``target_bytes``, drawn
    from its path's sha256, so segments hold about ``target_bytes`` and the verdict depends
    on that entry alone."""
    return entry.cut_hash * target_bytes < entry.tar_size << 64


def _segments(entries: Sequence[LayerEntry], target_bytes: int) -> list[list[LayerEntry]]:
    segments: list[list[LayerEntry]] = [[]]
    for entry in entries:
        segments[-1].append(entry)
        if entry.cut_hash * target_bytes < entry.tar_size << 64:  # ends_segment, inlined
            segments.append([])
    return [s for s in segments if s]


def _cut(segment: list[LayerEntry], max_bytes: int) -> list[list[LayerEntry]]:
    """A segment past ``max_bytes`` in parts of at most that (a bigger file alone), cut from
    its own start: an edit inside moves only this segment's cuts."""
    parts: list[list[LayerEntry]] = [[]]
    held = 0
    for entry in segment:
        if parts[-1] and held + entry.tar_size > max_bytes:
            parts.append([])
            held = 0
        parts[-1].append(entry)
        held += entry.tar_size
    return parts


def part_target(total_bytes: int, split_bytes: int) -> int:
    """The tar bytes a part of a split folder holds on average: a sixteenth of the
    threshold, doubled until the folder makes at most about 32 parts (an image may hold
    only so many layers: overlay2 stacks at most 128). It moves only when the folder's size
    crosses a power of two of it, and then the parts are cut anew, once."""
    target = max(1, split_bytes // PART_DIVISOR)
    while total_bytes > target * MAX_PARTS:
        target *= 2
    return target


def split_entries(entries: Sequence[LayerEntry], *, split_bytes: int) -> list[list[LayerEntry]]:
    """``entries`` (sorted) as one layer, or, past ``split_bytes`` of tar, as several.

    Content-defined and local: the sorted entries fall into segments at the entries that
    :func:`ends_segment` picks (:func:`part_target` bytes each, on average); a segment
    bigger than ``split_bytes`` is cut from its start. A one-file edit changes the part
    holding it (and merges it with, or splits it from, its neighbour when the file's new
    size changes its own verdict); an added file changes its part; every other part keeps
    its bytes and digests. Each part carries the folders above its entries: it is a layer of
    its own.
    """
    total = sum(e.tar_size for e in entries) + len(END_OF_ARCHIVE)
    if total <= split_bytes:
        return [list(entries)]
    segments = _segments(entries, part_target(total, split_bytes))
    folders = {e.path: e for e in entries if e.type == DIR}
    return [_part_with_parents(p, folders) for s in segments for p in _cut(s, split_bytes)]


def _part_with_parents(part: list[LayerEntry], folders: dict[str, LayerEntry]) -> list[LayerEntry]:
    """``part``, a run of a sorted list that holds every folder above its entries, with the
    folders above them that lie before the run (a folder sorts before what it holds, so
    those are the missing ones); each as the whole list has it (a stem's mode and owner)."""
    start = part[0].key
    missing: dict[str, LayerEntry] = {}
    seen: set[str] = set()
    for parent in dict.fromkeys(e.path.rpartition("/")[0] for e in part):
        while parent and parent not in seen:
            seen.add(parent)
            entry = folders.get(parent) or folder_entry(parent)
            if entry.key < start:  # before the run: missing (in it, it is there)
                missing[parent] = entry
            parent = parent.rpartition("/")[0]
    return sorted(missing.values(), key=sort_key) + part


def write_layers(
    entries: Sequence[LayerEntry], *, split_bytes: int, cache: MemberCache | None = None
) -> list[LayerBlob]:
    """The layer blobs of ``entries``: one, or a big folder's parts (:func:`split_entries`)."""
    cache = cache or MemberCache()
    return [write_layer(p, cache) for p in split_entries(entries, split_bytes=split_bytes)]
