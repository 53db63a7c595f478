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

from imaged.digest.ignore import (
    MAX_IGNORE_FILE_BYTES,
    STANDARD_IGNORES,
    Folder,
    IgnoreRules,
    Matcher,
)
from imaged.safe_read import read_regular

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


def scan_folder(path: str) -> list[os.DirEntry[str]]:
    """The entries of a folder, unsorted; none when it is gone or no longer a folder (a walk
    racing a delete). Any other error (a permission) is raised for the caller to name."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sorted_children(path: str) -> Iterator[os.DirEntry[str]]:
    return iter(sorted(scan_folder(path), key=_name_of))


_name_of = operator.attrgetter("name")
_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG


def list_files(root: Path, rules: IgnoreRules) -> tuple[FileEntry, ...]:
    """The filtered file list of a folder, sorted by POSIX relative path."""
    return tuple(sorted(walk_files(root, rules), key=lambda e: e.relpath))


def folder_rules(
    folder: Path, extra_ignore_files: Sequence[Path] = (), *, gitignore: bool = False
) -> IgnoreRules:
    """Ignore rules for copying ``folder``: standard ignores, then (for code bundles) every
    ``.gitignore`` git would apply, then the folder's ``.dockerignore`` and the image's extra
    files. Among the git files a deeper one wins, as in git; docker rules win over them all."""
    docker = _docker_rules(folder, extra_ignore_files)
    git = _git_rules(folder, docker_rules=docker)[0] if gitignore else IgnoreRules()
    return IgnoreRules.from_lines(STANDARD_IGNORES) + git + docker


def ignore_files_of(
    folder: Path, extra_ignore_files: Sequence[Path] = (), *, gitignore: bool = False
) -> tuple[Path, ...]:
    """The ignore files whose edits can change ``folder``'s file list (to watch): for code
    bundles also every ancestor's ``.gitignore`` up to the repository root and its
    ``info/exclude`` (present or not), and the nested ``.gitignore`` files that exist."""
    own = [folder / ".dockerignore"]
    if gitignore:
        own += [folder / ".gitignore"]
        ancestors = [path for path, _ in _outer_git_files(folder)]
        nested = _git_rules(folder, docker_rules=_docker_rules(folder, extra_ignore_files))[1]
        own += [*ancestors, *nested]
    return (*own, *extra_ignore_files)


def is_rules_input(
    folder: Path, path: Path, extra_ignore_files: Sequence[Path] = (), *, gitignore: bool = False
) -> bool:
    """True when creating, editing or deleting ``path`` can change ``folder_rules`` of
    ``folder``: any ignore file ``ignore_files_of`` names, and any ``.gitignore`` below
    ``folder`` (a new nested one included). Cheap: no walk."""
    path, root = _absolute(path), _absolute(folder)
    if path == root / ".dockerignore" or path in map(_absolute, extra_ignore_files):
        return True
    if not gitignore:
        return False
    if path.name == ".gitignore" and (path.parent == root or root in path.parents):
        return True
    return path in {outer for outer, _ in _outer_git_files(root)}


# -- the .gitignore files git applies to a folder -----------------------------------------

GITIGNORE = ".gitignore"


def _docker_rules(folder: Path, extra_ignore_files: Sequence[Path]) -> IgnoreRules:
    rules = IgnoreRules.from_file(folder / ".dockerignore")
    for path in extra_ignore_files:
        rules = rules + IgnoreRules.from_file(path, prefix=anchor_prefix(folder, path))
    return rules


def anchor_prefix(folder: Path, ignore_file: Path) -> str:
    """``folder``'s path from the ignore file's folder, as Docker reads a context's
    ``.dockerignore``; "" when ``folder`` is that folder, or lies outside it (then the
    patterns are read from ``folder`` itself, as if it were the context)."""
    anchor, target = _absolute(ignore_file).parent, _absolute(folder)
    if anchor == target or anchor not in target.parents:
        return ""
    return target.relative_to(anchor).as_posix()


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _repository_root(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` holding ``.git`` (a folder, or the file of a
    worktree or submodule); None outside a repository."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return None


def _info_exclude(repo: Path) -> Path:
    """``info/exclude`` of the repository at ``repo``: a worktree's ``.git`` file names its
    git folder, whose ``commondir`` names the folder holding the shared ``info/``."""
    dotgit = repo / ".git"
    if not dotgit.is_file():
        return dotgit / "info" / "exclude"
    try:
        text = _read_small(dotgit)
        gitdir = repo / text.removeprefix("gitdir:").strip()
        common = gitdir / "commondir"
        if common.is_file():
            gitdir = gitdir / _read_small(common)
    except (OSError, UnicodeDecodeError):
        return dotgit / "info" / "exclude"  # unreadable: watch where it would normally be
    return Path(os.path.normpath(gitdir / "info" / "exclude"))


def _read_small(path: Path) -> str:
    """A one-line git pointer file (``.git`` of a worktree, ``commondir``), stripped."""
    return read_regular(path, limit=MAX_IGNORE_FILE_BYTES).decode("utf-8").strip()


def _outer_git_files(folder: Path) -> list[tuple[Path, str]]:
    """The repository's ``info/exclude``, then each ancestor's ``.gitignore`` from the
    repository root down to ``folder``'s parent, each with ``folder``'s path relative to
    that file's folder (the prefix its patterns see); lowest precedence first."""
    root = _absolute(folder)
    repo = _repository_root(root)
    if repo is None:
        return []
    parts = root.relative_to(repo).parts
    files = [(_info_exclude(repo), "/".join(parts))]
    for depth in range(len(parts)):
        files.append((repo.joinpath(*parts[:depth]) / GITIGNORE, "/".join(parts[depth:])))
    return files


