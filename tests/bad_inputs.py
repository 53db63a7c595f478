"""Inputs that are not plain files and folders (issue 11), made for real in a source folder,
and a way to run a child process in which root cannot read an unreadable folder."""

from __future__ import annotations

import ctypes
import os
import resource
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

FIFO_REASON = "cannot read ignore file: a named pipe (FIFO), not a regular file"
DEVICE_REASON = "cannot read ignore file: a character device, not a regular file"
DENIED_REASON = "cannot read: Permission denied"
TOO_LONG_REASON = "cannot read: the path is longer than the operating system allows (PATH_MAX)"

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_MEMORY_CAP = 2 << 30


def fifo_ignore_file(src: Path) -> Path:
    """``src/.dockerignore`` as a named pipe nobody writes to (an open() would block)."""
    os.mkfifo(src / ".dockerignore")
    return src / ".dockerignore"


def dev_zero_ignore_file(src: Path) -> Path:
    """``src/.dockerignore`` linked to ``/dev/zero`` (a read would never end)."""
    (src / ".dockerignore").symlink_to("/dev/zero")
    return src / ".dockerignore"


def locked_folder(src: Path) -> Path:
    """``src/locked``, mode 000 (root still reads it unless it drops its capabilities)."""
    locked = src / "locked"
    locked.mkdir()
    (locked / "secret.py").write_text("x = 1\n")
    locked.chmod(0)
    return locked


def deep_path(src: Path, *, depth: int = 20) -> Path:
    """Folders nested below ``src`` until the path is longer than PATH_MAX (4096), made
    through descriptors (no single call sees the whole path); the deepest holds a file."""
    name = "d" * 250
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open("leaf.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.close(leaf)
    finally:
        os.close(fd)
    path = src.joinpath(*[name] * depth)
    assert len(str(path)) > os.pathconf("/", "PC_PATH_MAX")
    return path


def unlock(folder: Path) -> None:
    """Make ``locked_folder`` removable again (pytest's tmp_path clean-up)."""
    folder.chmod(0o755)


def without_root_reads() -> None:
    """For ``preexec_fn``: the child cannot read what its mode forbids, even as root (it
    drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set, so the program
    it runs never has them), and its memory is capped, so an endless read fails fast."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


MakeBadInput = Callable[[Path], Path]


def hung_reason(seconds: float) -> str:
    """The end of the error of an input whose first walk ran out of ``hash_timeout``."""
    return f"has taken over {seconds:g} s: a hung filesystem?"


@contextmanager
def hung_folder(folder: Path) -> Iterator[threading.Event]:
    """Listing ``folder`` or anything below it blocks until the yielded event is set, as a
    ``scandir`` on a hung NFS or FUSE mount never returns; every other folder lists as
    usual. No real hung mount is at hand here (no FUSE, no NFS server to kill), so this is
    ``os.scandir`` patched; the block's end releases every walk still stuck in it."""
    release = threading.Event()
    real = os.scandir
    inside = str(folder) + os.sep

    def scandir(path: Any = ".") -> Any:
        text = os.fspath(path)
        if text == str(folder) or text.startswith(inside):
            release.wait()
        return real(path)

    with patch.object(os, "scandir", scandir):
        try:
            yield release
        finally:
            release.set()


_MNT_DETACH = 2


@contextmanager
def hung_fuse_mount(mountpoint: Path) -> Iterator[Callable[[], None]]:
    """A real FUSE mount at ``mountpoint`` (made here) whose server never answers: every
    stat, listing or read below it blocks in the kernel, as on a hung FUSE or NFS mount.
    The yielded call aborts the connection (what blocked fails with ENOTCONN) and unmounts
    it, as the block's end does; so a failed test leaves no mount that could hang the
    clean-up. Needs root and ``/dev/fuse``; an OSError when the mount is refused."""
    mountpoint.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    target = os.fsencode(mountpoint)
    if libc.mount(b"imaged-test-hung", target, b"fuse", 0, options) != 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, os.strerror(errno), str(mountpoint))
    mounted = [True]

    def end() -> None:
        if mounted.pop() if mounted else False:
            os.close(fd)  # aborts the connection: no call below it blocks any more
            libc.umount2(target, _MNT_DETACH)

    try:
        yield end
    finally:
        end()
