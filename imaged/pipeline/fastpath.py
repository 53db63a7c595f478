"""The fast path: write an image's tail layers and append them to its pushed stem.

From the same file lists the image digest was computed from (its :class:`ImageDigest`),
each tail layer becomes a deterministic layer blob (:mod:`imaged.render.layertar`, with one
process-wide :class:`MemberCache`, so a one-file edit recompresses one file); a folder past
``fastpath_split_bytes`` becomes several layers. Folders the stem already has keep its mode
and owner, as BuildKit's layers do (:mod:`imaged.pipeline.stemfs`); a WORKDIR that exists
adds an empty layer, one that is missing creates its folders 0755 0:0. The config gets ENV
and WORKDIR as the Dockerfile sets them and the ``dev.imaged.digest`` label of the whole
image; :func:`imaged.registry.append.append_layers` pushes the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence, Set
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import isal

from imaged.atomic_write import write_atomic
from imaged.digest.files import DIR, FILE, SYMLINK
from imaged.digest.image_digest import ImageDigest, LayerDigest
from imaged.errors import ContextChangedError, ImagedError, RegistryError
from imaged.pipeline.route import TailLayer, describe_layer
from imaged.pipeline.stemfs import (
    StemEntry,
    StemFileUnreadable,
    StemFs,
    missing_blobs,
    on_paths,
    read_stem_files,
    read_stem_fs,
)
from imaged.registry.append import (
    INDEX_MEDIA_TYPES,
    STEM_MEDIA_TYPES,
    BlobPush,
    ConfigEdit,
    HistoryEntry,
    NewLayer,
    PushedImage,
    StemImage,
    append_layers,
    buildkit_copy,
    edit_config,
    encode_json,
    resolve_workdir,
)
from imaged.registry.client import BlobSource, Existence, RegistryClient
from imaged.registry.ref import ImageRef
from imaged.render.dockerfile import quote_env
from imaged.render.layertar import (
    BLOCKS,
    LEVEL,
    LayerBlob,
    LayerEntry,
    MemberCache,
    destination,
    folder_entry,
    layer_entries,
    layer_key,
    split_entries,
    write_layer,
)
from imaged.spec.image import Image
from imaged.spec.layers import CodeBundle, EnvVars, SourceFiles, SourceFolder, Workdir

MEMBERS = MemberCache()  # process-wide: the daemon reuses members from one edit to the next
DIGEST_LABEL = "dev.imaged.digest"
# (stem ref, manifest digest) -> the stem as read, and its (first platform's) config
_STEMS: dict[tuple[str, str], tuple[StemImage, dict[str, object]]] = {}
# (registry, repository, digest): blobs this process saw in a repository (uploaded, or
# HEAD said so), not asked about again. The registry still checks every blob a manifest
# names when it is PUT; one that vanished since is refused, and the push starts over.
_PRESENT: set[tuple[str, str, str]] = set()
HEADS_AT_ONCE = 8


# What else a layer's bytes depend on besides its entries: the compressor, its version and
# level, and the layer format (bump it when write_layer's output changes for equal entries).
LAYER_FORMAT = 1
WRITER = f"isal {isal.__version__} level {LEVEL} format {LAYER_FORMAT}".encode()


def _row_key(key: bytes) -> str:
    return hashlib.sha256(WRITER + b"\0" + key).hexdigest()


class StaleLayerIndex(ContextChangedError):
    """A layer the index knew was written with other bytes than it says (its entry is
    dropped): the tail is written afresh, its digests from the bytes written."""


class LayerIndex:
    """The digests of layers written before, by :func:`layer_key` and the writer (the
    compressor, its version and level, the layer format), kept on disk (the state
    directory), so a new process (a one-shot ``imaged build``) need not compress a layer
    the registry already holds: it is written only if its blob is missing there.
    Its bytes are a function of that key, so an entry should never be stale; one that is
    (a damaged file) is dropped when its bytes are written (:class:`StaleLayerIndex`).
    A lost update between two processes only costs a compression.

    It also keeps the blobs seen in each repository (``present``: registry, repository,
    digest), so a new process need not HEAD them again; the registry checks each blob a
    manifest names when it is PUT (see :func:`push_tail`)."""

    LIMIT = 1 << 14
    PRESENT = "present"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, list[object]] = {}
        self.present: set[tuple[str, str, str]] = set()
        self.added = False
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            present = data.pop(self.PRESENT, [])
            self.rows = data
            if isinstance(present, list):
                self.present = {tuple(p) for p in present if _is_present_row(p)}

    def get(self, key: bytes) -> tuple[str, str, int] | None:
        row = self.rows.get(_row_key(key))
        if not (isinstance(row, list) and len(row) == 3):
            return None
        diff_id, digest, size = row
        if isinstance(diff_id, str) and isinstance(digest, str) and isinstance(size, int):
            return diff_id, digest, size
        return None

    def put(self, key: bytes, blob: LayerBlob) -> None:
        self.rows.pop(_row_key(key), None)
        self.rows[_row_key(key)] = [blob.diff_id, blob.digest, blob.size]
        self.added = True

    def drop(self, key: bytes) -> None:
        """Forget a stale entry (saved with the next :meth:`save`)."""
        if self.rows.pop(_row_key(key), None) is not None:
            self.added = True

    def save(self, present: set[tuple[str, str, str]] | None = None) -> None:
        """Write it when it changed; ``present``: the blobs this process saw in each
        repository (the process-wide set), kept beside the rows."""
        if present is not None and present != self.present:
            self.present = set(present)
            self.added = True
        if not self.added:
            return
        data: dict[str, object] = dict(list(self.rows.items())[-self.LIMIT :])
        data[self.PRESENT] = [list(p) for p in list(self.present)[-self.LIMIT :]]
        write_atomic(self.path, json.dumps(data), durable=False)
        self.added = False


def _is_present_row(row: object) -> bool:
    return isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)


_INDEXES: dict[Path, LayerIndex] = {}


def _index_path(state_dir: Path) -> Path:
    return state_dir / "fastpath-layers.json"


def loaded_layer_index(state_dir: Path) -> LayerIndex | None:
    """The layer index when this process read it already (no file access)."""
    return _INDEXES.get(_index_path(state_dir))


def layer_index(state_dir: Path) -> LayerIndex:
    """The state directory's layer index, read once per process."""
    path = _index_path(state_dir)
    if path not in _INDEXES:
        _INDEXES[path] = LayerIndex(path)
        _PRESENT.update(_INDEXES[path].present)
    return _INDEXES[path]


class _Relearning(LayerIndex):
    """An index that answers nothing but keeps what is written (into ``inner``): a tail
    written this way has every digest from the bytes written, and corrects stale entries."""

    def __init__(self, inner: LayerIndex) -> None:
        self.inner = inner

    def get(self, key: bytes) -> tuple[str, str, int] | None:
        return None

    def put(self, key: bytes, blob: LayerBlob) -> None:
        self.inner.put(key, blob)


def relearning(index: LayerIndex) -> LayerIndex:
    """``index`` asked nothing, told everything (see :class:`_Relearning`)."""
    return _Relearning(index)


def _written_on_demand(
    part: Sequence[LayerEntry], digest: str, index: LayerIndex, key: bytes
) -> BlobSource:
    """A blob source writing ``part`` when the registry asks for its bytes; bytes that are
    not ``digest`` (a stale index entry) drop the entry and raise StaleLayerIndex."""

    async def stream() -> AsyncIterator[bytes]:
        blob = await anyio.to_thread.run_sync(write_layer, part, MEMBERS)
        if blob.digest != digest:
            index.drop(key)
            raise StaleLayerIndex(
                f"a layer of {len(part)} entries written before as {digest} is {blob.digest} "
                f"now: the layer index entry ({index.path}) is dropped and the tail written again"
            )
        yield blob.data()

    return stream


class FullBuildNeeded(ImagedError):
    """The tail cannot be appended as BuildKit would write it (a parent is not a folder in
    the stem): the image takes the full build; the message says why."""


@dataclass
class Tail:
    """The written tail: its layers, the config edit, and the timings of writing it."""

    layers: list[NewLayer] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    workdir: str | None = None
    written: set[str] = field(default_factory=set)  # blobs no index knew: new, not asked about

    def edit(self, digest: str) -> ConfigEdit:
        label = HistoryEntry(f"LABEL {DIGEST_LABEL}={digest}", empty_layer=True)
        return ConfigEdit(
            env=tuple(self.env),
            workdir=self.workdir,
            labels={DIGEST_LABEL: digest},
            history=(*self.history, label),
        )


def _layer_digest(digest: ImageDigest, index: int) -> LayerDigest:
    return next(d for d in digest.layers if d.index == index)


