"""Tests for staging a build context from the hashed file lists."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from imaged.digest.image_digest import hash_image
from imaged.errors import ContextChangedError
from imaged.render.context import FIXED_MTIME, stage_context, staged_mtime_ns
from imaged.render.dockerfile import RenderedImage, render_dockerfile
from imaged.spec.image import Image


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    _write(root / "src/private.txt", "private\n", 0o600)
    _write(root / "src/tool.sh", "#!/bin/sh\n", 0o700)
    _write(root / "src/pkg/mod.py", "x = 1\n", 0o664)
    _write(root / "src/.dockerignore", "*.log\n", 0o644)
    _write(root / "src/skip.log", "ignored\n", 0o644)
    (root / "src/pkg").chmod(0o700)
    (root / "src/link").symlink_to("pkg/mod.py")
    _write(root / "requirements.txt", "idna==3.7\n", 0o600)
    _write(root / "notes.txt", "notes\n", 0o600)
    return root


def make_image(root: Path) -> Image:
    return (
        Image.from_base("base:1")
        .with_requirements(root / "requirements.txt")
        .with_source_folder(root / "src", "/app")
        .with_source_file(root / "notes.txt", "/etc")
    )


def plan(root: Path) -> RenderedImage:
    image = make_image(root)
    return render_dockerfile(image, hash_image(image))


def staged_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def with_ancestors(paths: list[str]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        parts = path.split("/")
        out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return out


def test_stages_exactly_the_planned_files(project: Path, tmp_path: Path) -> None:
    rendered = plan(project)
    dockerfile = stage_context(rendered, tmp_path / "ctx")
    assert staged_paths(tmp_path / "ctx") == with_ancestors(rendered.listing())
    assert "layers/1/skip.log" not in staged_paths(tmp_path / "ctx")
    assert dockerfile == tmp_path / "ctx.Dockerfile"
    assert dockerfile.read_text(encoding="utf-8") == rendered.dockerfile
    assert (tmp_path / "ctx/layers/1/pkg/mod.py").read_text(encoding="utf-8") == "x = 1\n"


@pytest.mark.parametrize(
    ("relpath", "mode"),
    [
        pytest.param("layers/1/private.txt", 0o644, id="private_file"),
        pytest.param("layers/1/tool.sh", 0o755, id="private_exec"),
        pytest.param("layers/1/pkg/mod.py", 0o644, id="group_writable"),
        pytest.param("layers/1/pkg", 0o755, id="private_folder"),
        pytest.param("layers/1", 0o755, id="tree_root"),
        pytest.param("inputs/0/requirements.txt", 0o644, id="bound_file"),
        pytest.param("layers/2/notes.txt", 0o644, id="source_file"),
    ],
)
def test_modes_are_normalised(project: Path, tmp_path: Path, relpath: str, mode: int) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    assert stat.S_IMODE(os.lstat(tmp_path / "ctx" / relpath).st_mode) == mode


def _content_mtime(path: Path) -> int:
    return staged_mtime_ns(hashlib.sha256(path.read_bytes()).hexdigest())


def test_file_mtimes_follow_content_and_the_rest_are_fixed(project: Path, tmp_path: Path) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    tree = tmp_path / "ctx/layers/1"
    for path in [tree, *tree.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            assert st.st_mtime_ns == _content_mtime(path), path
        else:
            assert st.st_mtime == FIXED_MTIME, path
    bound = tmp_path / "ctx/inputs/0/requirements.txt"
    assert os.lstat(bound).st_mtime_ns == _content_mtime(bound)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(b"x0\n", b"x1\n", id="one_byte"),
        pytest.param(b"six==1.16.0\n", b"six==1.17.0\n", id="version_bump"),
        pytest.param(b"", b"", id="empty_twice"),
    ],
)
def test_equal_content_equal_mtime_and_any_other_content_moves_it(a: bytes, b: bytes) -> None:
    digest = hashlib.sha256
    assert staged_mtime_ns(digest(a).hexdigest()) == staged_mtime_ns(digest(a).hexdigest())
    if a != b:
        assert staged_mtime_ns(digest(a).hexdigest()) != staged_mtime_ns(digest(b).hexdigest())


def test_staged_mtimes_lie_in_the_past_after_2000() -> None:
    low, high = staged_mtime_ns("00" * 32), staged_mtime_ns("ff" * 32)
    assert FIXED_MTIME * 10**9 <= low < high < 1_577_836_800 * 10**9  # 2020-01-01


@pytest.mark.parametrize(
    ("source", "staged"),
    [
        pytest.param("src/pkg/mod.py", "layers/1/pkg/mod.py", id="tree_file"),
        pytest.param("requirements.txt", "inputs/0/requirements.txt", id="bound_file"),
        pytest.param("notes.txt", "layers/2/notes.txt", id="source_file"),
    ],
)
def test_a_same_size_edit_restages_with_a_new_mtime(
    project: Path, tmp_path: Path, source: str, staged: str
) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    before = os.lstat(tmp_path / "ctx" / staged)
    original = (project / source).read_bytes()
    (project / source).write_bytes(original[:-2] + b"Z\n")
    stage_context(plan(project), tmp_path / "ctx")
    after = os.lstat(tmp_path / "ctx" / staged)
    assert (tmp_path / "ctx" / staged).read_bytes() == original[:-2] + b"Z\n"
    assert after.st_size == before.st_size
    assert after.st_mtime_ns != before.st_mtime_ns


def test_a_staged_copy_edited_in_place_is_rewritten(project: Path, tmp_path: Path) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    staged = tmp_path / "ctx/layers/1/pkg/mod.py"
    staged.write_text("y = 2\n", encoding="utf-8")  # same size, fresh mtime
    stage_context(plan(project), tmp_path / "ctx")
    assert staged.read_text(encoding="utf-8") == "x = 1\n"
    assert os.lstat(staged).st_mtime_ns == _content_mtime(staged)


def test_a_staged_copy_edited_with_its_mtime_set_back_is_rewritten(
    project: Path, tmp_path: Path
) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    staged = tmp_path / "ctx/layers/1/pkg/mod.py"
    before = os.lstat(staged)
    staged.write_text("y = 2\n", encoding="utf-8")
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as staged
    stage_context(plan(project), tmp_path / "ctx")
    assert staged.read_text(encoding="utf-8") == "x = 1\n"


def test_an_unchanged_file_is_not_rewritten(project: Path, tmp_path: Path) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    staged = tmp_path / "ctx/layers/1/pkg/mod.py"
    inode = os.lstat(staged).st_ino
    _edit(project / "src/tool.sh")
    stage_context(plan(project), tmp_path / "ctx")
    assert os.lstat(staged).st_ino == inode


def test_every_staged_folder_is_normalised(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0o077)
    try:
        stage_context(plan(project), tmp_path / "ctx")
    finally:
        os.umask(old)
    for path in (tmp_path / "ctx").rglob("*"):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o755, FIXED_MTIME), path


def test_symlinks_stay_symlinks(project: Path, tmp_path: Path) -> None:
    stage_context(plan(project), tmp_path / "ctx")
    link = tmp_path / "ctx/layers/1/link"
    assert link.is_symlink()
    assert os.readlink(link) == "pkg/mod.py"


def _edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "changed\n", encoding="utf-8")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: _edit(r / "src/pkg/mod.py"), id="tree_file_edited"),
        pytest.param(lambda r: _edit(r / "requirements.txt"), id="bound_file_edited"),
        pytest.param(lambda r: _edit(r / "notes.txt"), id="source_file_edited"),
        pytest.param(lambda r: (r / "src/private.txt").unlink(), id="tree_file_deleted"),
        pytest.param(lambda r: (r / "requirements.txt").unlink(), id="bound_file_deleted"),
        pytest.param(lambda r: (r / "notes.txt").unlink(), id="source_file_deleted"),
    ],
)
def test_a_change_after_hashing_raises(
    project: Path, tmp_path: Path, change: Callable[[Path], None]
) -> None:
    rendered = plan(project)
    change(project)
    with pytest.raises(ContextChangedError):
        stage_context(rendered, tmp_path / "ctx")


def test_a_file_added_after_hashing_is_not_staged(project: Path, tmp_path: Path) -> None:
    rendered = plan(project)
    (project / "src/new.py").write_text("new\n", encoding="utf-8")
    stage_context(rendered, tmp_path / "ctx")
    assert not (tmp_path / "ctx/layers/1/new.py").exists()


def test_an_exec_bit_flipped_after_hashing_is_not_staged_silently(
    project: Path, tmp_path: Path
) -> None:
    rendered = plan(project)
    (project / "notes.txt").chmod(0o755)
    try:
        stage_context(rendered, tmp_path / "ctx")
    except ContextChangedError:
        return
    assert stat.S_IMODE(os.lstat(tmp_path / "ctx/layers/2/notes.txt").st_mode) == 0o644


def test_staging_replaces_a_non_empty_folder(project: Path, tmp_path: Path) -> None:
    stale = tmp_path / "ctx/layers/1/stale.txt"
    _write(stale, "from a previous build\n", 0o644)
    rendered = plan(project)
    stage_context(rendered, tmp_path / "ctx")
    assert not stale.exists()
    assert staged_paths(tmp_path / "ctx") == with_ancestors(rendered.listing())
