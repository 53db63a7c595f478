"""Private build folders (secret files, buildx metadata) that outlive a killed owner are swept.

A build writes its secrets to ``imaged-build-*`` under /dev/shm and removes the folder when it
ends; a SIGKILL skips that. Each folder records its owner (pid and the kernel's start time of
that pid, so a reused pid is not mistaken for the owner), and the next ``imaged build`` or
daemon start removes the folders whose owner is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

SHM = "/dev/shm"  # noqa: S108 - only the parent of private mkdtemp folders
SCRATCH_PREFIX = "imaged-build-"
OWNER_FILE = "owner"
# A folder without an owner file is one being created this instant, or one an older imaged
# made (its build may still run): only a day-old one is swept.
UNMARKED_GRACE = 24 * 3600.0


def scratch_parent() -> str | None:
    """Where scratch folders go: /dev/shm (tmpfs keeps values off disks), else the temp dir."""
    return SHM if os.access(SHM, os.W_OK) else None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def mark_owner(folder: str) -> None:
    """Record this process as the owner of ``folder``."""
    pid = os.getpid()
    Path(folder, OWNER_FILE).write_text(f"{pid} {process_start_time(pid) or '-'}\n")


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start_time(pid)
    return started == "-" or now is None or now == started


def _owner_gone(folder: Path) -> bool:
    try:
        pid_text, started = (folder / OWNER_FILE).read_text().split()
        return not _alive(int(pid_text), started)
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > UNMARKED_GRACE
    except ValueError:
        return True  # unreadable owner record: not one this code wrote whole


def sweep_stale_scratch(parent: str | None = None) -> list[Path]:
    """Remove this user's scratch folders whose owner process is gone; returns them.

    >>> sweep_stale_scratch()  # doctest: +SKIP
    [PosixPath('/dev/shm/imaged-build-k2j3h4')]
    """
    base = Path(parent or scratch_parent() or tempfile.gettempdir())
    removed: list[Path] = []
    for folder in base.glob(SCRATCH_PREFIX + "*"):
        try:
            mine = folder.is_dir() and folder.lstat().st_uid == os.geteuid()
            if mine and not folder.is_symlink() and _owner_gone(folder):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed
