"""The build pipeline: validate, check the registry, stage, build, push, report.

``build(image)`` is the one-shot call; ``abuild`` is its async twin, which the daemon
cancels when an image's digest moves while it builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from imaged.builders.base import Builder, BuildRequest, get_builder
from imaged.config import Settings, load_settings
from imaged.digest.cache import DigestCache, default_cache
from imaged.digest.image_digest import ImageDigest, hash_image
from imaged.digest.trees import TreeProvider
from imaged.errors import (
    ContextChangedError,
    ImagedError,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from imaged.events import (
    BuildBuilding,
    BuildBuilt,
    BuildDone,
    BuildPushed,
    BuildSkipped,
    EventSink,
    ParentReady,
    Rehashed,
    as_parent,
    send,
)
from imaged.pipeline.fastpath import (
    FullBuildNeeded,
    StaleLayerIndex,
    Tail,
    layer_index,
    loaded_layer_index,
    present_blobs,
    push_tail,
    read_known,
    relearning,
    stem_blobs_missing,
    stem_image,
    stem_workdir_of,
    tail_roots,
    workdir_owner,
    write_tail,
)
from imaged.pipeline.logins import registry_logins
from imaged.pipeline.route import Route, describe_layer, route
from imaged.pipeline.secrets import ca_bundle_secret, resolve_secrets
from imaged.pipeline.stemfs import StemFs, StemPlatformsDiffer, missing_blobs
from imaged.registry.client import Existence, RegistryClient, create_registry_client
from imaged.registry.ref import ImageRef
from imaged.render.context import stage_context
from imaged.render.dockerfile import RenderedImage, render_dockerfile
from imaged.spec.image import Image, ParentBase, override_registry

MAX_STAGE_ATTEMPTS = 3
_BUILT_LOCALLY: set[str] = set()  # URIs this process built into the engine (no registry)


@dataclass
class ImageBuild:
    """What happened to one image."""

    name: str
    uri: str
    tag: str
    digest: str
    status: str  # "skipped" | "built" | "pushed" | "dry-run"
    manifest_digest: str | None = None
    pushed: bool = False
    skipped: bool = False
    builder: str | None = None
    engine: str | None = None  # a pool's engine, and why the build was placed there
    placement: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dockerfile: str | None = None
    context_listing: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    path: str = "full"  # "fast" | "full": the route taken (pipeline/route.py)
    path_reason: str = ""
    stem_uri: str | None = None
    uploaded_bytes: int = 0  # bytes of blobs the fast path uploaded
    tail_layers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.status != "dry-run":
            data.pop("dockerfile")
            data.pop("context_listing")
        return data


@dataclass(frozen=True)
class Hashed:
    """An image, with the registry override applied, and its digest, hashed ahead of
    :func:`abuild` (within a time bound, say). abuild uses the digest only for this very
    image, and staging still checks each file against it (re-hashing when one moved)."""

    image: Image
    digest: ImageDigest


def _uri(image: Image, digest: ImageDigest) -> str:
    return image.uri_for(digest.tag)


async def check_existence(image: Image, digest: ImageDigest, client: RegistryClient) -> Existence:
    """Ask the registry whether the image's content tag exists. Unknown raises."""
    return await client.manifest_exists(_uri(image, digest))


def staging_dir(image: Image, settings: Settings) -> Path:
    """A stable folder per image (and definition file), so staging and BuildKit's context
    transfer are incremental from one build to the next."""
    where = hashlib.sha256(f"{image.source_file}\0{image.name}".encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", image.name or "image")
    return settings.resolved_state_dir / "contexts" / f"{safe}-{where}"


def _open_lock(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)


@asynccontextmanager
async def _locked(folder: Path) -> AsyncIterator[None]:
    """One build per staging folder across processes (flock; closing releases it)."""
    fd = await anyio.to_thread.run_sync(_open_lock, folder)
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX, abandon_on_cancel=True)
        yield
    finally:
        os.close(fd)


def _effective(image: Image, settings: Settings) -> Image:
    return override_registry(image, settings.registry)


def _validate_and_hash(
    image: Image, cache: DigestCache, trees: TreeProvider | None, hashed: Hashed | None
) -> ImageDigest:
    image.validate()
    if hashed is not None and hashed.image == image:
        return hashed.digest
    return hash_image(image, cache, trees=trees)


