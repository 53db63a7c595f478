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
from imaged.digest.files import (
    DIR,
    FILE,
    SYMLINK,
    FileEntry,
    folder_rules,
    scan_folder,
    stat_entry,
    walk_files,
)
from imaged.digest.ignore import IgnoreRules
from imaged.errors import SpecError
from imaged.safe_read import os_reason, shown_path
from imaged.spec.layers import TreeInput, tree_ignores


def _parent(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def _escapes(relpath: str) -> bool:
    """True for a path that leaves the root (``..`` or ``../x``); a name such as ``..data``
    (Kubernetes ConfigMap mounts) or ``...`` is an ordinary entry."""
    return relpath == ".." or relpath.startswith("../")


def ancestors(relpath: str) -> list[str]:
    """The folders above a relative path: ``a/b/c`` -> ``["a", "a/b"]``."""
    parts = relpath.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def excluded(rules: IgnoreRules, rel: str, *, is_dir: bool) -> bool:
    """Whether a filtered walk leaves ``rel`` out: an ignored folder above it that the walk
    prunes, or ``rel`` itself ignored."""
    for folder in ancestors(rel):
        if rules.is_ignored(folder, is_dir=True) and rules.can_prune(folder):
            return True
    return rules.is_ignored(rel, is_dir=is_dir)


def reincludes_below(rules: IgnoreRules, rel: str) -> bool:
    """An ignored folder that a walk still enters: a ``!`` pattern may re-include something
    below it (and no pruned folder above it hides it)."""
    if not rules.is_ignored(rel, is_dir=True) or rules.can_prune(rel):
        return False
    return not any(rules.is_ignored(a, is_dir=True) and rules.can_prune(a) for a in ancestors(rel))


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

    def folder_digest(self, rel: str) -> str:
        """The Merkle digest of folder ``rel`` ("" the root): its names, kinds, exec bits,
        contents and link targets, all the way down."""
        self._rehash_dirty()
        return self._dir_digests[rel]

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
            for child in scan_folder(path):
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

    def _update_one(self, rel: str) -> set[str]:
        entry = stat_entry(self.root, rel)
        if entry is not None and entry.type == DIR:
            if reincludes_below(self.rules, rel):
                # An ignored folder that an exception pattern reaches into: list it as a walk would.
                return self._rescan(rel, None)
            old = self.entries.get(rel)
            if old is not None and old.type == DIR:
                # A known folder named by a change may have been replaced (``rm -r pkg;
                # mkdir pkg``) with the events for its old contents lost: list it again.
                return self._rescan(rel, entry)
        if entry is None or excluded(self.rules, rel, is_dir=entry.type == DIR):
            return self._remove(rel)
        old = self.entries.get(rel)
        if entry.type == DIR:
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

    def _rescan(self, rel: str, entry: FileEntry | None) -> set[str]:
        """Walk ``rel`` again (with its own entry, unless it is an ignored folder) and return
        what differs from before."""
        before = self._rows_under(rel)
        self._remove(rel)
        found = list(walk_files(self.root, self.rules, start=rel))
        self._add_all([entry, *found] if entry is not None else found)
        after = self._rows_under(rel)
        return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}

    def _rows_under(self, rel: str) -> dict[str, str]:
        prefix = rel + "/"
        return {
            p: f"{e.type}:{e.executable}:{e.target}:{self.contents.get(p)}"
            for p, e in self.entries.items()
            if p == rel or p.startswith(prefix)
        }

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
            for ancestor in ancestors(rel):
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
            todo.update(ancestors(rel) if rel else ())
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


# -- what a store serves -----------------------------------------------------------------


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
        """The source of a folder a layer declares, with the image's extra ignore files
        (or the defining project's ``.dockerignore``: :func:`tree_ignores`)."""
        ignores = tree_ignores(tree, extras)
        return cls(tree.root, ignores, tree.gitignore, modules_only=tree.modules_only)

    def read_rules(self) -> IgnoreRules:
        if self.dockerfile_context:
            return IgnoreRules.from_file(self.root / ".dockerignore")
        rules = folder_rules(self.root, self.extras, gitignore=self.gitignore)
        # First, so every ignore file (and the standard ignores) still apply after it.
        return MODULES_ONLY + rules if self.modules_only else rules


MODULES_ONLY = IgnoreRules.from_lines(["**", "!**/*.py"])

# Serves the TreeIndex of a folder: a TreeStore's ``provide`` (the process-wide one by
# default) or ``lend`` (the daemon's, handed to a build).
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
    """The default TreeProvider: the process-wide store, revalidating on each use."""
    return shared_trees().provide(source, cache)


# -- the one tree store -----------------------------------------------------------------

MAX_SHARED_TREES = 64
TreeKey = tuple[Path, IgnoreRules]


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tree: TreeIndex | None = None
    lent: bool = False  # handed to another thread: copy before the owner changes it


