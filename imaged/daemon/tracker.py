"""The daemon's change tracker: file events -> affected layers -> incremental digests -> why.

What each layer reads comes from its declaration (``Layer.inputs``). Folders are held in a
:class:`~imaged.digest.trees.TreeStore` that trusts events (no revalidation), so a one-file
edit re-stats one path and rehashes one branch of one tree, never a walk. Digests come from
:func:`imaged.digest.image_digest.hash_image` itself, served those trees; a build is lent
the same trees (:meth:`ImageTracker.lend_tree`). The first walk of a folder runs in a thread
of its own (:class:`~imaged.digest.bounds.FirstWalks`), adopted here once done: past
``hash_timeout`` (a hung mount) its images are in error, never the others, and they heal
when the walk ends (:meth:`ImageTracker.collect_walks`), at the next event or reconcile.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from imaged.digest.bounds import FirstWalks
from imaged.digest.cache import DigestCache, default_cache
from imaged.digest.files import (
    ignore_files_of,
    is_rules_input,
    stat_key,
)
from imaged.digest.ignore import IgnoreRules
from imaged.digest.image_digest import ImageDigest, hash_image
from imaged.digest.trees import (
    TreeIndex,
    TreeKey,
    TreeSource,
    TreeStore,
    ancestors,
    excluded,
)
from imaged.errors import ImagedError
from imaged.spec.image import DockerfileBase, Image, ParentBase
from imaged.spec.layers import extra_ignores

__all__ = ["DigestChange", "ImageTracker", "Reason"]

log = logging.getLogger(__name__)

MAX_REASON_FILES = 20
DEFINITION = "definition"

# What an unreadable input raises: a bad spec or header (ImagedError), or the OS refusing a
# read (a permission, a file turned into a folder, a file gone between stat and read).
_INPUT_ERRORS = (ImagedError, OSError)


# -- public records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """Why an image's digest moved: one layer and the files (as ``<folder>/<relpath>`` or a
    file name) that changed in it, at most ``MAX_REASON_FILES`` plus a count of the rest.

    >>> str(Reason("#4 source_folder src/", ("src/app/main.py",)))
    'layer `source_folder src/` moved: src/app/main.py changed'
    """

    layer: str
    files: tuple[str, ...] = ()
    more: int = 0

    def __str__(self) -> str:
        if self.layer == DEFINITION:
            return "definition changed" + (": " + "; ".join(self.files) if self.files else "")
        name = self.layer.split(" ", 1)[1] if self.layer.startswith("#") else self.layer
        if not self.files:
            return f"layer `{name}` moved"
        more = f" and {self.more} more" if self.more else ""
        return f"layer `{name}` moved: {', '.join(self.files)}{more} changed"


@dataclass(frozen=True)
class DigestChange:
    """An image whose digest is new or moved, with the reasons."""

    image: str
    old_digest: str | None
    new_digest: str
    reasons: tuple[Reason, ...]


# -- what each layer reads --------------------------------------------------------------


def _ignore_files(spec: TreeSource) -> tuple[Path, ...]:
    """The ignore files whose edits can change ``spec``'s rules (those that exist now).
    When the rules cannot be read (a bad ignore file, an unreadable folder: that image's
    error), the files at the root, so that fixing them is seen."""
    if spec.dockerfile_context:
        return (spec.root / ".dockerignore",)
    try:
        return ignore_files_of(spec.root, spec.extras, gitignore=spec.gitignore)
    except _INPUT_ERRORS:
        return _root_ignore_files(spec)


def _root_ignore_files(spec: TreeSource) -> tuple[Path, ...]:
    """The ignore files of ``spec`` found without a walk: those at its root, and the extras."""
    root_files = (spec.root / ".gitignore",) if spec.gitignore else ()
    return (spec.root / ".dockerignore", *root_files, *spec.extras)


def _is_rules_input(spec: TreeSource, path: str) -> bool:
    """True when ``path`` (maybe a new nested ``.gitignore``) can change ``spec``'s rules."""
    if spec.dockerfile_context:
        return path == str(spec.root / ".dockerignore")
    return is_rules_input(spec.root, Path(path), spec.extras, gitignore=spec.gitignore)


