"""Replacing a file of imaged's own (state, caches) in one step, safe under concurrency.

A crash leaves the old file or the new one, never half of one; and each writer has its own
temporary name (``mkstemp`` in the same folder), so two builds of one process (threads) or
of two processes that save the same file at once never rename each other's half-written
temporary away (a fixed ``<name>.tmp``, or one per pid, did exactly that).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8). ``durable`` fsyncs the file before the
    rename (state that must survive a power cut); caches that can be rebuilt skip it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
