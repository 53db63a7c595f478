"""Content digests: a canonical encoding, a per-file digest cache, Merkle trees of folders,
and the per-layer and whole-image digests.

The encoding is versioned, type-tagged and length-prefixed, so no two different inputs
encode the same. File inputs contribute their POSIX relative path, type, executable bit,
symlink target and content sha256: never mtimes, owners or their absolute location.
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.digest.files import (
    DIR,
    FILE,
    SYMLINK,
    FileEntry,
    folder_rules,
    stat_entry,
    stat_key,
    walk_files,
)
from imaged.digest.ignore import IgnoreRules
from imaged.errors import MissingPathError, SpecError
from imaged.safe_read import kind_of, open_regular, os_reason, read_regular, shown_path
from imaged.spec import layers as L
from imaged.spec.image import DebianBase, DockerfileBase, Image, ParentBase, RefBase
from imaged.spec.pins import POETRY_VERSION, RENDER_VERSION, UV_VERSION

ENCODING_VERSION = "imaged-digest-v1"
TAG_HEX_CHARS = 32
RACY_WINDOW_NS = 2_000_000_000
EXEC_SUFFIX = "+x"
_CHUNK = 1 << 20
_U64 = struct.Struct(">Q").pack


# -- canonical encoding -----------------------------------------------------------------


def encode(value: object) -> bytes:
    """Canonical, type-tagged, length-prefixed bytes for str/bytes/int/bool/None/list/tuple."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: object) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, bool):
        out += b"T" if value else b"F"
    elif isinstance(value, int):
        raw = str(value).encode()
        out += b"i" + struct.pack(">Q", len(raw)) + raw
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        out += b"s" + struct.pack(">Q", len(raw)) + raw
    elif isinstance(value, bytes):
        out += b"b" + struct.pack(">Q", len(value)) + value
    elif isinstance(value, list | tuple):
        out += b"l" + struct.pack(">Q", len(value))
        for item in value:
            _encode_into(out, item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def sha256_hex(value: object) -> str:
    return hashlib.sha256(encode(value)).hexdigest()


# -- per-file digest cache --------------------------------------------------------------


@dataclass
class DigestCache:
    """File content digests keyed by (path, size, mtime_ns, ctime_ns, inode, mode).

    An entry recorded less than ``RACY_WINDOW_NS`` after the file's mtime is not trusted
    (the file may have been written again within the timestamp granularity), so the next
    lookup reads the file again: the racy-git rule.
    """

    entries: dict[str, tuple[tuple[int, ...], int, str]] = field(default_factory=dict)
    reads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lookup(self, path: str, key: tuple[int, ...]) -> str | None:
        hit = self.entries.get(path)
        if hit is None or hit[0] != key:
            return None
        recorded_ns = hit[1]
        mtime_ns = key[1]
        if mtime_ns >= recorded_ns - RACY_WINDOW_NS:
            return None
        return hit[2]

    def file_digest(self, path: str, key: tuple[int, ...]) -> str:
        """The sha256 hex of a file's content, read only when the cache cannot answer."""
        cached = self.lookup(path, key)
        if cached is not None:
            return cached
        recorded = time.time_ns()
        digest = read_digest(path)
        with self._lock:
            self.reads += 1
            self.entries[path] = (key, recorded, digest)
        return digest

    def prune_missing(self) -> int:
        """Forget files that no longer exist (renamed or deleted), so a long-running daemon's
        persisted cache does not grow without bound. Returns how many were dropped."""
        with self._lock:
            paths = list(self.entries)
        gone = [p for p in paths if not os.path.lexists(p)]
        with self._lock:
            for path in gone:
                self.entries.pop(path, None)
        return len(gone)

    def read_many(self, wanted: list[tuple[str, tuple[int, ...]]]) -> list[str | None]:
        """Read and record the digests of files the cache could not answer, in order;
        None for a file that vanished since it was listed (an editor's temp file)."""
        recorded = time.time_ns()
        digests = [_read_if_present(path, key[0]) for path, key in wanted]
        with self._lock:
            self.reads += len(wanted)
            for (path, key), digest in zip(wanted, digests, strict=True):
                if digest is not None:
                    self.entries[path] = (key, recorded, digest)
        return digests

    def to_json(self) -> dict[str, Any]:
        with self._lock:  # hashing threads may be adding entries
            entries = dict(self.entries)
        return {"version": 1, "entries": {p: [list(k), r, d] for p, (k, r, d) in entries.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DigestCache:
        if data.get("version") != 1:
            return cls()
        entries = {
            p: (tuple(k), int(r), str(d)) for p, (k, r, d) in data.get("entries", {}).items()
        }
        return cls(entries=entries)


def _read_if_present(path: str, size_hint: int) -> str | None:
    try:
        return read_digest(path, size_hint)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SpecError(f"{shown_path(path)}: cannot read: {os_reason(exc)}") from exc


def read_digest(path: str, size_hint: int = 0) -> str:
    """The sha256 hex of a file's content; ``size_hint`` (its stat size) lets a small file
    be read with one system call. Only a regular file is read (see ``safe_read``)."""
    fd = open_regular(path)
    try:
        first = os.read(fd, size_hint + 1 if 0 < size_hint < _CHUNK else _CHUNK)
        h = hashlib.sha256(first)
        if len(first) != size_hint or size_hint >= _CHUNK:
            # Exactly the stat size from a request one byte larger is the whole file.
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


_DEFAULT_CACHE = DigestCache()


def default_cache() -> DigestCache:
    """The process-wide cache ``Image.digest`` uses."""
    return _DEFAULT_CACHE


# -- Merkle tree of a folder ------------------------------------------------------------


def _parent(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def _escapes(relpath: str) -> bool:
    """True for a path that leaves the root (``..`` or ``../x``); a name such as ``..data``
    (Kubernetes ConfigMap mounts) or ``...`` is an ordinary entry."""
    return relpath == ".." or relpath.startswith("../")


def _ancestors(relpath: str) -> list[str]:
    parts = relpath.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class TreeIndex:
    """The filtered file list of one folder with per-file digests and per-folder Merkle
    digests, so a named change updates the root digest without walking the tree.

    >>> # idx = TreeIndex.build(Path("src"), rules); idx.update(["app/main.py"]); idx.digest
    """

    def __init__(self, root: Path, rules: IgnoreRules, cache: DigestCache) -> None:
        self.root = root
        self.rules = rules
        self.cache = cache
        self.entries: dict[str, FileEntry] = {}
        self.contents: dict[str, str] = {}
        # folder -> its children's relpaths; a dict as an ordered set, so that after a walk
        # (which adds them sorted) sorting them again for the Merkle node is linear.
        self.children: dict[str, dict[str, None]] = {"": {}}
        self._dir_digests: dict[str, str] = {}
        self._dirty: set[str] = {""}
        # Every content digest this index holds was taken after this time minus the racy
        # window, so an unchanged entry with an older mtime is trusted without a cache lookup.
        self._racy_ns = time.time_ns() - RACY_WINDOW_NS

    @classmethod
    def build(cls, root: Path, rules: IgnoreRules, cache: DigestCache | None = None) -> TreeIndex:
        index = cls(root, rules, cache or default_cache())
        index._add_all(list(walk_files(root, rules)))
        return index

    # -- queries

    @property
    def digest(self) -> str:
        self._rehash_dirty()
        return self._dir_digests[""]

    def listing(self) -> list[FileEntry]:
        """Every entry, sorted by POSIX relative path (what staging copies)."""
        return [self.entries[p] for p in sorted(self.entries)]

    def file_digests(self) -> dict[str, str]:
        """relpath -> content digest (files), link target (symlinks) or "dir"."""
        out: dict[str, str] = {}
        for rel, entry in self.entries.items():
            if entry.type == FILE:
                out[rel] = self.contents[rel] + (EXEC_SUFFIX if entry.executable else "")
            elif entry.type == SYMLINK:
                out[rel] = f"-> {entry.target}"
            else:
                out[rel] = "dir"
        return out

    # -- changes

    def refresh(self) -> set[str]:
        """Re-stat the whole tree (no reads for unchanged files) and fold the changes in.

        The same filtered walk as :meth:`build`, compared against the stored entries:
        unchanged entries stay as they are and only folders on a changed path are rehashed.
        Returns the relative paths whose entry changed.
        """
        started = time.time_ns()
        return self._fold(self._stale_paths(), started)

    def revalidated(self) -> TreeIndex:
        """This index when the tree is unchanged, else a refreshed copy; never mutates self,
        so an index already handed out keeps describing the state it was hashed in."""
        started = time.time_ns()
        stale = self._stale_paths()
        if not stale:
            self._racy_ns = max(self._racy_ns, started - RACY_WINDOW_NS)
            return self
        twin = self._clone()
        twin._fold(stale, started)
        _ = twin.digest
        return twin

    def _clone(self) -> TreeIndex:
        twin = copy.copy(self)
        twin.entries = dict(self.entries)
        twin.contents = dict(self.contents)
        twin.children = {rel: dict(kids) for rel, kids in self.children.items()}
        twin._dir_digests = dict(self._dir_digests)
        twin._dirty = set(self._dirty)
        return twin

    def _fold(self, stale: list[str], started: int) -> set[str]:
        changed = self.update(sorted(stale, key=lambda rel: (rel.count("/"), rel)))
        if changed:
            self._drop_empty_ghosts()
        self._racy_ns = started - RACY_WINDOW_NS
        return changed

    def _stale_paths(self) -> list[str]:
        """The paths whose entry may differ from the tree on disk: a changed stat key, a
        new or vanished path, or a racy file whose content is no longer the stored one."""
        found: list[str] = []
        stale, racy = self._walk_compare(found)
        if len(found) != len(self.entries):
            stale += self._vanished(found)
        stale += [rel for rel in racy if not self._content_holds(rel)]
        return stale

    def _content_holds(self, rel: str) -> bool:
        """For a racy file: the cache (which reads it again) still gives the stored digest."""
        path = os.path.join(self.root, rel)
        try:
            digest = self.cache.file_digest(path, self.entries[rel].stat_key)
        except FileNotFoundError:
            return False
        return digest == self.contents.get(rel)

    def _walk_compare(self, found: list[str]) -> tuple[list[str], list[str]]:
        """walk_files' filtered walk, unsorted, comparing each entry's stat key in place."""
        entries, racy_ns, matcher = self.entries, self._racy_ns, self.rules.walker()
        stale: list[str] = []
        racy: list[str] = []
        seen = found.append
        stack = [(matcher.folder(""), str(self.root))]
        while stack:
            folder, path = stack.pop()
            for child in _scan(path):
                rel = folder.prefix + child.name
                old = entries.get(rel)
                if old is not None and old.type != DIR:
                    # A known non-folder: the same rules give the same verdict, so no matching;
                    # an equal stat key (it holds the mode) means it is still not a folder.
                    seen(rel)
                    try:
                        st = child.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted since the folder was listed
                        stale.append(rel)
                        continue
                    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
                    if key != old.stat_key:
                        stale.append(rel)
                    elif key[1] >= racy_ns and old.type == FILE:
                        racy.append(rel)
                    continue
                is_dir = child.is_dir(follow_symlinks=False)
                ignored, best = matcher.child(folder, child.name, rel, is_dir=is_dir)
                if ignored:
                    if is_dir and not matcher.can_prune(rel):
                        stack.append((matcher.enter(folder, child.name, best), child.path))
                    if old is not None:
                        stale.append(rel)
                    continue
                if old is None or not is_dir or old.type != DIR:
                    stale.append(rel)  # new, or a changed type: update walks what is new
                    continue
                seen(rel)
                stack.append((matcher.enter(folder, child.name, best), child.path))
        return stale, racy

    def _vanished(self, found: list[str]) -> list[str]:
        gone = self.entries.keys() - set(found)
        return [rel for rel in gone if _parent(rel) not in gone]

    def _drop_empty_ghosts(self) -> None:
        """Forget folders that hold no entry of their own (ignored ones a ``!`` pattern
        reached into) once nothing below them is left, as a fresh walk would."""
        ghosts = [rel for rel in self.children if rel and rel not in self.entries]
        for rel in sorted(ghosts, key=lambda p: -p.count("/")):
            if not self.children.get(rel, True):
                self._remove(rel)

    def update(self, relpaths: Iterable[str]) -> set[str]:
        """Re-stat the named paths (relative to root) and fold the changes in.

        Returns the relative paths whose entry changed (added, removed or modified).
        """
        changed: set[str] = set()
        for rel in relpaths:
            rel = rel.strip("/")
            if rel and not _escapes(rel):
                changed |= self._update_one(rel)
        return changed

    def _reincludes_below(self, rel: str) -> bool:
        if not self.rules.is_ignored(rel, is_dir=True) or self.rules.can_prune(rel):
            return False
        return not any(
            self.rules.is_ignored(a, is_dir=True) and self.rules.can_prune(a)
            for a in _ancestors(rel)
        )

    def _excluded(self, rel: str, *, is_dir: bool) -> bool:
        for ancestor in _ancestors(rel):
            if self.rules.is_ignored(ancestor, is_dir=True) and self.rules.can_prune(ancestor):
                return True
        return self.rules.is_ignored(rel, is_dir=is_dir)

    def _update_one(self, rel: str) -> set[str]:
        entry = stat_entry(self.root, rel)
        if entry is not None and entry.type == DIR and self._reincludes_below(rel):
            # An ignored folder that an exception pattern reaches into: list it as a walk would.
            removed = self._remove(rel)
            new = list(walk_files(self.root, self.rules, start=rel))
            self._add_all(new)
            return removed | {e.relpath for e in new}
        if entry is None or self._excluded(rel, is_dir=entry.type == DIR):
            return self._remove(rel)
        old = self.entries.get(rel)
        if entry.type == DIR:
            if old is not None and old.type == DIR:
                return set()
            removed = self._remove(rel)
            new = [entry, *walk_files(self.root, self.rules, start=rel)]
            self._add_all(new)
            return removed | {e.relpath for e in new}
        digest = self._content_of(entry)
        if old is not None and old.type == entry.type and self._same(old, entry, digest):
            self.entries[rel] = entry
            return set()
        removed = self._remove(rel) if old is not None and old.type == DIR else set()
        self._put(entry, digest)
        return {rel} | removed

    def _same(self, old: FileEntry, new: FileEntry, digest: str | None) -> bool:
        return (
            old.executable == new.executable
            and old.target == new.target
            and self.contents.get(old.relpath) == digest
        )

    def _content_of(self, entry: FileEntry) -> str | None:
        if entry.type != FILE:
            return None
        return self.cache.file_digest(os.path.join(self.root, entry.relpath), entry.stat_key)

    def _add_all(self, entries: list[FileEntry]) -> None:
        """Fold in walked entries (folders before their contents); cache lookups happen
        here, and only the misses are read, in one batch."""
        tree, kids_of, contents, dirty = self.entries, self.children, self.contents, self._dirty
        prefix, lookup = os.path.join(self.root, ""), self.cache.lookup
        misses: list[tuple[str, tuple[int, ...]]] = []
        for entry in entries:
            rel = entry.relpath
            parent = rel[: rel.rfind("/")] if "/" in rel else ""
            kids = kids_of.get(parent)
            if kids is None:  # a walk that started below a folder this index does not hold
                self._put(entry, None)
                kids = kids_of[parent]
            tree[rel] = entry
            kids[rel] = None
            dirty.add(parent)
            if entry.type == FILE:
                digest = lookup(prefix + rel, entry.stat_key)
                if digest is None:
                    misses.append((prefix + rel, entry.stat_key))
                else:
                    contents[rel] = digest
            elif entry.type == DIR:
                kids_of.setdefault(rel, {})
                dirty.add(rel)
        cut = len(prefix)
        for (path, _), digest in zip(misses, self.cache.read_many(misses), strict=True):
            if digest is None:
                self._remove(path[cut:])  # gone since the walk listed it: not part of the tree
            else:
                contents[path[cut:]] = digest

    def _put(self, entry: FileEntry, digest: str | None) -> None:
        rel = entry.relpath
        if _parent(rel) not in self.children:
            for ancestor in _ancestors(rel):
                if ancestor not in self.children:
                    self.children[ancestor] = {}
                    self.children[_parent(ancestor)][ancestor] = None
        self.entries[rel] = entry
        self.children[_parent(rel)][rel] = None
        if entry.type == DIR:
            self.children.setdefault(rel, {})
            self._dirty.add(rel)
        elif digest is not None:
            self.contents[rel] = digest
        self._dirty.add(_parent(rel))

    def _remove(self, rel: str) -> set[str]:
        if rel not in self.entries and rel not in self.children:
            return set()
        removed = {rel} if rel in self.entries else set()
        for child in list(self.children.get(rel, ())):
            removed |= self._remove(child)
        self.children.pop(rel, None)
        self._dir_digests.pop(rel, None)
        self._dirty.discard(rel)
        self.entries.pop(rel, None)
        self.contents.pop(rel, None)
        self.children.get(_parent(rel), {}).pop(rel, None)
        self._dirty.add(_parent(rel))
        return removed

    def _rehash_dirty(self) -> None:
        todo = set(self._dirty)
        for rel in self._dirty:
            todo.update(_ancestors(rel) if rel else ())
            if rel:
                todo.add("")
        for rel in sorted(todo, key=lambda p: (-p.count("/") if p else 1, p)):
            if rel in self.children:
                self._dir_digests[rel] = self._hash_dir(rel)
        self._dirty.clear()

    def _hash_dir(self, rel: str) -> str:
        cut = len(rel) + 1 if rel else 0
        entries, contents, dir_digests = self.entries, self.contents, self._dir_digests
        rows: list[tuple[str, str, bool, str]] = []
        for child in sorted(self.children[rel]):
            entry = entries.get(child)
            if entry is None or entry.type == DIR:
                rows.append((child[cut:], DIR, False, dir_digests[child]))
            elif entry.type == SYMLINK:
                rows.append((child[cut:], SYMLINK, False, entry.target or ""))
            else:
                rows.append((child[cut:], FILE, entry.executable, contents[child]))
        return hashlib.sha256(encode_dir(rows)).hexdigest()


def _scan(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def encode_dir(rows: list[tuple[str, str, bool, str]]) -> bytes:
    """``encode(("dir", rows))`` without the generic recursion (a folder's Merkle node)."""
    out = bytearray(_DIR_HEAD)
    out += _U64(len(rows))
    for name, kind, executable, value in rows:
        raw_name = name.encode("utf-8", "surrogatepass")
        raw_value = value.encode("utf-8", "surrogatepass")
        out += _ROW_HEAD
        out += _U64(len(raw_name))
        out += raw_name
        out += _ROW_KIND[kind, executable]
        out += _U64(len(raw_value))
        out += raw_value
    return bytes(out)


_DIR_HEAD = encode(("dir", []))[:-8]
_ROW_HEAD = b"l" + _U64(4) + b"s"
_ROW_KIND = {
    (kind, executable): encode([kind, executable]).removeprefix(b"l" + _U64(2)) + b"s"
    for kind in (FILE, SYMLINK, DIR)
    for executable in (False, True)
}


# -- process-wide reuse of trees --------------------------------------------------------

MAX_SHARED_TREES = 64


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tree: TreeIndex | None = None


class TreeRegistry:
    """The last TreeIndex of each (root, rules), revalidated on every use: the first use
    walks and reads, later ones only stat (and read what changed). An index once returned
    is never mutated: a change yields a refreshed copy (see ``TreeIndex.revalidated``).

    >>> # tree = shared_trees().tree(Path("src"), rules, default_cache()); tree.digest
    """

    def __init__(self, *, size: int = MAX_SHARED_TREES) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._slots: OrderedDict[tuple[Path, IgnoreRules], _Slot] = OrderedDict()

    def tree(self, root: Path, rules: IgnoreRules, cache: DigestCache) -> TreeIndex:
        """The index of ``root`` as it is now, with its digest computed."""
        slot = self._slot((root, rules))
        with slot.lock:
            old = slot.tree
            if old is None or old.cache is not cache:
                fresh = TreeIndex.build(root, rules, cache)
                _ = fresh.digest
            else:
                fresh = old.revalidated()
            slot.tree = fresh
            return fresh

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def _slot(self, key: tuple[Path, IgnoreRules]) -> _Slot:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
                while len(self._slots) > self.size:
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(key)
            return slot


_SHARED_TREES = TreeRegistry()


def shared_trees() -> TreeRegistry:
    """The process-wide registry ``hash_image`` (and so ``Image.digest``) uses."""
    return _SHARED_TREES


# -- image and layer digests ------------------------------------------------------------


@dataclass(frozen=True)
class LayerDigest:
    """One layer's digest and the file inputs it was computed from."""

    index: int
    kind: str
    label: str
    category: str
    digest: str
    trees: tuple[TreeIndex, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (absolute path, content digest)
    in_image_digest: bool = True
    values: tuple[str, ...] = ()  # inputs the build uses as read for this digest (script deps)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "label": self.label,
            "category": self.category,
            "digest": self.digest,
            "files": {p: d for p, d in self.files},
            "trees": {str(t.root): t.digest for t in self.trees},
        }


@dataclass(frozen=True)
class ImageDigest:
    """The digest of a whole image, its tag, and its per-layer digests."""

    digest: str
    base: str
    layers: tuple[LayerDigest, ...]
    # What the build must use, as it was read for this digest (never read a second time):
    base_ref: str | None = None  # the FROM reference (a parent image's content URI)
    dockerfile_text: str | None = None  # a from_dockerfile image's Dockerfile

    @property
    def tag(self) -> str:
        return self.digest.removeprefix("sha256:")[:TAG_HEX_CHARS]


@dataclass(frozen=True)
class TreeSource:
    """A folder a layer (or a Dockerfile base) copies, and where its ignore rules come from:
    ``folder_rules`` of the root, or only the ``.dockerignore`` of a Dockerfile's context."""

    root: Path
    extras: tuple[Path, ...] = ()
    gitignore: bool = False
    dockerfile_context: bool = False
    modules_only: bool = False  # a code bundle's "loaded_modules": Python files only

    def read_rules(self) -> IgnoreRules:
        if self.dockerfile_context:
            return IgnoreRules.from_file(self.root / ".dockerignore")
        rules = folder_rules(self.root, self.extras, gitignore=self.gitignore)
        # First, so every ignore file (and the standard ignores) still apply after it.
        return MODULES_ONLY + rules if self.modules_only else rules


MODULES_ONLY = IgnoreRules.from_lines(["**", "!**/*.py"])

# Serves the TreeIndex of a folder: the process-wide registry by default; the daemon's
# tracker passes its own, which keeps each tree's rules until an ignore file changes.
TreeProvider = Callable[[TreeSource, DigestCache], TreeIndex]


def provide_tree(
    trees: TreeProvider,
    source: TreeSource,
    cache: DigestCache,
    *,
    image: str | None,
    layer: str,
) -> TreeIndex:
    """``trees(source, cache)``, with an unreadable ignore file or folder (a permission, a
    path over PATH_MAX, a symlink loop) raised as a SpecError naming the image and layer."""
    try:
        return trees(source, cache)
    except SpecError as exc:
        if exc.image is not None:
            raise
        raise type(exc)(str(exc), image=image, layer=layer) from exc
    except OSError as exc:
        where = shown_path(exc.filename or source.root)
        raise SpecError(
            f"{where}: cannot read: {os_reason(exc)}", image=image, layer=layer
        ) from exc


def _shared_tree(source: TreeSource, cache: DigestCache) -> TreeIndex:
    """The default TreeProvider: read the rules, then ask ``shared_trees()``."""
    return shared_trees().tree(source.root, source.read_rules(), cache)


@dataclass
class _Inputs:
    fields: list[object]
    trees: list[TreeIndex] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


class _Hasher:
    """Computes the inputs of each layer kind. Extra ignore files come from the image."""

    def __init__(self, image: Image, cache: DigestCache, trees: TreeProvider) -> None:
        self.image = image
        self.cache = cache
        self.trees = trees
        self.extra_ignores = tuple(
            layer.path for layer in image.layers if isinstance(layer, L.Dockerignore)
        )

    def file(self, path: Path, *, label: str, follow: bool = True) -> str:
        try:
            st = os.stat(path) if follow else os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise SpecError(
                    f"{shown_path(path)}: cannot read: {kind_of(st.st_mode)}, not a regular file",
                    image=self.image.name,
                    layer=label,
                )
            return self.cache.file_digest(str(path), stat_key(st))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise MissingPathError(
                f"{path} does not exist", image=self.image.name, layer=label
            ) from exc
        except OSError as exc:
            raise SpecError(
                f"{shown_path(path)}: cannot read: {os_reason(exc)}",
                image=self.image.name,
                layer=label,
            ) from exc

    def tree(
        self, root: Path, *, label: str, gitignore: bool = False, modules_only: bool = False
    ) -> TreeIndex:
        if not root.is_dir():
            raise MissingPathError(f"{root} is not a folder", image=self.image.name, layer=label)
        source = TreeSource(root, self.extra_ignores, gitignore, modules_only=modules_only)
        return provide_tree(self.trees, source, self.cache, image=self.image.name, layer=label)

    def inputs(self, layer: L.Layer, label: str) -> _Inputs:
        handler = _HANDLERS[type(layer)]
        return handler(self, layer, label)


def _pip_fields(opts: L.PipOptions) -> list[object]:
    return [opts.index_url, opts.extra_index_urls, opts.pre, opts.extra_args]


def _secret_fields(secrets: tuple[L.Secret, ...]) -> list[object]:
    return [[s.key, s.group, s.mount, s.as_env_var] for s in secrets]


def _apt(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.packages, _secret_fields(layer.secret_mounts)])


def _pip(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs(
        [UV_VERSION, layer.packages, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)]
    )


_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")
_LOCAL_PREFIXES = ("./", "../", "/", "file:", "~")


def check_requirements(path: Path, *, image: str | None, label: str) -> None:
    """Refuse a requirements file that names other files: imaged hashes and mounts only this
    one, so ``-r other.txt`` or ``-e .`` would fail inside the build, or build content the
    digest does not cover."""
    try:
        lines = read_regular(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return  # the hash of the file reports it, with the path
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        word = line.split(maxsplit=1)[0] if line else ""
        if word.startswith(_FILE_OPTIONS) or line.startswith(_LOCAL_PREFIXES) or line == ".":
            raise SpecError(
                f"{path}:{number}: `{line}` refers to another file, which imaged neither hashes "
                "nor sends to the build; list its requirements here, or use with_uv_project",
                image=image,
                layer=label,
            )


def _requirements(h: _Hasher, layer: Any, label: str) -> _Inputs:
    digest = h.file(layer.file, label=label)
    check_requirements(layer.file, image=h.image.name, label=label)
    return _Inputs(
        [UV_VERSION, digest, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)],
        files=[(str(layer.file), digest)],
    )


def _project(
    h: _Hasher, layer: Any, label: str, lock: Path, tool: str, *, lock_optional: bool = False
) -> _Inputs:
    pyproject = h.file(layer.pyproject, label=label)
    files = [(str(layer.pyproject), pyproject)]
    if lock_optional and not os.path.lexists(lock):
        lock_digest = "absent"  # floating: resolved at build time, as unpinned pip packages are
    else:
        lock_digest = h.file(lock, label=label)
        files.append((str(lock), lock_digest))
    fields: list[object] = [tool, layer.mode, pyproject, lock_digest]
    inputs = _Inputs(fields, files=files)
    if layer.mode == "install_project":
        tree = h.tree(layer.pyproject.parent, label=label, gitignore=True)
        fields.append(tree.digest)
        inputs.trees.append(tree)
    return inputs


def _uv_project(h: _Hasher, layer: Any, label: str) -> _Inputs:
    inputs = _project(
        h, layer, label, layer.uvlock, f"uv=={UV_VERSION}", lock_optional=not layer.lock_required
    )
    inputs.fields += [_pip_fields(layer.pip), _secret_fields(layer.secret_mounts)]
    return inputs


def _poetry_project(h: _Hasher, layer: Any, label: str) -> _Inputs:
    inputs = _project(h, layer, label, layer.poetry_lock, f"poetry=={POETRY_VERSION}")
    inputs.fields += [layer.extra_args, _secret_fields(layer.secret_mounts)]
    return inputs


def _uv_script(h: _Hasher, layer: Any, label: str) -> _Inputs:
    from imaged.spec.pep723 import read_script_metadata

    if not layer.script.is_file():
        raise MissingPathError(f"{layer.script} does not exist", image=h.image.name, layer=label)
    meta = read_script_metadata(layer.script)
    return _Inputs(
        [UV_VERSION, meta.header, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)],
        files=[(str(layer.script), sha256_hex(meta.header))],
        values=list(meta.dependencies),
    )


def _commands(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.commands, _secret_fields(layer.secret_mounts)])


def _env(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([list(layer.env)])


def _workdir(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.path])


def _source_folder(h: _Hasher, layer: Any, label: str) -> _Inputs:
    tree = h.tree(layer.src, label=label)
    return _Inputs([layer.target, tree.digest], trees=[tree])


def _source_files(h: _Hasher, layer: Any, label: str) -> _Inputs:
    rows: list[object] = []
    files: list[tuple[str, str]] = []
    for path in layer.files:
        if not path.is_file():
            raise MissingPathError(f"{path} is not a file", image=h.image.name, layer=label)
        digest = h.file(path, label=label)
        executable = bool(os.stat(path).st_mode & 0o111)
        rows.append([path.name, executable, digest])
        # The exec bit travels with the digest so staging copies the mode that was hashed.
        files.append((str(path), digest + EXEC_SUFFIX if executable else digest))
    return _Inputs([layer.dst, rows], files=files)


def _code_bundle(h: _Hasher, layer: Any, label: str) -> _Inputs:
    tree = h.tree(layer.root, label=label, gitignore=True, modules_only=layer.copy_style != "all")
    return _Inputs([layer.dst, layer.copy_style, tree.digest], trees=[tree])


def _dockerignore(h: _Hasher, layer: Any, label: str) -> _Inputs:
    # The rules act through the file lists of the folder layers; on their own they change
    # nothing in the image, so this layer stays out of the image digest.
    digest = h.file(layer.path, label=label) if layer.path.is_file() else "absent"
    return _Inputs([digest], files=[(str(layer.path), digest)])


_HANDLERS: dict[type[L.Layer], Callable[[_Hasher, Any, str], _Inputs]] = {
    L.AptPackages: _apt,
    L.PipPackages: _pip,
    L.Requirements: _requirements,
    L.UvProject: _uv_project,
    L.PoetryProject: _poetry_project,
    L.UvScript: _uv_script,
    L.Commands: _commands,
    L.EnvVars: _env,
    L.Workdir: _workdir,
    L.SourceFolder: _source_folder,
    L.SourceFiles: _source_files,
    L.CodeBundle: _code_bundle,
    L.Dockerignore: _dockerignore,
}


@dataclass
class _BaseInputs:
    fields: list[object]
    trees: list[TreeIndex] = field(default_factory=list)
    ref: str | None = None
    dockerfile_text: str | None = None


def _base_inputs(image: Image, cache: DigestCache, trees: TreeProvider) -> _BaseInputs:
    base = image.base
    if isinstance(base, DebianBase):
        return _BaseInputs(["debian", base.ref, list(base.python_version)], ref=base.ref)
    if isinstance(base, RefBase):
        return _BaseInputs(["ref", base.ref], ref=base.ref)
    if isinstance(base, ParentBase):
        parent = hash_image(base.image, cache, trees=trees)
        ref = base.image.uri_for(parent.tag) if base.image.name else None
        return _BaseInputs(["parent", parent.digest], ref=ref)
    assert isinstance(base, DockerfileBase)
    return _dockerfile_inputs(image, base, cache, trees)


def _dockerfile_inputs(
    image: Image, base: DockerfileBase, cache: DigestCache, trees: TreeProvider
) -> _BaseInputs:
    try:
        data = read_regular(base.dockerfile)
        text = data.decode("utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise MissingPathError(
            f"{base.dockerfile} is not a readable file", image=image.name, layer="from_dockerfile"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise SpecError(
            f"{shown_path(base.dockerfile)}: cannot read: {reason}",
            image=image.name,
            layer="from_dockerfile",
        ) from exc
    source = TreeSource(base.context, dockerfile_context=True)
    tree = provide_tree(trees, source, cache, image=image.name, layer="from_dockerfile")
    relname = os.path.relpath(base.dockerfile, base.context).replace(os.sep, "/")
    fields: list[object] = ["dockerfile", relname, hashlib.sha256(data).hexdigest(), tree.digest]
    return _BaseInputs(fields, [tree], dockerfile_text=text)


def hash_image(
    image: Image, cache: DigestCache | None = None, *, trees: TreeProvider | None = None
) -> ImageDigest:
    """Hash an image as its files are now: the base, the platforms, the Python version and
    each layer's kind and inputs, in order. ``trees`` serves each copied folder's index (and
    a parent image's); the default reads the rules and asks :func:`shared_trees`.

    >>> # hash_image(image, DigestCache(), trees=lambda source, cache: my_trees[source])
    """
    cache = cache or default_cache()
    trees = trees or _shared_tree
    base_inputs = _base_inputs(image, cache, trees)
    base_fields, base_trees = base_inputs.fields, base_inputs.trees
    base_digest = "sha256:" + sha256_hex(base_fields)
    hasher = _Hasher(image, cache, trees)
    layer_digests: list[LayerDigest] = []
    for index, layer in enumerate(image.layers):
        label = image.layer_label(index)
        inputs = hasher.inputs(layer, label)
        digest = "sha256:" + sha256_hex([layer.kind, inputs.fields])
        layer_digests.append(
            LayerDigest(
                index=index,
                kind=layer.kind,
                label=layer.describe(),
                category=layer.category,
                digest=digest,
                trees=tuple(inputs.trees),
                files=tuple(inputs.files),
                in_image_digest=not isinstance(layer, L.Dockerignore),
                values=tuple(inputs.values),
            )
        )
    top = [
        ENCODING_VERSION,
        RENDER_VERSION,
        base_digest,
        list(image.platform),
        list(image.python_version) if image.python_version else None,
        [[d.kind, d.digest] for d in layer_digests if d.in_image_digest],
    ]
    base_layer = LayerDigest(
        index=-1,
        kind="base",
        label=image.base_label,
        category="recipe",
        digest=base_digest,
        trees=tuple(base_trees),
    )
    return ImageDigest(
        digest="sha256:" + sha256_hex(top),
        base=base_digest,
        layers=(base_layer, *layer_digests) if base_trees else tuple(layer_digests),
        base_ref=base_inputs.ref,
        dockerfile_text=base_inputs.dockerfile_text,
    )
