"""The daemon in-process: a scripted watcher, a fake build and fake definition loads."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from bad_inputs import FIFO_REASON, fifo_ignore_file, hung_folder, hung_fuse_mount, hung_reason
from fakes import ScriptedWatchBackend, TimedWatchBackend
from test_events import assert_declared
from watchfiles import Change

from imaged.cli.watch import _json_line
from imaged.config import Settings
from imaged.daemon import tracker as tracker_module
from imaged.daemon.clock import QuietClock
from imaged.daemon.core import Daemon
from imaged.daemon.notify import SystemdNotifier
from imaged.daemon.store import ImageRecord, StateStore
from imaged.definitions.child import LoadedModule
from imaged.digest import cache as digest_cache
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.errors import ImagedError
from imaged.events import DAEMON_EVENTS
from imaged.pipeline.build import ImageBuild
from imaged.spec.image import Image

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

BASE = "127.0.0.1:5000/base:1"
SCRIPT = '# /// script\n# dependencies = ["httpx"]\n# ///\nprint("hi")\n'
BAD_HEADER = '# /// script\n# dependencies = ["httpx"\n# ///\nprint("hi")\n'
Event = dict[str, Any]
HUNG_TIMEOUT = 1.0  # hash_timeout under a hung folder: the good one walks well within it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@dataclass
class Harness:
    """Definition modules served by a fake loader, a fake build, and what the daemons said."""

    root: Path
    modules: dict[Path, dict[str, Image]] = field(default_factory=dict)
    load_delays: dict[Path, float] = field(default_factory=dict)
    builds: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    backend: ScriptedWatchBackend = field(default_factory=ScriptedWatchBackend)
    reconcile_seconds: float = 0.0
    debounce_ms: int = 0
    settle_ms: int = 25
    hash_timeout: float = 60.0

    def define(self, module: str, **images: Image) -> Path:
        path = write(self.root / "defs" / module, "import imaged\n").resolve()
        self.modules[path] = images
        return path

    def settings(self) -> Settings:
        return Settings(
            state_dir=self.root / "state",
            status_address=None,
            reconcile_seconds=self.reconcile_seconds,
            debounce_ms=self.debounce_ms,
            settle_ms=self.settle_ms,
            max_wait_ms=1000,
            concurrency=2,
            hash_timeout=self.hash_timeout,
        )

    def daemon(self, *targets: Path) -> Daemon:
        return Daemon(
            self.settings(),
            list(targets) or [self.root / "defs"],
            on_event=self.events.append,
            notifier=SystemdNotifier(None),
            backend=self.backend,
        )

    def edit(self, path: Path, text: str | None = None) -> None:
        """Change a file (or not: the caller did) and script the watcher's event for it."""
        if text is not None:
            write(path, text)
        self.backend.steps.append({(Change.modified, str(path))})

    def named(self, name: str, image: str | None = None) -> list[Event]:
        return [e for e in self.events if e["event"] == name and image in (None, e["image"])]

    async def wait_event(self, name: str, image: str | None = None, *, since: int = 0) -> Event:
        with anyio.move_on_after(5):
            while True:
                for event in self.events[since:]:
                    if event["event"] == name and image in (None, event["image"]):
                        return event
                await anyio.sleep(0.01)
        raise AssertionError(f"no {name} event for {image}: {self.events[since:]}")


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", "127.0.0.1:5000/python:{major}.{minor}")
    h = Harness(root=tmp_path)

    async def load(path: Path, *, timeout: float) -> LoadedModule:  # noqa: ASYNC109
        await anyio.sleep(h.load_delays.get(path, 0.0))
        return LoadedModule(path, dict(h.modules[path]), ())

    async def build(image: Image, *, cache: DigestCache, **_: Any) -> ImageBuild:
        h.builds.append(image.name)
        digest = hash_image(image, cache)
        uri = image.uri_for(digest.tag)
        return ImageBuild(image.name, uri, digest.tag, digest.digest, status="built")

    monkeypatch.setattr("imaged.daemon.modules.load_module_in_child", load)
    monkeypatch.setattr("imaged.daemon.builds.abuild", build)
    yield h
    assert_declared(h.events, DAEMON_EVENTS)  # every event a test saw is a documented kind


def source_image(root: Path, name: str = "api") -> Image:
    write(root / "src/app.py", "print('hi')\n")
    return Image.from_base(BASE).clone(name=name).with_source_folder(root / "src")


