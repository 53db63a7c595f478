"""Tests for imaged.daemon.watcher: filtering, restarts, missing roots, and real inotify."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from fakes import ScriptedWatchBackend, Step
from watchfiles import Change

from imaged.config import DEFAULTS
from imaged.daemon.tracker import DigestChange, ImageTracker
from imaged.daemon.watcher import (
    RestartFlag,
    Roots,
    WatchBackend,
    WatchfilesBackend,
    existing_roots,
    watch_paths,
    watch_plan,
)
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.spec.image import Image

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the trio on this machine is too old for anyio 4's thread API."""
    return "asyncio"


def _py_only(path: Path) -> bool:
    return path.suffix == ".py"


async def collect(
    roots: Callable[[], Roots],
    backend: WatchBackend,
    *,
    want: int,
    relevant: Callable[[Path], bool] = _py_only,
    restart: RestartFlag | None = None,
    within: float = 2.0,
    on_ignored: Callable[[set[Path]], None] | None = None,
) -> list[set[Path]]:
    """Run watch_paths until ``want`` batches came (or ``within`` s passed), then stop it."""
    stop = anyio.Event()
    batches: list[set[Path]] = []

    async def consume() -> None:
        watching = watch_paths(
            roots,
            relevant,
            stop_event=stop,
            backend=backend,
            restart=restart,
            on_ignored=on_ignored,
        )
        async with watching as found:
            async for batch in found:
                batches.append(batch)
                if len(batches) >= want:
                    stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.move_on_after(within):
            await stop.wait()
        stop.set()
    return batches


def batch(*changes: tuple[Change, Path]) -> set[tuple[Change, str]]:
    return {(change, str(path)) for change, path in changes}


# -- with the scripted fake -------------------------------------------------------------


async def test_only_relevant_paths_are_yielded_and_empty_batches_skipped(tmp_path: Path) -> None:
    steps: list[Step] = [
        batch((Change.added, tmp_path / "a.py"), (Change.added, tmp_path / "a.pyc")),
        batch((Change.modified, tmp_path / "b.pyc")),
        batch((Change.deleted, tmp_path / "c.py")),
    ]
    backend = ScriptedWatchBackend(steps)
    got = await collect(lambda: {tmp_path}, backend, want=2)
    assert got == [{tmp_path / "a.py"}, {tmp_path / "c.py"}]
    assert backend.roots == [(tmp_path,)]


@pytest.mark.parametrize(
    ("step_ms", "debounce_ms", "expected"),
    [
        pytest.param(
            None, None, (2 * DEFAULTS.watch_step_ms, DEFAULTS.watch_step_ms), id="defaults"
        ),
        pytest.param(3, None, (6, 3), id="a-batch-ends-two-steps-after-its-first-event"),
        pytest.param(3, 50, (50, 3), id="an-explicit-batch-length"),
    ],
)
async def test_the_watch_step_and_batch_length_reach_the_backend(
    tmp_path: Path, step_ms: int | None, debounce_ms: int | None, expected: tuple[int, int]
) -> None:
    backend = ScriptedWatchBackend([batch((Change.added, tmp_path / "a.py"))])
    stop = anyio.Event()
    options = {"debounce_ms": debounce_ms} | ({"step_ms": step_ms} if step_ms else {})
    async with watch_paths(
        lambda: {tmp_path}, lambda _p: True, stop_event=stop, backend=backend, **options
    ) as batches:
        async for _ in batches:
            break
    assert backend.timings == [expected]


async def test_batches_with_nothing_relevant_are_reported_as_ignored(tmp_path: Path) -> None:
    steps: list[Step] = [
        batch((Change.modified, tmp_path / "b.pyc"), (Change.added, tmp_path / "x.log")),
        batch((Change.added, tmp_path / "a.py"), (Change.added, tmp_path / "a.pyc")),
    ]
    ignored: list[set[Path]] = []
    got = await collect(
        lambda: {tmp_path}, ScriptedWatchBackend(steps), want=1, on_ignored=ignored.append
    )
    assert got == [{tmp_path / "a.py"}]
    # Only the batch that held nothing relevant; a mixed batch is not "ignored".
    assert ignored == [{tmp_path / "b.pyc", tmp_path / "x.log"}]


