"""Stage a build context from the same hashed file lists the digest was computed from.

Every file copied is re-hashed in the same pass; a file whose content moved since it was
hashed aborts staging with ContextChangedError, so content is never pushed under a tag
that does not describe it. Modes are normalised (0644, 0755 when executable, folders
0755), so the built layers depend only on what the digest covers.

Staging is incremental: a context folder kept at a stable path remembers, in a manifest
written only after a complete stage, which content it holds; a one-file edit rewrites one
file. BuildKit's context transfer is incremental too, and it decides what to resend by
metadata only (fsutil resends a file whose size, mtime, mode, owner or link target
differ from its copy, never by content). So a staged file's mtime is a function of its
bytes (:func:`staged_mtime_ns`): every content change moves it, identical content keeps it,
and the built layer still depends only on what the digest covers (issue #7: with one fixed
mtime for every file, a same-size edit was pushed under the new tag with the old bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from imaged.digest.encoding import EXEC_SUFFIX
from imaged.digest.files import DIR, FILE, SYMLINK
from imaged.errors import ContextChangedError
from imaged.render.dockerfile import RenderedImage

FIXED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z: folders and symlinks
_EPOCH_NS = FIXED_MTIME * 1_000_000_000
# Staged file mtimes spread over 2**59 ns (about 18 years from 2000-01-01): in the past, so no
# tool warns of a future date, and wide enough that two contents of one size sharing an
# mtime (the only way BuildKit could keep a stale copy) has odds of 2**-59 per edit.
_SPAN_NS = 1 << 59
MANIFEST = ".imaged-staged.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Wanted:
    """One path the staged context must hold."""

    type: str
    source: str | None = None
    digest: str | None = None
    executable: bool = False
    target: str | None = None
    check_mode: bool = False  # a single source file: its exec bit must still be the hashed one

    def key(self) -> list[object]:
        return [self.type, self.digest, self.executable, self.target]


def wanted_paths(rendered: RenderedImage) -> dict[str, Wanted]:
    """Context-relative path -> what must be there, from the rendered plan."""
    wanted: dict[str, Wanted] = {}
    for item in rendered.context:
        prefix = "" if item.dest == "." else item.dest
        if item.tree is not None:
            if prefix:
                _add_parents(wanted, prefix, include_self=True)
            for entry in item.tree.listing():
                rel = f"{prefix}/{entry.relpath}" if prefix else entry.relpath
                _add_parents(wanted, rel, include_self=False)
                wanted[rel] = Wanted(
                    type=entry.type,
                    source=os.path.join(item.tree.root, entry.relpath),
                    digest=item.tree.contents.get(entry.relpath) if entry.type == FILE else None,
                    executable=entry.executable,
                    target=entry.target,
                )
            continue
        assert item.file is not None
        _add_parents(wanted, item.dest, include_self=False)
        digest = item.digest
        executable = digest is not None and digest.endswith(EXEC_SUFFIX)
        wanted[item.dest] = Wanted(
            type=FILE,
            source=str(item.file),
            digest=digest.removesuffix(EXEC_SUFFIX) if digest else None,
            executable=executable,
            check_mode=item.dest.startswith("layers/"),
        )
    return wanted


def _add_parents(wanted: dict[str, Wanted], rel: str, *, include_self: bool) -> None:
    parts = rel.split("/")
    for i in range(1, len(parts) + (1 if include_self else 0)):
        wanted.setdefault("/".join(parts[:i]), Wanted(type=DIR))


def staged_mtime_ns(digest: str) -> int:
    """The mtime, in nanoseconds, of a staged file whose content has sha256 ``digest``.

    >>> staged_mtime_ns("00" * 32) == FIXED_MTIME * 10**9
    True
    """
    return _EPOCH_NS + int(digest[:16], 16) % _SPAN_NS


def _copy_verified(src: str, dst: str, expected: str | None, *, executable: bool) -> None:
    h = hashlib.sha256()
    tmp = f"{dst}.imaged-tmp"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
    except FileNotFoundError as exc:
        _unlink(tmp)
        raise ContextChangedError(f"{src} disappeared while the context was staged") from exc
    if expected is not None and h.hexdigest() != expected:
        _unlink(tmp)
        raise ContextChangedError(f"{src} changed after it was hashed")
    os.chmod(tmp, 0o755 if executable else 0o644)
    mtime_ns = staged_mtime_ns(h.hexdigest())
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, dst)


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _staged_type(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK
    if stat.S_ISDIR(st.st_mode):
        return DIR
    return FILE if stat.S_ISREG(st.st_mode) else "stale"


def _remove_stale(root: Path, wanted: dict[str, Wanted], prefix: str = "") -> dict[str, str]:
    """Delete what the plan does not want; return what stays: its type, and for a file its
    :func:`_fingerprint`, so that a staged copy is trusted only while it is untouched."""
    staged: dict[str, str] = {}
    with os.scandir(os.path.join(root, prefix) if prefix else root) as it:
        entries = list(it)
    for entry in entries:
        rel = f"{prefix}/{entry.name}" if prefix else entry.name
        want = wanted.get(rel)
        st = entry.stat(follow_symlinks=False)
        kind = _staged_type(st)
        if want is None or want.type != kind:
            _remove(Path(entry.path))
            continue
        staged[rel] = _fingerprint(st) if kind == FILE else kind
        if kind == DIR:
            staged.update(_remove_stale(root, wanted, rel))
    return staged


def _manifest_path(root: Path) -> Path:
    # Beside the context, never inside it: a Dockerfile's `COPY . /app` must not see it.
    return root.parent / f"{root.name}{MANIFEST}"


def _load_manifest(root: Path) -> dict[str, list[object]]:
    path = _manifest_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    finally:
        # A stage that stops half-way must not leave a manifest that vouches for it.
        path.unlink(missing_ok=True)
    return data if isinstance(data, dict) else {}


def _place(
    root: Path, rel: str, want: Wanted, known: list[object] | None, staged: str | None
) -> None:
    path = root / rel
    if want.type == DIR:
        path.mkdir(exist_ok=True)
        return
    if want.type == SYMLINK:
        if path.is_symlink() and os.readlink(path) == want.target:
            return
        _remove(path)
        os.symlink(want.target or "", path)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        return
    assert want.source is not None
    if not _still_staged(want, known, staged):
        _copy_verified(want.source, str(path), want.digest, executable=want.executable)
    if want.check_mode:
        _check_mode(want)


def _fingerprint(st: os.stat_result) -> str:
    """What a staged file looked like when the manifest was written: any write, chmod, utime
    or replacement since moves its inode or ctime, which nobody can set back."""
    return f"{FILE}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _still_staged(want: Wanted, known: list[object] | None, staged: str | None) -> bool:
    """The staged copy holds ``want``'s bytes: the manifest says so, its mtime is the one
    staging gives those bytes, and it is the very file the manifest saw (not edited since)."""
    if want.digest is None or known is None or known[:-1] != want.key():
        return False
    return staged == known[-1] and str(known[-1]).startswith(
        f"{FILE}:{staged_mtime_ns(want.digest)}:"
    )


def _check_mode(want: Wanted) -> None:
    assert want.source is not None
    try:
        executable = bool(os.stat(want.source).st_mode & 0o111)
    except FileNotFoundError as exc:
        raise ContextChangedError(f"{want.source} disappeared while it was staged") from exc
    if executable != want.executable:
        raise ContextChangedError(f"{want.source}: executable bit changed after hashing")


def _normalise_folders(root: Path, wanted: dict[str, Wanted]) -> None:
    """Every folder the context holds gets 0755 and the fixed mtime, deepest first."""
    folders = [root, *(root / rel for rel, w in wanted.items() if w.type == DIR)]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        os.chmod(folder, 0o755)
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def stage_context(rendered: RenderedImage, root: Path) -> Path:
    """Make ``root`` hold exactly the planned context; return the Dockerfile's path.

    ``root`` may hold an earlier stage of the same image: only what differs is rewritten.
    """
    root.mkdir(parents=True, exist_ok=True)
    known = _load_manifest(root)
    wanted = wanted_paths(rendered)
    staged = _remove_stale(root, wanted)
    for rel in sorted(wanted):
        _place(root, rel, wanted[rel], known.get(rel), staged.get(rel))
    _normalise_folders(root, wanted)
    manifest = {
        rel: [*w.key(), _fingerprint(os.lstat(root / rel))]
        for rel, w in wanted.items()
        if w.type == FILE
    }
    path = _manifest_path(root)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest), encoding="utf-8")
    os.replace(tmp, path)
    dockerfile = root.parent / f"{root.name}.Dockerfile"
    dockerfile.write_text(rendered.dockerfile, encoding="utf-8")
    return dockerfile