class TreeStore:
    """The TreeIndex of each (root, rules), shared by every layer and image that copies
    that folder with those rules: the one store behind the CLI, the build and the daemon.

    How a tree is kept current depends on who owns the store:

    * ``revalidate=True`` (the process-wide :func:`shared_trees`: the CLI, ``Image.digest``,
      a build on its own): each use re-reads the rules and re-stats the tree (reading only
      what changed). An index once returned is never mutated: a change yields a refreshed
      copy (see ``TreeIndex.revalidated``).
    * ``revalidate=False`` (the daemon's tracker, which sees every change as an event): each
      source keeps its rules until :meth:`forget_rules`, the owner folds changes in with
      :meth:`change`, and a use neither walks nor stats. A tree :meth:`lend` gave to another
      thread (the build) is copied before the next change, so the borrower keeps a whole state.
      Every tree leaves the store (and :meth:`change`) hashed, under its slot's lock, so no two
      threads rehash one tree at once.

    >>> # tree = shared_trees().provide(TreeSource(Path("src")), default_cache()); tree.digest
    """

    def __init__(self, *, revalidate: bool = True, size: int | None = MAX_SHARED_TREES) -> None:
        self.revalidate = revalidate
        self.size = size
        self._lock = threading.Lock()
        self._slots: OrderedDict[TreeKey, _Slot] = OrderedDict()
        self._rules: dict[TreeSource, IgnoreRules] = {}

    # -- serving trees

    def provide(self, source: TreeSource, cache: DigestCache) -> TreeIndex:
        """A :data:`TreeProvider`: the index of ``source`` with its digest computed."""
        return self.tree(source.root, self.rules_of(source), cache)

    def lend(self, source: TreeSource, cache: DigestCache) -> TreeIndex:
        """:meth:`provide` for another thread: the owner's next change copies it first."""
        return self._serve((source.root, self.rules_of(source)), cache, lend=True)

    def tree(self, root: Path, rules: IgnoreRules, cache: DigestCache) -> TreeIndex:
        """The index of ``root`` filtered by ``rules``, walked on first use."""
        return self._serve((root, rules), cache, lend=False)

    def _serve(self, key: TreeKey, cache: DigestCache, *, lend: bool) -> TreeIndex:
        slot = self._slot(key)
        with slot.lock:
            old = slot.tree
            if old is None or old.cache is not cache:
                fresh = TreeIndex.build(key[0], key[1], cache)
                slot.lent = False
            elif self.revalidate:
                fresh = old.revalidated()
            else:
                fresh = old
            # Hashed under the lock: a tree served leaves with nothing left to rehash, so
            # the owner and a borrower never run one tree's rehash at once.
            _ = fresh.digest
            slot.tree = fresh
            slot.lent = slot.lent or lend
            return fresh

    def adopt(self, source: TreeSource, rules: IgnoreRules, tree: TreeIndex) -> TreeIndex:
        """Hold ``tree``, walked elsewhere with ``rules`` (a bounded first walk), as the index
        of ``source``; a tree already held for the same folder and rules is kept instead."""
        with self._lock:
            self._rules[source] = rules
        slot = self._slot((source.root, rules))
        with slot.lock:
            if slot.tree is None or slot.tree.cache is not tree.cache:
                slot.tree, slot.lent = tree, False
            return slot.tree

    # -- rules

    def rules_of(self, source: TreeSource) -> IgnoreRules:
        """The rules of ``source``: read now, or (``revalidate=False``) as last read."""
        if self.revalidate:
            return source.read_rules()
        rules = self._rules.get(source)
        if rules is None:
            rules = source.read_rules()
            with self._lock:
                self._rules[source] = rules
        return rules

    def known_rules(self, source: TreeSource) -> IgnoreRules | None:
        return self._rules.get(source)

    def forget_rules(self, source: TreeSource) -> None:
        """An ignore file of ``source`` changed: the next use reads its rules again."""
        with self._lock:
            self._rules.pop(source, None)

    # -- the owner's changes

    def held(self) -> list[TreeKey]:
        """The keys of the trees the store holds now."""
        with self._lock:
            return [key for key, slot in self._slots.items() if slot.tree is not None]

    def get(self, key: TreeKey) -> TreeIndex | None:
        slot = self._slots.get(key)
        return None if slot is None else slot.tree

    def peek(self, source: TreeSource) -> TreeIndex | None:
        """The index of ``source`` if the store holds one (never walks)."""
        key = self.key_of(source)
        return None if key is None else self.get(key)

    def key_of(self, source: TreeSource) -> TreeKey | None:
        rules = self._rules.get(source)
        return None if rules is None else (source.root, rules)

    def change(self, key: TreeKey, edit: Callable[[TreeIndex], set[str]]) -> set[str]:
        """Apply ``edit`` (``update`` or ``refresh``) to the held index, copying a lent one
        first; returns what ``edit`` returns (nothing when the store holds no such tree)."""
        slot = self._slots.get(key)
        if slot is None:
            return set()
        with slot.lock:
            tree = slot.tree
            if tree is None:
                return set()
            if slot.lent:
                tree, slot.lent = tree._clone(), False
                slot.tree = tree
            changed = edit(tree)
            _ = tree.digest  # rehashed here, under the lock (see _serve)
            return changed

    def drop(self, key: TreeKey) -> None:
        with self._lock:
            self._slots.pop(key, None)

    def keep_only(self, sources: Iterable[TreeSource]) -> None:
        """Forget the rules and trees of every source not in ``sources``."""
        wanted = set(sources)
        with self._lock:
            self._rules = {s: r for s, r in self._rules.items() if s in wanted}
            used = {(s.root, r) for s, r in self._rules.items()}
            for key in [k for k in self._slots if k not in used]:
                self._slots.pop(key)

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._rules.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def _slot(self, key: TreeKey) -> _Slot:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
                while self.size is not None and len(self._slots) > self.size:
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(key)
            return slot


_SHARED_TREES = TreeStore()


def shared_trees() -> TreeStore:
    """The process-wide store ``hash_image`` (and so ``Image.digest``) uses."""
    return _SHARED_TREES
