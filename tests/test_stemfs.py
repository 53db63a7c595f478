"""The stem's folders on the tail's paths, read from crafted layer tars (whiteouts too)."""

from __future__ import annotations

import io
import tarfile

import pytest

from imaged.pipeline.stemfs import StemEntry, StemFs, apply_layer, on_paths


def layer(
    *members: tuple[str, str, int, int, int] | tuple[str, str, int, int, int, str],
) -> io.BytesIO:
    """A gzip layer tar of (name, type, mode, uid, gid[, link target]) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, kind, mode, uid, gid, *target in members:
            info = tarfile.TarInfo(name)
            info.type = {"d": tarfile.DIRTYPE, "f": tarfile.REGTYPE, "l": tarfile.SYMTYPE}[kind]
            info.mode, info.uid, info.gid = mode, uid, gid
            info.linkname = target[0] if target else ""
            tar.addfile(info, io.BytesIO(b"") if kind == "f" else None)
    out.seek(0)
    return out


def read(*layers: io.BytesIO, roots: tuple[str, ...] = ("opt/app/src",)) -> StemFs:
    fs: StemFs = {}
    for one in layers:
        apply_layer(fs, one, roots)
    return fs


def test_folders_on_the_path_keep_their_mode_and_owner_the_rest_is_dropped() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 1000, 1001),
            ("opt/other/", "d", 0o755, 0, 0),
            ("opt/app/src/x.py", "f", 0o644, 0, 0),
            ("usr/bin/", "d", 0o755, 0, 0),
        )
    )
    assert fs == {
        "opt": StemEntry("dir", 0o755, 0, 0),
        "opt/app": StemEntry("dir", 0o700, 1000, 1001),
        "opt/app/src/x.py": StemEntry("file", 0o644, 0, 0),
    }


def test_a_whiteout_removes_the_path_and_everything_below() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 7, 7),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/", "d", 0o755, 0, 0), ("opt/.wh.app", "f", 0o644, 0, 0)),
    )
    assert fs == {"opt": StemEntry("dir", 0o755, 0, 0)}


def test_an_opaque_folder_hides_what_was_below_but_keeps_itself() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o700, 7, 7),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/app/", "d", 0o750, 8, 8), ("opt/app/.wh..wh..opq", "f", 0o644, 0, 0)),
    )
    assert fs == {"opt": StemEntry("dir", 0o755, 0, 0), "opt/app": StemEntry("dir", 0o750, 8, 8)}


def test_a_symlink_replacing_a_folder_hides_what_was_below_it() -> None:
    fs = read(
        layer(
            ("opt/", "d", 0o755, 0, 0),
            ("opt/app/", "d", 0o755, 0, 0),
            ("opt/app/src/", "d", 0o755, 0, 0),
        ),
        layer(("opt/app", "l", 0o777, 0, 0, "/srv")),
    )
    assert fs == {
        "opt": StemEntry("dir", 0o755, 0, 0),
        "opt/app": StemEntry("symlink", 0o777, 0, 0, "/srv"),
    }


def test_a_later_folder_entry_sets_the_mode_anew() -> None:
    fs = read(layer(("opt/", "d", 0o755, 0, 0)), layer(("opt/", "d", 0o1777, 3, 4)))
    assert fs["opt"] == StemEntry("dir", 0o1777, 3, 4)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("opt", True, id="above"),
        pytest.param("opt/app/src", True, id="at"),
        pytest.param("opt/app/src/a/b", True, id="below"),
        pytest.param("opt/ap", False, id="a-prefix-that-is-not-a-folder"),
        pytest.param("usr", False, id="elsewhere"),
    ],
)
def test_on_paths(path: str, expected: bool) -> None:
    assert on_paths(path, ["opt/app/src"]) is expected
