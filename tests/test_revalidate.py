"""Tests for stat-only revalidation (TreeIndex.refresh/revalidated) and the TreeStore."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imaged import Image
from imaged.digest.cache import DigestCache, default_cache
from imaged.digest.files import folder_rules
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeIndex, TreeSource, TreeStore, shared_trees

Edit = Callable[[Path], object]

DOCKERIGNORE = "*.log\nbuild\n!build/keep.txt\n"
FILES = {
    "README.md": "readme",
    "app/main.py": "print('hi')",
    "app/util.py": "def f(): ...",
    "app/sub/deep.py": "x = 1",
    "scripts/run.sh": "#!/bin/sh",
    "build/out.o": "binary",
    "build/keep.txt": "kept",
    "debug.log": "noise",
}


def age_all(root: Path, *, seconds: float = 10) -> None:
    """Move every mtime past the racy window, so the cache trusts what it recorded."""
    then = time.time() - seconds
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            os.utime(os.path.join(folder, name), (then, then), follow_symlinks=False)


@pytest.fixture
def tree_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "scripts/run.sh").chmod(0o755)
    (root / "link").symlink_to("app/main.py")
    (root / ".dockerignore").write_text(DOCKERIGNORE)
    age_all(root)
    return root


def described(
    tree: TreeIndex,
) -> tuple[str, list[tuple[str, str, bool, str | None]], dict[str, str]]:
    """Everything a digest and staging depend on (stat keys left out)."""
    rows = [(e.relpath, e.type, e.executable, e.target) for e in tree.listing()]
    return tree.digest, rows, dict(tree.contents)


def fresh(root: Path) -> TreeIndex:
    return TreeIndex.build(root, folder_rules(root), DigestCache())


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def replace_dir_with_file(root: Path) -> None:
    shutil.rmtree(root / "app/sub")
    write(root / "app/sub", "now a file")


def replace_file_with_dir(root: Path) -> None:
    (root / "app/util.py").unlink()
    write(root / "app/util.py/inner.py", "inside")


def retarget_link(root: Path) -> None:
    (root / "link").unlink()
    (root / "link").symlink_to("README.md")


EDITS = [
    pytest.param(lambda r: write(r / "app/main.py", "print('bye')"), {"app/main.py"}, id="edit"),
    pytest.param(lambda r: write(r / "app/new.py", "new"), {"app/new.py"}, id="add"),
    pytest.param(lambda r: (r / "app/util.py").unlink(), {"app/util.py"}, id="delete"),
    pytest.param(
        lambda r: (r / "app/util.py").rename(r / "app/sub/util.py"),
        {"app/util.py", "app/sub/util.py"},
        id="rename",
    ),
    pytest.param(
        lambda r: (r / "app").rename(r / "application"),
        {"app", "app/main.py", "app/util.py", "app/sub", "app/sub/deep.py"}
        | {"application", "application/main.py", "application/util.py"}
        | {"application/sub", "application/sub/deep.py"},
        id="rename-folder",
    ),
    pytest.param(lambda r: (r / "app/main.py").chmod(0o755), {"app/main.py"}, id="chmod"),
    pytest.param(
        lambda r: write(r / "lib/pkg/m.py", "m"),
        {"lib", "lib/pkg", "lib/pkg/m.py"},
        id="new-folder",
    ),
    pytest.param(
        lambda r: shutil.rmtree(r / "app/sub"), {"app/sub", "app/sub/deep.py"}, id="deleted-folder"
    ),
    pytest.param(replace_dir_with_file, {"app/sub", "app/sub/deep.py"}, id="folder-to-file"),
    pytest.param(
        replace_file_with_dir, {"app/util.py", "app/util.py/inner.py"}, id="file-to-folder"
    ),
    pytest.param(retarget_link, {"link"}, id="symlink-target"),
    pytest.param(lambda r: os.utime(r / "README.md"), set(), id="touch-only"),
    pytest.param(lambda r: write(r / "trace.log", "x"), set(), id="ignored-file-added"),
    pytest.param(lambda r: write(r / "debug.log", "more"), set(), id="ignored-file-edited"),
    pytest.param(lambda r: write(r / "build/other.o", "x"), set(), id="ignored-folder-file"),
    pytest.param(
        lambda r: write(r / "build/keep.txt", "kept v2"), {"build/keep.txt"}, id="reincluded-edit"
    ),
    pytest.param(
        lambda r: (r / "build/keep.txt").unlink(), {"build/keep.txt"}, id="reincluded-deleted"
    ),
    pytest.param(
        lambda r: shutil.rmtree(r / "build"), {"build/keep.txt"}, id="ignored-folder-deleted"
    ),
    pytest.param(
        lambda r: write(r / "app/__pycache__/m.pyc", "x"), set(), id="standard-ignore-added"
    ),
]


@pytest.mark.parametrize(("edit", "expected"), EDITS)
def test_refresh_after_an_edit_equals_a_fresh_build(
    tree_root: Path, edit: Edit, expected: set[str]
) -> None:
    index = TreeIndex.build(tree_root, folder_rules(tree_root), DigestCache())
    before = index.digest
    edit(tree_root)
    assert index.refresh() == expected
    assert described(index) == described(fresh(tree_root))
    assert (index.digest != before) == bool(expected)


@pytest.mark.parametrize(("edit", "expected"), EDITS)
def test_revalidated_leaves_the_original_untouched(
    tree_root: Path, edit: Edit, expected: set[str]
) -> None:
    index = TreeIndex.build(tree_root, folder_rules(tree_root), DigestCache())
    original = described(index)
    edit(tree_root)
    twin = index.revalidated()
    assert described(twin) == described(fresh(tree_root))
    assert described(index) == original
    assert (twin is index) == (not expected and twin.entries == index.entries)


def test_refresh_of_an_unchanged_tree_reads_nothing(tree_root: Path) -> None:
    cache = DigestCache()
    index = TreeIndex.build(tree_root, folder_rules(tree_root), cache)
    digest, entries = index.digest, dict(index.entries)
    reads = cache.reads
    assert index.refresh() == set()
    assert cache.reads == reads
    assert index.digest == digest
    assert all(index.entries[rel] is entry for rel, entry in entries.items())
    assert index.revalidated() is index


def test_racy_files_are_read_again_until_they_are_trusted(tree_root: Path) -> None:
    write(tree_root / "app/main.py", "just written")
    write(tree_root / "app/util.py", "just written too")
    cache = DigestCache()
    index = TreeIndex.build(tree_root, folder_rules(tree_root), cache)
    reads = cache.reads
    assert index.refresh() == set()
    assert cache.reads == reads + 2
    age_all(tree_root)
    index.refresh()  # new stat keys (mtimes moved), read once more, then trusted
    reads = cache.reads
    assert index.refresh() == set()
    assert cache.reads == reads


@pytest.mark.parametrize(
    ("aged", "caught"),
    [
        pytest.param(False, True, id="racy-is-reread"),
        pytest.param(True, False, id="old-is-trusted"),
    ],
)
def test_a_same_stat_key_edit_is_caught_only_while_racy(
    tree_root: Path, aged: bool, caught: bool
) -> None:
    """A coarse-timestamp filesystem can rewrite a file without moving its stat key; it is
    pretended here by storing the new key in the index."""
    path = tree_root / "app/main.py"
    write(path, "version-1")
    if aged:
        age_all(tree_root)
    index = TreeIndex.build(tree_root, folder_rules(tree_root), DigestCache())
    write(path, "version-2")
    if aged:
        age_all(tree_root)
    entry = index.entries["app/main.py"]
    st = os.lstat(path)
    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
    index.entries["app/main.py"] = dataclasses.replace(entry, stat_key=key)
    assert index.refresh() == ({"app/main.py"} if caught else set())
    assert (index.contents == fresh(tree_root).contents) == caught


def test_image_digest_follows_edits(tree_root: Path) -> None:
    image = Image.from_base("scratch-like:ref").with_source_folder(tree_root)
    first = image.digest
    assert image.digest == first
    write(tree_root / "app/main.py", "changed")
    second = image.digest
    assert second != first
    assert second == hash_image(image, DigestCache()).digest
    (tree_root / "app/new.py").write_text("n")
    assert image.digest == hash_image(image, DigestCache()).digest


def test_dockerignore_edit_is_a_new_tree(tree_root: Path) -> None:
    image = Image.from_base("scratch-like:ref").with_source_folder(tree_root)
    first = hash_image(image)
    (tree_root / ".dockerignore").write_text(DOCKERIGNORE + "app/sub\n")
    second = hash_image(image)
    assert second.digest == hash_image(image, DigestCache()).digest != first.digest
    assert "app/sub/deep.py" not in second.layers[0].trees[0].entries


def test_earlier_digests_keep_describing_their_state(tree_root: Path) -> None:
    image = Image.from_base("scratch-like:ref").with_source_folder(tree_root)
    first = hash_image(image)
    tree = first.layers[0].trees[0]
    state = described(tree)
    assert state == described(fresh(tree_root))
    assert hash_image(image).layers[0].trees[0] is tree  # unchanged: the same index, no copy
    write(tree_root / "app/main.py", "edited")
    write(tree_root / "app/added.py", "added")
    shutil.rmtree(tree_root / "app/sub")
    second = hash_image(image)
    assert second.digest != first.digest
    assert described(tree) == state
    assert described(second.layers[0].trees[0]) == described(fresh(tree_root))


def test_concurrent_hashing_agrees(tree_root: Path) -> None:
    image = Image.from_base("scratch-like:ref").with_source_folder(tree_root)
    expected = hash_image(image, DigestCache()).digest
    start = threading.Barrier(8)

    def run() -> list[str]:
        start.wait()
        return [hash_image(image).digest for _ in range(5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [d for f in [pool.submit(run) for _ in range(8)] for d in f.result()]
    assert results == [expected] * 40


def replace_atomically(path: Path, text: str) -> None:
    tmp = path.parents[2] / "edit.tmp"  # outside the tree: a build reads what it listed
    tmp.write_text(text)
    tmp.replace(path)


def test_concurrent_hashing_during_edits_sees_only_whole_states(tree_root: Path) -> None:
    image = Image.from_base("scratch-like:ref").with_source_folder(tree_root)
    states = set()
    for n in range(3):
        replace_atomically(tree_root / "app/main.py", f"v{n}")
        states.add(hash_image(image, DigestCache()).digest)
    done = threading.Event()

    def editor() -> None:
        for n in range(60):
            replace_atomically(tree_root / "app/main.py", f"v{n % 3}")
        done.set()

    def hasher() -> set[str]:
        seen: set[str] = set()
        while not done.is_set():
            seen.add(hash_image(image).digest)
        return seen

    with ThreadPoolExecutor(max_workers=3) as pool:
        hashers = [pool.submit(hasher), pool.submit(hasher)]
        pool.submit(editor).result()
        seen = hashers[0].result() | hashers[1].result()
    assert seen
    assert seen <= states
    assert hash_image(image).digest == hash_image(image, DigestCache()).digest


def test_registry_reuses_by_root_and_rules_and_is_bounded(tmp_path: Path) -> None:
    registry = TreeStore(size=2)
    roots = []
    for name in ("a", "b", "c"):
        write(tmp_path / name / "f.txt", name)
        roots.append(tmp_path / name)
    age_all(tmp_path)
    cache = DigestCache()
    first = registry.tree(roots[0], folder_rules(roots[0]), cache)
    assert registry.tree(roots[0], folder_rules(roots[0]), cache) is first
    for root in roots[1:]:
        registry.tree(root, folder_rules(root), cache)
    assert len(registry) == 2
    reads = cache.reads
    registry.tree(roots[0], folder_rules(roots[0]), cache)  # evicted: built again
    assert cache.reads == reads  # ...from the warm cache


def test_registry_builds_again_for_another_cache(tree_root: Path) -> None:
    rules = folder_rules(tree_root)
    first = shared_trees().tree(tree_root, rules, default_cache())
    other = DigestCache()
    second = shared_trees().tree(tree_root, rules, other)
    assert second is not first
    assert other.reads == len([e for e in second.listing() if e.type == "f"])
    assert second.digest == first.digest


def test_dockerfile_context_is_revalidated(tmp_path: Path) -> None:
    write(tmp_path / "ctx/Dockerfile", "FROM scratch\nCOPY . /\n")
    write(tmp_path / "ctx/data.txt", "one")
    age_all(tmp_path)
    image = Image.from_dockerfile(tmp_path / "ctx/Dockerfile", None, "df")
    first = hash_image(image)
    base_tree = first.layers[0].trees[0]
    state = described(base_tree)
    assert hash_image(image).layers[0].trees[0] is base_tree
    write(tmp_path / "ctx/data.txt", "two")
    second = hash_image(image)
    assert second.digest == hash_image(image, DigestCache()).digest != first.digest
    assert described(base_tree) == state


# -- the store an owner keeps current (the daemon's) --------------------------------------


def test_an_event_fed_store_serves_without_a_stat_and_copies_a_lent_tree(
    tree_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, cache = TreeStore(revalidate=False, size=None), DigestCache()
    source = TreeSource(tree_root)
    first = store.provide(source, cache)
    monkeypatch.setattr(TreeIndex, "_walk_compare", lambda *a: pytest.fail("re-stat"))
    assert store.provide(source, cache) is first  # trusted: the owner folds changes in
    lent = store.lend(source, cache)
    state = described(lent)
    write(tree_root / "app/main.py", "print('changed')")
    key = store.key_of(source)
    assert key is not None
    assert store.change(key, lambda tree: tree.update(["app/main.py"])) == {"app/main.py"}
    assert described(lent) == state  # the borrower keeps the state it was lent
    now = store.provide(source, cache)
    assert now is not lent
    monkeypatch.undo()
    assert now.digest == TreeIndex.build(tree_root, folder_rules(tree_root), cache).digest


def test_an_event_fed_store_keeps_rules_until_told(tree_root: Path) -> None:
    store, cache = TreeStore(revalidate=False, size=None), DigestCache()
    source = TreeSource(tree_root)
    before = store.provide(source, cache)
    (tree_root / ".dockerignore").write_text("*.md\n")
    assert store.provide(source, cache) is before  # no ignore-file event yet
    store.forget_rules(source)
    after = store.provide(source, cache)
    assert "README.md" not in after.entries
    assert "debug.log" in after.entries
