"""imaged.daemon.views: the reducer from daemon events to what each image shows."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from imaged.cli.watch import _table
from imaged.config import Settings
from imaged.daemon.core import Daemon
from imaged.daemon.notify import SystemdNotifier
from imaged.daemon.views import DaemonView, StatusSource
from imaged.events import (
    Building,
    Built,
    Changed,
    DefinitionErrorEvent,
    Event,
    Failed,
    HashError,
    Pushed,
    Pushing,
    Queued,
    Ready,
    Retrying,
    Skipped,
    Superseded,
)

A = "api"


def _done(kind: type[Pushed | Built | Skipped]) -> Event:
    return kind(image=A, uri="r/api:1", manifest_digest=None, why="edit", seconds=1.0)


@pytest.mark.parametrize(
    ("events", "state", "why", "error"),
    [
        pytest.param([Queued(image=A, reason="edit")], "queued", "", None, id="queued"),
        pytest.param([Building(image=A, reason="edit")], "building", "edit", None, id="building"),
        pytest.param(
            [Building(image=A, reason="x"), Pushing(image=A)], "pushing", "x", None, id="pushing"
        ),
        pytest.param(
            [Building(image=A, reason="x"), Failed(image=A, error="exit 3")],
            "failed",
            "x",
            "exit 3",
            id="failed",
        ),
        pytest.param(
            [Failed(image=A, error="e"), Building(image=A, reason="again")],
            "building",
            "again",
            None,
            id="a-new-build-clears-the-error",
        ),
        pytest.param(
            [Building(image=A, reason="x"), Retrying(image=A, error="EOF", delay=1.0)],
            "queued",
            "x",
            None,
            id="retrying-is-queued",
        ),
        pytest.param(
            [Building(image=A, reason="x"), Superseded(image=A, reason="y")],
            "queued",
            "x",
            None,
            id="superseded-is-queued",
        ),
        pytest.param([HashError(image=A, error="gone")], "failed", "", "gone", id="hash-error"),
        pytest.param([_done(Pushed)], "up to date", "", None, id="pushed"),
        pytest.param([_done(Skipped)], "up to date", "", None, id="skipped"),
    ],
)
def test_each_event_moves_the_view(
    events: list[Event], state: str, why: str, error: str | None
) -> None:
    view = DaemonView()
    for event in events:
        view.apply(event)
    shown = view.images[A]
    assert (shown.state, shown.why, shown.error) == (state, why, error)


def test_a_push_stamps_the_time_a_skip_does_not() -> None:
    view = DaemonView()
    view.apply(_done(Skipped))
    assert view.images[A].pushed_at is None
    view.apply(_done(Built))
    assert view.images[A].pushed_at is not None
    assert view.images[A].uri == "r/api:1"


def test_events_that_show_nothing_make_no_view() -> None:
    view = DaemonView()
    view.apply(DefinitionErrorEvent(image="twice", file="b.py", line=None, error="dup"))
    view.apply(Changed(image=A, tag="t", why="w"))  # the daemon sets the tag itself
    view.apply(Ready(images=0))
    assert (view.images, view.ready) == ({}, True)


def test_status_line_counts_states() -> None:
    view = DaemonView()
    view.apply(Queued(image="a", reason="r"))
    view.apply(Queued(image="b", reason="r"))
    view.apply(_done(Pushed))
    assert view.status_line(3) == "3 images: 2 queued, 1 up to date"
    assert DaemonView().status_line(0) == "0 images"


class Snapshot:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def snapshot(self) -> dict[str, Any]:
        return self.status

    def is_ready(self) -> bool:
        return True

    def render_metrics(self) -> str:
        return ""


def test_the_live_table_reads_the_status_source() -> None:
    view = DaemonView()
    view.known_digest(A, "3f2a", "r/api:3f2a")
    view.apply(Failed(image=A, error="RUN exited 3"))
    view.modules["/defs/bad.py"] = "SyntaxError"
    source: StatusSource = Snapshot(view.to_json())
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(_table(source))
    text = out.getvalue()
    shown = ["api", "failed", "3f2a", "RUN exited 3", "bad.py", "definition error", "SyntaxError"]
    assert [s for s in shown if s not in text] == []


def test_the_daemon_is_a_status_source(tmp_path: Path) -> None:
    daemon = Daemon(Settings(state_dir=tmp_path), [tmp_path], notifier=SystemdNotifier(None))
    source: StatusSource = daemon
    daemon.emit(Queued(image=A, reason="edit"))
    assert source.snapshot()["images"][0]["state"] == "queued"
    assert not source.is_ready()
    assert "imaged_queue_depth" in source.render_metrics()