@dataclass(frozen=True)
class _LayerDeps:
    """The folders and single files one layer (index -1: the base) depends on."""

    index: int
    label: str
    trees: tuple[TreeSource, ...] = ()
    files: tuple[str, ...] = ()


def _layer_deps(image: Image, index: int, extras: tuple[Path, ...]) -> _LayerDeps:
    """What ``Layer.inputs`` declares, the folders with the image's extra ignore files."""
    declared = image.layers[index].inputs()
    trees = tuple(TreeSource.of(tree, extras) for tree in declared.trees)
    files = tuple(str(file.path) for file in declared.files)
    return _LayerDeps(index, image.layer_label(index), trees, files)


def _base_deps(image: Image) -> _LayerDeps | None:
    base, label = image.base, f"base {image.base_label}"
    if isinstance(base, DockerfileBase):
        spec = TreeSource(base.context, dockerfile_context=True)
        return _LayerDeps(-1, label, (spec,), (str(base.dockerfile),))
    if isinstance(base, ParentBase):
        parent = image_deps(base.image)
        trees = tuple(t for d in parent for t in d.trees)
        return _LayerDeps(-1, label, trees, tuple(f for d in parent for f in d.files))
    return None


def image_deps(image: Image) -> tuple[_LayerDeps, ...]:
    """Every input of an image by layer, the base (and a parent's inputs) first."""
    extras = extra_ignores(image.layers)
    layers = tuple(_layer_deps(image, i, extras) for i in range(len(image.layers)))
    base = _base_deps(image)
    return (base, *layers) if base else layers


# -- one batch of changes ---------------------------------------------------------------


@dataclass
class _Batch:
    """What one apply_changes call touched, before the trees are refreshed."""

    rels: dict[TreeKey, set[str]] = field(default_factory=dict)
    roots: set[TreeKey] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    ignores: set[str] = field(default_factory=set)
    hit: set[str] = field(default_factory=set)
    new_rules: set[TreeSource] = field(default_factory=set)
    # Specs whose rules may have gained an input the index does not know yet: a new nested
    # .gitignore, or a new folder that may hold one.
    suspects: set[TreeSource] = field(default_factory=set)