async def settle(daemon: Daemon) -> None:
    with anyio.fail_after(5):
        while not daemon.scheduler.idle():  # noqa: ASYNC110 - no event says "idle"
            await anyio.sleep(0.01)


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    """The daemon's run() in a task, from ready until the block ends."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(daemon.run, handle_signals=False))
        with anyio.fail_after(5):
            while not daemon.view.ready:  # noqa: ASYNC110 - no event says "ready"
                await anyio.sleep(0.01)
        await settle(daemon)
        yield daemon
        daemon.stop()


# -- 1: bad input never stops the daemon ------------------------------------------------------


Spoil = Callable[[Harness, pytest.MonkeyPatch], tuple[Path, Callable[[], None]]]


def _break_header(h: Harness, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable[[], None]]:
    return write(h.root / "jobs/job.py", BAD_HEADER), lambda: None


def _refuse_reads(h: Harness, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable[[], None]]:
    script = write(h.root / "jobs/job.py", SCRIPT + "# edited\n")
    real = digest_cache.read_digest

    def refuse(path: str, size_hint: int = 0) -> str:
        if path == str(script):  # root reads any file: chmod cannot make one unreadable
            raise PermissionError(13, "Permission denied", path)
        return real(path, size_hint)

    monkeypatch.setattr(digest_cache, "read_digest", refuse)
    return script, lambda: monkeypatch.setattr(digest_cache, "read_digest", real)


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [
        pytest.param(_break_header, "invalid TOML", id="bad-pep723-header"),
        pytest.param(_refuse_reads, "Permission denied", id="unreadable-file"),
    ],
)
async def test_an_input_gone_bad_is_a_hash_error_until_it_is_fixed(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    spoil: Spoil,
    fragment: str,
) -> None:
    script = write(harness.root / "jobs/job.py", SCRIPT)
    job = Image.from_uv_script(script, name="job", python_version=(3, 11))
    job = job.with_source_folder(harness.root / "jobs", "/jobs")
    harness.define("a.py", job=job, api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        assert sorted(harness.builds) == ["api", "job"]
        spoilt, restore = spoil(harness, monkeypatch)
        harness.edit(spoilt)
        error = await harness.wait_event("hash_error", "job")
        assert fragment in error["error"]
        assert daemon.view.images["job"].state == "failed"
        restore()
        mark = len(harness.events)
        harness.edit(script, SCRIPT + "# fixed\n")
        changed = await harness.wait_event("changed", "job", since=mark)
        assert "source_folder jobs/" in changed["why"]
        await harness.wait_event("built", "job", since=mark)
        assert daemon.view.images["job"].state == "up to date"
    assert harness.named("internal_error") == []


async def test_an_unexpected_error_is_an_internal_error_and_the_next_event_is_handled(
    harness: Harness,
) -> None:
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        real = daemon.inputs.tracker.apply_changes

        def broken_apply_changes(paths: object) -> object:
            raise RuntimeError("boom")

        daemon.inputs.tracker.apply_changes = broken_apply_changes  # type: ignore[method-assign]
        harness.edit(harness.root / "src/app.py", "print('one')\n")
        error = await harness.wait_event("internal_error")
        assert error["where"] == "handle_paths"
        assert error["error"] == "RuntimeError: boom"
        assert "test_daemon.py" in error["at"]
        assert error["at"].endswith("in broken_apply_changes")

        daemon.inputs.tracker.apply_changes = real  # type: ignore[method-assign]
        mark = len(harness.events)
        harness.edit(harness.root / "src/app.py", "print('two')\n")
        await harness.wait_event("built", "api", since=mark)
    assert harness.builds == ["api", "api"]


@pytest.mark.timeout(15)  # a blocking read of the FIFO would hang the startup
async def test_a_fifo_ignore_file_fails_its_image_only_and_the_daemon_starts(
    harness: Harness,
) -> None:
    bad = source_image(harness.root, "bad")
    fifo = fifo_ignore_file(harness.root / "src")
    write(harness.root / "other/app.py", "print('other')\n")
    good = Image.from_base(BASE).clone(name="good").with_source_folder(harness.root / "other")
    harness.define("a.py", bad=bad, good=good)
    async with running(harness.daemon()) as daemon:
        assert harness.named("ready")
        assert harness.builds == ["good"]
        error = await harness.wait_event("hash_error", "bad")
        assert error["error"] == f"image 'bad', layer #1 source_folder src/: {fifo}: {FIFO_REASON}"
        assert daemon.view.images["bad"].state == "failed"
        assert daemon.view.images["good"].state == "up to date"
        fifo.unlink()
        mark = len(harness.events)
        harness.edit(fifo, "*.log\n")
        await harness.wait_event("built", "bad", since=mark)
    assert harness.named("internal_error") == []


@pytest.mark.timeout(15)  # an unbounded first walk would hang the startup
async def test_a_hung_folder_fails_its_image_only_and_it_recovers_when_the_mount_is_back(
    harness: Harness,
) -> None:
    harness.hash_timeout = HUNG_TIMEOUT
    src = harness.root / "src"
    bad = source_image(harness.root, "bad")
    write(harness.root / "other/app.py", "print('other')\n")
    good = Image.from_base(BASE).clone(name="good").with_source_folder(harness.root / "other")
    harness.define("a.py", bad=bad, good=good)
    with hung_folder(src) as release:
        async with running(harness.daemon()) as daemon:
            assert harness.named("ready")
            assert harness.builds == ["good"]
            error = await harness.wait_event("hash_error", "bad")
            assert error["error"] == (
                f"image 'bad', layer #1 source_folder src/: hashing {src} {hung_reason(HUNG_TIMEOUT)}"
            )
            status = {row["name"]: row["state"] for row in daemon.snapshot()["images"]}
            assert status == {"bad": "failed", "good": "up to date"}
            mark = len(harness.events)
            release.set()  # the mount is back: the walk ends and the image is built
            await harness.wait_event("built", "bad", since=mark)
            assert daemon.view.images["bad"].state == "up to date"
            assert daemon.view.images["bad"].error is None
    assert harness.builds == ["good", "bad"]
    assert harness.named("internal_error") == []


@pytest.mark.timeout(20)
async def test_a_real_hung_fuse_mount_fails_its_image_only_and_it_recovers_once_gone(
    harness: Harness,
) -> None:
    """No patch: ``src/mnt`` is a FUSE mount whose server never answers. Aborted, what
    was stuck fails (ENOTCONN) and is reported; unmounted, the next event heals the image."""
    harness.hash_timeout = HUNG_TIMEOUT
    src = harness.root / "src"
    bad = source_image(harness.root, "bad")
    write(harness.root / "other/app.py", "print('other')\n")
    good = Image.from_base(BASE).clone(name="good").with_source_folder(harness.root / "other")
    harness.define("a.py", bad=bad, good=good)
    with ExitStack() as stack:
        try:
            unmount = stack.enter_context(hung_fuse_mount(src / "mnt"))
        except OSError as exc:
            pytest.skip(f"cannot mount FUSE here (root and /dev/fuse needed): {exc}")
        async with running(harness.daemon()) as daemon:
            assert harness.builds == ["good"]
            error = await harness.wait_event("hash_error", "bad")
            assert error["error"].endswith(f"hashing {src} {hung_reason(HUNG_TIMEOUT)}")
            assert daemon.view.images["good"].state == "up to date"
            mark = len(harness.events)
            unmount()
            error = await harness.wait_event("hash_error", "bad", since=mark)
            assert "Transport endpoint is not connected" in error["error"]
            mark = len(harness.events)
            harness.edit(src / "app.py", "print('back')\n")
            await harness.wait_event("built", "bad", since=mark)
            assert daemon.view.images["bad"].state == "up to date"
    assert harness.named("internal_error") == []


async def test_an_unexpected_hashing_error_of_one_image_spares_the_first_registry_check(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tracker_module.hash_image

    def hash_or_fail(image: Image, *args: Any, **kwargs: Any) -> Any:
        if image.name == "bad":
            raise RuntimeError("boom")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(tracker_module, "hash_image", hash_or_fail)
    write(harness.root / "other/app.py", "print('other')\n")
    good = Image.from_base(BASE).clone(name="good").with_source_folder(harness.root / "other")
    harness.define("a.py", bad=source_image(harness.root, "bad"), good=good)
    async with running(harness.daemon()) as daemon:
        assert harness.builds == ["good"]
        error = await harness.wait_event("hash_error", "bad")
        assert error["error"] == "image 'bad': unexpected error while hashing: RuntimeError: boom"
        assert daemon.view.images["bad"].state == "failed"
    assert harness.named("internal_error") == []


async def test_reload_with_the_definitions_folder_gone_keeps_the_last_good_images(
    harness: Harness,
) -> None:
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        (harness.root / "defs/a.py").unlink()
        (harness.root / "defs").rmdir()
        await daemon.reload()
        error = await harness.wait_event("definition_error")
        assert "definition file or folder not found" in error["error"]
        assert list(daemon.inputs.images) == ["api"]
        assert harness.named("reloaded")[-1]["images"] == 1


async def test_a_definition_edit_that_keeps_the_roots_does_not_restart_the_watcher(
    harness: Harness,
) -> None:
    """Events during a restart are lost: an edit saved just after a reload must still count."""
    api = source_image(harness.root)
    defs = harness.define("a.py", api=api)
    async with running(harness.daemon()):
        assert len(harness.backend.roots) == 1
        harness.modules[defs] = {"api": api.with_env_vars({"MODE": "new"})}
        mark = len(harness.events)
        harness.edit(defs)
        await harness.wait_event("built", "api", since=mark)
        assert len(harness.backend.roots) == 1


# -- 2: a second daemon on the same state dir --------------------------------------------------


async def test_a_second_daemon_on_held_state_fails_cleanly_and_wipes_nothing(
    harness: Harness,
) -> None:
    harness.define("a.py", api=source_image(harness.root))
    first = harness.daemon()
    async with running(first):
        saved = first.builds.store.state_path.read_text()
        assert set(json.loads(saved)["images"]) == {"api"}
        second = harness.daemon()
        with pytest.raises(ImagedError, match=rf"in use by pid {os.getpid()}$"):
            await second.run(handle_signals=False)
        assert first.builds.store.state_path.read_text() == saved
    assert set(StateStore(first.builds.store.directory).load()) == {"api"}
    assert len(harness.named("stopped")) == 1


async def test_shutdown_of_a_daemon_that_never_started_writes_nothing(
    harness: Harness,
) -> None:
    daemon = harness.daemon(harness.define("a.py"))
    await daemon.shutdown()
    assert not (harness.root / "state").exists()
    assert harness.events == []


async def test_a_missing_definition_path_fails_before_anything_starts(harness: Harness) -> None:
    daemon = harness.daemon(harness.root / "nowhere.py")
    with pytest.raises(ImagedError, match=r"nowhere\.py: definition file or folder not found"):
        await daemon.run(handle_signals=False)
    assert not (harness.root / "state").exists()


# -- 3: the periodic stat sweep -------------------------------------------------------------------


async def test_the_stat_sweep_finds_an_edit_the_watcher_missed(harness: Harness) -> None:
    harness.reconcile_seconds = 0.05
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()):
        mark = len(harness.events)
        write(harness.root / "src/pkg/new.py", "X = 1\n")  # no event scripted
        changed = await harness.wait_event("changed", "api", since=mark)
        assert "src/pkg/new.py" in changed["why"]
        await harness.wait_event("built", "api", since=mark)
    assert harness.builds == ["api", "api"]


# -- 4: hashing off the event loop, one tracker call at a time ---------------------------------


async def test_tracker_calls_run_in_a_worker_thread_one_at_a_time(harness: Harness) -> None:
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        loop_thread = threading.get_ident()
        calls: list[tuple[int, int]] = []  # (thread, calls running at once)
        running_now = [0]

        def slow(real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                running_now[0] += 1
                calls.append((threading.get_ident(), running_now[0]))
                time.sleep(0.2)
                running_now[0] -= 1
                return real(*args)

            return call

        tracker = daemon.inputs.tracker
        tracker.apply_changes = slow(tracker.apply_changes)  # type: ignore[method-assign]
        tracker.restat = slow(tracker.restat)  # type: ignore[method-assign]
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0.01)

        write(harness.root / "src/app.py", "print('edited')\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            async with anyio.create_task_group() as work:
                work.start_soon(daemon.inputs.handle_paths, {harness.root / "src/app.py"})
                work.start_soon(daemon.inputs.restat)
            tg.cancel_scope.cancel()
        assert len(calls) == 2
        assert all(thread != loop_thread for thread, _ in calls)
        assert max(at_once for _, at_once in calls) == 1
        assert ticks >= 20  # the loop ran on while 0.4 s of hashing went on
        await settle(daemon)
    assert harness.builds == ["api", "api"]


async def test_a_build_waits_while_the_next_batch_of_a_burst_is_hashed(harness: Harness) -> None:
    harness.debounce_ms = 50
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        real = daemon.inputs.tracker.apply_changes
        calls = 0

        def second_is_slow(paths: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                time.sleep(0.3)  # longer than the debounce: the first batch's build is due
            return real(paths)

        daemon.inputs.tracker.apply_changes = second_is_slow  # type: ignore[method-assign]
        mark = len(harness.events)
        harness.edit(harness.root / "src/one.py", "ONE = 1\n")
        harness.edit(harness.root / "src/two.py", "TWO = 2\n")
        await harness.wait_event("built", "api", since=mark)
        await settle(daemon)
        assert calls == 2
        assert "src/two.py" in harness.named("building", "api")[-1]["reason"]
    assert harness.builds == ["api", "api"]


async def test_a_burst_whose_next_batch_is_filtered_past_the_quiet_period_builds_once(
    harness: Harness,
) -> None:
    # Issue 11, item 7: the relevance filter runs on the event loop, and for a batch of
    # 2,000 paths it takes longer than the quiet period. That time is not quiet: the next
    # batch of the burst is in hand, and the first batch's build must not start meanwhile.
    harness.debounce_ms = 50
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        real = daemon.inputs.tracker.is_relevant
        second = harness.root / "src/two.py"

        def slow_for_the_second(path: Any) -> bool:
            if Path(path) == second:
                time.sleep(0.2)  # four quiet periods, as 2,000 paths take on a busy machine
            return real(path)

        daemon.inputs.tracker.is_relevant = slow_for_the_second  # type: ignore[method-assign]
        mark = len(harness.events)
        harness.edit(harness.root / "src/one.py", "ONE = 1\n")
        harness.edit(second, "TWO = 2\n")
        await harness.wait_event("built", "api", since=mark)
        await settle(daemon)
        kinds = [e["event"] for e in harness.events[mark:] if e["image"] == "api"]
        assert kinds == ["changed", "queued", "changed", "building", "built"]
        assert "src/two.py" in harness.named("building", "api")[-1]["reason"]
    assert harness.builds == ["api", "api"]


async def test_a_burst_whose_writer_pauses_for_less_than_the_quiet_period_builds_once(
    harness: Harness,
) -> None:
    # Issue 11, item 7: the writer of a burst stalls for 150 ms, shorter than the 200 ms
    # quiet period. The backend batches raw events in time as watchfiles does; the quiet
    # period counts from the last raw event, and the backend's batching is not quiet.
    harness.debounce_ms = 200
    harness.define("a.py", api=source_image(harness.root))
    backend = TimedWatchBackend()
    started: list[float] = []

    def sink(event: Event) -> None:
        harness.events.append(event)
        if event["event"] == "building":
            started.append(time.monotonic())

    daemon = Daemon(
        harness.settings(),
        [harness.root / "defs"],
        on_event=sink,
        notifier=SystemdNotifier(None),
        backend=backend,
    )

    async def writes(first: int, count: int) -> float:
        """Emit ``count`` raw events 5 ms apart; the time of the last one."""
        for i in range(first, first + count):
            if i > first:
                await anyio.sleep(0.005)
            path = write(harness.root / f"src/burst/f{i:03d}.py", f"N = {i}\n")
            backend.emit(Change.added, path)
        return time.monotonic()  # right after the last emit: no trailing sleep

    async with running(daemon):
        mark = len(harness.events)
        stalled = await writes(0, 30)
        await anyio.sleep(0.15)
        resumed = time.monotonic()
        last = await writes(30, 30)
        await harness.wait_event("built", "api", since=mark)
        await anyio.sleep(0.4)  # a second build would have started by now
        await settle(daemon)
    assert resumed - stalled < 0.2, "the writer stalled longer than the quiet period"
    assert len(backend.delivered) >= 3  # the burst reached the daemon in several batches
    kinds = [e["event"] for e in harness.events[mark:] if e["image"] == "api"]
    assert kinds.count("building") == 1, kinds
    assert "superseded" not in kinds
    assert started[-1] - last >= 0.2  # a whole quiet period after the last raw event
    assert harness.builds == ["api", "api"]


@pytest.mark.parametrize(
    ("gap", "temp"),
    [
        pytest.param(0.0, ".app.py.swp", id="one-batch"),
        pytest.param(0.1, ".app.py.swp", id="rename-after-settle-vim-swap"),
        pytest.param(0.1, ".app.py.tmp-83a1", id="rename-after-settle-atomic-writer"),
        pytest.param(0.1, "app.py___jb_tmp___", id="rename-after-settle-jetbrains"),
    ],
)
async def test_an_editors_save_through_a_temp_file_and_a_rename_builds_once(
    harness: Harness, gap: float, temp: str
) -> None:
    # The defaults: a save builds settle_ms after its last event. A rename that comes
    # later than that (a slow fsync) still makes one build: the temp file's name says the
    # save is under way, and the change waits debounce_ms.
    harness.debounce_ms = 200
    image = source_image(harness.root)
    harness.define("a.py", api=image)
    backend = TimedWatchBackend()
    daemon = Daemon(
        harness.settings(),
        [harness.root / "defs"],
        on_event=harness.events.append,
        notifier=SystemdNotifier(None),
        backend=backend,
    )
    main, tmp = harness.root / "src/app.py", harness.root / "src" / temp
    async with running(daemon):
        await quiet_spell(daemon)
        mark = len(harness.events)
        write(tmp, "print('saved')\n")
        backend.emit(Change.added, tmp)
        await anyio.sleep(gap)  # the editor's rename comes in the same batch, or the next
        os.replace(tmp, main)
        backend.emit(Change.deleted, tmp)
        backend.emit(Change.added, main)
        await harness.wait_event("built", "api", since=mark)
        await anyio.sleep(0.4)  # a second build would have started by now
        await settle(daemon)
    kinds = [e["event"] for e in harness.events[mark:] if e["image"] == "api"]
    assert kinds.count("building") == 1, kinds
    assert len(backend.delivered) == (1 if gap == 0 else 2)
    assert harness.builds == ["api", "api"]


async def test_the_watch_step_setting_reaches_the_watcher(harness: Harness) -> None:
    harness.define("a.py", api=source_image(harness.root))
    daemon = harness.daemon()
    daemon.settings = replace(daemon.settings, watch_step_ms=7)
    async with running(daemon):
        with anyio.fail_after(5):
            while not harness.backend.timings:  # noqa: ASYNC110 - no event says "watching"
                await anyio.sleep(0.01)
    assert harness.backend.timings[-1] == (14, 7)


async def quiet_spell(daemon: Daemon) -> None:
    """Wait past debounce_ms since the daemon's last build request (its startup's): the
    next change is the first after a quiet spell."""
    await anyio.sleep(daemon.settings.debounce_ms / 1000 + 0.05)


async def test_a_lone_write_builds_after_settle_and_a_burst_after_it_once_more(
    harness: Harness,
) -> None:
    # One write, a pause longer than settle_ms, then a burst: the lone write cannot be told
    # from a save, so it builds on its own; the burst that follows within debounce_ms waits
    # for its end and builds once. Two builds, the last of the final content.
    harness.debounce_ms = 200
    harness.define("a.py", api=source_image(harness.root))
    backend = TimedWatchBackend()
    daemon = Daemon(
        harness.settings(),
        [harness.root / "defs"],
        on_event=harness.events.append,
        notifier=SystemdNotifier(None),
        backend=backend,
    )
    async with running(daemon):
        await quiet_spell(daemon)
        mark = len(harness.events)
        backend.emit(Change.added, write(harness.root / "src/lone.py", "N = 0\n"))
        await harness.wait_event("built", "api", since=mark)
        burst = len(harness.events)
        for i in range(20):
            await anyio.sleep(0.005)
            backend.emit(Change.added, write(harness.root / f"src/b{i:02d}.py", f"N = {i}\n"))
        await harness.wait_event("built", "api", since=burst)
        await anyio.sleep(0.4)  # a third build would have started by now
        await settle(daemon)
    kinds = [e["event"] for e in harness.events[mark:] if e["image"] == "api"]
    assert kinds.count("building") == 2, kinds
    assert "superseded" not in kinds
    assert "src/b19.py" in harness.named("building", "api")[-1]["reason"]
    assert harness.builds == ["api", "api", "api"]


def test_the_quiet_clock_stands_still_while_any_of_overlapping_pauses_is_open() -> None:
    clock = QuietClock()
    first, second = clock.paused(), clock.paused()
    first.__enter__()
    frozen = clock()
    second.__enter__()
    first.__exit__(None, None, None)  # the watch loop is done; the stat sweep still hashes
    time.sleep(0.05)
    assert clock() == frozen
    second.__exit__(None, None, None)
    time.sleep(0.05)
    assert clock() >= frozen + 0.04


# -- 5: a restart with nothing changed builds nothing --------------------------------------------


async def test_a_restart_builds_a_local_image_only_when_its_tag_moved(harness: Harness) -> None:
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()):
        pass
    assert harness.builds == ["api"]
    async with running(harness.daemon()) as daemon:
        assert daemon.view.images["api"].state == "up to date"
    assert harness.builds == ["api"]
    write(harness.root / "src/app.py", "print('changed while stopped')\n")
    async with running(harness.daemon()):
        pass
    assert harness.builds == ["api", "api"]
    building = harness.named("building", "api")[-1]
    assert building["reason"] == "no registry: local build"


async def test_a_record_with_another_tag_is_rebuilt(harness: Harness) -> None:
    harness.define("a.py", api=source_image(harness.root))
    store = StateStore(harness.root / "state")
    store.save({"api": ImageRecord("api", uri="api:old", tag="0" * 32)})
    async with running(harness.daemon()):
        pass
    assert harness.builds == ["api"]


# -- 6: one image name in two modules --------------------------------------------------------------


async def test_a_name_defined_twice_keeps_the_first_module_in_path_order(
    harness: Harness,
) -> None:
    first = source_image(harness.root).with_env_vars({"FROM": "a"})
    second = source_image(harness.root).with_env_vars({"FROM": "b"})
    a = harness.define("a.py", api=first)
    b = harness.define("b.py", api=second)
    harness.load_delays[a] = 0.2  # b.py finishes loading first
    async with running(harness.daemon()) as daemon:
        assert daemon.inputs.images["api"] == first
    error = harness.named("definition_error", "api")[0]
    assert error["file"] == str(b)
    assert str(a) in error["error"]
    assert str(b) in error["error"]


# -- 7: a sink that raises ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kept", "said"),
    [
        pytest.param(BrokenPipeError(32, "Broken pipe"), False, "stopped", id="broken-pipe"),
        pytest.param(ValueError("bad sink"), True, "raised", id="raising-sink"),
    ],
)
async def test_a_failing_sink_never_stops_the_daemon(
    harness: Harness,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    kept: bool,
    said: str,
) -> None:
    harness.define("a.py", api=source_image(harness.root))
    daemon = harness.daemon()
    calls = 0

    def failing(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise error

    daemon.add_sink(failing)
    async with running(daemon):
        harness.edit(harness.root / "src/app.py", "print('edited')\n")
        await harness.wait_event("built", "api", since=len(harness.events))
    assert harness.builds == ["api", "api"]
    assert calls == (len(harness.events) if kept else 1)
    lines = [line for line in capsys.readouterr().err.splitlines() if "event sink" in line]
    assert lines == [f"imaged: an event sink {said}{lines[0].split(said, 1)[1]}"]
    assert type(error).__name__ in lines[0]


def test_the_json_sink_on_a_closed_pipe_points_stdout_at_devnull(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        with pytest.raises(BrokenPipeError):
            _json_line({"event": "ready"})
        _json_line({"event": "stopped"})  # the exit flush must not fail again
    finally:
        stream.close()


# -- the registry check and a reload ---------------------------------------------------------------


async def test_a_reload_while_the_registry_check_awaits_raises_no_key_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tags are taken under the tracker lock; a reload that drops an image right after
    (before the check reads the images) must not leave a tag without its image."""
    harness.define("a.py", api=source_image(harness.root))
    async with running(harness.daemon()) as daemon:
        taken = daemon.inputs.current_tags

        async def then_reload() -> Any:
            snapshot = await taken()
            daemon.inputs.images = {}  # a reload that removed every image, as _refresh_images
            return snapshot

        monkeypatch.setattr(daemon.inputs, "current_tags", then_reload)
        await daemon.check_registry()  # a KeyError here is the daemon's internal_error
        assert daemon.view.images["api"].state == "up to date"
