"""imaged.events: each kind declared once, and docs/events.md documents exactly those."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from imaged.events import (
    BUILD_EVENTS,
    DAEMON_EVENTS,
    PARENT_PREFIX,
    BuildDone,
    Event,
    Pushed,
    Queued,
    as_parent,
    parse,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"
STREAMS = {"The daemon's events": DAEMON_EVENTS, "A build's progress events": BUILD_EVENTS}
_NAME = re.compile(r"`([a-z_<>]+)`")

Documented = dict[str, set[str]]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _row(line: str) -> Documented:
    """One table row: ``| `a` / `b` | `x`, `y` | when |``. A fields cell split by `` / `` as
    many times as there are kinds gives each kind its own fields; otherwise all share them."""
    kinds_cell, fields_cell = _cells(line)[:2]
    kinds = _NAME.findall(kinds_cell)
    parts = fields_cell.split(" / ")
    if len(parts) != len(kinds):
        parts = [fields_cell] * len(kinds)
    return {kind: set(_NAME.findall(part)) for kind, part in zip(kinds, parts, strict=True)}


def _kind_table(lines: Iterable[str]) -> Documented:
    """The rows of the section's table whose header starts ``| event | fields |``."""
    documented: Documented = {}
    in_table = False
    for line in lines:
        if line.startswith("| event | fields |"):
            in_table = True
        elif in_table and line.startswith("|---"):
            continue
        elif in_table and line.startswith("|"):
            for kind, fields in _row(line).items():
                assert kind not in documented, f"{kind} is documented twice"
                documented[kind] = fields
        elif in_table:
            break
    return documented


def documented_streams(text: str) -> dict[str, Documented]:
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    by_heading = {s.splitlines()[0].strip(): s.splitlines()[1:] for s in sections}
    return {heading: _kind_table(by_heading.get(heading, [])) for heading in STREAMS}


def declared(kinds: Mapping[str, type[Event]]) -> Documented:
    return {kind: set(cls.field_names()) for kind, cls in kinds.items()}


@pytest.mark.parametrize("heading", list(STREAMS))
def test_docs_list_exactly_the_declared_kinds_and_fields(heading: str) -> None:
    documented = documented_streams(DOCS.read_text(encoding="utf-8"))[heading]
    expected = declared(STREAMS[heading])
    assert documented, f"no event table under '## {heading}' in {DOCS}"
    missing = {k: v for k, v in expected.items() if documented.get(k) != v}
    extra = {k: v for k, v in documented.items() if k not in expected}
    assert (missing, extra) == ({}, {}), (
        "declared-but-undocumented (or other fields), documented-only"
    )


def test_the_docs_parser_sees_a_change_either_way() -> None:
    """The check can fail: a field dropped from a row, or a kind added to the page."""
    text = DOCS.read_text(encoding="utf-8")
    dropped = text.replace("| `ready` | `images` (count) |", "| `ready` | |")
    added = text.replace("| `pushing` | |", "| `pushing` | |\n| `teleported` | `where` | never |")
    daemon = "The daemon's events"
    assert documented_streams(dropped)[daemon]["ready"] == set()
    assert "teleported" in documented_streams(added)[daemon]
    assert documented_streams(text)[daemon]["stopped"] == {"pid"}
    assert documented_streams(text)[daemon]["skipped"] == {
        "uri",
        "manifest_digest",
        "why",
        "seconds",
        "engine",
        "placement",
        "path",
        "path_reason",
        "uploaded_bytes",
    }


def test_parent_events_are_documented_as_a_prefix() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"`{PARENT_PREFIX}<event>`" in text
    wrapped = as_parent(BuildDone(image="base", seconds=1.5).to_json(), "child")
    assert wrapped == {"event": "parent_build_done", "image": "child", "seconds": 1.5}


def test_json_form_and_parse_round_trip() -> None:
    event = Pushed(image="api", uri="r/api:1", manifest_digest=None, why="edit", seconds=0.5)
    data = event.to_json()
    assert list(data) == [
        *("event", "image", "uri", "manifest_digest", "why", "seconds"),
        *("engine", "placement"),
        *("path", "path_reason", "uploaded_bytes"),
    ]
    assert parse(data, DAEMON_EVENTS) == event
    assert parse({"ts": 1.0, **Queued(image="a", reason="r").to_json()}, DAEMON_EVENTS) == Queued(
        image="a", reason="r"
    )


def test_an_unknown_kind_or_a_missing_field_does_not_parse() -> None:
    with pytest.raises(KeyError):
        parse({"event": "teleported", "image": None}, DAEMON_EVENTS)
    with pytest.raises(KeyError):
        parse({"event": "queued", "image": "a"}, DAEMON_EVENTS)


def assert_declared(events: Iterable[Mapping[str, Any]], kinds: Mapping[str, type[Event]]) -> None:
    """Every emitted event is a declared kind with exactly its fields (plus the daemon's ts)."""
    for event in events:
        name = str(event["event"])
        if name not in kinds:  # a parent's event, as its child's build reports it
            name = name.removeprefix(PARENT_PREFIX)
        assert name in kinds, f"undeclared event kind {event['event']!r}: {event}"
        expected = {"event", "image", *kinds[name].field_names()}
        assert set(event) - {"ts"} == expected, event