def _covers(path: str, target: str) -> bool:
    """True when ``path`` is ``target`` or one of its parent folders."""
    return target == path or target.startswith(path + "/")


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when strictly inside it, else None."""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


def _update_named(tree: TreeIndex, rels: set[str]) -> set[str]:
    return tree.update(_with_new_folders(tree, rels))


def _with_new_folders(tree: TreeIndex, rels: Iterable[str]) -> list[str]:
    """The paths to update, parents first, plus any unknown parent folder: when a folder's
    creation was missed (created before its watch was added), its walk finds what is inside."""
    out = set(rels)
    for rel in rels:
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1])
            if folder not in tree.entries and not tree.rules.is_ignored(folder, is_dir=True):
                out.add(folder)
    return sorted(out, key=lambda rel: (rel.count("/"), rel))


def _diff(old: Mapping[str, str], new: Mapping[str, str]) -> set[str]:
    return {rel for rel in old.keys() | new.keys() if old.get(rel) != new.get(rel)}


def _norm(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def outermost_paths(paths: Iterable[Path]) -> set[Path]:
    """Drop every path that lies inside another one of the set."""
    kept: list[str] = []
    for path in sorted({str(p) for p in paths}, key=len):
        if not any(_covers(k, path) for k in kept):
            kept.append(path)
    return {Path(p) for p in kept}


# -- the tracker ------------------------------------------------------------------------


class ImageTracker:
    """Keeps every image's digest current as files change, and says why each one moved.

    >>> # tracker = ImageTracker(); tracker.set_images({"api": api})
    >>> # for name, change in tracker.apply_changes([Path("src/app/main.py")]).items(): ...
    """

    def __init__(self, cache: DigestCache | None = None, *, hash_timeout: float = 60.0) -> None:
        self._cache = default_cache() if cache is None else cache
        self._store = TreeStore(revalidate=False, size=None)
        # First walks run in their own threads, each bounded: a hung mount fails its images.
        self._walks = FirstWalks(hash_timeout)
        self._walked_ignores: dict[TreeSource, tuple[Path, ...]] = {}  # for the next _index
        self._images: dict[str, Image] = {}
        self._deps: dict[str, tuple[_LayerDeps, ...]] = {}
        self._digests: dict[str, ImageDigest] = {}  # the last good digest of each image
        self._errors: dict[str, ImagedError] = {}
        self._spec_images: dict[TreeSource, set[str]] = {}
        self._files: dict[str, set[str]] = {}
        self._ignores: dict[str, set[TreeSource]] = {}

    # -- loading

    def set_images(self, images: Mapping[str, Image]) -> dict[str, DigestChange]:
        """(Re)load the image set; return the images whose digest is new or moved."""
        old_images = self._images
        self._images = dict(images)
        self._deps = {name: image_deps(image) for name, image in self._images.items()}
        self._digests = {n: d for n, d in self._digests.items() if n in self._images}
        self._errors = {}
        self._index()
        self._walks.start(
            (s for s in self._spec_images if self._store.peek(s) is None), self._cache
        )
        changes: dict[str, DigestChange] = {}
        memo: dict[Image, ImageDigest] = {}
        for name, image in self._images.items():
            old = self._digests.get(name)
            new = self._rehash(name, memo)
            if new is None or (old is not None and old.digest == new.digest):
                continue
            reasons = _definition_reasons(old_images.get(name), image, old, new, self._deps[name])
            changes[name] = DigestChange(name, old.digest if old else None, new.digest, reasons)
        self._index_walked()
        return changes

    def _index(self) -> None:
        # Built aside and swapped in whole: watch_roots() and is_relevant() (the watcher's
        # filter) may read them from the event loop while this runs in a worker thread.
        spec_images: dict[TreeSource, set[str]] = {}
        files: dict[str, set[str]] = {}
        ignores: dict[str, set[TreeSource]] = {}
        for name, deps in self._deps.items():
            for dep in deps:
                for path in dep.files:
                    files.setdefault(path, set()).add(name)
                for spec in dep.trees:
                    spec_images.setdefault(spec, set()).add(name)
                    for ignore in self._ignore_files_of(spec):
                        ignores.setdefault(str(ignore), set()).add(spec)
        self._spec_images, self._files, self._ignores = spec_images, files, ignores
        self._walked_ignores.clear()
        self._store.keep_only(spec_images)

    def _ignore_files_of(self, spec: TreeSource) -> tuple[Path, ...]:
        """:func:`_ignore_files`, never walking a folder the store does not hold: finding
        the nested ``.gitignore`` files is part of its first walk, which is bounded."""
        walked = self._walked_ignores.get(spec)
        if walked is not None:
            return walked
        if spec.gitignore and self._store.peek(spec) is None:
            return _root_ignore_files(spec)
        return _ignore_files(spec)

    def _index_walked(self) -> None:
        """A first walk of a folder with git's rules ended: watch its nested .gitignore."""
        if self._walked_ignores:
            self._index()

    # -- queries

    @property
    def cache(self) -> DigestCache:
        """The per-file digest cache (the daemon persists it between runs)."""
        return self._cache

    @property
    def errors(self) -> Mapping[str, ImagedError]:
        """Images that cannot be hashed now: a missing input, a bad ignore file or script
        header, an unreadable file (its OSError wrapped in an ImagedError naming the image)."""
        return dict(self._errors)

    def digests(self) -> dict[str, ImageDigest]:
        """The current digest of every image that has one (not those in error)."""
        return {n: d for n, d in self._digests.items() if n not in self._errors}

    def digest_of(self, name: str) -> ImageDigest:
        """The current digest; raises the image's error while an input is missing."""
        if name in self._errors:
            raise self._errors[name]
        return self._digests[name]

    def lend_tree(self, source: TreeSource, cache: DigestCache) -> TreeIndex:
        """A TreeProvider for a build in another thread: the tree as the events left it
        (walked only if this tracker does not hold it); the next change copies it first."""
        return self._store.lend(source, self._cache)

    def watch_roots(self) -> dict[Path, bool]:
        """The folders to watch, each with whether to watch it recursively: the outermost
        copied folders (recursive), and the folder of each single file and ignore file
        (absent ones included) outside them, for its own entries only, so an ancestor's
        ``.gitignore`` at a monorepo's root does not watch the whole monorepo."""
        trees = outermost_paths(spec.root for spec in self._spec_images)
        roots = dict.fromkeys(trees, True)
        for path in (*self._files, *self._ignores):
            folder = Path(path).parent
            if not any(_covers(str(tree), str(folder)) for tree in trees):
                roots[folder] = False
        return roots

    def is_relevant(self, path: str | os.PathLike[str]) -> bool:
        """True only when some layer depends on ``path``: the watcher's filter."""
        p = _norm(path)
        if any(_covers(p, f) for f in self._files) or any(_covers(p, f) for f in self._ignores):
            return True
        for spec in self._spec_images:
            root = str(spec.root)
            if _covers(p, root):
                return True
            rel = _inside(p, root)
            if rel is None:
                continue
            # Git reads a .gitignore even when the rules ignore the file itself.
            if (
                spec.gitignore
                and rel.rpartition("/")[2] == ".gitignore"
                and self._read_by_git(spec, rel)
            ):
                return True
            if self._tracked_in(spec, rel, p):
                return True
        return False

    def _tracked_in(self, spec: TreeSource, rel: str, path: str) -> bool:
        tree = self._store.peek(spec)
        if tree is not None and rel in tree.entries:
            return True
        exists = os.path.lexists(path)
        if tree is not None and not exists:
            return False  # neither tracked nor present: applying it would change nothing
        try:
            # Read-only: this runs in the watcher's filter, maybe beside a tracker call.
            rules = self._store.known_rules(spec)
            rules = spec.read_rules() if rules is None else rules
        except _INPUT_ERRORS:
            return True
        return not excluded(rules, rel, is_dir=os.path.isdir(path))

    # -- changes

    def apply_changes(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, DigestChange]:
        """Fold changed absolute paths in; return only the images whose digest moved."""
        batch = _Batch()
        for path in {_norm(p) for p in paths}:
            self._route(path, batch)
        spec_changes = self._refresh_trees(batch)
        self._reindex_if_rules_moved(batch)
        return self._rehash_touched(batch, spec_changes)

    def restat(self) -> dict[str, DigestChange]:
        """Find the edits no event announced: re-stat every tracked folder (no reads for
        unchanged files), re-read every ignore file, re-stat every single-file input, and
        retry every image in error. Returns the images whose digest moved.

        >>> # for change in tracker.restat().values(): request_build(change.image)
        """
        batch = _Batch(files=self._moved_files(), ignores=set(self._ignores), hit=set(self._images))
        spec_changes = self._refresh_trees(batch, everything=True)
        self._reindex_if_rules_moved(batch)
        batch.ignores = {f for f in batch.ignores if os.path.lexists(f)}  # names in reasons
        return self._rehash_touched(batch, spec_changes)

    def late_walks(self) -> bool:
        """True when a first walk that ran out of time has ended since: collect_walks.
        Safe beside a running tracker call (it reads only the walks, under their lock)."""
        return bool(self._walks.late())

    def collect_walks(self) -> dict[str, DigestChange]:
        """Adopt the first walks that ended after their bound ran out, and rehash the
        images that failed waiting for them. Returns the images whose digest moved."""
        late = self._walks.late()
        hit = {name for spec in late for name in self._spec_images.get(spec, ())}
        changes = self._rehash_touched(_Batch(hit=hit), {})
        self._walks.forget(late)  # those no image in error asked for
        return changes

    def _provide(self, source: TreeSource, cache: DigestCache) -> TreeIndex:
        """The TreeProvider of this tracker's hashes: a held tree as the events left it,
        else a first walk in its own thread, waited for at most ``hash_timeout``."""
        if self._store.peek(source) is not None:
            return self._store.provide(source, cache)
        walked = self._walks.result(source, cache)
        if source.gitignore and not source.dockerfile_context:
            self._walked_ignores[source] = walked.ignore_files
        return self._store.adopt(source, walked.rules, walked.tree)

    def _reindex_if_rules_moved(self, batch: _Batch) -> None:
        """A git tree's rules moved: its set of nested .gitignore files may have too."""
        if any(spec.gitignore for spec in batch.new_rules):
            self._index()

    def _moved_files(self) -> set[str]:
        """Single-file inputs whose content may differ from the last digest's."""
        known = {
            path: digest
            for image in self._digests.values()
            for layer in image.layers
            for path, digest in layer.files
        }
        moved = set()
        for path in self._files:
            try:
                key = stat_key(os.stat(path))
            except OSError:
                moved.add(path)
                continue
            if path not in known or self._cache.lookup(path, key) != known[path]:
                moved.add(path)
        return moved

    def _route(self, path: str, batch: _Batch) -> None:
        for f, names in self._files.items():
            if _covers(path, f):
                batch.files.add(f)
                batch.hit |= names
        for f, specs in self._ignores.items():
            if _covers(path, f):
                batch.ignores.add(f)
                batch.hit.update(*(self._spec_images[s] for s in specs))
        for spec, names in self._spec_images.items():
            root = str(spec.root)
            if _covers(path, root) or _inside(path, root) is not None:
                batch.hit |= names
            if spec.gitignore and path not in self._ignores and self._may_add_rules(spec, path):
                batch.ignores.add(path)
                batch.suspects.add(spec)
        for key in self._store.held():
            root = str(key[0])
            if _covers(path, root):
                batch.roots.add(key)
            elif (rel := _inside(path, root)) is not None:
                batch.rels.setdefault(key, set()).add(rel)

    def _may_add_rules(self, spec: TreeSource, path: str) -> bool:
        """A new ``.gitignore`` git would read for ``spec``, or a new folder inside it that
        the rules do not exclude (its ``.gitignore`` event may have come before the watch)."""
        rel = _inside(path, str(spec.root))
        if _is_rules_input(spec, path):
            return rel is None or self._read_by_git(spec, rel)
        tree, rules = self._store.peek(spec), self._store.known_rules(spec)
        if rel is None or tree is None or rules is None or rel in tree.entries:
            return False
        return os.path.isdir(path) and not excluded(rules, rel, is_dir=True)

    def _read_by_git(self, spec: TreeSource, rel: str) -> bool:
        """Git reads a nested ``.gitignore`` unless a folder above it is ignored."""
        rules = self._store.known_rules(spec)
        return rules is None or not any(
            rules.is_ignored(folder, is_dir=True) for folder in ancestors(rel)
        )

    def _refresh_trees(
        self, batch: _Batch, *, everything: bool = False
    ) -> dict[TreeSource, set[str]]:
        """Update trees in place (``everything``: re-stat each whole tree), rebuild those whose
        rules or root changed; per-spec changes."""
        store = self._store
        old_keys = {spec: store.key_of(spec) for spec in self._spec_images}
        snapshots = self._new_rules_snapshots(batch)
        for key in batch.roots:
            tree = store.get(key)
            if tree is not None:
                for spec in self._spec_images:
                    if old_keys[spec] == key:
                        snapshots.setdefault(spec, tree.file_digests())
                store.drop(key)
        updated = self._update_trees(batch, everything=everything)
        out = {spec: self._rebuilt(spec, old) for spec, old in snapshots.items()}
        for spec, old_key in old_keys.items():
            if spec in out or old_key is None or old_key not in updated:
                continue
            changed = updated[old_key]
            if changed is None or changed:
                out[spec] = changed or set()  # an empty set still rehashes its images
        return out

    def _update_trees(self, batch: _Batch, *, everything: bool) -> dict[TreeKey, set[str] | None]:
        """The changed relpaths per tree; None for a tree that could not be read (dropped,
        so the next hash walks it again or records the image's error)."""
        store = self._store
        held = store.held()
        keys = held if everything else [k for k in batch.rels if k in held]
        out: dict[TreeKey, set[str] | None] = {}
        for key in keys:
            rels = batch.rels.get(key, set())
            try:
                if everything:
                    out[key] = store.change(key, TreeIndex.refresh)
                else:
                    out[key] = store.change(key, partial(_update_named, rels=rels))
            except _INPUT_ERRORS:
                store.drop(key)
                out[key] = None
        return out

    def _new_rules_snapshots(self, batch: _Batch) -> dict[TreeSource, dict[str, str]]:
        """Re-read the rules of specs whose ignore files were touched; for each spec whose rules
        moved, forget them and keep its old listing to diff against."""
        snapshots: dict[TreeSource, dict[str, str]] = {}
        touched = {s for f in batch.ignores for s in self._ignores.get(f, ())}
        # A folder whose first walk is under way (maybe hung): that walk reads its rules.
        for spec in (touched | batch.suspects) - self._walks.pending():
            old = self._store.known_rules(spec)
            try:
                new: IgnoreRules | None = spec.read_rules()
            except _INPUT_ERRORS:
                new = None
            if new is None or new != old:
                tree = self._store.peek(spec)
                snapshots[spec] = tree.file_digests() if tree is not None else {}
                self._store.forget_rules(spec)
                batch.new_rules.add(spec)
        return snapshots

    def _rebuilt(self, spec: TreeSource, old: dict[str, str]) -> set[str]:
        if not spec.root.is_dir():
            return set(old)
        try:
            tree = self._provide(spec, self._cache)
        except _INPUT_ERRORS:
            return set(old)
        return _diff(old, tree.file_digests())

    def _rehash_touched(
        self, batch: _Batch, spec_changes: dict[TreeSource, set[str]]
    ) -> dict[str, DigestChange]:
        changes: dict[str, DigestChange] = {}
        memo: dict[Image, ImageDigest] = {}
        for name in self._images:
            deps = self._deps[name]
            if not self._needs_rehash(name, deps, batch, spec_changes):
                continue
            old = self._digests.get(name)
            new = self._rehash(name, memo)
            if new is None or (old is not None and old.digest == new.digest):
                continue
            reasons = _file_reasons(deps, old, new, batch, spec_changes)
            changes[name] = DigestChange(name, old.digest if old else None, new.digest, reasons)
        self._store.keep_only(self._spec_images)
        self._index_walked()
        return changes

    def _needs_rehash(
        self,
        name: str,
        deps: tuple[_LayerDeps, ...],
        batch: _Batch,
        spec_changes: Mapping[TreeSource, set[str]],
    ) -> bool:
        if name in self._errors:
            return name in batch.hit
        return any(
            any(f in batch.files for f in dep.files) or any(t in spec_changes for t in dep.trees)
            for dep in deps
        )

    def _rehash(self, name: str, memo: dict[Image, ImageDigest]) -> ImageDigest | None:
        """Hash one image, recording its error instead of raising."""
        try:
            digest = self._hash_image(self._images[name], memo)
        except ImagedError as exc:
            self._errors[name] = exc
            return None
        except OSError as exc:
            self._errors[name] = _wrapped(name, "cannot read an input", exc)
            return None
        except Exception as exc:  # a bug must not stop the other images from hashing
            log.error("unexpected error while hashing image %r", name, exc_info=exc)
            self._errors[name] = _wrapped(name, "unexpected error while hashing", exc)
            return None
        self._errors.pop(name, None)
        self._digests[name] = digest
        return digest

    def _hash_image(self, image: Image, memo: dict[Image, ImageDigest]) -> ImageDigest:
        if image not in memo:
            memo[image] = hash_image(image, self._cache, trees=self._provide)
        return memo[image]


