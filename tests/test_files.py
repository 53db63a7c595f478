"""Tests for imaged.digest.files: the one filtered, sorted, non-following file list."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaged.digest.files import (
    DIR,
    FILE,
    SYMLINK,
    folder_rules,
    ignore_files_of,
    list_files,
    stat_entry,
    walk_files,
)
from imaged.digest.ignore import IgnoreRules


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def relpaths(root: Path, rules: IgnoreRules | None = None) -> list[str]:
    return [e.relpath for e in list_files(root, rules or IgnoreRules())]


def test_sorted_by_posix_relpath_not_walk_order(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/x": "1", "a-b": "2", "a.c": "3", "B": "4", "a/y/z": "5"})
    listed = relpaths(tmp_path)
    # "-" and "." sort before "/": a plain per-level walk would put a/x before a-b.
    assert listed == ["B", "a", "a-b", "a.c", "a/x", "a/y", "a/y/z"]
    assert listed == sorted(listed)


def test_walk_yields_folders_before_their_contents(tmp_path: Path) -> None:
    make_tree(tmp_path, {"d/e/f": "1"})
    assert [e.relpath for e in walk_files(tmp_path, IgnoreRules())] == ["d", "d/e", "d/e/f"]


def test_entry_types_and_exec_bit(tmp_path: Path) -> None:
    make_tree(tmp_path, {"run.sh": "#!/bin/sh\n", "data.txt": "x", "sub/f": "y"})
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "data.txt").chmod(0o644)
    entries = {e.relpath: e for e in list_files(tmp_path, IgnoreRules())}
    assert (entries["run.sh"].type, entries["run.sh"].executable) == (FILE, True)
    assert (entries["data.txt"].type, entries["data.txt"].executable) == (FILE, False)
    assert entries["sub"].type == DIR
    assert entries["data.txt"].stat_key[0] == 1  # size first


def test_symlinks_are_recorded_not_followed(tmp_path: Path) -> None:
    make_tree(tmp_path, {"real/inner.txt": "x"})
    (tmp_path / "link_dir").symlink_to("real")
    (tmp_path / "link_file").symlink_to("real/inner.txt")
    (tmp_path / "dangling").symlink_to("nowhere")
    entries = {e.relpath: e for e in list_files(tmp_path, IgnoreRules())}
    assert set(entries) == {"dangling", "link_dir", "link_file", "real", "real/inner.txt"}
    assert (entries["link_dir"].type, entries["link_dir"].target) == (SYMLINK, "real")
    assert entries["link_file"].target == "real/inner.txt"
    assert entries["dangling"].target == "nowhere"
    assert "link_dir/inner.txt" not in entries


def test_fifos_and_sockets_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path, {"keep.txt": "x"})
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)  # a relative bind keeps the socket path short
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("sock")
        assert relpaths(tmp_path) == ["keep.txt"]
        assert stat_entry(tmp_path, "sock") is None
        assert stat_entry(tmp_path, "pipe") is None


def test_ignored_folders_are_pruned_without_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, {"node_modules/a/b.js": "x", "src/m.py": "y"})
    opened: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str) -> Iterator[os.DirEntry[str]]:
        opened.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    rules = IgnoreRules.from_lines(["node_modules"])
    assert relpaths(tmp_path, rules) == ["src", "src/m.py"]
    assert sorted(opened) == [".", "src"]


def test_ignored_folder_with_exception_is_descended(tmp_path: Path) -> None:
    make_tree(tmp_path, {"build/out.o": "o", "build/keep.txt": "k", "main.c": "c"})
    rules = IgnoreRules.from_lines(["build", "!build/keep.txt"])
    assert relpaths(tmp_path, rules) == ["build/keep.txt", "main.c"]


@pytest.mark.parametrize(
    ("relpath", "expected_type"),
    [
        pytest.param("f.txt", FILE, id="file"),
        pytest.param("d", DIR, id="folder"),
        pytest.param("missing", None, id="missing"),
        pytest.param("f.txt/below", None, id="below-a-file"),
    ],
)
def test_stat_entry(tmp_path: Path, relpath: str, expected_type: str | None) -> None:
    make_tree(tmp_path, {"f.txt": "x", "d/g": "y"})
    entry = stat_entry(tmp_path, relpath)
    assert (entry.type if entry else None) == expected_type


def test_folder_rules_layering(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "app/.dockerignore": "*.log\n",
            "app/.gitignore": "secret.env\n",
            "app/x.log": "",
            "app/secret.env": "",
            "app/extra.tmp": "",
            "app/__pycache__/m.pyc": "",
            "app/main.py": "",
            "extra.ignore": "app/*.tmp\n",  # read from its own folder, as Docker does
        },
    )
    app = tmp_path / "app"
    plain = relpaths(app, folder_rules(app))
    assert plain == [".dockerignore", ".gitignore", "extra.tmp", "main.py", "secret.env"]
    with_git = relpaths(app, folder_rules(app, [tmp_path / "extra.ignore"], gitignore=True))
    assert with_git == [".dockerignore", ".gitignore", "main.py"]


def test_ignore_files_of(tmp_path: Path) -> None:
    extra = tmp_path / "x.ignore"
    assert ignore_files_of(tmp_path) == (tmp_path / ".dockerignore",)
    assert ignore_files_of(tmp_path, [extra], gitignore=True) == (
        tmp_path / ".dockerignore",
        tmp_path / ".gitignore",
        extra,
    )
