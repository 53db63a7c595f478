"""The one filtered file list: what a folder layer hashes is exactly what the build stages.

A walk is deterministic (entries sorted by name at every level), never follows symlinks,
skips sockets and FIFOs, prunes ignored folders that no exception can re-include, and
records each entry's stat key so the digest cache can skip unchanged contents.
"""

from __future__ import annotations

import operator
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imaged.ignore import STANDARD_IGNORES, IgnoreRules

FILE, SYMLINK, DIR = "f", "l", "d"
StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a file list. Only ``relpath``, ``type``, ``executable`` and ``target``
    (and the content) describe the image; ``stat_key`` serves the digest cache."""

    relpath: str
    type: str
    executable: bool
    target: str | None
    stat_key: StatKey


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def entry_from_stat(relpath: str, path: str, st: os.stat_result) -> FileEntry | None:
    """A FileEntry for a regular file, symlink or folder; None for anything else."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return FileEntry(relpath, FILE, bool(mode & 0o111), None, stat_key(st))
    if stat.S_ISLNK(mode):
        return FileEntry(relpath, SYMLINK, False, os.readlink(path), stat_key(st))
    if stat.S_ISDIR(mode):
        return FileEntry(relpath, DIR, False, None, stat_key(st))
    return None


def stat_entry(root: Path, relpath: str) -> FileEntry | None:
    """Stat one path under ``root``; None when it is gone or not a file, link or folder."""
    path = os.path.join(root, relpath)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return entry_from_stat(relpath, path, st)


def walk_files(root: Path, rules: IgnoreRules, *, start: str = "") -> Iterator[FileEntry]:
    """Yield the non-ignored entries below ``root`` (or below ``root/start``), sorted.

    Folders are yielded before their contents. Sorting is by name at each level, which is
    deterministic whatever order the OS lists a folder in.
    """
    matcher = rules.walker()
    base = os.path.join(root, start) if start else str(root)
    stack = [(matcher.folder(start), _sorted_children(base))]
    while stack:
        folder, children = stack[-1]
        for child in children:
            name = child.name
            rel = folder.prefix + name
            is_dir = child.is_dir(follow_symlinks=False)
            ignored, best = matcher.child(folder, name, rel, is_dir=is_dir)
            if ignored:
                if is_dir and not matcher.can_prune(rel):
                    stack.append((matcher.enter(folder, name, best), _sorted_children(child.path)))
                    break
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the folder was listed (an editor's temp file)
            mode = st.st_mode
            if mode & _S_IFMT == _S_IFREG:  # entry_from_stat's common case, inlined
                key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode)
                entry = FileEntry(rel, FILE, bool(mode & 0o111), None, key)
            elif (found := _entry_or_none(rel, child.path, st)) is not None:
                entry = found
            else:
                continue
            yield entry
            if is_dir:
                stack.append((matcher.enter(folder, name, best), _sorted_children(child.path)))
                break
        else:
            stack.pop()


def _entry_or_none(rel: str, path: str, st: os.stat_result) -> FileEntry | None:
    try:
        return entry_from_stat(rel, path, st)
    except FileNotFoundError:  # a symlink removed between stat and readlink
        return None


def _sorted_children(path: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return iter(sorted(it, key=_name_of))
    except (FileNotFoundError, NotADirectoryError):
        return iter(())


_name_of = operator.attrgetter("name")
_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG


def list_files(root: Path, rules: IgnoreRules) -> tuple[FileEntry, ...]:
    """The filtered file list of a folder, sorted by POSIX relative path."""
    return tuple(sorted(walk_files(root, rules), key=lambda e: e.relpath))


def folder_rules(
    folder: Path, extra_ignore_files: Sequence[Path] = (), *, gitignore: bool = False
) -> IgnoreRules:
    """Ignore rules for copying ``folder``: standard ignores, the folder's own
    ``.dockerignore`` (and ``.gitignore`` for code bundles), then the image's extra files."""
    rules = IgnoreRules.from_lines(STANDARD_IGNORES)
    if gitignore:
        rules = rules + IgnoreRules.from_file(folder / ".gitignore", syntax="git")
    rules = rules + IgnoreRules.from_file(folder / ".dockerignore")
    for path in extra_ignore_files:
        rules = rules + IgnoreRules.from_file(path)
    return rules


def ignore_files_of(
    folder: Path, extra_ignore_files: Sequence[Path] = (), *, gitignore: bool = False
) -> tuple[Path, ...]:
    """The ignore files whose edits can change ``folder``'s file list (to watch)."""
    own = [folder / ".dockerignore"] + ([folder / ".gitignore"] if gitignore else [])
    return (*own, *extra_ignore_files)
