"""Every event imaged emits, one typed record per kind; ``docs/events.md`` is checked against them.

Two streams, each with its own kinds (a name means one thing within a stream):

- the daemon's (``imaged watch --json``, the log, the live view): :data:`DAEMON_EVENTS`;
- a build's progress (``imaged.build(image, on_event=...)``, the pipeline and the builders):
  :data:`BUILD_EVENTS`, and ``parent_<kind>`` for the same kinds of a parent image built first.

A sink receives the JSON form, ``{"event": kind, "image": name, **fields}`` (the daemon adds
``ts``); producers build the record, so a misspelt field is a type error, not a silent key.

>>> Queued(image="api", reason="app.py changed").to_json()
{'event': 'queued', 'image': 'api', 'reason': 'app.py changed'}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

EventSink = Callable[[dict[str, Any]], None]
PARENT_PREFIX = "parent_"


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event: its ``kind`` (the ``event`` key of the JSON) and the image it is about."""

    kind: ClassVar[str] = ""
    image: str | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields beyond ``event`` and ``image``, in JSON order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "image")

    def to_json(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.field_names()}
        return {"event": self.kind, "image": self.image, **fields}


def send(sink: EventSink | None, event: Event) -> None:
    """Hand ``event`` to ``sink`` in its JSON form; nothing when there is no sink."""
    if sink is not None:
        sink(event.to_json())


def parse(data: Mapping[str, Any], kinds: Mapping[str, type[Event]]) -> Event:
    """The record of one JSON event of a stream (``kinds``); KeyError for an unknown kind."""
    cls = kinds[str(data["event"])]
    return cls(image=data.get("image"), **{name: data[name] for name in cls.field_names()})


# -- the daemon's events ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DefinitionsLoaded(Event):
    kind = "definitions_loaded"
    file: str
    images: list[str]


@dataclass(frozen=True, kw_only=True)
class DefinitionErrorEvent(Event):
    kind = "definition_error"
    file: str
    line: int | None
    error: str


@dataclass(frozen=True, kw_only=True)
class Ready(Event):
    kind = "ready"
    images: int


@dataclass(frozen=True, kw_only=True)
class Changed(Event):
    kind = "changed"
    tag: str | None
    why: str


@dataclass(frozen=True, kw_only=True)
class NothingToDo(Event):
    kind = "nothing_to_do"
    paths: list[str]


@dataclass(frozen=True, kw_only=True)
class Ignored(Event):
    kind = "ignored"
    paths: list[str]
    count: int


@dataclass(frozen=True, kw_only=True)
class Queued(Event):
    kind = "queued"
    reason: str


@dataclass(frozen=True, kw_only=True)
class Superseded(Event):
    kind = "superseded"
    reason: str


@dataclass(frozen=True, kw_only=True)
class Building(Event):
    kind = "building"
    reason: str
    engine: str | None = None
    placement: str | None = None


@dataclass(frozen=True, kw_only=True)
class Pushing(Event):
    kind = "pushing"


@dataclass(frozen=True, kw_only=True)
class Finished(Event):
    """The end of one daemon build: ``pushed``, ``built`` or ``skipped`` (subclasses)."""

    uri: str
    manifest_digest: str | None
    why: str
    seconds: float
    engine: str | None = None
    placement: str | None = None
    path: str = "full"
    path_reason: str = ""
    uploaded_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class Pushed(Finished):
    kind = "pushed"


@dataclass(frozen=True, kw_only=True)
class Built(Finished):
    kind = "built"


@dataclass(frozen=True, kw_only=True)
class Skipped(Finished):
    kind = "skipped"


@dataclass(frozen=True, kw_only=True)
class Retrying(Event):
    kind = "retrying"
    error: str | None
    delay: float


@dataclass(frozen=True, kw_only=True)
class Failed(Event):
    kind = "failed"
    error: str | None


@dataclass(frozen=True, kw_only=True)
class HashError(Event):
    kind = "hash_error"
    error: str


@dataclass(frozen=True, kw_only=True)
class InternalError(Event):
    kind = "internal_error"
    where: str
    error: str
    at: str | None


@dataclass(frozen=True, kw_only=True)
class Reloaded(Event):
    kind = "reloaded"
    images: int


@dataclass(frozen=True, kw_only=True)
class ConfigErrorEvent(Event):
    kind = "config_error"
    error: str


@dataclass(frozen=True, kw_only=True)
class StatusListening(Event):
    kind = "status_listening"
    address: str


@dataclass(frozen=True, kw_only=True)
class StatusError(Event):
    kind = "status_error"
    address: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Stopping(Event):
    kind = "stopping"
    signal: str


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    kind = "stopped"
    pid: int


# -- a build's progress (pipeline and builders) ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildSkipped(Event):
    kind = "skipped"
    uri: str


@dataclass(frozen=True, kw_only=True)
class ParentReady(Event):
    kind = "parent_ready"
    parent: str
    status: str


@dataclass(frozen=True, kw_only=True)
class Rehashed(Event):
    kind = "rehashed"
    old: str
    new: str


@dataclass(frozen=True, kw_only=True)
class BuildBuilding(Event):
    kind = "building"
    uri: str
    engine: str | None = None
    placement: str | None = None


@dataclass(frozen=True, kw_only=True)
class BuildPushed(Event):
    kind = "pushed"
    uri: str
    manifest_digest: str | None
    path: str = "full"
    path_reason: str = ""


@dataclass(frozen=True, kw_only=True)
class BuildBuilt(Event):
    kind = "built"
    uri: str
    manifest_digest: str | None
    path: str = "full"
    path_reason: str = ""


@dataclass(frozen=True, kw_only=True)
class BuildStarted(Event):
    kind = "build_started"
    argv: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class BuildOutputLine(Event):
    kind = "build_output"
    line: str


@dataclass(frozen=True, kw_only=True)
class BuildDone(Event):
    kind = "build_done"
    seconds: float


@dataclass(frozen=True, kw_only=True)
class RefPushed(Event):
    kind = "ref_pushed"
    ref: str
    digest: str | None


@dataclass(frozen=True, kw_only=True)
class PushStatus(Event):
    kind = "push_status"
    ref: str
    status: str
    id: str | None


def _by_kind(*classes: type[Event]) -> dict[str, type[Event]]:
    kinds = {cls.kind: cls for cls in classes}
    if len(kinds) != len(classes):
        raise TypeError("two event classes of one stream share a kind")
    return kinds


DAEMON_EVENTS: dict[str, type[Event]] = _by_kind(
    DefinitionsLoaded,
    DefinitionErrorEvent,
    Ready,
    Changed,
    NothingToDo,
    Ignored,
    Queued,
    Superseded,
    Building,
    Pushing,
    Pushed,
    Built,
    Skipped,
    Retrying,
    Failed,
    HashError,
    InternalError,
    Reloaded,
    ConfigErrorEvent,
    StatusListening,
    StatusError,
    Stopping,
    Stopped,
)
BUILD_EVENTS: dict[str, type[Event]] = _by_kind(
    BuildSkipped,
    ParentReady,
    Rehashed,
    BuildBuilding,
    BuildPushed,
    BuildBuilt,
    BuildStarted,
    BuildOutputLine,
    BuildDone,
    RefPushed,
    PushStatus,
)


def as_parent(event: Mapping[str, Any], child: str | None) -> dict[str, Any]:
    """A parent image's build event as its child's build reports it: ``parent_<kind>``,
    about the child, so that the parent's ``build_done`` never reads as the child's."""
    return {**event, "event": f"{PARENT_PREFIX}{event.get('event')}", "image": child}
