"""Reading a file of a user's tree safely: a regular file only, never blocking, maybe capped.

A named pipe where a file is expected blocks ``open()`` until a writer comes, and a link to
``/dev/zero`` never ends (issue 11). Every file imaged reads from a user's tree (ignore
files, requirements, lock files, pyproject, scripts, Dockerfiles, hashed contents) is opened
here with ``O_NONBLOCK`` (which changes nothing for a regular file), checked with ``fstat``
on the open descriptor (no race with a swap after a check), and refused unless it is a
regular file. A symlink is followed, so it is read only when its target is a regular file.
A refusal is an ``OSError`` whose ``strerror`` says why; callers turn it into a SpecError
naming the file, image and layer.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20
_LONG_PATH = 240

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for an error message."""
    return next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of ``path``, which must be (or link to) a regular file;
    raises OSError (``FileNotFoundError`` when absent) without ever blocking."""
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{kind_of(mode)}, not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, *, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``; over ``limit`` bytes raises OSError(EFBIG).

    >>> read_regular("/dev/zero")
    Traceback (most recent call last):
    OSError: [Errno 22] a character device, not a regular file: '/dev/zero'
    """
    fd = open_regular(path)
    try:
        return _read_all(fd, str(path), limit)
    finally:
        os.close(fd)


def _read_all(fd: int, path: str, limit: int | None) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, _CHUNK if limit is None else min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise OSError(errno.EFBIG, f"larger than the limit of {_size(limit)}", path)
    return b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"


def shown_path(path: str | os.PathLike[str] | None) -> str:
    """A path for a message: a very long one (past PATH_MAX, 4096 on Linux) is cut in the
    middle and given its length, so the error stays readable.

    >>> shown_path("/src/" + "d" * 300)[:12], len(shown_path("/src/" + "d" * 300)) < 250
    ('/src/ddddddd', True)
    """
    text = os.fspath(path) if path is not None else "?"
    if len(text) <= _LONG_PATH:
        return text
    return f"{text[:120]}...{text[-60:]} ({len(text)} characters)"


def os_reason(exc: OSError) -> str:
    """Why an OSError from a read or a folder listing happened, in words."""
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is longer than the operating system allows (PATH_MAX)"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop)"
    return exc.strerror or str(exc)
