"""safe_read: only regular files are read, nothing blocks, an optional size cap holds."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imaged.safe_read import open_regular, os_reason, read_regular, shown_path

# A read that blocks (a FIFO without a writer) would hang: the per-test timeout fails it.
pytestmark = pytest.mark.timeout(10)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _folder(path: Path) -> None:
    path.mkdir()


def _link_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_name("pipe"))
    path.symlink_to("pipe")


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        pytest.param(_fifo, "a named pipe (FIFO)", id="fifo"),
        pytest.param(_dev_zero_link, "a character device", id="link-to-dev-zero"),
        pytest.param(_folder, "a folder", id="folder"),
        pytest.param(_link_to_fifo, "a named pipe (FIFO)", id="link-to-fifo"),
    ],
)
def test_a_special_file_is_refused_without_blocking(
    tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    path = tmp_path / "input"
    make(path)
    with pytest.raises(OSError, match="not a regular file") as info:
        read_regular(path)
    assert info.value.errno == errno.EINVAL
    assert info.value.strerror == f"{kind}, not a regular file"
    assert info.value.filename == str(path)


def test_a_socket_is_refused(unix_socket: Path) -> None:
    # open() of a socket fails by itself (ENXIO); either way it is an OSError, never a read.
    with pytest.raises(OSError, match=r"socket|No such device"):
        read_regular(unix_socket)


def test_a_link_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"*.log\n")
    (tmp_path / "link").symlink_to("real")
    assert read_regular(tmp_path / "link") == b"*.log\n"


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent")


@pytest.mark.parametrize(
    ("size", "limit", "fits"),
    [
        pytest.param(100, 100, True, id="exactly-the-limit"),
        pytest.param(101, 100, False, id="one-byte-over"),
        pytest.param(3 << 20, 2 << 20, False, id="megabytes-over"),
        pytest.param(3 << 20, None, True, id="no-limit"),
    ],
)
def test_the_size_limit(tmp_path: Path, size: int, limit: int | None, fits: bool) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"a" * size)
    if fits:
        assert len(read_regular(path, limit=limit)) == size
        return
    with pytest.raises(OSError, match="larger than the limit") as info:
        read_regular(path, limit=limit)
    assert info.value.errno == errno.EFBIG


def test_open_regular_closes_the_descriptor_it_refuses(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(OSError, match="FIFO"):
            open_regular(tmp_path / "pipe")
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_path_over_path_max_is_shown_short_with_its_length() -> None:
    long = "/src/" + "/".join(["d" * 250] * 20)
    shown = shown_path(long)
    assert shown.startswith("/src/ddd")
    assert shown.endswith(f"({len(long)} characters)")
    assert len(shown) < 250
    assert shown_path("/src/app.py") == "/src/app.py"
    error = OSError(errno.ENAMETOOLONG, "File name too long", long)
    assert "PATH_MAX" in os_reason(error)