def _git_rules(folder: Path, *, docker_rules: IgnoreRules) -> tuple[IgnoreRules, list[Path]]:
    """Every git rule that applies to ``folder``'s entries, lowest precedence first, and the
    nested ``.gitignore`` files read. Git reads no ``.gitignore`` inside an ignored folder, so
    the scan skips those, deciding with the full rules as the walk will."""
    rules = IgnoreRules()
    for path, prefix in _outer_git_files(folder):
        rules = rules + IgnoreRules.from_file(path, syntax="git", prefix=prefix)
    rules = rules + IgnoreRules.from_file(folder / GITIGNORE, syntax="git")
    return _scan_nested(folder, rules, docker_rules)


def _scan_nested(
    folder: Path, outer: IgnoreRules, docker_rules: IgnoreRules
) -> tuple[IgnoreRules, list[Path]]:
    """Walk the folders the file walk would enter, adding each nested ``.gitignore`` (below
    the root) in walk order, so a file's rules apply to its siblings and below."""
    standard = IgnoreRules.from_lines(STANDARD_IGNORES)
    git, found = outer, []
    matcher = (standard + git + docker_rules).walker()
    # (folder, whether git reads its .gitignore, its state and the matcher that made it)
    stack: list[tuple[str, bool, Folder, Matcher]] = [("", True, matcher.folder(""), matcher)]
    while stack:
        rel, readable, state, made_by = stack.pop()
        has_gitignore, subdirs = _list_folder(os.path.join(folder, rel))
        if rel and readable and has_gitignore:
            path = folder / rel / GITIGNORE
            git = git + IgnoreRules.from_file(path, syntax="git", base=rel)
            found.append(path)
            matcher = (standard + git + docker_rules).walker()
        if made_by is not matcher:
            state = matcher.folder(rel)  # rule numbers moved: start this folder afresh
        for name in reversed(subdirs):
            sub = state.prefix + name
            ignored, best = matcher.child(state, name, sub, is_dir=True)
            if not ignored or not matcher.can_prune(sub):
                entered = matcher.enter(state, name, best)
                stack.append((sub, readable and not ignored, entered, matcher))
    return git, found


def _list_folder(path: str) -> tuple[bool, list[str]]:
    """Whether ``path`` holds a regular ``.gitignore``, and its subfolders' names, sorted."""
    has_gitignore, subdirs = False, []
    for entry in scan_folder(path):
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
        elif entry.name == GITIGNORE:
            has_gitignore = entry.is_file(follow_symlinks=False)
    return has_gitignore, sorted(subdirs)