def _revalidating(trees: TreeProvider | None) -> TreeProvider | None:
    """``trees`` re-stating each tree (the default provider always does)."""
    if trees is None:
        return None
    return lambda source, cache: trees(source, cache).revalidated()


def _stage(
    image: Image,
    cache: DigestCache,
    workdir: Path,
    trees: TreeProvider | None,
    first: ImageDigest | None = None,
) -> tuple[ImageDigest, RenderedImage, Path]:
    """Render and stage ``first`` (else hash first); re-hash when a file moved in between
    (re-stating the trees: a provider kept current by events may not have seen that edit)."""
    for attempt in range(1, MAX_STAGE_ATTEMPTS + 1):
        if attempt == 1 and first is not None:
            digest = first
        else:
            digest = hash_image(image, cache, trees=trees if attempt == 1 else _revalidating(trees))
        rendered = render_dockerfile(image, digest)
        try:
            dockerfile = stage_context(rendered, workdir / "context")
        except ContextChangedError:
            if attempt == MAX_STAGE_ATTEMPTS:
                raise
            continue
        return digest, rendered, dockerfile
    raise AssertionError("unreachable")


async def _ensure_parent(
    image: Image,
    *,
    settings: Settings,
    client: RegistryClient,
    builder: Builder,
    cache: DigestCache,
    trees: TreeProvider | None,
    on_event: EventSink | None,
) -> None:
    """An image built FROM another Image needs that image first: build it (or find its tag
    in the registry) before the child, whether or not it is one of the defined images."""
    base = image.base
    if not isinstance(base, ParentBase):
        return
    if not base.image.name:
        raise SpecError(
            "its base image has no name; give it one with .clone(name=...)", image=image.name
        )

    def parent_event(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(as_parent(event, image.name))

    parent = await abuild(
        base.image,
        settings=settings,
        registry_client=client,
        builder=builder,
        cache=cache,
        trees=trees,
        on_event=parent_event,
    )
    send(on_event, ParentReady(image=image.name, parent=parent.uri, status=parent.status))


@asynccontextmanager
async def _given_or_own_client(
    given: RegistryClient | None, settings: Settings
) -> AsyncIterator[RegistryClient]:
    """``given``, or a client of this call's own, closed when the call ends."""
    if given is not None:
        yield given
        return
    async with create_registry_client(settings) as own:
        yield own


@dataclass
class _Flight:
    """One build of a URI under way in this process; other calls for the URI wait for it."""

    force: bool
    done: anyio.Event = field(default_factory=anyio.Event)
    result: ImageBuild | None = None
    error: ImagedError | None = None


_FLIGHTS: dict[str, _Flight] = {}


async def _single_flight(
    result: ImageBuild, force: bool, run: Callable[[], Awaitable[ImageBuild]]
) -> ImageBuild:
    """``run()``, unless a call for the same URI is under way: then wait for that one and
    share its result (a copy, under this call's name) or its ImagedError. So a parent shared
    by several children built at once is built (or checked) once. A forced call does not
    join an unforced one (it waits, then builds); a call whose leader was cancelled or
    crashed runs itself."""
    uri = result.uri  # the key: a re-hash while building moves result.uri
    while (flight := _FLIGHTS.get(uri)) is not None:
        await flight.done.wait()
        if flight.force or not force:
            if flight.error is not None:
                raise flight.error
            if flight.result is not None:
                return replace(flight.result, name=result.name)
    flight = _FLIGHTS[uri] = _Flight(force)
    try:
        flight.result = await run()
    except ImagedError as exc:
        flight.error = exc
        raise
    finally:
        del _FLIGHTS[uri]
        flight.done.set()
    return flight.result


async def abuild(
    image: Image,
    *,
    force: bool = False,
    dry_run: bool = False,
    builder: str | Builder | None = None,
    settings: Settings | None = None,
    registry_client: RegistryClient | None = None,
    cache: DigestCache | None = None,
    trees: TreeProvider | None = None,
    on_event: EventSink | None = None,
    checked: Mapping[str, Existence] | None = None,
    hashed: Hashed | None = None,
) -> ImageBuild:
    """Build and push ``image`` unless its content tag already exists in the registry.

    ``checked`` carries answers of a concurrent existence check made just before (by URI);
    an image whose URI is not in it (or moved since) is checked here. ``hashed`` is its
    digest made just before, used (not hashed again) when its image is this one with the
    registry override applied. ``trees`` serves each
    copied folder's index (default: the process-wide store, which re-stats each tree); the
    daemon passes the trees its events keep current, so a rebuild walks nothing.

    >>> # result = await abuild(Image.from_base("debian:12").clone(name="x", registry="localhost:5000"))
    """
    settings = settings or load_settings()
    async with _given_or_own_client(registry_client, settings) as shared:
        cache = cache or default_cache()
        image = _effective(image, settings)
        started = time.perf_counter()
        # Hashing reads files: off the event loop, so a big tree never starves the daemon.
        digest = await anyio.to_thread.run_sync(_validate_and_hash, image, cache, trees, hashed)
        result = ImageBuild(
            name=image.name or "",
            uri=_uri(image, digest),
            tag=digest.tag,
            digest=digest.digest,
            status="",
            layers=[d.to_json() for d in digest.layers],
        )
        result.timings["hash"] = time.perf_counter() - started
        chosen = builder if not isinstance(builder, str | None) else get_builder(builder, settings)
        result.builder = chosen.name
        decision = route(image, settings)
        result.path, result.path_reason = decision.path, decision.reason
        if decision.stem is not None:
            result.tail_layers = [describe_layer(image, index) for index, _ in decision.tail]
        if dry_run:
            return await _dry_run(image, digest, chosen, result, decision, cache, trees)
        missing = _Missing(
            image, digest, started, settings, shared, chosen, decision, force, cache, trees
        )
        return await _single_flight(
            result, force, partial(_build_missing, missing, result, on_event, checked, hashed)
        )


@dataclass(frozen=True)
class _Missing:
    """What :func:`_build_missing` builds from: the image, its digest and route, and the
    options, builder and clients of the :func:`abuild` call."""

    image: Image
    digest: ImageDigest
    started: float
    settings: Settings
    shared: RegistryClient
    chosen: Builder
    decision: Route
    force: bool
    cache: DigestCache
    trees: TreeProvider | None


async def _build_missing(
    missing: _Missing,
    result: ImageBuild,
    on_event: EventSink | None,
    checked: Mapping[str, Existence] | None,
    hashed: Hashed | None,
) -> ImageBuild:
    """Skip ``result``'s image when its tag exists, else build its parent and it, and push."""
    image, digest, started, settings = (m := missing).image, m.digest, m.started, m.settings
    shared, chosen, decision, force = m.shared, m.chosen, m.decision, m.force
    cache, trees = m.cache, m.trees
    if not image.registry and not force and result.uri in _BUILT_LOCALLY:
        # Content-addressed: built into the engine by this process already (a parent shared
        # by several children). Images with a registry ask the registry instead.
        result.status, result.skipped = "skipped", True
        send(on_event, BuildSkipped(image=image.name, uri=result.uri))
        return result
    logins = await anyio.to_thread.run_sync(registry_logins, image, settings)
    client = shared.with_logins(logins)
    if image.registry and not force:
        t0 = time.perf_counter()
        exists = (checked or {}).get(result.uri)
        if exists is None:
            exists = await check_existence(image, digest, client)
        result.timings["check"] = time.perf_counter() - t0
        if exists is Existence.EXISTS:
            result.status, result.skipped = "skipped", True
            send(on_event, BuildSkipped(image=image.name, uri=result.uri))
            return result
    await _ensure_parent(
        image,
        settings=settings,
        client=shared,
        builder=chosen,
        cache=cache,
        trees=trees,
        on_event=on_event,
    )
    # A digest hashed ahead (under a time bound) is staged as it is, checked file by file;
    # otherwise staging hashes again, in the folder's lock.
    staging = _Staging(cache, trees, digest if hashed is not None else None)
    if decision.stem is not None:
        fast = _Fast(image, decision, chosen, settings, staging, shared, client, on_event)
        try:
            await fast.run(digest, force, result)
        except (FullBuildNeeded, StemPlatformsDiffer) as exc:
            result.path, result.path_reason = "full", str(exc)
            decision = Route("full", str(exc))
    if decision.stem is None:
        await _build_and_push(image, chosen, settings, staging, force, result, on_event, client)
    if not result.pushed:
        _BUILT_LOCALLY.add(result.uri)
    result.timings["total"] = time.perf_counter() - started
    return result


async def _dry_run(
    image: Image,
    digest: ImageDigest,
    chosen: Builder,
    result: ImageBuild,
    decision: Route,
    cache: DigestCache,
    trees: TreeProvider | None,
) -> ImageBuild:
    if decision.stem is not None:
        stem = await anyio.to_thread.run_sync(_validate_and_hash, decision.stem, cache, trees, None)
        result.stem_uri = _uri(decision.stem, stem)
    rendered = render_dockerfile(image, digest)
    result.status = "dry-run"
    result.dockerfile = rendered.dockerfile
    result.context_listing = rendered.listing()
    request = BuildRequest(
        image_name=result.name,
        context_dir=Path("<context>"),
        dockerfile=Path("<context>.Dockerfile"),
        tags=(result.uri,),
        platforms=image.platform,
        push=bool(image.registry),
    )
    result.command = list(chosen.describe_command(request))
    return result


@dataclass(frozen=True)
class _Staging:
    """What staging reads from: the digest cache, the trees, and the digest to stage."""

    cache: DigestCache
    trees: TreeProvider | None
    digest: ImageDigest | None


async def _build_and_push(
    image: Image,
    chosen: Builder,
    settings: Settings,
    staging: _Staging,
    force: bool,
    result: ImageBuild,
    on_event: EventSink | None,
    client: RegistryClient,
) -> None:
    secrets = resolve_secrets((s for layer in image.layers for s in layer.secrets), settings)
    ca = ca_bundle_secret(settings)
    push_auth, docker_config = await anyio.to_thread.run_sync(_registry_auth, image, client)
    workdir = staging_dir(image, settings)
    async with _locked(workdir):
        t0 = time.perf_counter()
        digest, _rendered, dockerfile = await anyio.to_thread.run_sync(
            _stage, image, staging.cache, workdir, staging.trees, staging.digest
        )
        result.timings["stage"] = time.perf_counter() - t0
        if digest.digest != result.digest:
            send(on_event, Rehashed(image=image.name, old=result.tag, new=digest.tag))
            result.digest, result.tag, result.uri = digest.digest, digest.tag, _uri(image, digest)
            result.layers = [d.to_json() for d in digest.layers]
        request = BuildRequest(
            image_name=result.name,
            context_dir=workdir / "context",
            dockerfile=dockerfile,
            tags=(result.uri,),
            platforms=image.platform,
            secrets=(*secrets, *((ca,) if ca else ())),
            no_cache=force,
            push=bool(image.registry),
            push_auth=push_auth,
            docker_config=docker_config,
            family=_family(image),
        )
        send(on_event, BuildBuilding(image=image.name, uri=result.uri))
        outcome = await chosen.build(request, on_event=on_event)
    result.command = list(outcome.command)
    result.timings["build"] = outcome.build_seconds
    result.timings["push"] = outcome.push_seconds
    result.manifest_digest = outcome.manifest_digest
    result.engine, result.placement = outcome.engine, outcome.placement
    result.pushed = request.push
    result.status = "pushed" if request.push else "built"
    done = BuildPushed if request.push else BuildBuilt
    send(
        on_event,
        done(
            image=image.name,
            uri=result.uri,
            manifest_digest=outcome.manifest_digest,
            path=result.path,
            path_reason=result.path_reason,
        ),
    )


@dataclass(frozen=True)
class _Fast:
    """The fast path of one image: ensure its stem, write its tail, append and push."""

    image: Image
    decision: Route
    builder: Builder
    settings: Settings
    staging: _Staging
    shared: RegistryClient
    client: RegistryClient
    on_event: EventSink | None

    async def run(self, digest: ImageDigest, force: bool, result: ImageBuild) -> None:
        """Append the tail; when the registry refuses it and the stem's tag names blobs the
        registry lacks (collected under the tag), rebuild the stem and append again."""
        try:
            await self._run(digest, force, result)
        except RegistryError as exc:
            if (
                force
                or isinstance(exc, RegistryUnavailable | RegistryAuthError)
                or not result.stem_uri
            ):
                raise
            missing = await missing_blobs(self.client, ImageRef.parse(result.stem_uri))
            if not missing:
                raise
            result.path_reason += (
                f"; the stem {result.stem_uri} was rebuilt: the registry lacks "
                f"{len(missing)} of its blobs ({', '.join(missing[:3])})"
            )
            await self._run(digest, True, result)

    async def _run(self, digest: ImageDigest, force: bool, result: ImageBuild) -> None:
        stem_digest: ImageDigest | None = None
        for attempt in range(1, MAX_STAGE_ATTEMPTS + 1):
            t0 = time.perf_counter()
            stem_ref, manifest, held = await self.ensure_stem(force, result, stem_digest)
            state = self.settings.resolved_state_dir
            stem_read, config = await stem_image(self.client, stem_ref, manifest, state)
            if stem_ref.name == ImageRef.parse(result.uri).name:  # its blobs taken as there
                lacking = await stem_blobs_missing(self.client, stem_ref, manifest, stem_read)
                if lacking:  # run() rebuilds the stem
                    raise RegistryError(
                        f"the stem {result.stem_uri} names {len(lacking)} blobs its "
                        f"repository lacks ({', '.join(lacking[:3])})"
                    )
            workdir = stem_workdir_of(config)
            roots = tail_roots(self.decision.tail, workdir)
            named = ImageRef.parse(result.stem_uri or str(stem_ref))  # read pinned, named by tag
            known = await read_known(
                self.client, named, manifest, roots, self.settings.resolved_state_dir
            )
            owner = await workdir_owner(
                self.client, stem_ref, manifest, config, self.decision.tail, state
            )
            result.timings["stem"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            send(self.on_event, BuildBuilding(image=self.image.name, uri=result.uri))
            written, tail = await self.write(digest, known, workdir, result, owner)
            result.timings["tail_tar"] = time.perf_counter() - t1
            moved = await self._stem_moved(written, digest, held)
            digest = written
            if moved is None:
                break
            # A stem input moved with the tail (a checkout): this tail is not for that stem.
            if attempt == MAX_STAGE_ATTEMPTS:
                raise ContextChangedError(
                    f"the stem of {self.image.name} kept changing while its tail was written"
                )
            stem_digest = moved
        target = ImageRef.parse(result.uri)
        # The tail is written: what the daemon shows as pushing (as after a BuildKit build).
        send(self.on_event, BuildDone(image=self.image.name, seconds=result.timings["tail_tar"]))
        index = layer_index(self.settings.resolved_state_dir)
        try:
            pushed = await push_tail(self.client, stem_ref, target, tail, digest.digest, stem_read)
        except StaleLayerIndex:
            # A layer's bytes are not what the index said (its entry is dropped): write the
            # whole tail afresh, every digest from the bytes written, and push that.
            written, tail = await self.write(digest, known, workdir, result, owner, relearn=True)
            if await self._stem_moved(written, digest, held) is not None:
                raise ContextChangedError(
                    f"the stem of {self.image.name} changed while its tail was written"
                ) from None
            digest, target = written, ImageRef.parse(result.uri)
            pushed = await push_tail(self.client, stem_ref, target, tail, digest.digest, stem_read)
        finally:  # after the push: off its clock
            await anyio.to_thread.run_sync(index.save, set(present_blobs()))
        result.timings.update(pushed.timings)
        result.uploaded_bytes = pushed.uploaded_bytes
        result.manifest_digest = pushed.image.digest
        result.pushed, result.status = True, "pushed"
        send(
            self.on_event,
            BuildPushed(
                image=self.image.name,
                uri=result.uri,
                manifest_digest=pushed.image.digest,
                path="fast",
                path_reason=result.path_reason,
            ),
        )

    async def _stem_moved(
        self, written: ImageDigest, first: ImageDigest, stem_digest: ImageDigest
    ) -> ImageDigest | None:
        """The stem's new digest when the tail was written from a re-hash (``written`` is
        not ``first``) and the stem's inputs moved too; None when the stem still holds."""
        if written is first:
            return None
        stem = self.decision.stem
        assert stem is not None
        staged = self.staging
        again = await anyio.to_thread.run_sync(
            _rehash, stem, staged.cache, _revalidating(staged.trees)
        )
        return None if again.digest == stem_digest.digest else again

    async def ensure_stem(
        self, force: bool, result: ImageBuild, hashed: ImageDigest | None = None
    ) -> tuple[ImageRef, str, ImageDigest]:
        """The stem's reference (pinned to its manifest digest), manifest digest and
        digest (``hashed``: hashed already): HEAD its content tag; build and push it (the
        full path, the same builder and secrets) when missing or forced."""
        stem = self.decision.stem
        assert stem is not None
        staged = self.staging
        stem_digest = hashed
        if stem_digest is None:
            stem_digest = await anyio.to_thread.run_sync(
                _validate_and_hash, stem, staged.cache, staged.trees, None
            )
        result.stem_uri = _uri(stem, stem_digest)
        ref = ImageRef.parse(result.stem_uri)
        manifest = None if force else await self.client.manifest_digest(ref)
        if manifest is None:
            built = await abuild(
                stem,
                force=force,
                builder=self.builder,
                settings=self.settings,
                registry_client=self.shared,
                cache=staged.cache,
                trees=staged.trees,
                on_event=self._stem_event,
                checked={result.stem_uri: Existence.MISSING},
                hashed=Hashed(stem, stem_digest),
            )
            # The image's recipe bytes were built where its stem was: report that engine.
            result.engine, result.placement = built.engine, built.placement
            manifest = built.manifest_digest or await self.client.manifest_digest(ref)
            if manifest is None:
                raise RegistryError(f"the stem {result.stem_uri} was pushed but is not there")
        # Pinned: what follows (config, folders, blobs, the append) reads this manifest,
        # not whatever the tag names by then.
        return replace(ref, tag=None, digest=manifest), manifest, stem_digest

    def _stem_event(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(as_parent(event, self.image.name))

    async def write(
        self,
        first: ImageDigest,
        known: StemFs,
        workdir: str,
        result: ImageBuild,
        owner: tuple[int, int] = (0, 0),
        *,
        relearn: bool = False,
    ) -> tuple[ImageDigest, Tail]:
        """The tail, from the digest's file lists; re-hashed when a file moved in between.
        ``relearn``: every layer written (the layer index asked nothing, told everything)."""
        staged, split = self.staging, self.settings.fastpath_split_bytes
        state = self.settings.resolved_state_dir
        index = loaded_layer_index(state)
        if index is None:
            index = await anyio.to_thread.run_sync(layer_index, state)
        if relearn:
            index = relearning(index)
        digest = first
        for attempt in range(1, MAX_STAGE_ATTEMPTS + 1):
            if attempt > 1:
                digest = await anyio.to_thread.run_sync(
                    _rehash, self.image, staged.cache, _revalidating(staged.trees)
                )
                if digest.digest != result.digest:
                    send(
                        self.on_event,
                        Rehashed(image=self.image.name, old=result.tag, new=digest.tag),
                    )
                    result.digest, result.tag = digest.digest, digest.tag
                    result.uri = _uri(self.image, digest)
                    result.layers = [d.to_json() for d in digest.layers]
            try:
                tail = await anyio.to_thread.run_sync(
                    partial(
                        write_tail,
                        stem_workdir=workdir,
                        split_bytes=split,
                        index=index,
                        workdir_owner=owner,
                    ),
                    self.image,
                    digest,
                    self.decision.tail,
                    known,
                )
            except ContextChangedError:
                if attempt == MAX_STAGE_ATTEMPTS:
                    raise
                continue
            return digest, tail
        raise AssertionError("unreachable")


def _rehash(image: Image, cache: DigestCache, trees: TreeProvider | None) -> ImageDigest:
    return hash_image(image, cache, trees=trees)


def _family(image: Image) -> str | None:
    """The first image of its parent chain (itself without a parent): a pool builds a
    family on one engine."""
    while isinstance(image.base, ParentBase):
        image = image.base.image
    return image.name


def _registry_auth(image: Image, client: RegistryClient) -> tuple[dict[str, str], bytes | None]:
    """The push's auth_config and the build CLI's Docker config, from the client's resolver:
    the credentials the existence check used are the ones the engine pushes with."""
    push_auth = client.credentials.auth_config(image.registry) if image.registry else {}
    return push_auth, client.credentials.docker_config()


def build(
    image: Image, *, force: bool = False, dry_run: bool = False, **options: Any
) -> ImageBuild:
    """Synchronous :func:`abuild`: ``imaged.build(image)``."""

    async def run() -> ImageBuild:
        return await abuild(image, force=force, dry_run=dry_run, **options)

    return anyio.run(run)
