"""The daemon hands its up-to-date trees to the build: a rebuild after an event walks and
stats no tree, and a tree lent to a build keeps the state it was lent in."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from imaged import Image
from imaged.builders.base import BuildOutcome, BuildRequest
from imaged.config import Settings
from imaged.daemon.tracker import ImageTracker
from imaged.digest import trees
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeIndex
from imaged.pipeline.build import abuild


class RecordingBuilder:
    """Records each request and what its staged context holds; builds nothing."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[BuildRequest] = []
        self.staged: list[dict[str, str]] = []

    async def check(self) -> dict[str, str]:
        return {}

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        self.requests.append(request)
        root = request.context_dir
        self.staged.append(
            {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.py") if p.is_file()}
        )
        return BuildOutcome(None, None, 0.0, 0.0, ("recording",))

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ("recording",)


def _project(root: Path) -> Path:
    past = time.time() - 10
    for i in range(30):
        path = root / "src" / f"d{i // 10}" / f"m{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"X = {i}\n")
        os.utime(path, (past, past))
    return root / "src"


def _image(src: Path) -> Image:
    return Image.from_base("debian:12").clone(name="app", registry=None).with_source_folder(src)


def _no_walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every tree walk or whole-tree re-stat fail loudly (and record it)."""
    seen: list[str] = []

    def refuse(name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> Any:
            seen.append(name)
            raise AssertionError(f"{name} during a rebuild served by the tracker")

        return fail

    monkeypatch.setattr("imaged.digest.trees.walk_files", refuse("walk_files"))
    monkeypatch.setattr(TreeIndex, "_walk_compare", refuse("_walk_compare"))
    monkeypatch.setattr(TreeIndex, "build", classmethod(refuse("TreeIndex.build")))
    return seen


def test_a_rebuild_after_an_event_walks_no_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _project(tmp_path)
    image = _image(src)
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    edited = src / "d1" / "m12.py"
    edited.write_text("X = 'edited'\n")
    change = tracker.apply_changes([edited])["app"]
    seen = _no_walks(monkeypatch)
    builder = RecordingBuilder()
    settings = Settings(state_dir=tmp_path / "state")

    async def run() -> Any:
        return await abuild(
            image, settings=settings, builder=builder, cache=tracker.cache, trees=tracker.lend_tree
        )

    result = anyio.run(run)
    assert seen == []
    assert result.digest == change.new_digest == tracker.digest_of("app").digest
    assert builder.staged[0]["layers/0/d1/m12.py"] == "X = 'edited'\n"
    monkeypatch.undo()
    assert result.digest == hash_image(image, DigestCache()).digest  # a fresh walk agrees


def test_a_lent_tree_keeps_its_state_when_the_tracker_moves_on(tmp_path: Path) -> None:
    src = _project(tmp_path)
    image = _image(src)
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    lent = hash_image(image, tracker.cache, trees=tracker.lend_tree)
    tree = lent.layers[0].trees[0]
    before = (tree.digest, tree.file_digests())
    edited = src / "d0" / "m1.py"
    edited.write_text("X = 'moved'\n")
    moved = tracker.apply_changes([edited])["app"]
    assert (tree.digest, tree.file_digests()) == before  # copied before the change
    assert moved.old_digest == lent.digest != moved.new_digest
    again = hash_image(image, tracker.cache, trees=tracker.lend_tree)
    assert again.digest == moved.new_digest == hash_image(image, DigestCache()).digest


def test_an_edit_the_tracker_has_not_seen_is_caught_at_staging(tmp_path: Path) -> None:
    """The lent tree may lag an event still in flight: staging notices the changed file and
    the retry re-stats the trees, so what is built is what is on disk."""
    src = _project(tmp_path)
    image = _image(src)
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    (src / "d2" / "m25.py").write_text("X = 'unseen, longer'\n")  # no apply_changes
    builder = RecordingBuilder()
    settings = Settings(state_dir=tmp_path / "state")

    async def run() -> Any:
        return await abuild(
            image, settings=settings, builder=builder, cache=tracker.cache, trees=tracker.lend_tree
        )

    result = anyio.run(run)
    assert builder.staged[0]["layers/0/d2/m25.py"] == "X = 'unseen, longer'\n"
    assert result.digest == hash_image(image, DigestCache()).digest


def test_a_build_lending_trees_beside_the_tracker_never_rehashes_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build thread lends trees without the daemon's lock while the tracker folds
    events in and hashes: the two never rehash one tree at once (which raised "Set changed
    size during iteration" from the tree's dirty set), and both see the same digests."""
    src = _project(tmp_path)
    image = _image(src)
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    real_ancestors = trees.ancestors

    def slow_ancestors(relpath: str) -> list[str]:
        time.sleep(0.001)  # widens the window while a rehash walks the dirty folders
        return real_ancestors(relpath)

    monkeypatch.setattr(trees, "ancestors", slow_ancestors)
    done, failures, lent = threading.Event(), list[BaseException](), list[str]()

    def build_thread() -> None:
        while not done.is_set():
            try:
                lent.append(hash_image(image, tracker.cache, trees=tracker.lend_tree).digest)
            except Exception as exc:  # what the build would fail with
                failures.append(exc)
                return
            time.sleep(0.0005)  # lets the tracker's thread take the GIL back (no convoy)

    lender = threading.Thread(target=build_thread)
    lender.start()
    try:
        for i in range(40):
            edited = [src / f"d{d}" / f"m{d * 10 + i % 10}.py" for d in range(3)]
            for path in edited:
                path.write_text(f"X = {i!r}\n")
            tracker.apply_changes(edited)
            assert tracker.errors == {}
    finally:
        done.set()
        lender.join()
    assert failures == []
    assert len(lent) > 1
    final = tracker.digest_of("app").digest
    assert hash_image(image, tracker.cache, trees=tracker.lend_tree).digest == final
    monkeypatch.undo()
    assert final == hash_image(image, DigestCache()).digest


def test_a_digest_hashed_ahead_is_staged_and_an_edit_since_is_rehashed(tmp_path: Path) -> None:
    """``abuild(hashed=...)`` takes the digest made ahead (``imaged build`` hashes within
    its time bound) instead of hashing again; an edit after that hash is caught at staging
    (ContextChangedError) and re-hashed, so the tag still names what is built."""
    from imaged.pipeline.build import Hashed

    src = _project(tmp_path)
    image = _image(src)
    ahead = hash_image(image, DigestCache())
    (src / "d1" / "m13.py").write_text("X = 'edited after the hash'\n")
    builder = RecordingBuilder()
    events: list[dict[str, Any]] = []
    settings = Settings(state_dir=tmp_path / "state")

    async def run() -> Any:
        return await abuild(
            image,
            settings=settings,
            builder=builder,
            hashed=Hashed(image, ahead),
            on_event=events.append,
        )

    result = anyio.run(run)
    rehashed = [e for e in events if e["event"] == "rehashed"]
    assert [(e["old"], e["new"]) for e in rehashed] == [(ahead.tag, result.tag)]
    assert result.digest == hash_image(image, DigestCache()).digest != ahead.digest
    assert builder.staged[0]["layers/0/d1/m13.py"] == "X = 'edited after the hash'\n"


def test_a_digest_hashed_ahead_for_another_image_is_not_used(tmp_path: Path) -> None:
    from imaged.pipeline.build import Hashed

    src = _project(tmp_path)
    image = _image(src)
    other = image.with_workdir("/elsewhere")
    builder = RecordingBuilder()
    settings = Settings(state_dir=tmp_path / "state")

    async def run() -> Any:
        hashed = Hashed(other, hash_image(other, DigestCache()))
        return await abuild(image, settings=settings, builder=builder, hashed=hashed)

    result = anyio.run(run)
    assert result.digest == hash_image(image, DigestCache()).digest
    assert builder.requests[0].tags == (result.uri,)
