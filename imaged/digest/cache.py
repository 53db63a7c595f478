"""The per-file content digest cache, keyed by stat, with the racy-git rule."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from imaged.errors import SpecError
from imaged.safe_read import open_regular, os_reason, shown_path

RACY_WINDOW_NS = 2_000_000_000
_CHUNK = 1 << 20


@dataclass
class DigestCache:
    """File content digests keyed by (path, size, mtime_ns, ctime_ns, inode, mode).

    An entry recorded less than ``RACY_WINDOW_NS`` after the file's mtime is not trusted
    (the file may have been written again within the timestamp granularity), so the next
    lookup reads the file again: the racy-git rule.
    """

    entries: dict[str, tuple[tuple[int, ...], int, str]] = field(default_factory=dict)
    reads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lookup(self, path: str, key: tuple[int, ...]) -> str | None:
        hit = self.entries.get(path)
        if hit is None or hit[0] != key:
            return None
        recorded_ns = hit[1]
        mtime_ns = key[1]
        if mtime_ns >= recorded_ns - RACY_WINDOW_NS:
            return None
        return hit[2]

    def file_digest(self, path: str, key: tuple[int, ...]) -> str:
        """The sha256 hex of a file's content, read only when the cache cannot answer."""
        cached = self.lookup(path, key)
        if cached is not None:
            return cached
        recorded = time.time_ns()
        digest = read_digest(path)
        with self._lock:
            self.reads += 1
            self.entries[path] = (key, recorded, digest)
        return digest

    def prune_missing(self) -> int:
        """Forget files that no longer exist (renamed or deleted), so a long-running daemon's
        persisted cache does not grow without bound. Returns how many were dropped."""
        with self._lock:
            paths = list(self.entries)
        gone = [p for p in paths if not os.path.lexists(p)]
        with self._lock:
            for path in gone:
                self.entries.pop(path, None)
        return len(gone)

    def read_many(self, wanted: list[tuple[str, tuple[int, ...]]]) -> list[str | None]:
        """Read and record the digests of files the cache could not answer, in order;
        None for a file that vanished since it was listed (an editor's temp file)."""
        recorded = time.time_ns()
        digests = [_read_if_present(path, key[0]) for path, key in wanted]
        with self._lock:
            self.reads += len(wanted)
            for (path, key), digest in zip(wanted, digests, strict=True):
                if digest is not None:
                    self.entries[path] = (key, recorded, digest)
        return digests

    def to_json(self) -> dict[str, Any]:
        with self._lock:  # hashing threads may be adding entries
            entries = dict(self.entries)
        return {"version": 1, "entries": {p: [list(k), r, d] for p, (k, r, d) in entries.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DigestCache:
        if data.get("version") != 1:
            return cls()
        entries = {
            p: (tuple(k), int(r), str(d)) for p, (k, r, d) in data.get("entries", {}).items()
        }
        return cls(entries=entries)


def _read_if_present(path: str, size_hint: int) -> str | None:
    try:
        return read_digest(path, size_hint)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SpecError(f"{shown_path(path)}: cannot read: {os_reason(exc)}") from exc


def read_digest(path: str, size_hint: int = 0) -> str:
    """The sha256 hex of a file's content; ``size_hint`` (its stat size) lets a small file
    be read with one system call. Only a regular file is read (see ``safe_read``)."""
    fd = open_regular(path)
    try:
        first = os.read(fd, size_hint + 1 if 0 < size_hint < _CHUNK else _CHUNK)
        h = hashlib.sha256(first)
        if len(first) != size_hint or size_hint >= _CHUNK:
            # Exactly the stat size from a request one byte larger is the whole file.
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


_DEFAULT_CACHE = DigestCache()


def default_cache() -> DigestCache:
    """The process-wide cache ``Image.digest`` uses."""
    return _DEFAULT_CACHE
