"""The daemon's persisted state: what was pushed per image, and the file digest cache."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.atomic_write import write_atomic as _write_atomic
from imaged.digest.cache import DigestCache
from imaged.errors import ImagedError

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "state.json"
CACHE_FILE = "digest-cache.json"
LOCK_FILE = "lock"


@dataclass
class ImageRecord:
    """What the daemon last pushed for one image, to explain the next rebuild."""

    name: str
    uri: str | None = None
    tag: str | None = None
    manifest_digest: str | None = None
    pushed_at: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    file_digests: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(record.name, str) or not isinstance(record.layers, list):
            raise TypeError(f"malformed image record {data!r}")
        if not isinstance(record.file_digests, dict):
            raise TypeError(f"malformed image record {data!r}")
        return record


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a crash leaves the old or the new file, never half
    (and the folder's entry on disk too)."""
    _write_atomic(path, text)
    _fsync_dir(path.parent)


class StateStore:
    """``state.json``, ``digest-cache.json`` and a ``lock`` under one state directory.

    >>> store = StateStore(Path("/var/lib/imaged"))  # doctest: +SKIP
    >>> store.lock()  # doctest: +SKIP
    >>> records = store.load()  # doctest: +SKIP
    >>> records["api"] = ImageRecord("api", uri="127.0.0.1:5000/api:3f2a")  # doctest: +SKIP
    >>> store.save(records)  # doctest: +SKIP
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def cache_path(self) -> Path:
        return self.directory / CACHE_FILE

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        """The JSON object in ``path``; None when it is missing or moved aside as corrupt."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            self._move_aside(path, str(exc))
            return None
        if not isinstance(data, dict):
            self._move_aside(path, "not a JSON object")
            return None
        return data

    def _move_aside(self, path: Path, reason: str) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
        os.replace(path, aside)
        log.warning("%s is corrupt (%s); moved aside to %s", path, reason, aside.name)

    def _write_json(self, path: Path, data: object, *, indent: int | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, json.dumps(data, indent=indent, sort_keys=True))
        except OSError as exc:
            raise ImagedError(f"cannot write {path}: {exc}") from exc

    def load(self) -> dict[str, ImageRecord]:
        """Records by image name; a missing or corrupt file gives ``{}``."""
        data = self._read_json(self.state_path)
        if data is None:
            return {}
        try:
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            return {name: ImageRecord.from_json(rec) for name, rec in data["images"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self._move_aside(self.state_path, f"{type(exc).__name__}: {exc}")
            return {}

    def save(self, records: Mapping[str, ImageRecord]) -> None:
        images = {name: record.to_json() for name, record in records.items()}
        self._write_json(self.state_path, {"version": STATE_VERSION, "images": images}, indent=2)

    def load_cache(self) -> DigestCache:
        data = self._read_json(self.cache_path)
        if data is None:
            return DigestCache()
        try:
            return DigestCache.from_json(data)
        except (AttributeError, TypeError, ValueError) as exc:
            self._move_aside(self.cache_path, f"{type(exc).__name__}: {exc}")
            return DigestCache()

    def save_cache(self, cache: DigestCache) -> None:
        self._write_json(self.cache_path, cache.to_json(), indent=None)

    def lock(self) -> None:
        """Hold an exclusive lock on the directory until :meth:`unlock` or process exit."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ImagedError(
                f"state directory {self.directory} is in use by pid {owner}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
