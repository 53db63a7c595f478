"""The long-running core: load definitions, watch, rehash, schedule, build, push, report.

``Daemon.run`` has the phases of uvicorn's server: ``prepare`` (definition paths and the state
lock, before any task starts, so that failing there is one clear error), ``startup``
(definitions, first reconcile, READY=1), the main loop (watcher, scheduler, watchdog,
reconcile, status server) and ``shutdown`` (cancel builds within a bound, save state,
STOPPING=1). Hashing runs in a worker thread, one tracker call at a time; an unexpected
error while handling one event is an ``internal_error`` event, never the daemon's end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from imaged.config import Settings
from imaged.daemon.metrics import Metrics
from imaged.daemon.notify import SystemdNotifier
from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.daemon.store import ImageRecord, StateStore
from imaged.daemon.tracker import DigestChange, ImageTracker
from imaged.daemon.watcher import WatchBackend, watch_paths
from imaged.definitions.child import LoadedModule, discover_definition_files, load_module_in_child
from imaged.digest.cache import DigestCache
from imaged.errors import DefinitionError, ImagedError
from imaged.pipeline.build import abuild
from imaged.registry.client import Existence, RegistryClient
from imaged.spec.image import Image, ParentBase, override_registry

EventSink = Callable[[dict[str, Any]], None]
T = TypeVar("T")

log = logging.getLogger(__name__)


class QuietClock:
    """The scheduler's clock: monotonic time that stands still while the daemon has a batch
    of changes in hand (from its arrival at the watcher, through the relevance filter and the
    tracker's hashing, until it is handled) and while the tracker hashes, so a debounce counts
    quiet time only. Otherwise a build queued by one batch of a burst starts while the next
    batch is filtered or hashed, and that batch supersedes it at once (issue 11, item 7).
    Pauses may overlap (the watch loop and the reconcile loop): time stands still while any
    one is open."""

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


@dataclass
class ImageView:
    """What the terminal view, ``imaged status`` and the JSON events show per image."""

    name: str
    state: str = "unknown"  # up to date | queued | building | pushing | failed | unknown
    tag: str | None = None
    uri: str | None = None
    pushed_at: float | None = None
    why: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DaemonState:
    images: dict[str, ImageView] = field(default_factory=dict)
    modules: dict[str, str | None] = field(default_factory=dict)  # file -> last load error
    ready: bool = False
    started_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "started_at": self.started_at,
            "images": [v.to_json() for v in sorted(self.images.values(), key=lambda v: v.name)],
            "modules": self.modules,
        }


class Daemon:
    """Watches definitions and their inputs; rebuilds exactly the images whose digest moved."""

    def __init__(
        self,
        settings: Settings,
        targets: list[Path],
        *,
        on_event: EventSink | None = None,
        notifier: SystemdNotifier | None = None,
        backend: WatchBackend | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self._sinks: list[EventSink] = [on_event] if on_event else []
        self.notifier = notifier or SystemdNotifier.from_env()
        self.backend = backend
        self._reload_settings = reload_settings
        self.state = DaemonState()
        self.metrics = Metrics()
        self.store = StateStore(settings.resolved_state_dir)
        self.tracker = ImageTracker(DigestCache())  # prepare() loads the saved cache
        # One tracker call at a time, in a worker thread: the watch loop, the reconcile
        # loop and a reload may all want it, and the tracker is not thread-safe.
        self._tracker_lock = anyio.Lock()
        self._holds_state = False  # the state lock is ours and the state is loaded
        self._failed_sinks: set[int] = set()
        self.records: dict[str, ImageRecord] = {}
        self.modules: dict[Path, LoadedModule] = {}
        self.module_files: dict[Path, set[Path]] = {}  # files whose edit reloads the module
        self.images: dict[str, Image] = {}
        self._pending_reasons: dict[str, str] = {}
        self._change_times: dict[str, float] = {}
        self._roots_changed = threading.Event()
        self._reported_errors: dict[str, str] = {}
        self._last_ignored_event = -1.0
        self._stop = anyio.Event()
        self._clock = QuietClock()
        self.scheduler = Scheduler(
            self._build,
            self._scheduler_options(),
            parents=self._parents,
            on_event=self._scheduler_event,
            clock=self._clock,
        )
        self._client: RegistryClient | None = None
        self.status_address: str | None = None

    # -- events -------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def emit(self, event: str, image: str | None = None, **fields: Any) -> None:
        """Send one event to every sink; a sink that raises never reaches the caller."""
        payload = {"ts": round(time.time(), 3), "event": event, "image": image, **fields}
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
        if id(sink) in self._failed_sinks:
            return
        self._failed_sinks.add(id(sink))
        what = "stopped" if stopped else "raised; later failures are not reported"
        _say(f"imaged: an event sink {what}: {type(exc).__name__}: {exc}")

    def _internal_error(self, where: str, exc: Exception) -> None:
        """An unexpected error while handling one event: reported, and the daemon goes on."""
        frames = traceback.extract_tb(exc.__traceback__)
        at = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
        log.error("internal error in %s", where, exc_info=exc)
        self.metrics.events.inc("internal_error")
        self.emit("internal_error", None, where=where, error=f"{type(exc).__name__}: {exc}", at=at)

    async def _guarded(self, where: str, step: Callable[[], Awaitable[None]]) -> None:
        """The last line of defence: no bug in one event's handling stops the daemon."""
        try:
            await step()
        except Exception as exc:
            self._internal_error(where, exc)

    def _view(self, name: str) -> ImageView:
        return self.state.images.setdefault(name, ImageView(name))

    def _scheduler_event(self, event: dict[str, Any]) -> None:
        name = str(event["image"])
        view = self._view(name)
        kind = str(event["event"])
        view.state = {
            "queued": "queued",
            "building": "building",
            "failed": "failed",
            "retrying": "queued",
            "superseded": "queued",
        }.get(kind, view.state)
        if kind == "failed":
            view.error = str(event.get("error"))
            self.metrics.builds.inc("failed")
        fields = {k: v for k, v in event.items() if k not in ("event", "image")}
        self.emit(kind, name, **fields)
        self.metrics.queue_depth = self.scheduler.queue_depth

    # -- settings -----------------------------------------------------------------------

    def _scheduler_options(self) -> SchedulerOptions:
        s = self.settings
        return SchedulerOptions(
            debounce=s.debounce_ms / 1000,
            max_wait=s.max_wait_ms / 1000,
            concurrency=s.concurrency,
            per_image_debounce={name: ms / 1000 for name, ms in s.image_debounce_ms},
            supersede="queue" if s.supersede == "queue" else "cancel",
        )

    def _parents(self, name: str) -> tuple[str, ...]:
        image = self.images.get(name)
        if image is None or not isinstance(image.base, ParentBase):
            return ()
        parent = image.base.image.name
        return (parent,) if parent and parent in self.images else ()

    # -- definitions --------------------------------------------------------------------

    def definition_files(self) -> list[Path]:
        roots = [*self.targets, *(Path(p) for p in self.settings.definitions)]
        return discover_definition_files(roots, recursive=self.settings.recursive)

    async def load_module(self, path: Path) -> None:
        """(Re)load one definition module in a child; keep the last good one on failure."""
        try:
            loaded = await load_module_in_child(path, timeout=self.settings.load_timeout)
        except DefinitionError as exc:
            self.state.modules[str(path)] = str(exc)
            # Watch the file that broke too (a helper), so fixing it reloads the module.
            self.module_files.setdefault(path, set()).update({path, Path(exc.file)})
            self.emit("definition_error", None, file=exc.file, line=exc.line, error=str(exc))
            return
        self.state.modules[str(path)] = None
        self.modules[path] = loaded
        self.module_files[path] = {path, *loaded.imported_files}
        self.emit("definitions_loaded", None, file=str(path), images=sorted(loaded.images))

    async def load_all(self) -> None:
        try:
            files = self.definition_files()
        except DefinitionError as exc:
            # A definitions folder deleted under a running daemon: keep the last good ones.
            self.emit("definition_error", None, file=exc.file, line=exc.line, error=str(exc))
            return
        roots = self._roots()
        for gone in set(self.module_files) - set(files):
            self.modules.pop(gone, None)
            self.module_files.pop(gone, None)
            self.state.modules.pop(str(gone), None)
        async with anyio.create_task_group() as tg:
            for path in files:
                tg.start_soon(self.load_module, path)
        await self._refresh_images(roots_before=roots)

    def _merged_images(self) -> dict[str, Image]:
        """Every module's images; a name defined twice keeps the first module's, in path
        order, so the outcome never depends on which child finished loading first."""
        images: dict[str, Image] = {}
        owners: dict[str, Path] = {}
        for path in sorted(self.modules):
            for name, image in self.modules[path].images.items():
                if name in owners:
                    error = (
                        f"image name {name!r} is defined in both {owners[name]} and {path};"
                        f" the one in {owners[name]} is used"
                    )
                    self.emit("definition_error", name, file=str(path), line=None, error=error)
                    continue
                images[name] = override_registry(image, self.settings.registry)
                owners[name] = path
        return images

    async def _refresh_images(self, *, roots_before: dict[Path, bool] | None = None) -> None:
        images = self._merged_images()
        async with self._tracker_lock:
            roots = self._roots() if roots_before is None else roots_before
            for name in set(self.images) - set(images):
                self.scheduler.forget(name)
                self.state.images.pop(name, None)
            self.images = images
            changes = await self._in_tracker(self.tracker.set_images, images)
            if self._roots() != roots:
                # Restart watching only when needed: events during a restart are lost.
                self._roots_changed.set()
            self._apply_digest_changes(changes, initial=not self.state.ready)

    def _apply_digest_changes(
        self, changes: dict[str, DigestChange], *, initial: bool = False
    ) -> None:
        self._report_hash_errors()
        for change in changes.values():
            if change.image in self.images:
                self._digest_moved(change, initial=initial)

    def _report_hash_errors(self) -> None:
        """An image with an unreadable input shows as failed until the input is back."""
        errors = {name: str(exc) for name, exc in self.tracker.errors.items()}
        for name, error in errors.items():
            if self._reported_errors.get(name) != error:
                view = self._view(name)
                view.state, view.error = "failed", error
                self.emit("hash_error", name, error=error)
        for name in set(self._reported_errors) - set(errors):
            if name in self.images:
                self._view(name).error = None
                self.scheduler.request(name, "its inputs are readable again")
        self._reported_errors = errors

    def _definition_paths(self) -> set[Path]:
        return {p for files in self.module_files.values() for p in files}

    # -- changes ------------------------------------------------------------------------

    def _digest_moved(self, change: DigestChange, *, initial: bool = False) -> None:
        name = change.image
        view = self._view(name)
        view.tag = change.new_digest.removeprefix("sha256:")[:32]
        image = self.images[name]
        view.uri = image.uri_for(view.tag) if image.name else None
        if initial:
            return
        why = "; ".join(str(r) for r in change.reasons) or "digest moved"
        self._pending_reasons[name] = why
        self._change_times.setdefault(name, time.monotonic())
        self.emit("changed", name, tag=view.tag, why=why)
        self.scheduler.request(name, why)

    async def handle_paths(self, paths: set[Path]) -> None:
        """One batch of relevant changed paths from the watcher."""
        definitions = self._definition_paths()
        touched = {m for m, files in self.module_files.items() if files & paths}
        if touched:
            roots = self._roots()
            for path in sorted(touched):
                await self.load_module(path)
            await self._refresh_images(roots_before=roots)
        other = {p for p in paths if p not in definitions}
        if not other:
            return
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.apply_changes, other)
            if not changes:
                self.emit("nothing_to_do", None, paths=sorted(str(p) for p in other)[:10])
            self._apply_digest_changes(changes)

    async def reconcile_inputs(self) -> None:
        """Catch the edits the watcher missed: re-stat every input, rebuild what moved."""
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.reconcile)
            self._apply_digest_changes(changes)

    async def _in_tracker(self, call: Callable[..., T], *args: Any) -> T:
        """One tracker call in a worker thread, so hashing never blocks the event loop; the
        caller holds ``_tracker_lock``. Builds wait meanwhile (see QuietClock)."""
        with self._clock.paused():
            return await anyio.to_thread.run_sync(call, *args)

    # -- building -----------------------------------------------------------------------

    async def _build(self, name: str, reason: str) -> None:
        image = self.images[name]
        view = self._view(name)
        view.state, view.why, view.error = "building", reason, None
        started = time.monotonic()

        def on_engine_event(event: dict[str, Any]) -> None:
            if event.get("event") == "build_done" and view.state == "building":
                view.state = "pushing"
                self.emit("pushing", name)

        result = await abuild(
            image,
            settings=self.settings,
            registry_client=self._client,
            cache=self.tracker.cache,
            trees=self.tracker.lend_tree,  # kept current by events: the build walks nothing
            on_event=on_engine_event,
        )
        view.state, view.tag, view.uri = "up to date", result.tag, result.uri
        record = self.records.setdefault(name, ImageRecord(name=name))
        record.uri, record.tag = result.uri, result.tag
        record.manifest_digest = result.manifest_digest or record.manifest_digest
        record.layers = result.layers
        if not result.skipped:
            record.pushed_at = view.pushed_at = time.time()
            self.metrics.builds.inc("pushed" if result.pushed else "built")
            self.metrics.build_seconds.observe(result.timings.get("build", 0.0))
            self.metrics.push_seconds.observe(result.timings.get("push", 0.0))
        first_change = self._change_times.pop(name, None)
        if first_change is not None:
            self.metrics.save_to_pushed.observe(time.monotonic() - first_change)
        self.store.save(self.records)
        self.emit(
            "skipped" if result.skipped else result.status,
            name,
            uri=result.uri,
            manifest_digest=result.manifest_digest,
            why=reason,
            seconds=round(time.monotonic() - started, 3),
        )

    async def reconcile(self) -> None:
        """Ask the registry about every image; queue those whose tag is missing. An image
        without a registry builds only when its state record holds another tag."""
        async with self._tracker_lock:
            digests = self.tracker.digests()
            tags = {n: digests[n].tag for n in self.images if n in digests}
        for name, tag in tags.items():
            if not self.images[name].registry:
                self._reconcile_local(name, tag)
        if self._client is None:
            return
        refs = {self.images[n].uri_for(t): n for n, t in tags.items() if self.images[n].registry}
        results = await self._client.check_many(list(refs))
        for uri, outcome in results.items():
            name = refs[uri]
            if name not in self.images:
                continue  # gone in a reload while the registry answered
            view = self._view(name)
            if outcome is Existence.EXISTS:
                view.state = "up to date"
                record = self.records.get(name)
                if record is not None and record.uri == uri:
                    view.pushed_at = record.pushed_at
            elif outcome is Existence.MISSING:
                self.scheduler.request(name, "tag missing in the registry")
            else:
                view.state, view.error = "unknown", str(outcome)
                self.scheduler.request(name, f"registry did not answer: {outcome}")

    def _reconcile_local(self, name: str, tag: str) -> None:
        """No registry to ask: the state record is the only truth about what was built."""
        record = self.records.get(name)
        if record is None or record.tag != tag:
            self.scheduler.request(name, "no registry: local build")
            return
        view = self._view(name)
        view.state, view.pushed_at = "up to date", record.pushed_at

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Before any task starts: find the definition files and take the state lock, so a
        bad path or a second daemon on the same state is one clear error, and never writes
        over the state of the daemon that holds the lock."""
        self.definition_files()
        self.store.lock()
        self.records = self.store.load()
        self.tracker = ImageTracker(self.store.load_cache())
        self._holds_state = True

    async def startup(self) -> None:
        await self._guarded("load_all", self.load_all)
        await self._guarded("reconcile", self.reconcile)
        self.state.ready = True
        self.notifier.ready(self.status_line())
        self.emit("ready", None, images=len(self.images))

    def status_line(self) -> str:
        views = self.state.images.values()
        count: dict[str, int] = {}
        for v in views:
            count[v.state] = count.get(v.state, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(count.items()))
        return f"{len(self.images)} images: {parts}" if parts else f"{len(self.images)} images"

    async def _watch_loop(self) -> None:
        batches = watch_paths(
            self._roots,
            self._relevant,
            stop_event=self._stop,
            backend=self.backend,
            restart=self._roots_changed,
            on_ignored=self._ignored,
            busy=self._clock.paused,
        )
        # aclosing: a cancel inside handle_paths must close the generator (and the task group
        # the backend holds open) in this task, not later from the garbage collector.
        async with aclosing(batches):
            async for batch in batches:
                self.metrics.events.inc("batch")
                await self._guarded("handle_paths", partial(self.handle_paths, batch))

    def _ignored(self, paths: set[Path]) -> None:
        """Changes no image depends on (ignored by a rule, or unrelated): counted, and said
        once a second at most so a noisy folder cannot flood the event stream."""
        self.metrics.events.inc("ignored", len(paths))
        now = time.monotonic()
        if now - self._last_ignored_event >= 1.0:
            self._last_ignored_event = now
            self.emit("ignored", None, paths=sorted(str(p) for p in paths)[:10], count=len(paths))

    def _roots(self) -> dict[Path, bool]:
        """Each folder to watch and whether recursively (the tracker's flag wins)."""
        roots = dict.fromkeys({p.parent for p in self._definition_paths()}, False)
        roots.update(self.tracker.watch_roots())
        self.metrics.watched_paths = len(roots)
        return roots

    def _relevant(self, path: Path) -> bool:
        return path in self._definition_paths() or self.tracker.is_relevant(path)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _status_loop(self) -> None:
        while True:
            await anyio.sleep(5)
            self.notifier.status(self.status_line())

    async def _reconcile_loop(self) -> None:
        period = self.settings.reconcile_seconds
        if period <= 0:
            return
        while True:
            await anyio.sleep(period)
            await self._guarded("reconcile", self.reconcile_inputs)

    async def _signal_loop(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self._guarded("reload", self.reload)
                    continue
                self.emit("stopping", None, signal=signal.Signals(signum).name)
                self.notifier.stopping()
                self._stop.set()
                scope.cancel()
                return

    async def reload(self) -> None:
        """SIGHUP: re-read settings and definitions."""
        self.notifier.reloading()
        if self._reload_settings is not None:
            try:
                self.settings = self._reload_settings()
                self.scheduler.options = self._scheduler_options()
            except ImagedError as exc:
                self.emit("config_error", None, error=str(exc))
        await self.load_all()
        self.emit("reloaded", None, images=len(self.images))
        self.notifier.ready(self.status_line())

    async def run(self, *, handle_signals: bool = True) -> None:
        """startup, main loop until stopped, shutdown."""
        self.prepare()
        try:
            async with RegistryClient(insecure_hosts=self.settings.insecure_registries) as client:
                self._client = client
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self.scheduler.run)
                        await self.startup()
                        self._start_loops(tg, scope, handle_signals=handle_signals)
        finally:
            await self.shutdown()

    def _start_loops(
        self, tg: TaskGroup, scope: anyio.CancelScope, *, handle_signals: bool
    ) -> None:
        from imaged.daemon.server import serve_status

        tg.start_soon(self._watch_loop)
        tg.start_soon(self._watchdog_loop)
        tg.start_soon(self._status_loop)
        tg.start_soon(self._reconcile_loop)
        if self.settings.status_address:
            tg.start_soon(serve_status, self, self.settings.status_address)
        if handle_signals:
            tg.start_soon(self._signal_loop, scope)

    def stop(self) -> None:
        self._stop.set()
        scope = getattr(self, "_scope", None)
        if scope is not None:
            scope.cancel()

    async def shutdown(self) -> None:
        """Save the state and release the lock; nothing when the state was never ours."""
        if not self._holds_state:
            return
        # Plain blocking calls: nothing here can be cancelled half-way.
        self._holds_state = False
        try:
            self.store.save(self.records)
            self.tracker.cache.prune_missing()
            self.store.save_cache(self.tracker.cache)
        finally:
            self.store.unlock()
        self.emit("stopped", None, pid=os.getpid())


def _say(text: str) -> None:
    """One line on stderr for what no event can carry; a closed stderr is not an error."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
