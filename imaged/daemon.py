"""The long-running core: load definitions, watch, rehash, schedule, build, push, report.

``Daemon.run`` has three phases, as uvicorn's server does: ``startup`` (state, definitions,
first reconcile, READY=1), ``main_loop`` (watcher, scheduler, watchdog, reconcile, status
server) and ``shutdown`` (cancel builds within a bound, save state, STOPPING=1).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from imaged.config import Settings
from imaged.defsproc import LoadedModule, discover_definition_files, load_module_in_child
from imaged.engine import abuild
from imaged.errors import DefinitionError, ImagedError
from imaged.image import Image, ParentBase, override_registry
from imaged.metrics import Metrics
from imaged.notify import SystemdNotifier
from imaged.registry import Existence, RegistryClient
from imaged.scheduler import Scheduler, SchedulerOptions
from imaged.state import ImageRecord, StateStore
from imaged.tracker import DigestChange, ImageTracker
from imaged.watcher import WatchBackend, watch_paths

EventSink = Callable[[dict[str, Any]], None]


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
        self.tracker = ImageTracker(self.store.load_cache())
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
        self.scheduler = Scheduler(
            self._build,
            self._scheduler_options(),
            parents=self._parents,
            on_event=self._scheduler_event,
        )
        self._client: RegistryClient | None = None
        self.status_address: str | None = None

    # -- events -------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def emit(self, event: str, image: str | None = None, **fields: Any) -> None:
        payload = {"ts": round(time.time(), 3), "event": event, "image": image, **fields}
        for sink in self._sinks:
            sink(payload)

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
        files = self.definition_files()
        for gone in set(self.module_files) - set(files):
            self.modules.pop(gone, None)
            self.module_files.pop(gone, None)
            self.state.modules.pop(str(gone), None)
        async with anyio.create_task_group() as tg:
            for path in files:
                tg.start_soon(self.load_module, path)
        self._refresh_images()

    def _refresh_images(self) -> None:
        images: dict[str, Image] = {}
        for loaded in self.modules.values():
            for name, image in loaded.images.items():
                image = override_registry(image, self.settings.registry)
                if name in images:
                    self.emit(
                        "definition_error",
                        name,
                        file=str(loaded.path),
                        error=f"image name {name!r} is defined in more than one module",
                    )
                    continue
                images[name] = image
        for name in set(self.images) - set(images):
            self.scheduler.forget(name)
            self.state.images.pop(name, None)
        self.images = images
        changes = self.tracker.set_images(images)
        self._report_hash_errors()
        self._roots_changed.set()
        for change in changes.values():
            self._digest_moved(change, initial=not self.state.ready)

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
            for path in sorted(touched):
                await self.load_module(path)
            self._refresh_images()
        other = {p for p in paths if p not in definitions}
        if not other:
            return
        changes = self.tracker.apply_changes(other)
        self._report_hash_errors()
        if not changes:
            self.emit("nothing_to_do", None, paths=sorted(str(p) for p in other)[:10])
        for change in changes.values():
            self._digest_moved(change)

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
        """Ask the registry about every image; queue those whose tag is missing."""
        if self._client is None:
            return
        uris = {n: self.tracker.digest_of(n) for n in self.images if n not in self.tracker.errors}
        refs = {
            self.images[n].uri_for(d.tag): n for n, d in uris.items() if self.images[n].registry
        }
        results = await self._client.check_many(list(refs))
        for uri, outcome in results.items():
            name = refs[uri]
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
        for name, image in self.images.items():
            if not image.registry and name in uris:
                self.scheduler.request(name, "no registry: local build")

    # -- lifecycle ----------------------------------------------------------------------

    async def startup(self) -> None:
        self.store.lock()
        self.records = self.store.load()
        await self.load_all()
        await self.reconcile()
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
        async for batch in watch_paths(
            self._roots,
            self._relevant,
            stop_event=self._stop,
            backend=self.backend,
            restart=self._roots_changed,
            on_ignored=self._ignored,
        ):
            self.metrics.events.inc("batch")
            await self.handle_paths(batch)

    def _ignored(self, paths: set[Path]) -> None:
        """Changes no image depends on (ignored by a rule, or unrelated): counted, and said
        once a second at most so a noisy folder cannot flood the event stream."""
        self.metrics.events.inc("ignored", len(paths))
        now = time.monotonic()
        if now - self._last_ignored_event >= 1.0:
            self._last_ignored_event = now
            self.emit("ignored", None, paths=sorted(str(p) for p in paths)[:10], count=len(paths))

    def _roots(self) -> set[Path]:
        roots = set(self.tracker.watch_roots())
        roots |= {p.parent for p in self._definition_paths()}
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
            changes = self.tracker.set_images(self.images)
            for change in changes.values():
                self._digest_moved(change)

    async def _signal_loop(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
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
        from imaged.server import serve_status

        async with RegistryClient(insecure_hosts=self.settings.insecure_registries) as client:
            self._client = client
            try:
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self.scheduler.run)
                        await self.startup()
                        tg.start_soon(self._watch_loop)
                        tg.start_soon(self._watchdog_loop)
                        tg.start_soon(self._status_loop)
                        tg.start_soon(self._reconcile_loop)
                        if self.settings.status_address:
                            tg.start_soon(serve_status, self, self.settings.status_address)
                        if handle_signals:
                            tg.start_soon(self._signal_loop, scope)
            finally:
                await self.shutdown()

    def stop(self) -> None:
        self._stop.set()
        scope = getattr(self, "_scope", None)
        if scope is not None:
            scope.cancel()

    async def shutdown(self) -> None:
        # Plain blocking calls: nothing here can be cancelled half-way.
        self.store.save(self.records)
        self.store.save_cache(self.tracker.cache)
        self.store.unlock()
        self.emit("stopped", None, pid=os.getpid())
