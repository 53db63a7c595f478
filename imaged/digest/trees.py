"""Merkle trees of folders (:class:`TreeIndex`) and the one store that serves them to the
hasher, the CLI, the build and the daemon.

File inputs contribute their POSIX relative path, type, executable bit, symlink target and
content sha256: never mtimes, owners or their absolute location.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imaged.digest.cache import RACY_WINDOW_NS, DigestCache, default_cache
from imaged.digest.encoding import EXEC_SUFFIX, encode_dir
from imaged.digest.files import DIR, FILE, SYMLINK, FileEntry, folder_rules, stat_entry, walk_files
from imaged.digest.ignore import IgnoreRules
from imaged.errors import SpecError
from imaged.safe_read import os_reason, shown_path
from imaged.spec.layers import TreeInput


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


@dataclass(frozen=True)
class TreeSource:
    """A folder a layer (or a Dockerfile base) copies, and where its ignore rules come from:
    ``folder_rules`` of the root, or only the ``.dockerignore`` of a Dockerfile's context."""

    root: Path
    extras: tuple[Path, ...] = ()
    gitignore: bool = False
    dockerfile_context: bool = False
    modules_only: bool = False  # a code bundle's "loaded_modules": Python files only

    @classmethod
    def of(cls, tree: TreeInput, extras: tuple[Path, ...]) -> TreeSource:
        """The source of a folder a layer declares, with the image's extra ignore files."""
        return cls(tree.root, extras, tree.gitignore, modules_only=tree.modules_only)

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


def shared_tree(source: TreeSource, cache: DigestCache) -> TreeIndex:
    """The default TreeProvider: read the rules, then ask ``shared_trees()``."""
    return shared_trees().tree(source.root, source.read_rules(), cache)