def _wrapped(name: str, what: str, exc: Exception) -> ImagedError:
    error = ImagedError(f"image {name!r}: {what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


# -- reasons ----------------------------------------------------------------------------


def _reason(label: str, files: Iterable[str]) -> Reason:
    names = sorted(set(files))
    return Reason(label, tuple(names[:MAX_REASON_FILES]), max(0, len(names) - MAX_REASON_FILES))


def _layer_moved(index: int, old: ImageDigest | None, new: ImageDigest) -> bool:
    if old is None:
        return True
    if index == -1:
        return old.base != new.base
    before = {d.index: d for d in old.layers}.get(index)
    after = {d.index: d for d in new.layers}[index]
    return after.in_image_digest and (before is None or before.digest != after.digest)


def _changed_files(
    dep: _LayerDeps, batch: _Batch, spec_changes: Mapping[TreeSource, set[str]]
) -> list[str]:
    names = [Path(f).name for f in dep.files if f in batch.files]
    for spec in dep.trees:
        if spec in batch.new_rules:
            names += [Path(f).name for f in map(str, _ignore_files(spec)) if f in batch.ignores]
        names += [f"{spec.root.name}/{rel}" for rel in spec_changes.get(spec, ())]
    return names


def _file_reasons(
    deps: tuple[_LayerDeps, ...],
    old: ImageDigest | None,
    new: ImageDigest,
    batch: _Batch,
    spec_changes: Mapping[TreeSource, set[str]],
) -> tuple[Reason, ...]:
    reasons = []
    for dep in deps:
        files = _changed_files(dep, batch, spec_changes)
        if _layer_moved(dep.index, old, new) and (old is not None or files):
            reasons.append(_reason(dep.label, files))
    return tuple(reasons)


def _definition_reasons(
    old_image: Image | None,
    image: Image,
    old: ImageDigest | None,
    new: ImageDigest,
    deps: tuple[_LayerDeps, ...],
) -> tuple[Reason, ...]:
    if old_image is None:
        return (Reason(DEFINITION, ("new image",)),)
    if old_image != image:
        return (Reason(DEFINITION, _spec_diff(old_image, image)),)
    # Same spec, files moved while nobody applied the changes: name the layers only.
    return tuple(Reason(d.label) for d in deps if _layer_moved(d.index, old, new))


def _spec_diff(old: Image, new: Image) -> tuple[str, ...]:
    """Human lines naming what changed between two specs of one image."""
    out: list[str] = []
    if old.base != new.base:
        out.append(f"base {old.base_label} -> {new.base_label}")
    if old.platform != new.platform:
        out.append(f"platform {','.join(old.platform)} -> {','.join(new.platform)}")
    matcher = difflib.SequenceMatcher(a=old.layers, b=new.layers, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        olds, news = range(i1, i2), range(j1, j2)
        same_kinds = [old.layers[i].kind for i in olds] == [new.layers[j].kind for j in news]
        if tag == "replace" and same_kinds:
            out += [f"changed {new.layer_label(j)}" for j in news]
        else:
            out += [f"removed {old.layer_label(i)}" for i in olds]
            out += [f"added {new.layer_label(j)}" for j in news]
    return tuple(out)