def _copy_target(layer: SourceFolder | SourceFiles | CodeBundle) -> str:
    return layer.target if isinstance(layer, SourceFolder) else layer.dst


def tail_roots(tail: Sequence[tuple[int, TailLayer]], stem_workdir: str) -> list[str]:
    """The layer paths the tail writes to: each copy's destination and each workdir."""
    return sorted(set(_roots(tail, stem_workdir, workdirs=True)))


def _copy_roots(tail: Sequence[tuple[int, TailLayer]], stem_workdir: str) -> list[str]:
    return _roots(tail, stem_workdir, workdirs=False)


def _roots(
    tail: Sequence[tuple[int, TailLayer]], stem_workdir: str, *, workdirs: bool
) -> list[str]:
    workdir, roots = stem_workdir or "/", []
    for _, layer in tail:
        if isinstance(layer, Workdir):
            workdir = resolve_workdir(workdir, layer.path)
            if workdirs:
                roots.append(destination(workdir))
        elif not isinstance(layer, EnvVars):
            roots.append(destination(_copy_target(layer), workdir))
    return roots


_KINDS = {DIR: "dir", FILE: "file", SYMLINK: "symlink"}


def _as_stem(entry: LayerEntry) -> StemEntry:
    return StemEntry(_KINDS[entry.type], entry.mode, entry.uid, entry.gid, entry.target)


class _TailWriter:
    """Writes the tail's layers in order, tracking the folders the stem and the layers
    written so far hold (a later layer's parents are theirs)."""

    def __init__(
        self,
        image: Image,
        digest: ImageDigest,
        known: StemFs,
        stem_workdir: str,
        split: int,
        index: LayerIndex | None,
        workdir_owner: tuple[int, int] = (0, 0),
    ) -> None:
        self.image, self.digest, self.known, self.split = image, digest, dict(known), split
        self.index, self.owner = index, workdir_owner
        self.workdir = stem_workdir or "/"
        self.last = -1  # the last layer that writes entries: nothing reads what it adds
        self.out = Tail()

    def write(self, tail: Sequence[tuple[int, TailLayer]]) -> Tail:
        writes = [i for i, layer in tail if not isinstance(layer, EnvVars)]
        self.last = writes[-1] if writes else -1
        for index, layer in tail:
            if isinstance(layer, EnvVars):
                self.out.env += layer.env
                pairs = " ".join(f"{k}={quote_env(v)}" for k, v in layer.env)
                self.out.history.append(HistoryEntry(f"ENV {pairs}", empty_layer=True))
            elif isinstance(layer, Workdir):
                self._workdir(index, layer)
            else:
                self._copy(index, layer)
        return self.out

    def _existing(self, index: int, entry: LayerEntry) -> LayerEntry:
        """``entry`` (a folder) with the stem's mode and owner when it has that folder."""
        there = self.known.get(entry.path)
        if there is None:
            return entry
        if there.type != "dir":
            what = f"a symlink to {there.target}" if there.type == "symlink" else f"a {there.type}"
            raise FullBuildNeeded(
                f"{describe_layer(self.image, index)} writes into /{entry.path}, which is "
                f"{what} in the stem: the full build follows it as BuildKit does"
            )
        return dataclasses.replace(entry, mode=there.mode, uid=there.uid, gid=there.gid)

    def _adopt(self, index: int, entries: Sequence[LayerEntry]) -> list[LayerEntry]:
        out = [self._existing(index, e) if e.type == DIR else e for e in entries]
        if index != self.last:  # a later layer's parents may be these
            for entry in out:
                self.known[entry.path] = _as_stem(entry)
        return out

    def _add(self, part: Sequence[LayerEntry], created_by: str) -> None:
        key = layer_key(part)
        seen = self.index.get(key) if self.index is not None else None
        if seen is not None and self.index is not None:
            diff_id, digest, size = seen
            data = _written_on_demand(part, digest, self.index, key)
            self.out.layers.append(NewLayer(digest, size, diff_id, data, created_by))
        else:
            blob = write_layer(part, MEMBERS)
            if self.index is not None:
                self.index.put(key, blob)
            layer = NewLayer(blob.digest, blob.size, blob.diff_id, blob.data(), created_by)
            self.out.layers.append(layer)
            self.out.written.add(blob.digest)
        self.out.history.append(HistoryEntry(created_by))

    def _workdir(self, index: int, layer: Workdir) -> None:
        self.workdir = self.out.workdir = resolve_workdir(self.workdir, layer.path)
        path = destination(self.workdir)
        there = self.known.get(path)
        entries: list[LayerEntry] = []
        if path and (there is None or there.type != "dir"):
            parts = path.split("/")
            uid, gid = self.owner  # BuildKit makes them as the config's User
            entries = [
                dataclasses.replace(folder_entry("/".join(parts[: i + 1])), uid=uid, gid=gid)
                for i in range(len(parts))
            ]
        self._add(self._adopt(index, entries), f"WORKDIR {layer.path}")

    def _copy(self, index: int, layer: SourceFolder | SourceFiles | CodeBundle) -> None:
        entries = layer_entries(layer, _layer_digest(self.digest, index), workdir=self.workdir)
        entries = self._adopt(index, entries)
        dst = _copy_target(layer).rstrip("/") + "/"
        created_by = buildkit_copy(f"layers/{index}/", dst)
        for part in split_entries(entries, split_bytes=self.split):
            self._add(part, created_by)


