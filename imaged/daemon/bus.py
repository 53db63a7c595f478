"""The daemon's event bus: each event, stamped with ``ts``, to every sink; no sink can stop it."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from imaged.events import Event, EventSink


class EventBus:
    """Fans events out to sinks (the NDJSON writer, the log, the live table, tests)."""

    def __init__(self, *sinks: EventSink) -> None:
        self._sinks = list(sinks)
        self._failed: set[int] = set()

    def add(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def publish(self, event: Event) -> None:
        """Send one event to every sink; a sink that raises never reaches the caller."""
        payload: dict[str, Any] = {"ts": round(time.time(), 3), **event.to_json()}
        for sink in list(self._sinks):
            try:
                sink(payload)
            except Exception as exc:
                self._sink_failed(sink, exc)

    def _sink_failed(self, sink: EventSink, exc: Exception) -> None:
        """A sink that cannot write any more (stdout piped to a `head` that exited) is
        stopped; one that raised otherwise is kept. Either is said once, on stderr."""
        stopped = isinstance(exc, OSError)
        if stopped:
            self._sinks.remove(sink)
        if id(sink) in self._failed:
            return
        self._failed.add(id(sink))
        what = "stopped" if stopped else "raised; later failures are not reported"
        say(f"imaged: an event sink {what}: {type(exc).__name__}: {exc}")


def say(text: str) -> None:
    """One line on stderr for what no event can carry; a closed stderr is not an error."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
