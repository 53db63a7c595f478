"""What the daemon shows: one view per image, kept by a reducer over the daemon's events.

The status server (``/status``, ``/healthz``, ``/metrics``) and the live table of
``imaged watch`` read it through :class:`StatusSource`, never the daemon's internals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from imaged.events import (
    Building,
    Event,
    Failed,
    Finished,
    HashError,
    Pushing,
    Queued,
    Ready,
    Retrying,
    Skipped,
    Superseded,
)

# An image's state: up to date | queued | building | pushing | failed | unknown
_STATE_AFTER: dict[type[Event], str] = {
    Queued: "queued",
    Retrying: "queued",
    Superseded: "queued",
    Building: "building",
    Pushing: "pushing",
    Failed: "failed",
    HashError: "failed",
}


class StatusSource(Protocol):
    """What the status endpoint and the live table read of a running daemon."""

    def snapshot(self) -> dict[str, Any]:
        """The ``/status`` document: ``ready``, ``started_at``, ``images``, ``modules``."""
        ...

    def is_ready(self) -> bool:
        """True once the first registry check is done (``/healthz``)."""
        ...

    def render_metrics(self) -> str:
        """The Prometheus exposition (``/metrics``)."""
        ...


@dataclass
class ImageView:
    """What the terminal view, ``imaged status`` and the JSON events show per image."""

    name: str
    state: str = "unknown"
    tag: str | None = None
    uri: str | None = None
    pushed_at: float | None = None
    why: str = ""
    error: str | None = None
    engine: str | None = None  # the pool engine of its current or last build, and why
    placement: str | None = None
    path: str | None = None  # the last push's route: "fast" or "full"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DaemonView:
    """Every image's view, each definition module's last load error, and readiness."""

    images: dict[str, ImageView] = field(default_factory=dict)
    modules: dict[str, str | None] = field(default_factory=dict)  # file -> last load error
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    engines: list[dict[str, Any]] = field(default_factory=list)  # a pool's, as it says

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "started_at": self.started_at,
            "images": [v.to_json() for v in sorted(self.images.values(), key=lambda v: v.name)],
            "modules": self.modules,
            "engines": self.engines,
            "engine_status": self.engine_status(),
        }

    def engine_status(self) -> str | None:
        """``2/3 engines up``, ``no engine available``; None without a pool."""
        if not self.engines:
            return None
        up = sum(1 for e in self.engines if e["state"] == "up")
        return f"{up}/{len(self.engines)} engines up" if up else "no engine available"

    def image(self, name: str) -> ImageView:
        return self.images.setdefault(name, ImageView(name))

    def apply(self, event: Event) -> None:
        """The reducer: what one event changes in the views."""
        if isinstance(event, Ready):
            self.ready = True
        if event.image is None or not isinstance(event, (*_STATE_AFTER, Finished)):
            return  # says something about an image, changes nothing shown of it
        view = self.image(event.image)
        view.state = _STATE_AFTER.get(type(event), view.state)
        if isinstance(event, Building):
            view.why, view.error = event.reason, None
            view.engine, view.placement = event.engine, event.placement
        elif isinstance(event, Failed | HashError):
            view.error = str(event.error)
        elif isinstance(event, Finished):
            view.state, view.uri = "up to date", event.uri
            if event.engine is not None:
                view.engine, view.placement = event.engine, event.placement
            if not isinstance(event, Skipped):
                view.pushed_at, view.path = time.time(), event.path

    def known_digest(self, name: str, tag: str, uri: str | None) -> None:
        """The image's current content tag (and URI), whether or not it is built yet."""
        view = self.image(name)
        view.tag, view.uri = tag, uri

    def up_to_date(self, name: str, pushed_at: float | None) -> None:
        """The registry (or the state record) holds the current tag."""
        view = self.image(name)
        view.state, view.pushed_at = "up to date", pushed_at

    def unknown(self, name: str, error: str) -> None:
        view = self.image(name)
        view.state, view.error = "unknown", error

    def status_line(self, images: int) -> str:
        """One line for systemd's STATUS=: ``3 images: 2 up to date, 1 building``."""
        count: dict[str, int] = {}
        for v in self.images.values():
            count[v.state] = count.get(v.state, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(count.items()))
        line = f"{images} images: {parts}" if parts else f"{images} images"
        engines = self.engine_status()
        return f"{line}; {engines}" if engines else line