async def test_the_watcher_receives_while_the_caller_handles_and_stays_busy_until_all_is_handled(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    loop_thread = threading.get_ident()
    filter_threads: set[int] = set()

    @contextlib.contextmanager
    def busy() -> Iterator[None]:
        log.append("enter")
        try:
            yield
        finally:
            log.append("leave")

    def relevant(path: Path) -> bool:
        filter_threads.add(threading.get_ident())
        log.append(f"filter {path.name}")
        return path.suffix == ".py"

    steps: list[Step] = [
        batch((Change.added, tmp_path / "a.py")),
        batch((Change.added, tmp_path / "x.log")),
        batch((Change.added, tmp_path / "b.py")),
        lambda: log.append("received b.py"),
        lambda: anyio.sleep(0.2),  # then quiet: nothing in hand once b.py is handled
        batch((Change.added, tmp_path / "c.py")),
    ]
    stop = anyio.Event()
    watching = watch_paths(
        lambda: {tmp_path},
        relevant,
        stop_event=stop,
        backend=ScriptedWatchBackend(steps),
        busy=busy,
    )
    async with watching as batches:
        assert await anext(batches) == {tmp_path / "a.py"}
        await anyio.sleep(0.05)  # handling a.py: the next two batches arrive meanwhile
        log.append("handled a.py")
        assert await anext(batches) == {tmp_path / "b.py"}  # x.log and b.py, merged
        log.append("handled b.py")
        assert await anext(batches) == {tmp_path / "c.py"}
        log.append("handled c.py")
    assert log.index("received b.py") < log.index("handled a.py")
    # One busy span from a.py's arrival until b.py is handled, a.py's hand-over included;
    # then quiet; then one span for c.py, left when the block ends.
    first, second = log.index("leave"), log.index("enter", 1)
    assert log[0] == "enter"
    assert log.index("handled b.py") < first < second < log.index("filter c.py")
    assert log[-2:] == ["handled c.py", "leave"]
    assert log.count("enter") == log.count("leave") == 2
    assert sorted(e for e in log[:first] if e.startswith("filter")) == [
        "filter a.py",
        "filter b.py",
        "filter x.log",
    ]
    assert loop_thread not in filter_threads  # the filter never blocks the event loop


async def test_a_batch_of_nothing_relevant_is_busy_while_it_is_filtered(tmp_path: Path) -> None:
    log: list[str] = []

    @contextlib.contextmanager
    def busy() -> Iterator[None]:
        log.append("enter")
        try:
            yield
        finally:
            log.append("leave")

    def relevant(path: Path) -> bool:
        log.append(f"filter {path.name}")
        return path.suffix == ".py"

    steps: list[Step] = [
        batch((Change.added, tmp_path / "x.log")),
        lambda: anyio.sleep(0.1),
        batch((Change.added, tmp_path / "a.py")),
    ]
    ignored: list[set[Path]] = []
    watching = watch_paths(
        lambda: {tmp_path},
        relevant,
        stop_event=anyio.Event(),
        backend=ScriptedWatchBackend(steps),
        busy=busy,
        on_ignored=ignored.append,
    )
    async with watching as batches:
        assert await anext(batches) == {tmp_path / "a.py"}
        log.append("handled a.py")
    assert log == [
        *("enter", "filter x.log", "leave"),
        *("enter", "filter a.py", "handled a.py", "leave"),
    ]
    assert ignored == [{tmp_path / "x.log"}]


@pytest.mark.parametrize(
    "make_flag",
    [
        pytest.param(threading.Event, id="resettable"),
        pytest.param(anyio.Event, id="one-shot"),
    ],
)
async def test_restart_watches_the_new_roots(
    tmp_path: Path, make_flag: Callable[[], threading.Event | anyio.Event]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    current = {first}
    restart = make_flag()

    def reload() -> None:
        current.clear()
        current.add(second)
        restart.set()

    backend = ScriptedWatchBackend(
        [batch((Change.modified, first / "a.py")), reload, batch((Change.added, second / "b.py"))]
    )
    got = await collect(lambda: set(current), backend, want=2, restart=restart)
    assert got == [{first / "a.py"}, {second / "b.py"}]
    assert backend.roots == [(first,), (second,)]
    assert restart.is_set() is isinstance(restart, anyio.Event)


async def test_missing_root_is_watched_through_its_parent_until_it_appears(
    tmp_path: Path,
) -> None:
    root = tmp_path / "later" / "src"
    backend = ScriptedWatchBackend(
        [
            lambda: root.mkdir(parents=True),
            batch((Change.added, tmp_path / "later")),
            lambda: anyio.sleep(0.05),  # the caller sees the root appear: the plan moves
            batch((Change.added, root / "main.py")),
        ]
    )
    got = await collect(lambda: {root}, backend, want=1)
    assert got == [{root / "main.py"}]
    assert backend.roots == [(tmp_path,), (root,)]


async def test_stop_ends_the_iteration_without_batches(tmp_path: Path) -> None:
    backend = ScriptedWatchBackend()
    with anyio.fail_after(2):
        got = await collect(lambda: {tmp_path}, backend, want=1, within=0.1)
    assert got == []
    assert backend.roots == [(tmp_path,)]


async def test_no_roots_waits_for_a_restart(tmp_path: Path) -> None:
    current: set[Path] = set()
    restart = threading.Event()
    backend = ScriptedWatchBackend([batch((Change.added, tmp_path / "a.py"))])

    async def add_root_later() -> None:
        await anyio.sleep(0.05)
        current.add(tmp_path)
        restart.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(add_root_later)
        got = await collect(lambda: set(current), backend, want=1, restart=restart)
    assert got == [{tmp_path / "a.py"}]
    assert backend.roots == [(tmp_path,)]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(["a", "a/b", "a/b/c"], ["a"], id="nested-collapse"),
        pytest.param(["a/missing/deeper"], ["a"], id="missing-uses-parent"),
        pytest.param(["a/file.txt"], ["a"], id="file-uses-folder"),
        pytest.param(["a", "ab"], ["a", "ab"], id="prefix-is-not-parent"),
    ],
)
def test_existing_roots(tmp_path: Path, given: list[str], expected: list[str]) -> None:
    (tmp_path / "a/b/c").mkdir(parents=True)
    (tmp_path / "ab").mkdir()
    (tmp_path / "a/file.txt").write_text("x")
    assert existing_roots(tmp_path / g for g in given) == {tmp_path / e for e in expected}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"a": False}, {"a": False}, id="shallow"),
        pytest.param({"a": True, "a/b": False}, {"a": True}, id="shallow-inside-recursive"),
        pytest.param({"a/b/gone": False, "a": True}, {"a": True}, id="missing-inside-recursive"),
        pytest.param({"a/b": True, "a": False}, {"a/b": True, "a": False}, id="shallow-ancestor"),
        pytest.param({"a/b/missing": False}, {"a/b": False}, id="missing-uses-parent"),
        pytest.param({"a/missing": True, "a": False}, {"a": True}, id="missing-recursive"),
        pytest.param({"a": False, "a/b": False}, {"a": False, "a/b": False}, id="shallow-nest"),
    ],
)
def test_watch_plan(tmp_path: Path, given: dict[str, bool], expected: dict[str, bool]) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    plan = watch_plan({tmp_path / g: deep for g, deep in given.items()})
    assert plan == {tmp_path / e: deep for e, deep in expected.items()}


