"""The daemon's builds: one build and push of an image, and what the registry already holds.

Each build's outcome is recorded (``state.json``) to explain the next rebuild and, for an
image without a registry, to tell whether its current tag was built at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from imaged.builders.base import Builder
from imaged.config import Settings
from imaged.daemon.metrics import Metrics
from imaged.daemon.store import ImageRecord, StateStore
from imaged.daemon.views import DaemonView
from imaged.digest.cache import DigestCache
from imaged.digest.trees import TreeProvider
from imaged.events import Building, Built, Event, Finished, Pushed, Pushing, Skipped
from imaged.pipeline.build import ImageBuild, abuild
from imaged.pipeline.logins import check_images
from imaged.registry.client import Existence, RegistryClient
from imaged.spec.image import Image

Request = Callable[[str, str], None]  # Scheduler.request(name, reason)


class Builds:
    """Builds images for the daemon and asks the registry which tags it already has."""

    def __init__(
        self, store: StateStore, view: DaemonView, metrics: Metrics, emit: Callable[[Event], None]
    ) -> None:
        self.store = store
        self.records: dict[str, ImageRecord] = {}
        self.client: RegistryClient | None = None
        self._view = view
        self._metrics = metrics
        self._emit = emit
        self._change_times: dict[str, float] = {}

    def changed(self, name: str) -> None:
        """An edit moved the image's digest: the save-to-pushed clock starts (once)."""
        self._change_times.setdefault(name, time.monotonic())

    async def build(
        self,
        image: Image,
        reason: str,
        *,
        settings: Settings,
        cache: DigestCache,
        trees: TreeProvider | None = None,
        builder: Builder | None = None,
    ) -> None:
        """Build (and push) one image; its outcome is recorded, counted and emitted. ``trees``
        lends the build the daemon's event-fed trees, so it walks and re-stats nothing;
        ``builder`` is the daemon's one builder (a pool keeps its load and health there)."""
        name = image.name or ""
        view = self._view.image(name)
        started = time.monotonic()

        def on_engine_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "build_done" and view.state == "building":
                self._emit(Pushing(image=name))
            elif kind == "building" and event.get("engine"):
                # A pool placed the build (or moved it): the daemon's building says where.
                engine, placement = event["engine"], event.get("placement")
                self._emit(Building(image=name, reason=reason, engine=engine, placement=placement))

        result = await abuild(
            image,
            settings=settings,
            registry_client=self.client,
            cache=cache,
            trees=trees,
            on_event=on_engine_event,
            builder=builder,
        )
        self._view.known_digest(name, result.tag, result.uri)
        self._record(name, result)
        self.store.save(self.records)
        done = _finished_kind(result)
        seconds = round(time.monotonic() - started, 3)
        self._emit(
            done(
                image=name,
                uri=result.uri,
                manifest_digest=result.manifest_digest,
                why=reason,
                seconds=seconds,
                engine=result.engine,
                placement=result.placement,
                path=result.path,
                path_reason=result.path_reason,
                uploaded_bytes=result.uploaded_bytes,
            )
        )

    def _record(self, name: str, result: ImageBuild) -> None:
        record = self.records.setdefault(name, ImageRecord(name=name))
        record.uri, record.tag = result.uri, result.tag
        record.manifest_digest = result.manifest_digest or record.manifest_digest
        record.layers = result.layers
        if not result.skipped:
            record.pushed_at = time.time()
            self._metrics.builds.inc("pushed" if result.pushed else "built")
            if result.engine:
                self._metrics.engine_builds.inc(result.engine)
            self._metrics.build_seconds.observe(result.timings.get("build", 0.0))
            self._metrics.push_seconds.observe(result.timings.get("push", 0.0))
        first_change = self._change_times.pop(name, None)
        if first_change is not None:
            self._metrics.save_to_pushed.observe(time.monotonic() - first_change)

    async def check_registry(
        self,
        images: Mapping[str, Image],
        tags: Mapping[str, str],
        request: Request,
        *,
        settings: Settings,
    ) -> None:
        """Ask the registry about every image; request those whose tag is missing. An image
        without a registry builds only when its state record holds another tag. A name in
        ``tags`` without its image (a reload in between) is skipped."""
        tags = {name: tag for name, tag in tags.items() if name in images}
        for name, tag in tags.items():
            if not images[name].registry:
                self._check_record(name, tag, request)
        if self.client is None:
            return
        refs = {images[n].uri_for(t): n for n, t in tags.items() if images[n].registry}
        # Each check with its image's logins (a registry_secret), as builds and plan do.
        wanted = {uri: images[name] for uri, name in refs.items()}
        results = await check_images(self.client, wanted, settings)
        for uri, outcome in results.items():
            name = refs[uri]
            if name in images:  # else gone in a reload while the registry answered
                self._registry_said(name, uri, outcome, request)

    def _registry_said(self, name: str, uri: str, outcome: Any, request: Request) -> None:
        if outcome is Existence.EXISTS:
            record = self.records.get(name)
            known = record is not None and record.uri == uri
            pushed_at = record.pushed_at if record and known else self._view.image(name).pushed_at
            self._view.up_to_date(name, pushed_at)
        elif outcome is Existence.MISSING:
            request(name, "tag missing in the registry")
        else:
            self._view.unknown(name, str(outcome))
            request(name, f"registry did not answer: {outcome}")

    def _check_record(self, name: str, tag: str, request: Request) -> None:
        """No registry to ask: the state record is the only truth about what was built."""
        record = self.records.get(name)
        if record is None or record.tag != tag:
            request(name, "no registry: local build")
            return
        self._view.up_to_date(name, record.pushed_at)


def _finished_kind(result: ImageBuild) -> type[Finished]:
    if result.skipped:
        return Skipped
    return Pushed if result.status == "pushed" else Built
