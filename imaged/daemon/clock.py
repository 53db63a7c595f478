"""The scheduler's clock in the daemon: monotonic time that stands still while the daemon is busy."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class QuietClock:
    """The scheduler's clock: monotonic time that stands still while the daemon has changes
    in hand (from the arrival of a raw batch at the watcher, a few ms after its file events,
    through the relevance filter and the tracker's hashing, until every batch received is
    handled) and while the tracker hashes, so a debounce counts quiet time only, from a
    burst's last file event. Otherwise a build queued by one batch of a burst starts while
    the next batch is batched, filtered or hashed, and that batch supersedes it at once
    (issue 11, item 7). Pauses may overlap (the watcher and the stat sweep) and may end
    in another task than they began in (the watcher's receiving task begins one, its
    consumer ends it): time stands still while any one is open."""

    def __init__(self) -> None:
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._holds = 0

    def __call__(self) -> float:
        now = time.monotonic() if self._paused_at is None else self._paused_at
        return now - self._paused_total

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        if self._holds == 0:
            self._paused_at = time.monotonic()
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0 and self._paused_at is not None:
                self._paused_total += time.monotonic() - self._paused_at
                self._paused_at = None