def test_a_plain_set_of_roots_is_all_recursive(tmp_path: Path) -> None:
    assert watch_plan({tmp_path}) == {tmp_path: True}


async def test_shallow_roots_reach_the_backend_apart(tmp_path: Path) -> None:
    deep = tmp_path / "src"
    deep.mkdir()
    backend = ScriptedWatchBackend([batch((Change.modified, tmp_path / "a.py"))])
    got = await collect(lambda: {deep: True, tmp_path: False}, backend, want=1)
    assert got == [{tmp_path / "a.py"}]
    assert (backend.roots, backend.shallow) == ([(deep,)], [(tmp_path,)])


# -- with real inotify ------------------------------------------------------------------


async def _watch_real(
    src: Path | Roots, edit: Callable[[], object], *, within: float, want: int = 1
) -> list[set[Path]]:
    stop = anyio.Event()
    batches: list[set[Path]] = []
    roots = {src} if isinstance(src, Path) else src

    async def consume() -> None:
        watching = watch_paths(
            lambda: roots, _py_only, stop_event=stop, backend=WatchfilesBackend()
        )
        async with watching as found:
            async for paths in found:
                batches.append(paths)
                if len(batches) >= want:
                    stop.set()

    with anyio.fail_after(within + 3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.3)  # let the inotify watches settle
            edit()
            with anyio.move_on_after(within):
                await stop.wait()
            stop.set()
    return batches


