"""Tests for imaged.daemon.tracker: events -> affected layers -> incremental digests -> reasons."""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import (
    DENIED_REASON,
    FIFO_REASON,
    TOO_LONG_REASON,
    deep_path,
    fifo_ignore_file,
    hung_folder,
    hung_reason,
)

from imaged.daemon import tracker as tracker_module
from imaged.daemon.tracker import DigestChange, ImageTracker, Reason
from imaged.digest import cache as digest_cache
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.errors import ImagedError, MissingPathError
from imaged.spec.image import Image
from imaged.spec.layers import CodeBundle, Dockerignore, SourceFolder

BASE = "127.0.0.1:5000/base:1"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_fresh(tracker: ImageTracker, images: Mapping[str, Image]) -> None:
    """The invariant: the tracked digest equals a from-scratch hash with an empty cache."""
    for name, image in images.items():
        fresh = hash_image(image, DigestCache())
        tracked = tracker.digest_of(name)
        assert tracked.digest == fresh.digest, name
        assert [d.digest for d in tracked.layers] == [d.digest for d in fresh.layers], name


def bundle(image: Image, root: Path) -> Image:
    """A code bundle of ``root`` (with_code_bundle would pick the test file's project)."""
    return image._with(CodeBundle(root=root))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "src/app/main.py", "print('hi')\n")
    write(tmp_path / "src/app/util.py", "X = 1\n")
    write(tmp_path / "src/README.md", "readme\n")
    write(tmp_path / "src/.dockerignore", "*.log\n.dockerignore\n")
    write(tmp_path / "lib/lib.py", "Y = 2\n")
    write(tmp_path / "svc/pyproject.toml", "[project]\nname = 'svc'\n")
    write(tmp_path / "svc/uv.lock", "version = 1\n")
    write(tmp_path / "svc/svc/__init__.py", "")
    write(tmp_path / "svc/.gitignore", "dist/\n")
    write(tmp_path / "reqs/requirements.txt", "httpx\n")
    write(tmp_path / "extra.dockerignore", "# extra rules\n")
    write(tmp_path / "ctx/Dockerfile", "FROM scratch\nCOPY . /\n")
    write(tmp_path / "ctx/data.txt", "data\n")
    write(tmp_path / "unrelated/notes.txt", "x\n")
    return tmp_path


def make_images(root: Path) -> dict[str, Image]:
    base = Image.from_base(BASE)
    api = base.with_source_folder(root / "src").with_requirements(root / "reqs/requirements.txt")
    worker = base.with_pip_packages("rq").with_source_folder(root / "src", dst="/w")
    other = base.with_source_folder(root / "lib").with_dockerignore(root / "extra.dockerignore")
    svc = base.with_uv_project(root / "svc/pyproject.toml", project_install_mode="install_project")
    docker = Image.from_dockerfile(root / "ctx/Dockerfile", None, "docker")
    child = Image.from_base(api.clone(name="api")).with_commands("true")
    return {
        "api": api.clone(name="api"),
        "worker": worker.clone(name="worker"),
        "other": other.clone(name="other"),
        "svc": svc.clone(name="svc"),
        "docker": docker,
        "child": child.clone(name="child"),
        "bundle": bundle(base, root / "lib").clone(name="bundle"),
    }


@pytest.fixture
def images(project: Path) -> dict[str, Image]:
    return make_images(project)


@pytest.fixture
def tracker(images: dict[str, Image]) -> ImageTracker:
    tracker = ImageTracker(DigestCache())
    first = tracker.set_images(images)
    assert set(first) == set(images)
    assert all(c.old_digest is None for c in first.values())
    assert_fresh(tracker, images)
    return tracker


# -- loading ----------------------------------------------------------------------------


def test_set_images_reports_new_images_with_a_definition_reason(
    tracker: ImageTracker, images: dict[str, Image]
) -> None:
    again = tracker.set_images(images)
    assert again == {}
    first = ImageTracker(DigestCache()).set_images({"api": images["api"]})
    assert first["api"].reasons == (Reason("definition", ("new image",)),)
    assert str(first["api"].reasons[0]) == "definition changed: new image"


def test_folders_copied_with_the_same_rules_share_one_tree(
    tracker: ImageTracker, images: dict[str, Image]
) -> None:
    api_tree = tracker.digest_of("api").layers[0].trees[0]
    worker_tree = tracker.digest_of("worker").layers[1].trees[0]
    lib_folder = tracker.digest_of("other").layers[0].trees[0]
    lib_bundle = tracker.digest_of("bundle").layers[0].trees[0]
    assert api_tree is worker_tree
    assert lib_folder is lib_bundle  # different ignore files, but the same rules today