def write_tail(
    image: Image,
    digest: ImageDigest,
    tail: Sequence[tuple[int, TailLayer]],
    known: StemFs,
    *,
    stem_workdir: str,
    split_bytes: int,
    index: LayerIndex | None = None,
    workdir_owner: tuple[int, int] = (0, 0),
) -> Tail:
    """The tail's layer blobs and config edit (reads and checks each file against
    ``digest``: raises ContextChangedError when one moved since it was hashed). A layer
    ``index`` knows is written only when its bytes are asked for (a missing blob). The
    folders a WORKDIR creates belong to ``workdir_owner`` (:func:`workdir_owner`)."""
    writer = _TailWriter(image, digest, known, stem_workdir, split_bytes, index, workdir_owner)
    try:
        return writer.write(tail)
    except ContextChangedError:
        BLOCKS.clear()  # an entry made while the file moved may hold the wrong size
        raise


async def stem_image(
    client: RegistryClient, ref: ImageRef, manifest_digest: str, state_dir: Path | None = None
) -> tuple[StemImage, dict[str, object]]:
    """The stem's manifest (or index) and its image config (the first platform's, for an
    index), read once per process by (reference, manifest digest), and for a single
    manifest kept in ``state_dir`` too (content-addressed: checked against its digests
    when read back, so a new process does not fetch it again)."""
    key = (str(ref), manifest_digest)
    if key in _STEMS:
        return _STEMS[key]
    kept = _stem_file(state_dir, manifest_digest)
    found = await anyio.to_thread.run_sync(_read_stem, kept, manifest_digest) if kept else None
    if found is not None:
        _STEMS[key] = found
        return found
    pinned = dataclasses.replace(ref, tag=None, digest=manifest_digest)
    media_type, body, _ = await client.get_manifest(pinned, accept=STEM_MEDIA_TYPES)
    manifest = json.loads(body)
    if media_type in INDEX_MEDIA_TYPES:
        first = manifest["manifests"][0]["digest"]
        _, config = await stem_image(client, dataclasses.replace(ref, tag=None), first)
        _STEMS[key] = StemImage(media_type, body), config
    else:
        config_digest = manifest["config"]["digest"]
        raw = await client.get_blob(pinned, config_digest)
        config = json.loads(raw)
        _STEMS[key] = StemImage(media_type, body, {config_digest: config}), config
        if kept is not None:
            await anyio.to_thread.run_sync(_keep_stem, kept, media_type, body, raw)
    return _STEMS[key]


# (registry, repository, manifest digest): stems whose blobs this process found there
_STEM_CHECKED: set[tuple[str, str, str]] = set()


async def stem_blobs_missing(
    client: RegistryClient, ref: ImageRef, manifest_digest: str, stem: StemImage
) -> list[str]:
    """The blobs (config and layers) of the stem manifest ``manifest_digest`` that its
    repository says it lacks (HEADs at once), asked once per process and stem: the push
    takes a stem's blobs in its own repository as there, and a registry that does not
    check blobs at a manifest PUT would keep a tag naming a missing one. An index's
    platforms are asked one by one (:func:`missing_blobs`)."""
    key = (ref.registry, ref.repository, manifest_digest)
    if key in _STEM_CHECKED:
        return []
    pinned = dataclasses.replace(ref, tag=None, digest=manifest_digest)
    if stem.media_type in INDEX_MEDIA_TYPES:
        missing = await missing_blobs(client, pinned)
    else:
        manifest = json.loads(stem.body)
        named = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        digests = list(dict.fromkeys(d["digest"] for d in named if "digest" in d))
        answers: dict[str, Existence] = {}
        limit = anyio.Semaphore(HEADS_AT_ONCE)

        async def head(digest: str) -> None:
            async with limit:
                answers[digest] = await client.blob_exists(pinned, digest)

        await _concurrently(*(partial(head, d) for d in digests))
        missing = [d for d in digests if answers[d] is not Existence.EXISTS]
    if not missing:
        _STEM_CHECKED.add(key)
    return missing