async def test_real_backend_reports_an_edit_within_2s(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    main = src / "pkg/main.py"
    main.write_text("print(1)\n")
    got = await _watch_real(src, lambda: main.write_text("print(2)\n"), within=2.0)
    assert got
    assert main in got[0]


async def test_real_backend_ignores_irrelevant_and_outside_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()

    def edit() -> None:
        (src / "notes.txt").write_text("x")
        (outside / "other.py").write_text("x")

    assert await _watch_real(src, edit, within=1.0) == []


async def test_real_backend_shallow_root_sees_its_own_files_only(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    own, deeper = tmp_path / "own.py", tmp_path / "sub/deeper.py"

    def edit() -> None:
        deeper.write_text("x")
        own.write_text("x")

    got = await _watch_real({tmp_path: False}, edit, within=1.0, want=2)
    assert set().union(*got) == {own}


async def test_real_backend_merges_recursive_and_shallow_roots(tmp_path: Path) -> None:
    (tmp_path / "src/pkg").mkdir(parents=True)
    top, deep = tmp_path / "top.py", tmp_path / "src/pkg/deep.py"

    def edit() -> None:
        top.write_text("x")
        deep.write_text("x")

    roots = {tmp_path / "src": True, tmp_path: False}
    got = await _watch_real(roots, edit, within=2.0, want=2)
    assert set().union(*got) == {top, deep}


async def test_real_backend_feeds_the_tracker_one_move_per_atomic_save(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    main = src / "main.py"
    main.write_text("print(1)\n")
    image = Image.from_base("127.0.0.1:5000/base:1").with_source_folder(src).clone(name="app")
    tracker = ImageTracker(DigestCache())
    tracker.set_images({"app": image})
    stop = anyio.Event()
    changes: list[DigestChange] = []

    async def consume() -> None:
        watching = watch_paths(
            tracker.watch_roots, tracker.is_relevant, stop_event=stop, backend=WatchfilesBackend()
        )
        async with watching as found:
            async for paths in found:
                changes.extend(tracker.apply_changes(paths).values())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.3)
            tmp = src / ".main.py.tmp.77"
            tmp.write_text("print(2)\n")
            os.replace(tmp, main)
            await anyio.sleep(0.8)
            stop.set()
    assert len(changes) == 1
    assert changes[0].reasons[0].files == ("src/main.py",)
    assert tracker.digest_of("app").digest == hash_image(image, DigestCache()).digest


async def test_cancelled_while_handling_a_batch_closes_cleanly_with_mixed_roots(
    tmp_path: Path,
) -> None:
    """The daemon's pattern: the task that receives from the real backend lives in a task
    group of the consumer's own task (the ``async with`` block), so a cancel while the
    consumer handles a batch ends it there, promptly, and leaves no task behind."""
    import gc

    deep, shallow = tmp_path / "deep", tmp_path / "shallow"
    deep.mkdir()
    shallow.mkdir()
    stop = anyio.Event()
    first = anyio.Event()
    got: list[set[Path]] = []
    before = {task.id for task in anyio.get_running_tasks()}

    async def consume() -> None:
        watching = watch_paths(
            lambda: {deep: True, shallow: False},
            lambda _p: True,
            stop_event=stop,
            backend=WatchfilesBackend(),
            debounce_ms=50,
        )
        async with watching as batches:
            async for batch in batches:
                got.append(batch)
                first.set()
                await anyio.sleep(30)  # still handling it when the stop comes

    async def poke() -> None:
        await anyio.sleep(0.5)
        (deep / "x").write_text("1")

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(poke)
            with anyio.move_on_after(5):
                await first.wait()
            cancelled = time.monotonic()
            scope.cancel()
    assert time.monotonic() - cancelled < 0.5  # the backend's thread saw the close at once
    gc.collect()
    await anyio.sleep(0.2)
    assert got
    assert deep / "x" in got[0]
    assert {task.id for task in anyio.get_running_tasks()} == before
