"""Stage a build context from the same hashed file lists the digest was computed from.

Every file is copied and re-hashed in one pass; a file whose content moved since it was
hashed aborts staging with ContextChangedError, so content is never pushed under a tag
that does not describe it. Modes are normalised (0644, 0755 when executable, folders
0755) and mtimes fixed, so the built layers depend only on what the digest covers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from imaged.dockerfile import ContextItem, RenderedImage
from imaged.errors import ContextChangedError
from imaged.files import DIR, FILE, SYMLINK
from imaged.hashing import EXEC_SUFFIX, TreeIndex

FIXED_MTIME = 946_684_800  # 2000-01-01T00:00:00Z
_CHUNK = 1 << 20


def _copy_verified(src: str, dst: str, expected: str | None, *, executable: bool) -> None:
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
    except FileNotFoundError as exc:
        raise ContextChangedError(f"{src} disappeared while the context was staged") from exc
    if expected is not None and h.hexdigest() != expected:
        raise ContextChangedError(f"{src} changed after it was hashed")
    os.chmod(dst, 0o755 if executable else 0o644)
    os.utime(dst, (FIXED_MTIME, FIXED_MTIME))


def _stage_tree(tree: TreeIndex, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in tree.listing():
        target = dest / entry.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.type == DIR:
            target.mkdir(exist_ok=True)
        elif entry.type == SYMLINK:
            os.symlink(entry.target or "", target)
            os.utime(target, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        elif entry.type == FILE:
            src = os.path.join(tree.root, entry.relpath)
            _copy_verified(
                src, str(target), tree.contents.get(entry.relpath), executable=entry.executable
            )


def _stage_item(item: ContextItem, root: Path) -> None:
    dest = root / item.dest if item.dest != "." else root
    if item.tree is not None:
        _stage_tree(item.tree, dest)
        return
    assert item.file is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = item.digest
    executable = digest is not None and digest.endswith(EXEC_SUFFIX)
    expected = digest.removesuffix(EXEC_SUFFIX) if digest is not None else None
    _copy_verified(str(item.file), str(dest), expected, executable=executable)
    if _is_source_file(item):
        try:
            now_executable = bool(os.stat(item.file).st_mode & 0o111)
        except FileNotFoundError as exc:
            raise ContextChangedError(f"{item.file} disappeared while it was staged") from exc
        if now_executable != executable:
            raise ContextChangedError(f"{item.file}: executable bit changed after hashing")


def _is_source_file(item: ContextItem) -> bool:
    return item.dest.startswith("layers/")


def _normalise_folders(root: Path) -> None:
    """Every folder the context holds gets 0755 and the fixed mtime, deepest first."""
    folders = [Path(d) for d, _, _ in os.walk(root)]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        os.chmod(folder, 0o755)
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def stage_context(rendered: RenderedImage, root: Path) -> Path:
    """Write the context into the empty folder ``root``; return the Dockerfile's path."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for item in rendered.context:
        _stage_item(item, root)
    _normalise_folders(root)
    dockerfile = root.parent / f"{root.name}.Dockerfile"
    dockerfile.write_text(rendered.dockerfile, encoding="utf-8")
    return dockerfile
