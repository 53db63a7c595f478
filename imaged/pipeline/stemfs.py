"""The stem's filesystem on the tail's paths: which folders exist, with what mode and owner.

BuildKit's COPY and WORKDIR layers carry a folder that already exists in the image with
that folder's own mode, uid and gid (verified on Engine 20.10: a parent made 0700 1000:1000
by a RUN stays so in the COPY's layer; a COPY into an existing folder keeps its mode and
owner), and WORKDIR creates its folder only when it is missing. To write the same layers,
the fast path reads the stem's layer tars once per stem manifest (headers only, whiteouts
applied) and keeps the entries on the tail's paths: every folder above a tail destination,
and everything at or below one. The result is cached on disk by manifest digest and roots.

A WORKDIR's missing folders are made as the config's User (BuildKit looks a name up in the
image's /etc/passwd and /etc/group): :func:`read_stem_files` reads those files' contents
from the stem's layers, cached the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from imaged.atomic_write import write_atomic
from imaged.errors import ImagedError
from imaged.registry.append import INDEX_MEDIA_TYPES, STEM_MEDIA_TYPES
from imaged.registry.client import RegistryClient
from imaged.registry.ref import ImageRef

T = TypeVar("T")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CACHE_VERSION = 1


@dataclass(frozen=True)
class StemEntry:
    """One path of the stem: its type ("dir", "file", "symlink", "other"), mode bits
    (permissions, setuid/setgid/sticky), owner and a symlink's target."""

    type: str
    mode: int
    uid: int
    gid: int
    target: str | None = None