def _stem_file(state_dir: Path | None, manifest_digest: str) -> Path | None:
    if state_dir is None or not manifest_digest.startswith("sha256:"):
        return None
    return state_dir / "stems" / f"{manifest_digest.removeprefix('sha256:')}.json"


def _keep_stem(path: Path, media_type: str, body: bytes, config: bytes) -> None:
    try:
        doc = {"media_type": media_type, "manifest": body.decode(), "config": config.decode()}
        write_atomic(path, json.dumps(doc), durable=False)
    except (OSError, UnicodeDecodeError):
        return  # not kept: the next process reads it from the registry


def _read_stem(path: Path, manifest_digest: str) -> tuple[StemImage, dict[str, object]] | None:
    """A kept stem, when its bytes still have the digests that name them."""
    try:
        doc = json.loads(path.read_bytes())
        body, raw = doc["manifest"].encode(), doc["config"].encode()
        media_type = doc["media_type"]
        config_digest = json.loads(body)["config"]["digest"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if _sha256(body) != manifest_digest or _sha256(raw) != config_digest:
        return None
    if not isinstance(media_type, str) or media_type in INDEX_MEDIA_TYPES:
        return None
    config = json.loads(raw)
    return StemImage(media_type, body, {config_digest: config}), config


async def stem_config(
    client: RegistryClient, ref: ImageRef, manifest_digest: str
) -> dict[str, object]:
    """The stem's image config (:func:`stem_image`)."""
    return (await stem_image(client, ref, manifest_digest))[1]


def stem_workdir_of(config: dict[str, object]) -> str:
    inner = config.get("config")
    workdir = inner.get("WorkingDir") if isinstance(inner, dict) else None
    return workdir if isinstance(workdir, str) and workdir else "/"


_ACCOUNTS = ("etc/group", "etc/passwd")
_ACCOUNT_FILES: dict[tuple[str, Path], dict[str, bytes]] = {}


def stem_user_of(config: dict[str, object]) -> str:
    inner = config.get("config")
    user = inner.get("User") if isinstance(inner, dict) else None
    return user if isinstance(user, str) else ""


def _an_id(value: str) -> bool:
    """Whether BuildKit takes ``value`` as a numeric id (Go's ParseUint(value, 10, 32))."""
    return value.isascii() and value.isdigit() and int(value) < 1 << 32


def _account(table: bytes | None, name: str, field: int) -> int | None:
    """``name``'s numeric ``field`` in an /etc/passwd or /etc/group table (the first line
    naming it), or None."""
    for line in (table or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) > field and parts[0] == name and _an_id(parts[field].strip()):
            return int(parts[field])
    return None


def resolve_user(user: str, passwd: bytes | None, group: bytes | None) -> tuple[int, int] | None:
    """The uid and gid BuildKit 20.10 gives the folders a WORKDIR makes under ``USER user``
    (verified on the engine): a numeric user is that uid with gid the same number; a name
    is its /etc/passwd uid and primary gid; a ``:group`` part overrides the gid (numeric,
    or its /etc/group id). None when a name is not in the stem's table."""
    name, _, grp = user.partition(":")
    if _an_id(name):
        uid: int | None = int(name)
        gid: int | None = uid
    else:
        uid, gid = _account(passwd, name, 2), _account(passwd, name, 3)
    if grp:
        gid = int(grp) if _an_id(grp) else _account(group, grp, 2)
    return (uid, gid) if uid is not None and gid is not None else None


async def workdir_owner(
    client: RegistryClient,
    stem: ImageRef,
    manifest_digest: str,
    config: dict[str, object],
    tail: Sequence[tuple[int, TailLayer]],
    state_dir: Path,
) -> tuple[int, int]:
    """Whom the folders a tail WORKDIR creates belong to: BuildKit makes them as the stem
    config's User, resolved against the stem's /etc/passwd and /etc/group (read from its
    layers only when a name is to be looked up). :class:`FullBuildNeeded` when it cannot
    be resolved as BuildKit would (a name the stem does not list, an account file the
    tail itself writes or that is a link)."""
    user = stem_user_of(config)
    if not user or not any(isinstance(layer, Workdir) for _, layer in tail):
        return (0, 0)
    owner = resolve_user(user, None, None)  # numeric: no table needed
    if owner is not None:
        return owner
    copies = [r for r in _copy_roots(tail, stem_workdir_of(config)) if on_paths(r, _ACCOUNTS)]
    if copies:
        raise FullBuildNeeded(
            f"the tail copies into /{copies[0]}, on /etc/passwd or /etc/group, and a WORKDIR "
            f"is made as the stem's User {user!r}: the full build looks the user up after "
            "the copy as BuildKit does"
        )
    key = (manifest_digest, state_dir)
    if key not in _ACCOUNT_FILES:  # read once per stem in a process (a daemon's edits)
        try:
            files = await read_stem_files(client, stem, manifest_digest, _ACCOUNTS, state_dir)
        except StemFileUnreadable as exc:
            raise FullBuildNeeded(f"the stem's User {user!r}: {exc}") from exc
        _ACCOUNT_FILES[key] = files
    files = _ACCOUNT_FILES[key]
    owner = resolve_user(user, files.get("etc/passwd"), files.get("etc/group"))
    if owner is None:
        raise FullBuildNeeded(
            f"the stem's User {user!r} is not in its /etc/passwd or /etc/group: the full "
            "build makes the WORKDIR as BuildKit does (or fails as it does)"
        )
    return owner


@dataclass
class Pushed:
    """What the fast path pushed, and how long each step took."""

    image: PushedImage
    uploaded_bytes: int
    timings: dict[str, float]


def present_blobs() -> set[tuple[str, str, str]]:
    """The blobs this process saw in each repository (registry, repository, digest)."""
    return _PRESENT


def _present_key(target: ImageRef, digest: str) -> tuple[str, str, str]:
    return target.registry, target.repository, digest


async def upload_tail(
    client: RegistryClient,
    target: ImageRef,
    layers: Sequence[NewLayer],
    new: Set[str] = frozenset(),
) -> list[BlobPush]:
    """Put each tail blob into the target repository: HEAD those this process has not seen
    there (a few at once), upload the missing ones (at once), and those in ``new`` (just
    written, no index knew them) without asking first. How each got there."""
    unique = list({la.digest: la for la in layers}.values())
    known = [la for la in unique if _present_key(target, la.digest) in _PRESENT]
    done = [BlobPush(la.digest, la.size, "present") for la in known]
    unknown = [la for la in unique if _present_key(target, la.digest) not in _PRESENT]
    asked = [la for la in unknown if la.digest not in new]
    missing: list[NewLayer] = [la for la in unknown if la.digest in new]
    limit = anyio.Semaphore(HEADS_AT_ONCE)

    async def head(layer: NewLayer) -> None:
        async with limit:
            there = await client.blob_exists(target, layer.digest)
        if there is Existence.EXISTS:
            done.append(BlobPush(layer.digest, layer.size, "present"))
            _PRESENT.add(_present_key(target, layer.digest))
        else:
            missing.append(layer)

    async def upload(layer: NewLayer) -> None:
        await client.upload_blob(target, layer.digest, layer.data, layer.size)
        done.append(BlobPush(layer.digest, layer.size, "uploaded"))
        _PRESENT.add(_present_key(target, layer.digest))

    if asked:
        await _each(head, asked)
    if missing:
        await _each(upload, missing)
    return done


async def _each(
    work: Callable[[NewLayer], Coroutine[Any, Any, None]], layers: Sequence[NewLayer]
) -> None:
    """``work`` on each layer, concurrently (in this task when there is just one)."""
    if len(layers) == 1:
        await work(layers[0])
        return
    await _concurrently(*(partial(work, layer) for layer in layers))


async def _concurrently(*calls: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``calls`` at once; the first imaged error among their failures is raised as
    itself, not wrapped in the task group's exception group."""
    try:
        async with anyio.create_task_group() as group:
            for call in calls:
                group.start_soon(call)
    except BaseExceptionGroup as group_error:
        # One error as itself (a registry gone mid-upload is one transient RegistryUnavailable
        # for the caller to classify), not wrapped in the task group's exception group.
        first = _first_imaged_error(group_error)
        if first is None:
            raise
        raise first from group_error


def _first_imaged_error(group: BaseExceptionGroup[BaseException]) -> ImagedError | None:
    for error in group.exceptions:
        if isinstance(error, ImagedError):
            return error
        if isinstance(error, BaseExceptionGroup) and (inner := _first_imaged_error(error)):
            return inner
    return None


async def push_tail(
    client: RegistryClient,
    stem: ImageRef,
    target: ImageRef,
    tail: Tail,
    digest: str,
    stem_read: StemImage | None = None,
) -> Pushed:
    """Upload the tail's blobs, then append them to ``stem`` as ``target``. A manifest the
    registry refuses since a blob taken as there is missing is pushed again, every blob
    asked about anew."""
    for attempt in (1, 2):
        t0 = time.perf_counter()
        done = await _upload_with_config(client, target, tail, digest, stem_read)
        t1 = time.perf_counter()
        try:
            pushed = await append_layers(
                client,
                stem,
                target,
                tail.layers,
                tail.edit(digest),
                stem_image=stem_read,
                done=done,
                fresh_configs=True,
            )
        except RegistryError as exc:
            if attempt == 2 or not _names_missing_blob(exc):
                raise
            _forget(target)
            tail = dataclasses.replace(tail, written=set())
            continue
        timings = {"upload": t1 - t0, "manifest": time.perf_counter() - t1}
        return Pushed(pushed, pushed.uploaded_bytes, timings)
    raise AssertionError("unreachable")


async def _upload_with_config(
    client: RegistryClient, target: ImageRef, tail: Tail, digest: str, stem: StemImage | None
) -> list[BlobPush]:
    """:func:`upload_tail`, and at the same time the new config (a single manifest's: the
    stem's config is at hand), so the manifest PUT can follow at once."""
    config = _new_config(tail, digest, stem)
    if config is None:
        return await upload_tail(client, target, tail.layers, tail.written)
    done: list[BlobPush] = []

    async def tail_blobs() -> None:
        done.extend(await upload_tail(client, target, tail.layers, tail.written))

    async def config_blob() -> None:
        await client.upload_blob(target, _sha256(config), config, len(config))
        done.append(BlobPush(_sha256(config), len(config), "uploaded"))

    await _concurrently(tail_blobs, config_blob)
    return done


def _new_config(tail: Tail, digest: str, stem: StemImage | None) -> bytes | None:
    """The config :func:`append_layers` writes for a single-manifest stem (None for an
    index, or a stem not read yet): the same bytes, so it finds it pushed."""
    if stem is None or stem.media_type in INDEX_MEDIA_TYPES or len(stem.configs) != 1:
        return None
    (config,) = stem.configs.values()
    return encode_json(edit_config(config, tail.layers, tail.edit(digest)))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _names_missing_blob(exc: RegistryError) -> bool:
    return "BLOB_UNKNOWN" in str(exc) or "blob unknown" in str(exc).lower()


def _forget(target: ImageRef) -> None:
    for key in [k for k in _PRESENT if k[:2] == (target.registry, target.repository)]:
        _PRESENT.discard(key)


async def read_known(
    client: RegistryClient,
    stem: ImageRef,
    manifest_digest: str,
    roots: Sequence[str],
    state_dir: Path,
) -> StemFs:
    """The stem's folders on the tail's paths (cached on disk by manifest digest, and in
    the process: a daemon reads the file once)."""
    key = (manifest_digest, tuple(roots), state_dir)
    if key not in _KNOWN:
        _KNOWN[key] = await read_stem_fs(client, stem, manifest_digest, roots, state_dir)
    return _KNOWN[key]


_KNOWN: dict[tuple[str, tuple[str, ...], Path], StemFs] = {}


def tail_description(tail: Sequence[tuple[int, TailLayer]], image: Image) -> list[str]:
    """One line per tail layer, for dry runs and plans."""
    return [describe_layer(image, index) for index, _ in tail]


__all__ = [
    "MEMBERS",
    "FullBuildNeeded",
    "Pushed",
    "StaleLayerIndex",
    "Tail",
    "push_tail",
    "read_known",
    "stem_blobs_missing",
    "stem_config",
    "stem_image",
    "stem_user_of",
    "stem_workdir_of",
    "tail_roots",
    "workdir_owner",
    "write_tail",
]
