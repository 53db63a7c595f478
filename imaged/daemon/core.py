"""The daemon's process: lifecycle, loops and signals, and what each loop's event does.

The parts it composes each live beside it: ``views`` (what is shown, kept by a reducer over
the events), ``bus`` (the sinks), ``modules`` (the definition modules), ``tracker`` (the
digests), ``scheduler`` (when to build), ``builds`` (building, registry checks, records) and
``server`` (the status endpoint, which reads the daemon as a ``StatusSource``).

``Daemon.run`` has the phases of uvicorn's server: ``prepare`` (definition paths and the state
lock, before any task starts, so that failing there is one clear error), ``startup``
(definitions, first reconcile, READY=1), the main loop (watcher, scheduler, watchdog,
reconcile, status server) and ``shutdown`` (cancel builds within a bound, save state,
STOPPING=1). Hashing runs in a worker thread, one tracker call at a time (the first walk of
a folder in a thread of its own, bounded by ``hash_timeout``); an unexpected
error while handling one event is an ``internal_error`` event, never the daemon's end.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from imaged.config import Settings
from imaged.daemon.builds import Builds
from imaged.daemon.bus import EventBus
from imaged.daemon.clock import QuietClock
from imaged.daemon.metrics import Metrics
from imaged.daemon.modules import DefinitionModules, find_definition_files
from imaged.daemon.notify import SystemdNotifier
from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.daemon.server import serve_status
from imaged.daemon.store import StateStore
from imaged.daemon.tracker import DigestChange, ImageTracker
from imaged.daemon.views import DaemonView
from imaged.daemon.watcher import WatchBackend, watch_paths
from imaged.digest.cache import DigestCache
from imaged.errors import DefinitionError, ImagedError
from imaged.events import (
    DAEMON_EVENTS,
    Changed,
    ConfigErrorEvent,
    DefinitionErrorEvent,
    Event,
    EventSink,
    Failed,
    HashError,
    Ignored,
    InternalError,
    NothingToDo,
    Ready,
    Reloaded,
    Stopped,
    Stopping,
    parse,
)
from imaged.registry.client import create_registry_client
from imaged.spec.image import Image, ParentBase

T = TypeVar("T")

log = logging.getLogger(__name__)


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
        self.bus = EventBus(*([on_event] if on_event else []))
        self.notifier = notifier or SystemdNotifier.from_env()
        self.backend = backend
        self._reload_settings = reload_settings
        self.view = DaemonView()
        self.metrics = Metrics()
        self.definitions = DefinitionModules(self.view, self.emit)
        self.builds = Builds(
            StateStore(settings.resolved_state_dir), self.view, self.metrics, self.emit
        )
        self.tracker = ImageTracker(DigestCache(), hash_timeout=settings.hash_timeout)
        # One tracker call at a time, in a worker thread: the watch loop, the reconcile
        # loop and a reload may all want it, and the tracker is not thread-safe.
        self._tracker_lock = anyio.Lock()
        self._holds_state = False  # the state lock is ours and the state is loaded
        self.images: dict[str, Image] = {}
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

    # -- events -------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        self.bus.add(sink)

    def emit(self, event: Event) -> None:
        """Apply one event to the views, then send it to every sink."""
        self.view.apply(event)
        self.bus.publish(event)

    def _internal_error(self, where: str, exc: Exception) -> None:
        """An unexpected error while handling one event: reported, and the daemon goes on."""
        frames = traceback.extract_tb(exc.__traceback__)
        at = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
        log.error("internal error in %s", where, exc_info=exc)
        self.metrics.events.inc("internal_error")
        self.emit(InternalError(where=where, error=f"{type(exc).__name__}: {exc}", at=at))

    async def _guarded(self, where: str, step: Callable[[], Awaitable[None]]) -> None:
        """The last line of defence: no bug in one event's handling stops the daemon."""
        try:
            await step()
        except Exception as exc:
            self._internal_error(where, exc)

    def _scheduler_event(self, data: dict[str, Any]) -> None:
        # The scheduler's sink gets JSON, as every sink does; parse gives the record back
        # (and fails loudly on a kind that events.py does not declare).
        event = parse(data, DAEMON_EVENTS)
        if isinstance(event, Failed):
            self.metrics.builds.inc("failed")
        self.emit(event)
        self.metrics.queue_depth = self.scheduler.queue_depth

    # -- status (StatusSource) ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return self.view.to_json()

    def is_ready(self) -> bool:
        return self.view.ready

    def render_metrics(self) -> str:
        self.metrics.queue_depth = self.scheduler.queue_depth
        return self.metrics.render()

    def status_line(self) -> str:
        return self.view.status_line(len(self.images))

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
        s = self.settings
        return find_definition_files(self.targets, s.definitions, recursive=s.recursive)

    async def load_all(self) -> None:
        try:
            files = self.definition_files()
        except DefinitionError as exc:
            # A definitions folder deleted under a running daemon: keep the last good ones.
            self.emit(DefinitionErrorEvent(file=exc.file, line=exc.line, error=str(exc)))
            return
        roots = self._roots()
        self.definitions.forget_except(files)
        await self.definitions.load_many(files, load_timeout=self.settings.load_timeout)
        await self._refresh_images(roots_before=roots)

    async def _refresh_images(self, *, roots_before: dict[Path, bool] | None = None) -> None:
        images = self.definitions.merged_images(self.settings.registry)
        async with self._tracker_lock:
            roots = self._roots() if roots_before is None else roots_before
            for name in set(self.images) - set(images):
                self.scheduler.forget(name)
                self.view.images.pop(name, None)
            self.images = images
            changes = await self._in_tracker(self.tracker.set_images, images)
            if self._roots() != roots:
                # Restart watching only when needed: events during a restart are lost.
                self._roots_changed.set()
            self._apply_digest_changes(changes, initial=not self.view.ready)

    # -- changes ------------------------------------------------------------------------

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
                self.emit(HashError(image=name, error=error))
        for name in set(self._reported_errors) - set(errors):
            if name in self.images:
                self.view.image(name).error = None
                self.scheduler.request(name, "its inputs are readable again")
        self._reported_errors = errors

    def _digest_moved(self, change: DigestChange, *, initial: bool = False) -> None:
        name = change.image
        tag = change.new_digest.removeprefix("sha256:")[:32]
        image = self.images[name]
        self.view.known_digest(name, tag, image.uri_for(tag) if image.name else None)
        if initial:
            return
        why = "; ".join(str(r) for r in change.reasons) or "digest moved"
        self.builds.changed(name)
        self.emit(Changed(image=name, tag=tag, why=why))
        self.scheduler.request(name, why)

    async def handle_paths(self, paths: set[Path]) -> None:
        """One batch of relevant changed paths from the watcher."""
        definitions = self.definitions.paths()
        touched = self.definitions.touched_by(paths)
        if touched:
            roots = self._roots()
            for path in sorted(touched):
                await self.definitions.load(path, load_timeout=self.settings.load_timeout)
            await self._refresh_images(roots_before=roots)
        other = {p for p in paths if p not in definitions}
        if not other:
            return
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.apply_changes, other)
            if not changes:
                self.emit(NothingToDo(paths=sorted(str(p) for p in other)[:10]))
            self._apply_digest_changes(changes)

    async def reconcile_inputs(self) -> None:
        """Catch the edits the watcher missed: re-stat every input, rebuild what moved."""
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.reconcile)
            self._apply_digest_changes(changes)

    async def _late_walks_loop(self) -> None:
        """A first walk that ran out of time (a hung mount) and has ended since: adopt it,
        so its images recover without waiting for an edit or the reconcile pass."""
        while True:
            await anyio.sleep(0.5)
            if self.tracker.late_walks():
                await self._guarded("collect_walks", self._collect_late_walks)

    async def _collect_late_walks(self) -> None:
        async with self._tracker_lock:
            roots = self._roots()
            changes = await self._in_tracker(self.tracker.collect_walks)
            if self._roots() != roots:  # a code bundle's walk found the .gitignore to watch
                self._roots_changed.set()
            self._apply_digest_changes(changes)

    async def _in_tracker(self, call: Callable[..., T], *args: Any) -> T:
        """One tracker call in a worker thread, so hashing never blocks the event loop; the
        caller holds ``_tracker_lock``. Builds wait meanwhile (see QuietClock)."""
        with self._clock.paused():
            return await anyio.to_thread.run_sync(call, *args)

    # -- building -----------------------------------------------------------------------

    async def _build(self, name: str, reason: str) -> None:
        image = self.images[name]
        await self.builds.build(
            image,
            reason,
            settings=self.settings,
            cache=self.tracker.cache,
            trees=self.tracker.lend_tree,  # kept current by events: the build walks nothing
        )

    async def reconcile(self) -> None:
        """Ask the registry about every image; queue those whose tag is missing."""
        async with self._tracker_lock:
            digests = self.tracker.digests()
            tags = {n: digests[n].tag for n in self.images if n in digests}
        await self.builds.check_registry(
            self.images, tags, self.scheduler.request, settings=self.settings
        )

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Before any task starts: find the definition files and take the state lock, so a
        bad path or a second daemon on the same state is one clear error, and never writes
        over the state of the daemon that holds the lock."""
        self.definition_files()
        store = self.builds.store
        store.lock()
        self.builds.records = store.load()
        self.tracker = ImageTracker(store.load_cache(), hash_timeout=self.settings.hash_timeout)
        self._holds_state = True

    async def startup(self) -> None:
        await self._guarded("load_all", self.load_all)
        await self._guarded("reconcile", self.reconcile)
        self.view.ready = True
        self.notifier.ready(self.status_line())
        self.emit(Ready(images=len(self.images)))

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
            self.emit(Ignored(paths=sorted(str(p) for p in paths)[:10], count=len(paths)))

    def _roots(self) -> dict[Path, bool]:
        """Each folder to watch and whether recursively (the tracker's flag wins)."""
        roots = dict.fromkeys({p.parent for p in self.definitions.paths()}, False)
        roots.update(self.tracker.watch_roots())
        self.metrics.watched_paths = len(roots)
        return roots

    def _relevant(self, path: Path) -> bool:
        return path in self.definitions.paths() or self.tracker.is_relevant(path)

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
                self.emit(Stopping(signal=signal.Signals(signum).name))
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
                self.emit(ConfigErrorEvent(error=str(exc)))
        await self.load_all()
        self.emit(Reloaded(images=len(self.images)))
        self.notifier.ready(self.status_line())

    async def run(self, *, handle_signals: bool = True) -> None:
        """startup, main loop until stopped, shutdown."""
        self.prepare()
        try:
            async with create_registry_client(self.settings) as client:
                self.builds.client = client
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
        tg.start_soon(self._watch_loop)
        tg.start_soon(self._watchdog_loop)
        tg.start_soon(self._status_loop)
        tg.start_soon(self._reconcile_loop)
        tg.start_soon(self._late_walks_loop)
        if self.settings.status_address:
            tg.start_soon(serve_status, self, self.settings.status_address, self.emit)
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
        store = self.builds.store
        try:
            store.save(self.builds.records)
            self.tracker.cache.prune_missing()
            store.save_cache(self.tracker.cache)
        finally:
            store.unlock()
        self.emit(Stopped(pid=os.getpid()))