StemFs = dict[str, StemEntry]  # layer path (no leading "/") -> entry


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def on_paths(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` is above, at or below one of ``roots`` (layer paths)."""
    for root in roots:
        if not root or path == root or root.startswith(path + "/") or path.startswith(root + "/"):
            return True
    return False


def _delete(fs: StemFs, path: str) -> None:
    fs.pop(path, None)
    _delete_below(fs, path)


def _delete_below(fs: StemFs, path: str) -> None:
    prefix = path + "/" if path else ""
    for key in [k for k in fs if k.startswith(prefix)]:
        del fs[key]


def _entry(info: tarfile.TarInfo) -> StemEntry:
    kind = (
        "dir"
        if info.isdir()
        else "symlink"
        if info.issym()
        else "file"
        if info.isfile() or info.islnk()
        else "other"
    )
    return StemEntry(kind, info.mode & 0o7777, info.uid, info.gid, info.linkname or None)


def _layer_members(
    tar: IO[bytes], deletions: list[tuple[str, bool]]
) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    """Each member of a layer tar but its whiteouts, by its clean path (while the stream is
    at it, so it can be read); whiteouts and opaque markers go to ``deletions`` as (path,
    opaque: only what is below it)."""
    with tarfile.open(fileobj=tar, mode="r|*") as archive:
        for info in archive:
            path = _clean(info.name)
            folder, _, base = path.rpartition("/")
            if base == OPAQUE:
                deletions.append((folder, True))
            elif base.startswith(WHITEOUT):
                deletions.append((posixpath.join(folder, base[len(WHITEOUT) :]), False))
            else:
                yield path, info, archive


def apply_layer(fs: StemFs, tar: IO[bytes], roots: Sequence[str]) -> None:
    """Apply one layer tar (any compression tarfile reads) on top of ``fs``: its whiteouts
    and opaque markers delete from the layers below, then its entries on ``roots`` are set
    (a non-folder hides whatever was below it)."""
    deletions: list[tuple[str, bool]] = []  # (path, opaque: only what is below it)
    entries: list[tuple[str, StemEntry]] = []
    for path, info, _archive in _layer_members(tar, deletions):
        if path and on_paths(path, roots):
            entries.append((path, _entry(info)))
    for path, opaque in deletions:
        if on_paths(path, roots):
            (_delete_below if opaque else _delete)(fs, path)
    for path, entry in entries:
        if entry.type != "dir":
            _delete_below(fs, path)
        fs[path] = entry


def _cache_file(state_dir: Path, manifest_digest: str, roots: Sequence[str]) -> Path:
    key = hashlib.sha256(json.dumps([manifest_digest, sorted(roots)]).encode()).hexdigest()
    return state_dir / "stemfs" / f"{key[:32]}.json"


def _load(path: Path) -> StemFs | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return None
    out: StemFs = {}
    for p, row in entries.items():
        if not _is_row(row):
            return None  # a malformed file is a miss: the stem is read again
        out[p] = StemEntry(*row)
    return out


def _is_row(row: object) -> bool:
    if not isinstance(row, list) or len(row) != 5:
        return False
    kind, mode, uid, gid, target = row
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (mode, uid, gid))
    return kind in ("dir", "file", "symlink", "other") and ints and isinstance(target, str | None)


def _save(path: Path, fs: StemFs) -> None:
    rows = {p: [e.type, e.mode, e.uid, e.gid, e.target] for p, e in fs.items()}
    write_atomic(path, json.dumps({"version": CACHE_VERSION, "entries": rows}), durable=False)


class StemPlatformsDiffer(ImagedError):
    """The platforms of a multi-platform stem differ on the tail's paths (a folder's type,
    mode or owner): one tail cannot be appended to all of them as BuildKit would write it
    for each, so the image takes the full build; the message names the path and platforms."""


def _platform(entry: dict[str, object]) -> str:
    platform = entry.get("platform")
    if not isinstance(platform, dict):
        return str(entry.get("digest"))
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if p)


async def _platforms(client: RegistryClient, ref: ImageRef) -> list[tuple[str, list[str]]]:
    """(platform, its layer digests) for each image manifest of ``ref`` (one for a
    single-platform stem; an index's attestation manifests are left out)."""
    media_type, body, _ = await client.get_manifest(ref, accept=STEM_MEDIA_TYPES)
    manifest = json.loads(body)
    if media_type not in INDEX_MEDIA_TYPES:
        return [("", [layer["digest"] for layer in manifest.get("layers") or []])]
    out: list[tuple[str, list[str]]] = []
    for entry in manifest.get("manifests") or []:
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type"):
            continue
        child = ImageRef(ref.registry, ref.repository, tag=None, digest=entry["digest"])
        out += [(_platform(entry), layers) for _, layers in await _platforms(client, child)]
    return out


def _shown(entry: StemEntry | None) -> str:
    if entry is None:
        return "absent"
    link = f" -> {entry.target}" if entry.target else ""
    return f"{entry.type} {entry.mode:04o} {entry.uid}:{entry.gid}{link}"


def _first_difference(a: StemFs, b: StemFs) -> str:
    path = min(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))
    return f"/{path} is {_shown(a.get(path))} against {_shown(b.get(path))}"


async def _on_every_platform(
    client: RegistryClient,
    pinned: ImageRef,
    fresh: Callable[[], T],
    apply: Callable[[T, IO[bytes]], None],
    differ: Callable[[str, T, str, T], str],
) -> T:
    """``apply`` each layer blob of each platform of ``pinned`` (in order, off the event loop)
    to a ``fresh()`` value per platform (platforms with the same layers: read once); the
    platforms must agree, else :class:`StemPlatformsDiffer` with ``differ``'s sentence for the
    first that does not. A stem with no platform gives ``fresh()``."""
    import anyio

    read: dict[tuple[str, ...], T] = {}
    first: tuple[str, T] | None = None
    for platform, layers in await _platforms(client, pinned):
        key = tuple(layers)
        if key not in read:
            value = fresh()
            for digest in layers:
                blob = await client.get_blob(pinned, digest)
                await anyio.to_thread.run_sync(apply, value, io.BytesIO(blob))
            read[key] = value
        if first is None:
            first = (platform, read[key])
        elif read[key] != first[1]:
            raise StemPlatformsDiffer(differ(first[0], first[1], platform, read[key]))
    return first[1] if first is not None else fresh()


async def read_stem_fs(
    client: RegistryClient,
    ref: ImageRef,
    manifest_digest: str,
    roots: Sequence[str],
    state_dir: Path,
) -> StemFs:
    """The stem's entries on ``roots`` (see the module docstring), from the disk cache or
    by reading each of its layer blobs through ``client``. For a multi-platform stem every
    platform's layers are read (platforms with the same layers, once); they must agree on
    ``roots``, else :class:`StemPlatformsDiffer`."""
    import anyio

    cached_at = _cache_file(state_dir, manifest_digest, roots)
    cached = await anyio.to_thread.run_sync(_load, cached_at)
    if cached is not None:
        return cached

    def differ(one: str, a: StemFs, other: str, b: StemFs) -> str:
        return (
            f"the platforms of stem {ref} differ on the tail's paths: "
            f"{_first_difference(a, b)} on {one} and {other}; "
            "the full build follows each as BuildKit does"
        )

    result = await _on_every_platform(
        client,
        ImageRef(ref.registry, ref.repository, tag=None, digest=manifest_digest),
        dict,
        lambda fs, tar: apply_layer(fs, tar, roots),
        differ,
    )
    await anyio.to_thread.run_sync(_save, cached_at, result)
    return result


async def missing_blobs(client: RegistryClient, ref: ImageRef) -> list[str]:
    """The blobs (configs and layers, every platform's) that ``ref``'s manifest names and
    its repository lacks: a tag whose blobs were collected under it is still listed."""
    from imaged.registry.client import Existence

    media_type, body, _ = await client.get_manifest(ref, accept=STEM_MEDIA_TYPES)
    manifest = json.loads(body)
    if media_type in INDEX_MEDIA_TYPES:
        out: list[str] = []
        for child in manifest.get("manifests") or []:
            pinned = ImageRef(ref.registry, ref.repository, tag=None, digest=child["digest"])
            out += await missing_blobs(client, pinned)
        return out
    named = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    digests = [d["digest"] for d in named if "digest" in d]
    return [d for d in digests if await client.blob_exists(ref, d) is not Existence.EXISTS]


# The stem's account files: whom a WORKDIR's folders belong to --------------------------


class StemFileUnreadable(ImagedError):
    """A file the tail needs from the stem (``/etc/passwd``, ``/etc/group``) is not a plain
    file in it (a symlink, a hard link, or under a symlinked folder): BuildKit would follow
    it in the image; the fast path does not, so the image takes the full build."""


_UNREADABLE = b"\0unreadable"  # in a file map: the path is not a plain file


def apply_layer_files(files: dict[str, bytes], tar: IO[bytes], paths: Sequence[str]) -> None:
    """Apply one layer tar to ``files`` (layer path -> content, for ``paths`` only): its
    whiteouts and opaque markers delete what the layers below had, then a plain file at a
    path sets its content; a symlink or hard link there, or a symlink above it, marks it
    unreadable; a file above it hides it."""
    deletions: list[tuple[str, bool]] = []
    entries: dict[str, bytes | None] = {}  # None: hidden (a file above the path)
    for path, info, archive in _layer_members(tar, deletions):
        if path in paths:
            handle = archive.extractfile(info) if info.isfile() and not info.islnk() else None
            entries[path] = handle.read() if handle is not None else _UNREADABLE
        else:
            for wanted in paths:
                if wanted.startswith(path + "/") and not info.isdir():
                    entries[wanted] = _UNREADABLE if info.issym() else None
    for path, opaque in deletions:
        for wanted in paths:
            if wanted.startswith(path + "/") or (wanted == path and not opaque):
                files.pop(wanted, None)
    for path, content in entries.items():
        if content is None:
            files.pop(path, None)
        else:
            files[path] = content


def _files_cache(state_dir: Path, manifest_digest: str, paths: Sequence[str]) -> Path:
    key = hashlib.sha256(json.dumps(["files", manifest_digest, sorted(paths)]).encode())
    return state_dir / "stemfs" / f"files-{key.hexdigest()[:32]}.json"


def _load_files(path: Path) -> dict[str, bytes] | None:
    import base64
    import binascii

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return None
    try:
        return {p: base64.b64decode(v, validate=True) for p, v in files.items()}
    except (binascii.Error, ValueError):
        return None


def _save_files(path: Path, files: dict[str, bytes]) -> None:
    import base64

    rows = {p: base64.b64encode(v).decode() for p, v in files.items()}
    write_atomic(path, json.dumps({"version": CACHE_VERSION, "files": rows}), durable=False)


async def read_stem_files(
    client: RegistryClient,
    ref: ImageRef,
    manifest_digest: str,
    paths: Sequence[str],
    state_dir: Path,
) -> dict[str, bytes]:
    """The contents of those of ``paths`` (layer paths) that the stem holds, read from its
    layer blobs (every platform's: they must agree, else :class:`StemPlatformsDiffer`) and
    cached on disk by manifest digest; :class:`StemFileUnreadable` when one is not a plain
    file."""
    import anyio

    cached_at = _files_cache(state_dir, manifest_digest, paths)
    files = await anyio.to_thread.run_sync(_load_files, cached_at)
    if files is None:

        def differ(one: str, a: dict[str, bytes], other: str, b: dict[str, bytes]) -> str:
            path = min(p for p in paths if a.get(p) != b.get(p))
            return (
                f"the platforms of stem {ref} differ in /{path} ({one} and "
                f"{other}): the full build follows each as BuildKit does"
            )

        files = await _on_every_platform(
            client,
            ImageRef(ref.registry, ref.repository, tag=None, digest=manifest_digest),
            dict,
            lambda got, tar: apply_layer_files(got, tar, paths),
            differ,
        )
        await anyio.to_thread.run_sync(_save_files, cached_at, files)
    for path, content in files.items():
        if content == _UNREADABLE:
            raise StemFileUnreadable(
                f"/{path} is not a plain file in stem {ref} (a link, or under a symlinked "
                "folder): the full build follows it as BuildKit does"
            )
    return files