def test_a_rules_edit_splits_a_shared_tree(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    ignore = write(project / "extra.dockerignore", "lib/*.tmp\n")  # from its own folder
    assert tracker.apply_changes([ignore]) == {}  # lib/ holds no *.tmp file
    lib_folder = tracker.digest_of("other").layers[0].trees[0]
    lib_bundle = tracker.digest_of("bundle").layers[0].trees[0]
    assert lib_folder is not lib_bundle
    junk = write(project / "lib/junk.tmp", "x")
    assert set(tracker.apply_changes([junk])) == {"bundle"}
    assert_fresh(tracker, images)


def test_spec_change_names_added_removed_and_changed_layers(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    edited = dict(images)
    edited["worker"] = (
        Image.from_base(BASE)
        .with_pip_packages("rq", "redis")
        .with_source_folder(project / "src", dst="/w")
        .with_env_vars({"A": "1"})
        .clone(name="worker")
    )
    del edited["other"]
    changes = tracker.set_images(edited)
    assert set(changes) == {"worker"}
    (reason,) = changes["worker"].reasons
    assert reason.layer == "definition"
    assert reason.files == ("changed #1 pip_packages rq redis", "added #3 env_vars A")
    assert str(reason).startswith("definition changed: changed #1 pip_packages rq redis")
    assert_fresh(tracker, edited)


# -- which images move ------------------------------------------------------------------


def test_edit_in_shared_folder_moves_both_users_and_the_child_only(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    before = {n: tracker.digest_of(n).digest for n in images}
    main = write(project / "src/app/main.py", "print('changed')\n")
    changes = tracker.apply_changes([main])
    assert set(changes) == {"api", "worker", "child"}
    api = changes["api"]
    assert api.old_digest == before["api"]
    assert api.new_digest == tracker.digest_of("api").digest != before["api"]
    assert api.reasons == (Reason("#1 source_folder src/", ("src/app/main.py",)),)
    assert str(api.reasons[0]) == "layer `source_folder src/` moved: src/app/main.py changed"
    assert changes["worker"].reasons == (Reason("#2 source_folder src/", ("src/app/main.py",)),)
    assert changes["child"].reasons == (Reason("base image api", ("src/app/main.py",)),)
    assert_fresh(tracker, images)


@pytest.mark.parametrize(
    "relpath",
    [
        pytest.param("src/app/__pycache__/main.cpython-311.pyc", id="pycache"),
        pytest.param("src/.venv/lib/site.py", id="venv"),
        pytest.param("src/debug.log", id="dockerignored"),
        pytest.param("svc/dist/svc.whl", id="gitignored-folder"),
        pytest.param("unrelated/notes.txt", id="unrelated-file"),
        pytest.param("unrelated/new/deep.py", id="unrelated-new-folder"),
    ],
)
def test_ignored_or_unrelated_paths_are_irrelevant_and_move_nothing(
    tracker: ImageTracker, images: dict[str, Image], project: Path, relpath: str
) -> None:
    path = write(project / relpath, "noise\n")
    assert not tracker.is_relevant(path)
    assert tracker.apply_changes([path]) == {}
    assert_fresh(tracker, images)


@pytest.mark.parametrize(
    ("relpath", "relevant"),
    [
        pytest.param("src/app/main.py", True, id="tracked-file"),
        pytest.param("src", True, id="tree-root"),
        pytest.param("reqs/requirements.txt", True, id="single-file"),
        pytest.param("extra.dockerignore", True, id="extra-ignore-file"),
        pytest.param("lib/.dockerignore", True, id="absent-own-ignore-file"),
        pytest.param("svc/.gitignore", True, id="gitignore"),
        pytest.param("ctx/Dockerfile", True, id="dockerfile"),
        pytest.param("reqs/other.txt", False, id="sibling-of-single-file"),
        pytest.param("src/app/never-existed.py", False, id="absent-untracked"),
    ],
)
def test_is_relevant(tracker: ImageTracker, project: Path, relpath: str, relevant: bool) -> None:
    assert tracker.is_relevant(project / relpath) is relevant


def test_uv_lock_edit_moves_only_the_image_that_uses_it(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    lock = write(project / "svc/uv.lock", "version = 1\n# changed\n")
    changes = tracker.apply_changes([lock])
    assert set(changes) == {"svc"}
    reasons = changes["svc"].reasons
    assert reasons == (Reason("#1 uv_project svc/ (install_project)", ("svc/uv.lock", "uv.lock")),)
    assert_fresh(tracker, images)


def test_requirements_edit_names_the_file(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    reqs = write(project / "reqs/requirements.txt", "httpx\nrich\n")
    changes = tracker.apply_changes([reqs])
    assert set(changes) == {"api", "child"}
    assert changes["api"].reasons == (
        Reason("#2 requirements requirements.txt", ("requirements.txt",)),
    )
    assert_fresh(tracker, images)


@pytest.mark.parametrize(
    ("text", "moves"),
    [
        pytest.param("# extra rules\nlib/*.md\n", True, id="list-changes"),
        pytest.param("# extra rules, reworded\n\n", False, id="comment-only"),
    ],
)
def test_extra_dockerignore_edit_moves_only_when_the_file_list_changes(
    tracker: ImageTracker, images: dict[str, Image], project: Path, text: str, moves: bool
) -> None:
    write(project / "lib/NOTES.md", "notes\n")
    tracker.apply_changes([project / "lib/NOTES.md"])
    ignore = write(project / "extra.dockerignore", text)
    changes = tracker.apply_changes([ignore])
    assert set(changes) == ({"other"} if moves else set())
    if moves:
        reason = Reason("#1 source_folder lib/", ("extra.dockerignore", "lib/NOTES.md"))
        assert changes["other"].reasons == (reason,)
    assert_fresh(tracker, images)


def test_own_dockerignore_edit_rebuilds_the_rules(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    ignore = write(project / "src/.dockerignore", "*.log\n.dockerignore\n# same list\n")
    assert tracker.apply_changes([ignore]) == {}
    ignore = write(project / "src/.dockerignore", "*.log\n.dockerignore\nREADME.md\n")
    changes = tracker.apply_changes([ignore])
    assert set(changes) == {"api", "worker", "child"}
    assert changes["api"].reasons[0].files == (".dockerignore", "src/README.md")
    assert_fresh(tracker, images)
    readme = write(project / "src/README.md", "now ignored\n")
    assert not tracker.is_relevant(readme)
    assert tracker.apply_changes([readme]) == {}


def test_dockerfile_context_edit_moves_the_base_layer(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    data = write(project / "ctx/data.txt", "new data\n")
    changes = tracker.apply_changes([data])
    assert set(changes) == {"docker"}
    (reason,) = changes["docker"].reasons
    assert reason.layer.startswith("base Dockerfile ")
    assert reason.files == ("ctx/data.txt",)
    assert_fresh(tracker, images)


# -- editor save patterns ---------------------------------------------------------------


def test_editor_temp_files_created_and_deleted_leave_the_digest(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    before = tracker.digest_of("api").digest
    temps = [project / "src/app" / name for name in (".main.py.swp", "main.py~", "4913")]
    for temp in temps:
        write(temp, "tmp")
    for temp in temps:
        temp.unlink()
        assert not tracker.is_relevant(temp)
    assert tracker.apply_changes(temps) == {}
    assert tracker.digest_of("api").digest == before


def test_editor_temp_files_seen_alive_move_and_then_move_back(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    before = tracker.digest_of("api").digest
    swap = write(project / "src/app/4913", "")
    assert set(tracker.apply_changes([swap])) == {"api", "worker", "child"}
    swap.unlink()
    back = tracker.apply_changes([swap])
    assert back["api"].new_digest == before
    assert back["api"].reasons[0].files == ("src/app/4913",)


def test_atomic_rename_save_moves_once(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    tmp = write(project / "src/app/.main.py.tmp.1234", "print('saved')\n")
    main = project / "src/app/main.py"
    os.replace(tmp, main)
    changes = tracker.apply_changes([tmp, main])
    assert set(changes) == {"api", "worker", "child"}
    assert changes["api"].reasons[0].files == ("src/app/main.py",)
    assert tracker.apply_changes([tmp, main]) == {}
    assert_fresh(tracker, images)


def test_burst_of_2000_files_gives_one_change_per_image(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    paths = [write(project / f"src/gen/d{i % 20}/f{i}.py", str(i)) for i in range(2000)]
    folders = [project / "src/gen", *(project / f"src/gen/d{i}" for i in range(20))]
    changes = tracker.apply_changes([*paths, *folders])
    assert set(changes) == {"api", "worker", "child"}
    (reason,) = changes["api"].reasons
    assert len(reason.files) == 20
    assert reason.more == 2000 + 20 + 1 - 20  # the files, their 20 folders and gen/
    assert str(reason).endswith(f" and {reason.more} more changed")
    assert_fresh(tracker, images)


# -- folders coming and going -----------------------------------------------------------


def test_deleting_and_recreating_a_folder(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    original = tracker.digest_of("api").digest
    shutil.rmtree(project / "src")
    gone = [project / "src", project / "src/app/main.py", project / "src/app"]
    assert tracker.is_relevant(project / "src")
    assert tracker.apply_changes(gone) == {}
    assert set(tracker.errors) == {"api", "worker", "child"}
    with pytest.raises(MissingPathError, match="src is not a folder"):
        tracker.digest_of("api")
    write(project / "src/app/main.py", "print('reborn')\n")
    changes = tracker.apply_changes([project / "src"])
    assert set(changes) == {"api", "worker", "child"}
    assert changes["api"].old_digest == original
    assert "src/app/main.py" in changes["api"].reasons[0].files
    assert tracker.errors == {}
    assert_fresh(tracker, images)


def test_folder_swapped_in_by_rename_is_rebuilt(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    shutil.copytree(project / "src", project / "src.new")
    write(project / "src.new/app/extra.py", "")
    shutil.rmtree(project / "src")
    os.rename(project / "src.new", project / "src")
    changes = tracker.apply_changes([project / "src"])
    assert changes["api"].reasons[0].files == ("src/app/extra.py",)
    assert_fresh(tracker, images)


def test_missing_single_file_is_an_error_until_it_returns(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    pyproject = project / "svc/pyproject.toml"
    text = pyproject.read_text()
    pyproject.unlink()
    assert tracker.apply_changes([pyproject]) == {}
    assert set(tracker.errors) == {"svc"}
    write(pyproject, text)
    assert tracker.apply_changes([pyproject]) == {}  # the last good digest: nothing to build
    assert tracker.errors == {}
    assert_fresh(tracker, images)


def test_deleted_uv_lock_floats_and_the_tracker_agrees(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    lock = project / "svc/uv.lock"
    lock.unlink()
    changes = tracker.apply_changes([lock])
    assert set(changes) == {"svc"}
    assert tracker.errors == {}
    assert_fresh(tracker, images)


# -- watch roots ------------------------------------------------------------------------


def test_watch_roots_are_the_trees_and_the_folders_of_files_outside_them(
    tracker: ImageTracker, project: Path
) -> None:
    assert tracker.watch_roots() == {
        **{project / tree: True for tree in ("src", "lib", "svc", "ctx")},
        project: False,  # extra.dockerignore lives at the top
        project / "reqs": False,
    }
    only_src = ImageTracker(DigestCache())
    image = Image.from_base(BASE).with_source_folder(project)
    only_src.set_images({"w": image.with_requirements(project / "reqs/requirements.txt")})
    assert only_src.watch_roots() == {project: True}  # the file is inside the tree


def test_ancestor_gitignores_of_a_monorepo_are_watched_shallow(tmp_path: Path) -> None:
    (tmp_path / ".git/info").mkdir(parents=True)
    write(tmp_path / ".gitignore", "*.log\n")
    api = write(tmp_path / "services/api/main.py", "print(1)\n").parent
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"api": bundle(Image.from_base(BASE), api).clone(name="api")})
    assert tracker.watch_roots() == {
        api: True,
        tmp_path: False,
        tmp_path / "services": False,
        tmp_path / ".git/info": False,
    }


# -- the invariant, under random edits --------------------------------------------------


def _random_edit(rng: random.Random, root: Path) -> list[Path]:
    """One random filesystem edit below ``root``; returns the paths an event would name."""
    folders = ["src", "src/app", "src/app/deep", "lib", "svc/svc", "ctx", "svc/dist", "src/x"]
    names = ["a.py", "b.log", "c.md", "__pycache__/d.pyc", "e.txt", "uv.lock", "4913"]
    folder = root / rng.choice(folders)
    path = folder / rng.choice(names)
    action = rng.choice(["write", "write", "write", "delete", "rmtree", "chmod", "ignore", "move"])
    if action == "move" and folder.is_dir() and folder.name in ("deep", "x"):
        other = folder.parent / ("x" if folder.name == "deep" else "deep")
        shutil.rmtree(other, ignore_errors=True)
        os.rename(folder, other)
        return [folder, other]
    if action == "write":
        write(path, rng.choice(["1", "2", "3"]))
        return [path]
    if action == "delete" and path.is_file():
        path.unlink()
        return [path]
    if action == "rmtree" and folder.is_dir() and folder.name in ("deep", "x", "dist"):
        shutil.rmtree(folder)
        return [folder]
    if action == "chmod" and path.is_file():
        path.chmod(0o755 if rng.random() < 0.5 else 0o644)
        return [path]
    if action == "ignore":
        target = rng.choice(["src/.dockerignore", "svc/.gitignore", "extra.dockerignore"])
        write(root / target, rng.choice(["*.log\n", "*.md\n", "deep\n", "*.txt\n!e.txt\n", ""]))
        return [root / target]
    return []


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(8)])
def test_invariant_holds_after_random_edit_sequences(
    tracker: ImageTracker, images: dict[str, Image], project: Path, seed: int
) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        paths = [p for _ in range(rng.randint(1, 4)) for p in _random_edit(rng, project)]
        changes = tracker.apply_changes(paths)
        for name, change in changes.items():
            assert change.old_digest != change.new_digest
            assert change.reasons, name
        assert_fresh(tracker, images)


# -- performance ------------------------------------------------------------------------


def test_one_file_edit_in_a_5000_file_tree_is_fast(tmp_path: Path) -> None:
    for i in range(5000):
        write(tmp_path / f"big/pkg{i // 100}/mod{i}.py", f"V = {i}\n")
    image = Image.from_base(BASE).with_source_folder(tmp_path / "big").clone(name="big")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"big": image})
    timings = []
    for n in range(5):
        path = write(tmp_path / "big/pkg7/mod700.py", f"V = 'edit {n}'\n")
        start = time.perf_counter()
        changes = tracker.apply_changes([path])
        timings.append(time.perf_counter() - start)
        assert isinstance(changes["big"], DigestChange)
    best = min(timings)
    sys.stderr.write(f"\none-file apply_changes on 5,000 files: {best * 1000:.2f} ms\n")
    assert best < 0.02
    assert tracker.digest_of("big").digest == hash_image(image, DigestCache()).digest


@pytest.mark.parametrize(
    "event",
    [
        pytest.param("build", id="ignored-folder"),
        pytest.param("build/sub", id="ignored-subfolder"),
        pytest.param("build/sub/keep.txt", id="the-kept-file"),
    ],
)
def test_exception_inside_an_ignored_folder_survives_folder_events(
    tmp_path: Path, event: str
) -> None:
    write(tmp_path / "src/.dockerignore", "build\n!build/sub/keep.txt\n")
    write(tmp_path / "src/build/sub/keep.txt", "kept\n")
    write(tmp_path / "src/build/sub/drop.txt", "dropped\n")
    image = Image.from_base(BASE).with_source_folder(tmp_path / "src").clone(name="app")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    assert tracker.is_relevant(tmp_path / "src/build/sub/keep.txt")
    assert not tracker.is_relevant(tmp_path / "src/build/sub/drop.txt")
    assert tracker.apply_changes([tmp_path / "src" / event]) == {}
    assert_fresh(tracker, {"app": image})
    write(tmp_path / "src/build/sub/keep.txt", "kept, edited\n")
    assert set(tracker.apply_changes([tmp_path / "src/build/sub/keep.txt"])) == {"app"}
    assert_fresh(tracker, {"app": image})


# -- unreadable inputs: recorded per image, never raised (review finding 1) ------------------

SCRIPT = '# /// script\n# dependencies = ["httpx"]\n# ///\nprint("hi")\n'
BAD_HEADER = '# /// script\n# dependencies = ["httpx"\n# ///\nprint("hi")\n'


@pytest.fixture
def script_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Image:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", "127.0.0.1:5000/python:{major}.{minor}")
    script = write(tmp_path / "jobs/job.py", SCRIPT)
    return Image.from_uv_script(script, name="job", python_version=(3, 11))


def _break_header(root: Path) -> tuple[Path, Callable[[], object]]:
    script = root / "jobs/job.py"
    return script, lambda: script.write_text(BAD_HEADER)


def _reqs_to_folder(root: Path) -> tuple[Path, Callable[[], None]]:
    reqs = root / "reqs/requirements.txt"

    def swap() -> None:
        reqs.unlink()
        reqs.mkdir()

    return reqs, swap


@pytest.mark.parametrize(
    ("break_input", "image", "fragment"),
    [
        pytest.param(_break_header, "job", "job.py:2: invalid TOML", id="bad-pep723-header"),
        pytest.param(_reqs_to_folder, "api", "requirements.txt", id="file-became-a-folder"),
    ],
)
def test_an_unreadable_input_is_an_error_of_its_image_until_it_is_fixed(
    tracker: ImageTracker,
    images: dict[str, Image],
    project: Path,
    script_image: Image,
    break_input: Callable[[Path], tuple[Path, Callable[[], None]]],
    image: str,
    fragment: str,
) -> None:
    images = {**images, "job": script_image}
    tracker.set_images(images)
    path, spoil = break_input(project)
    good = path.read_text()
    spoil()
    assert tracker.apply_changes([path]) == {}
    assert image in tracker.errors
    assert fragment in str(tracker.errors[image])
    assert tracker.set_images(images) == {}  # a reload hits the same input: no raise either
    assert image in tracker.errors
    with pytest.raises(ImagedError, match=re.escape(fragment)):
        tracker.digest_of(image)
    if path.is_dir():
        path.rmdir()
    path.write_text(good)
    assert tracker.apply_changes([path]) == {}  # the last good digest again: nothing to build
    assert tracker.errors == {}
    assert_fresh(tracker, images)


@pytest.mark.parametrize(
    ("relpath", "users"),
    [
        pytest.param("src/app/main.py", {"api", "worker", "child"}, id="file-in-a-folder"),
        pytest.param("reqs/requirements.txt", {"api", "child"}, id="single-file"),
    ],
)
def test_a_file_that_cannot_be_read_is_an_error_until_it_can(
    tracker: ImageTracker,
    images: dict[str, Image],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    relpath: str,
    users: set[str],
) -> None:
    edited = write(project / relpath, "edited = 'and now unreadable'\n")
    real = digest_cache.read_digest

    def refuse(path: str, size_hint: int = 0) -> str:
        if path == str(edited):  # root reads any file: chmod cannot make one unreadable
            raise PermissionError(13, "Permission denied", path)
        return real(path, size_hint)

    monkeypatch.setattr(digest_cache, "read_digest", refuse)
    assert tracker.apply_changes([edited]) == {}
    assert set(tracker.errors) == users
    assert "Permission denied" in str(tracker.errors["api"])
    assert tracker.is_relevant(edited)
    monkeypatch.setattr(digest_cache, "read_digest", real)
    changes = tracker.apply_changes([edited])
    assert set(changes) == users
    assert tracker.errors == {}
    assert_fresh(tracker, images)


# -- special files, unreadable folders, long paths: one image's error only (issue 11) ----------


def _fifo_dockerignore(root: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    (root / "src/.dockerignore").unlink()
    fifo_ignore_file(root / "src")
    return lambda: (root / "src/.dockerignore").unlink()


def _refuse_listing(relpath: str) -> Callable[[Path, pytest.MonkeyPatch], Callable[[], None]]:
    """``relpath`` cannot be listed: os.scandir raises as for a mode-000 folder (root lists
    any folder; the real mode-000 case runs in a child in test_cli and test_daemon_e2e)."""

    def spoil(root: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
        locked, real = str(root / relpath), os.scandir

        def scandir(path: Any = ".") -> Any:
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
        return lambda: monkeypatch.setattr(os, "scandir", real)

    return spoil


def _deep_path(root: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    deep_path(root / "src/app")
    return lambda: shutil.rmtree(root / "src/app" / ("d" * 250))


@pytest.mark.timeout(20)  # a FIFO opened for reading would block here
@pytest.mark.parametrize(
    ("spoil", "users", "fragment"),
    [
        pytest.param(
            _fifo_dockerignore,
            {"api", "worker", "child"},
            f"src/.dockerignore: {FIFO_REASON}",
            id="fifo-dockerignore",
        ),
        pytest.param(
            _refuse_listing("src/app"),
            {"api", "worker", "child"},
            f"src/app: {DENIED_REASON}",
            id="unreadable-folder",
        ),
        pytest.param(
            _refuse_listing("lib/sub"),
            {"other", "bundle"},
            f"lib/sub: {DENIED_REASON}",
            id="unreadable-folder-of-a-code-bundle",
        ),
        pytest.param(_deep_path, {"api", "worker", "child"}, TOO_LONG_REASON, id="path-max"),
    ],
)
def test_a_bad_input_at_load_is_an_error_of_its_images_only(
    images: dict[str, Image],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    spoil: Callable[[Path, pytest.MonkeyPatch], Callable[[], None]],
    users: set[str],
    fragment: str,
) -> None:
    (project / "lib/sub").mkdir()
    restore = spoil(project, monkeypatch)
    tracker = ImageTracker(DigestCache())
    first = tracker.set_images(images)
    assert set(first) == set(images) - users
    assert set(tracker.errors) == users
    for name in users:
        owner = "api" if name == "child" else name  # child's error is its parent's
        message = str(tracker.errors[name])
        assert message.startswith(f"image {owner!r}, layer #"), message
        assert fragment in message
    restore()
    if not (project / "src/.dockerignore").exists():
        write(project / "src/.dockerignore", "*.log\n.dockerignore\n")
    moved = tracker.restat()
    assert set(moved) == users
    assert tracker.errors == {}
    assert_fresh(tracker, images)


def test_an_unexpected_error_hashing_one_image_spares_the_others(
    images: dict[str, Image], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = tracker_module.hash_image

    def hash_or_fail(image: Image, *args: Any, **kwargs: Any) -> Any:
        if image.name == "other":
            raise RuntimeError("boom")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(tracker_module, "hash_image", hash_or_fail)
    tracker = ImageTracker(DigestCache())
    assert set(tracker.set_images(images)) == set(images) - {"other"}
    assert str(tracker.errors["other"]) == (
        "image 'other': unexpected error while hashing: RuntimeError: boom"
    )
    assert set(tracker.digests()) == set(images) - {"other"}
    assert "unexpected error while hashing image 'other'" in caplog.text


# -- restat: the edits no event announced (review finding 3) -------------------------------


def _age_all_files(root: Path) -> None:
    """Move every mtime out of the racy window, so an unchanged file is never re-read."""
    old = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def test_restat_with_nothing_changed_moves_nothing_and_reads_nothing(
    project: Path, images: dict[str, Image]
) -> None:
    _age_all_files(project)
    cache = DigestCache()
    tracker = ImageTracker(cache)
    tracker.set_images(images)
    reads = cache.reads
    assert tracker.restat() == {}
    assert cache.reads == reads
    assert tracker.errors == {}


@pytest.mark.parametrize(
    ("relpath", "text", "moved", "reason"),
    [
        pytest.param(
            "src/app/main.py",
            "print('edited unseen')\n",
            {"api", "worker", "child"},
            Reason("#1 source_folder src/", ("src/app/main.py",)),
            id="file-in-a-folder",
        ),
        pytest.param(
            "src/app/new/deep.py",
            "Z = 3\n",
            {"api", "worker", "child"},
            Reason("#1 source_folder src/", ("src/app/new", "src/app/new/deep.py")),
            id="new-folder",
        ),
        pytest.param(
            "reqs/requirements.txt",
            "httpx\nrich\n",
            {"api", "child"},
            Reason("#2 requirements requirements.txt", ("requirements.txt",)),
            id="single-file",
        ),
        pytest.param(
            "extra.dockerignore",
            "lib/*.py\n",
            {"other"},
            Reason("#1 source_folder lib/", ("extra.dockerignore", "lib/lib.py")),
            id="ignore-file",  # lib/.dockerignore is absent: not named
        ),
    ],
)
def test_restat_finds_an_edit_the_watcher_never_saw(
    tracker: ImageTracker,
    images: dict[str, Image],
    project: Path,
    relpath: str,
    text: str,
    moved: set[str],
    reason: Reason,
) -> None:
    write(project / relpath, text)  # and no apply_changes: the event was lost
    changes = tracker.restat()
    assert set(changes) == moved
    first = min(moved)
    assert reason in changes[first].reasons
    assert_fresh(tracker, images)
    assert tracker.restat() == {}


def test_restat_clears_an_error_fixed_without_an_event(
    tracker: ImageTracker, images: dict[str, Image], project: Path
) -> None:
    shutil.rmtree(project / "lib")
    assert tracker.restat() == {}
    assert set(tracker.errors) == {"other", "bundle"}
    write(project / "lib/lib.py", "Y = 2\n")
    assert tracker.restat() == {}  # the same content as the last good digest
    assert tracker.errors == {}
    assert_fresh(tracker, images)


# -- nested .gitignore files created after loading ---------------------------------------------


def _gitignore_in_existing_folder(root: Path) -> list[Path]:
    return [write(root / "sub/.gitignore", "x.txt\n")]


def _gitignore_in_new_folder(root: Path) -> list[Path]:
    write(root / "new/x.txt", "x\n")
    return [root / "new", write(root / "new/.gitignore", "x.txt\n")]


def _new_folder_event_only(root: Path) -> list[Path]:
    """The .gitignore was written before the watcher saw its folder: one event, the folder."""
    write(root / "new/x.txt", "x\n")
    write(root / "new/.gitignore", "x.txt\n")
    return [root / "new"]


@pytest.mark.parametrize(
    ("edit", "folder"),
    [
        pytest.param(_gitignore_in_existing_folder, "sub", id="existing-folder"),
        pytest.param(_gitignore_in_new_folder, "new", id="new-folder"),
        pytest.param(_new_folder_event_only, "new", id="new-folder-event-only"),
    ],
)
def test_a_nested_gitignore_created_later_applies_at_once(
    tmp_path: Path, edit: Callable[[Path], list[Path]], folder: str
) -> None:
    root = tmp_path / "bundle"
    write(root / "main.py", "print(1)\n")
    write(root / "sub/x.txt", "x\n")
    image = bundle(Image.from_base(BASE), root).clone(name="b")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"b": image})
    changed = edit(root)
    assert all(tracker.is_relevant(p) for p in changed)
    tracker.apply_changes(changed)
    assert_fresh(tracker, {"b": image})
    assert tracker.digest_of("b").digest == hash_image(image, DigestCache()).digest
    files = tracker.digest_of("b").layers[0].trees[0].file_digests()
    assert f"{folder}/.gitignore" in files
    assert f"{folder}/x.txt" not in files
    # Now indexed as a rules input: deleting it brings the file back.
    (root / folder / ".gitignore").unlink()
    tracker.apply_changes([root / folder / ".gitignore"])
    assert f"{folder}/x.txt" in tracker.digest_of("b").layers[0].trees[0].file_digests()
    assert_fresh(tracker, {"b": image})


def test_a_nested_gitignore_ignored_by_the_rules_still_counts(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    write(root / ".dockerignore", ".gitignore\n")
    write(root / "sub/x.txt", "x\n")
    image = bundle(Image.from_base(BASE), root).clone(name="b")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"b": image})
    new = write(root / "sub/.gitignore", "x.txt\n")
    assert tracker.is_relevant(new)
    assert set(tracker.apply_changes([new])) == {"b"}
    assert_fresh(tracker, {"b": image})


# -- the tracker hashes through hash_image ----------------------------------------------------


def test_build_inputs_match_a_fresh_hash(tmp_path: Path, script_image: Image) -> None:
    """What the build uses as read (base ref, Dockerfile text, script deps) matches too."""
    write(tmp_path / "ctx/Dockerfile", "FROM scratch\n")
    images = {
        "docker": Image.from_dockerfile(tmp_path / "ctx/Dockerfile", None, "docker"),
        "job": script_image,
        "child": Image.from_base(script_image).with_commands("true").clone(name="child"),
    }
    tracker = ImageTracker(DigestCache())
    tracker.set_images(images)
    for name, image in images.items():
        fresh, tracked = hash_image(image, DigestCache()), tracker.digest_of(name)
        assert (tracked.base_ref, tracked.dockerfile_text) == (
            fresh.base_ref,
            fresh.dockerfile_text,
        )
        assert [d.values for d in tracked.layers] == [d.values for d in fresh.layers]
    assert tracker.digest_of("docker").dockerfile_text == "FROM scratch\n"
    assert any(d.values for d in tracker.digest_of("job").layers)
    assert tracker.digest_of("child").base_ref == script_image.uri_for(tracker.digest_of("job").tag)


def test_a_gitignore_inside_an_ignored_folder_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    write(root / ".gitignore", "node_modules/\n")
    write(root / "main.py", "print(1)\n")
    image = bundle(Image.from_base(BASE), root).clone(name="b")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"b": image})
    inner = write(root / "node_modules/pkg/.gitignore", "*\n")
    assert not tracker.is_relevant(inner)
    assert tracker.apply_changes([inner]) == {}
    assert_fresh(tracker, {"b": image})


def test_a_root_dockerignore_reads_paths_from_its_folder_and_the_tracker_agrees(
    tmp_path: Path,
) -> None:
    """Docker's rule: a root ``.dockerignore`` line ``src/data.bin`` keeps ``src/data.bin``
    out of ``with_source_folder("src")``; edits of it move the digest, hashed and tracked."""
    write(tmp_path / "src/app.py", "print(1)\n")
    write(tmp_path / "src/data.bin", "big\n")
    write(tmp_path / "src/deep/data.bin", "kept: the line names one path\n")
    ignore = write(tmp_path / ".dockerignore", "src/data.bin\n")
    image = (
        Image.from_base(BASE)
        .clone(name="api")
        .with_source_folder(tmp_path / "src", "/app")
        .with_dockerignore(ignore)
    )
    listing = [e.relpath for e in hash_image(image, DigestCache()).layers[0].trees[0].listing()]
    assert listing == ["app.py", "deep", "deep/data.bin"]
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"api": image})
    write(ignore, "src/**/data.bin\n")
    changes = tracker.apply_changes([ignore])
    assert changes["api"].reasons[0].files == (".dockerignore", "src/deep/data.bin")
    assert_fresh(tracker, {"api": image})
    write(tmp_path / "src/data.bin", "edited, still ignored\n")
    assert tracker.apply_changes([tmp_path / "src/data.bin"]) == {}
    assert_fresh(tracker, {"api": image})


def test_the_projects_dockerignore_is_watched_and_moves_the_digest(tmp_path: Path) -> None:
    """Without ``with_dockerignore``, the defining project's ``.dockerignore`` filters a
    source folder inside it (Flyte's root_dir fallback): absent, created, edited, the
    tracker watches it and agrees with a fresh hash at each step."""
    write(tmp_path / "src/app.py", "print(1)\n")
    write(tmp_path / "src/data.bin", "big\n")
    ignore = tmp_path / ".dockerignore"
    layer = SourceFolder(src=tmp_path / "src", dst="/app", project_ignore=ignore)
    image = Image.from_base(BASE).clone(name="api")._with(layer)
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"api": image})
    assert tracker.is_relevant(ignore)
    assert tracker.watch_roots()[tmp_path] is False  # its folder, for its own entries only
    listing = [e.relpath for e in tracker.digest_of("api").layers[0].trees[0].listing()]
    assert listing == ["app.py", "data.bin"]
    write(ignore, "src/data.bin\n")
    changes = tracker.apply_changes([ignore])
    assert changes["api"].reasons[0].files == (".dockerignore", "src/data.bin")
    assert_fresh(tracker, {"api": image})
    explicit = image._with(Dockerignore(path=write(tmp_path / "other.ignore", "# none\n")))
    tracker.set_images({"api": explicit})  # an explicit ignore file replaces the project's
    assert not tracker.is_relevant(ignore)
    listing = [e.relpath for e in tracker.digest_of("api").layers[0].trees[0].listing()]
    assert listing == ["app.py", "data.bin"]
    assert_fresh(tracker, {"api": explicit})


# -- a hung filesystem under one image's folder (issue 11) ------------------------------

HUNG_TIMEOUT = 1.0  # the good folders must walk within it on a loaded CI machine


def _recover_by_collecting(tracker: ImageTracker, edited: Path) -> dict[str, DigestChange]:
    return tracker.collect_walks() if tracker.late_walks() else {}


def _recover_by_restat(tracker: ImageTracker, edited: Path) -> dict[str, DigestChange]:
    return tracker.restat()


def _recover_by_an_event(tracker: ImageTracker, edited: Path) -> dict[str, DigestChange]:
    return tracker.apply_changes([edited])


def _until_healed(
    tracker: ImageTracker, attempt: Callable[[], dict[str, DigestChange]]
) -> set[str]:
    """The images ``attempt`` reports moved, tried until no image is in error: the released
    walks end a moment after the mount is back, not all at once."""
    deadline, moved = time.monotonic() + 5, set()
    while tracker.errors:
        assert time.monotonic() < deadline, f"never healed: {tracker.errors}"
        moved |= set(attempt())
        time.sleep(0.02)
    return moved


Recover = Callable[[ImageTracker, Path], dict[str, DigestChange]]
RECOVERIES = [
    pytest.param(_recover_by_collecting, id="walk-ends"),
    pytest.param(_recover_by_restat, id="restat"),
    pytest.param(_recover_by_an_event, id="event"),
]
HUNG_FOLDERS = [
    # folder, a file in it, the images that copy it, the first one's layer
    pytest.param(
        "src", "app/main.py", {"api", "worker", "child"}, "api", "source_folder src/", id="src"
    ),
    pytest.param("lib", "lib.py", {"other", "bundle"}, "other", "source_folder lib/", id="lib"),
]


@pytest.mark.timeout(20)  # an unbounded walk would hang here
@pytest.mark.parametrize("recover", RECOVERIES)
@pytest.mark.parametrize(("folder", "file", "users", "first", "layer"), HUNG_FOLDERS)
def test_a_hung_folder_fails_its_images_in_bounded_time_and_they_recover(
    images: dict[str, Image],
    project: Path,
    recover: Recover,
    folder: str,
    file: str,
    users: set[str],
    first: str,
    layer: str,
) -> None:
    """``lib`` is also a code bundle's: finding its nested .gitignore files is bounded too."""
    write(project / "lib/sub/.gitignore", "*.tmp\n")
    edited = project / folder / file
    tracker = ImageTracker(DigestCache(), hash_timeout=HUNG_TIMEOUT)
    with hung_folder(project / folder) as release:
        started = time.monotonic()
        loaded = tracker.set_images(images)
        took = time.monotonic() - started
        assert took < HUNG_TIMEOUT + 1.5, took  # one bound for all, not one per image
        assert set(loaded) == set(images) - users
        assert set(tracker.errors) == users
        assert str(tracker.errors[first]) == (
            f"image {first!r}, layer #1 {layer}: hashing {project / folder} "
            f"{hung_reason(HUNG_TIMEOUT)}"
        )
        assert_fresh(tracker, {n: i for n, i in images.items() if n not in users})
        # Still hung: an event under it or the reconcile pass waits for nothing.
        started = time.monotonic()
        assert tracker.apply_changes([edited]) == {}
        assert tracker.restat() == {}
        assert time.monotonic() - started < 1.0
        assert set(tracker.errors) == users
        assert not tracker.late_walks()
        release.set()
        moved = _until_healed(tracker, lambda: recover(tracker, edited))
    assert moved == users
    assert tracker.errors == {}
    assert_fresh(tracker, images)
    # The adopted tree follows events as any other, and the nested .gitignore is watched.
    assert tracker.is_relevant(project / "lib/sub/.gitignore")
    write(edited, "print('after')\n")
    assert set(tracker.apply_changes([edited])) == users
    assert_fresh(tracker, images)
