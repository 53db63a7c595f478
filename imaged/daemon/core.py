"""The daemon's process: lifecycle, loops and signals, and what each loop's event does.

The parts it composes each live beside it: ``views`` (what is shown, kept by a reducer over
the events), ``bus`` (the sinks), ``inputs`` (file events and the stat sweep -> the tracker
-> digest changes -> scheduler requests, over ``modules`` and ``tracker``), ``scheduler``
(when to build), ``builds`` (building, registry checks, records) and ``server`` (the status
endpoint, which reads the daemon as a ``StatusSource``).

``Daemon.run`` has the phases of uvicorn's server: ``prepare`` (definition paths and the state
directory's lock, before any task starts, so that failing there is one clear error), ``startup``
(definitions, the registry check, READY=1), the main loop (watcher, scheduler, watchdog,
stat sweep, status server) and ``shutdown`` (cancel builds within a bound, save the records
and the digest cache, STOPPING=1). An unexpected error while handling one event is an
``internal_error`` event, never the daemon's end; its ``where`` is the guard's name
(``handle_paths``, ``load_all``, ``reconcile`` for both the sweep and the registry check,
``collect_walks``, ``reload``: the names docs/events.md documents). The first walk of a
folder runs in a thread of its own, bounded by ``hash_timeout``.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from imaged.builders.base import Builder, get_builder
from imaged.builders.pool import PoolBuilder
from imaged.config import Settings
from imaged.daemon.builds import Builds
from imaged.daemon.bus import EventBus
from imaged.daemon.clock import QuietClock
from imaged.daemon.inputs import DaemonInputs
from imaged.daemon.metrics import Metrics
from imaged.daemon.notify import SystemdNotifier
from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.daemon.server import serve_status
from imaged.daemon.store import StateStore
from imaged.daemon.tracker import ImageTracker
from imaged.daemon.views import DaemonView
from imaged.daemon.watcher import WatchBackend, watch_paths
from imaged.errors import ImagedError
from imaged.events import (
    DAEMON_EVENTS,
    ConfigErrorEvent,
    Event,
    EventSink,
    Failed,
    InternalError,
    Ready,
    Reloaded,
    Stopped,
    Stopping,
    parse,
)
from imaged.registry.client import create_registry_client
from imaged.spec.image import ParentBase

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
        self.bus = EventBus(*([on_event] if on_event else []))
        self.notifier = notifier or SystemdNotifier.from_env()
        self.backend = backend
        self._reload_settings = reload_settings
        self.view = DaemonView()
        self.metrics = Metrics()
        self.builds = Builds(
            StateStore(settings.resolved_state_dir), self.view, self.metrics, self.emit
        )
        self._owns_store = False  # the state directory's lock is ours and its records loaded
        self.builder: Builder | None = None  # made in prepare: one for every build
        self._stop = anyio.Event()
        self._clock = QuietClock()
        self.scheduler = Scheduler(
            self._build,
            self._scheduler_options(),
            parents=self._parents,
            on_event=self._scheduler_event,
            clock=self._clock,
        )
        self.inputs = DaemonInputs(
            settings=lambda: self.settings,
            targets=targets,
            view=self.view,
            builds=self.builds,
            metrics=self.metrics,
            emit=self.emit,
            clock=self._clock,
            scheduler=self.scheduler,
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
        self.view.engines = self._engine_states()
        return self.view.to_json()

    def _engine_states(self) -> list[dict[str, Any]]:
        """Each pool engine: up or down, running and capacity; none without a pool."""
        return self.builder.engine_states() if isinstance(self.builder, PoolBuilder) else []

    def is_ready(self) -> bool:
        return self.view.ready

    def render_metrics(self) -> str:
        self.metrics.queue_depth = self.scheduler.queue_depth
        self.metrics.engines = self._engine_states()
        return self.metrics.render()

    def status_line(self) -> str:
        self.view.engines = self._engine_states()
        return self.view.status_line(len(self.inputs.images))

    # -- settings -----------------------------------------------------------------------

    def _scheduler_options(self) -> SchedulerOptions:
        s = self.settings
        return SchedulerOptions(
            debounce=s.debounce_ms / 1000,
            settle=s.settle_ms / 1000,
            max_wait=s.max_wait_ms / 1000,
            concurrency=s.concurrency,
            per_image_debounce={name: ms / 1000 for name, ms in s.image_debounce_ms},
            supersede="queue" if s.supersede == "queue" else "cancel",
        )

    def _parents(self, name: str) -> tuple[str, ...]:
        images = self.inputs.images
        image = images.get(name)
        if image is None or not isinstance(image.base, ParentBase):
            return ()
        parent = image.base.image.name
        return (parent,) if parent and parent in images else ()

    async def _late_walks_loop(self) -> None:
        """Adopt first walks that ran out of time (a hung mount) once they end."""
        while True:
            await anyio.sleep(0.5)
            if self.inputs.tracker.late_walks():
                await self._guarded("collect_walks", self.inputs.collect_late_walks)

    # -- building -----------------------------------------------------------------------

    async def _build(self, name: str, reason: str) -> None:
        tracker = self.inputs.tracker
        await self.builds.build(
            self.inputs.images[name],
            reason,
            settings=self.settings,
            cache=tracker.cache,
            trees=tracker.lend_tree,  # kept current by events: the build walks nothing
            builder=self.builder,
        )

    async def check_registry(self) -> None:
        """Ask the registry about every image; queue those whose tag is missing."""
        images, tags = await self.inputs.current_tags()
        await self.builds.check_registry(
            images, tags, self.scheduler.request, settings=self.settings
        )

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Before any task starts: find the definition files and take the state directory's
        lock, so a bad path or a second daemon on the same directory is one clear error, and
        never writes over the records of the daemon that holds the lock."""
        self.inputs.definition_files()
        self.builder = get_builder(None, self.settings)  # a bad pool entry fails here, once
        store = self.builds.store
        store.lock()
        self.builds.records = store.load()
        self.inputs.tracker = ImageTracker(
            store.load_cache(), hash_timeout=self.settings.hash_timeout
        )
        self._owns_store = True

    async def startup(self) -> None:
        await self._guarded("load_all", self.inputs.load_all)
        await self._guarded("reconcile", self.check_registry)
        self.view.ready = True
        self.notifier.ready(self.status_line())
        self.emit(Ready(images=len(self.inputs.images)))

    async def _watch_loop(self) -> None:
        inputs = self.inputs
        watching = watch_paths(
            inputs.roots,
            inputs.is_relevant,
            stop_event=self._stop,
            backend=self.backend,
            restart=inputs.roots_changed,
            on_ignored=inputs.ignored,
            busy=self._clock.paused,
            step_ms=self.settings.watch_step_ms,
        )
        # The watcher's task group lives in this task: a cancel inside handle_paths ends the
        # task that receives from the backend too, here, not later from the garbage collector.
        async with watching as batches:
            async for batch in batches:
                self.metrics.events.inc("batch")
                await self._guarded("handle_paths", partial(inputs.handle_paths, batch))

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _engines_loop(self) -> None:
        """Probe a pool's down engines as their backoff runs out, so one that is back shows
        up (and takes builds) even while nothing is placed; nothing without a pool."""
        if isinstance(self.builder, PoolBuilder):
            await self.builder.probe_all()
        while True:
            if isinstance(self.builder, PoolBuilder):
                await self.builder.probe_due()
            await anyio.sleep(1.0)

    async def _status_loop(self) -> None:
        while True:
            await anyio.sleep(5)
            self.notifier.status(self.status_line())

    async def _restat_loop(self) -> None:
        """The stat sweep every ``reconcile_seconds``: the edits the watcher missed."""
        period = self.settings.reconcile_seconds
        if period <= 0:
            return
        while True:
            await anyio.sleep(period)
            await self._guarded("reconcile", self.inputs.restat)

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
                settings = self._reload_settings()
                self.builder = get_builder(None, settings)
                self.settings = settings
                self.scheduler.options = self._scheduler_options()
            except ImagedError as exc:
                self.emit(ConfigErrorEvent(error=str(exc)))
        await self.inputs.load_all()
        self.emit(Reloaded(images=len(self.inputs.images)))
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
        tg.start_soon(self._restat_loop)
        tg.start_soon(self._late_walks_loop)
        tg.start_soon(self._engines_loop)
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
        """Save the records and the digest cache and release the state directory's lock;
        nothing when the lock was never ours."""
        if not self._owns_store:
            return
        # Plain blocking calls: nothing here can be cancelled half-way.
        self._owns_store = False
        store = self.builds.store
        cache = self.inputs.tracker.cache
        try:
            store.save(self.builds.records)
            cache.prune_missing()
            store.save_cache(cache)
        finally:
            store.unlock()
        self.emit(Stopped(pid=os.getpid()))
