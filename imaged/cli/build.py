"""``imaged build``: build what is missing, one line (or JSON object) per image."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from imaged.atomic_write import write_atomic
from imaged.builders.base import Builder, get_builder
from imaged.builders.scratch import sweep_stale_scratch
from imaged.config import Settings, export_config_file, load_settings
from imaged.definitions.child import load_targets
from imaged.digest.cache import DigestCache, default_cache
from imaged.errors import EngineError, HashTimeoutError, ImagedError
from imaged.spec.image import Image, override_registry

if TYPE_CHECKING:
    from imaged.pipeline.build import Hashed, ImageBuild
    from imaged.registry.client import Existence, RegistryClient

CACHE_FILE = "cli-digest-cache.json"  # in the state directory: file digests by stat


def _digest_cache_path(settings: Settings) -> Path:
    return settings.resolved_state_dir / CACHE_FILE


def _load_digest_cache(path: Path) -> None:
    """The last run's file digests into the process-wide cache (the racy-git rule still
    applies to each), so an unchanged file is stat'ed, not read; a bad file is ignored."""
    try:
        cache = DigestCache.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError, AttributeError):
        return
    default_cache().entries.update(cache.entries)


def _save_digest_cache(path: Path) -> None:
    cache = default_cache()
    cache.prune_missing()
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(cache.to_json(), separators=(",", ":")), durable=False)


def create_registry_client(settings: Settings) -> RegistryClient:
    """The registry client (:func:`imaged.registry.client.create_registry_client`),
    imported when first needed."""
    from imaged.registry.client import create_registry_client as create

    return create(settings)


def _preload(cache_path: Path) -> None:
    """What the build needs besides the definitions, while their child loads them: the
    pipeline's modules and the digest cache (the child is another process; this thread
    would otherwise wait for it)."""
    import imaged.pipeline.build
    import imaged.pipeline.logins  # noqa: F401
    from imaged.registry.client import default_ssl_context

    default_ssl_context()
    _load_digest_cache(cache_path)


def _line(result: ImageBuild) -> str:
    if result.status == "skipped":
        return f"{result.name}: skipped, {result.uri} exists"
    if result.status == "dry-run":
        return "\n".join(
            [
                f"# {result.name}: {result.uri} (dry run, nothing built)",
                f"# path: {result.path}: {result.path_reason}",
                *([f"# stem: {result.stem_uri}"] if result.stem_uri else []),
                *(f"# tail: {layer}" for layer in result.tail_layers),
                "# command: " + " ".join(result.command),
                "# context:",
                *(f"#   {p}" for p in result.context_listing),
                result.dockerfile or "",
            ]
        )
    where = "built and pushed" if result.pushed else "built into the local engine (no registry)"
    digest = f" manifest {result.manifest_digest}" if result.manifest_digest else ""
    total = result.timings.get("total", 0.0)
    engine = f" on {result.engine} ({result.placement})" if result.engine else ""
    path = f" (fast path, {result.uploaded_bytes} bytes uploaded)" if result.path == "fast" else ""
    return f"{result.name}: {where} {result.uri}{digest} in {total:.1f}s{engine}{path}"


def _report(result: ImageBuild | None, name: str, error: ImagedError | None, as_json: bool) -> None:
    if as_json:
        if result is not None:
            click.echo(json.dumps(result.to_json()))
        else:
            click.echo(json.dumps({"name": name, "status": "failed", "error": str(error)}))
        return
    if result is not None:
        click.echo(_line(result))
    else:
        click.echo(f"{name}: FAILED: {error}", err=True)


async def _build_all(
    images: dict[str, Image],
    *,
    force: bool,
    dry_run: bool,
    as_json: bool,
    overrides: dict[str, Any],
    config_file: Path | None,
) -> int:
    settings = load_settings(config_file=config_file, overrides=overrides)
    if not dry_run and not settings.registry and any(not i.registry for i in images.values()):
        click.echo(
            "note: images without a registry are built into the local engine only, not pushed",
            err=True,
        )
    from imaged.pipeline.build import abuild

    images, hashed, failed = _hashed(images, settings, as_json)
    builder = await check_builder_settings(settings)
    async with create_registry_client(settings) as client:
        checked = {} if force or dry_run else await _check_all(hashed, settings, client)

        async def one(name: str, image: Image) -> ImageBuild:
            return await abuild(
                image,
                force=force,
                dry_run=dry_run,
                builder=builder,
                settings=settings,
                registry_client=client,
                checked=checked,
                hashed=hashed.get(name),
            )

        def report(outcome: Outcome) -> None:
            nonlocal failed
            name, result, error = outcome
            failed += error is not None
            _report(result, name, error, as_json)

        limit = _build_limit(builder, settings)
        await _build_concurrently(_ordered(images), one, limit, report)
    return failed


async def check_builder_settings(settings: Settings) -> Builder:
    """The configured builder, once its settings are known good: ConfigError (one line,
    exit 78, before any build) for an unknown builder or Docker context, a pool entry that
    cannot be, or a buildx builder that does not exist. An engine that is merely down is
    not a settings error: builds report (and the daemon retries) it."""
    from imaged.builders.local import LocalBuilder

    builder = get_builder(None, settings)
    if isinstance(builder, LocalBuilder):
        builder.client_kwargs()  # names a Docker context that exists
    elif builder.name == "buildx":
        with contextlib.suppress(EngineError):
            await builder.check()
    return builder


def _build_limit(builder: Builder, settings: Settings) -> int:
    """Images built at once: a pool's total capacity, else the ``concurrency`` setting."""
    if builder.name == "pool":
        from imaged.builders.pool import PoolBuilder

        if isinstance(builder, PoolBuilder):
            return sum(engine.capacity for engine in builder.engines)
    return settings.concurrency


Outcome = tuple[str, "ImageBuild | None", ImagedError | None]  # ImageBuild loads lazily


async def _build_concurrently(
    images: list[tuple[str, Image]],
    build_one: Callable[[str, Image], Awaitable[ImageBuild]],
    limit: int,
    report: Callable[[Outcome], None],
) -> None:
    """Build up to ``limit`` images at once, started in the order given (parents first; a
    parent several children need is built once, see abuild); ``report`` each outcome in
    that order, as soon as it and those before it are done."""
    done: list[Outcome | None] = [None] * len(images)
    shown = 0
    limiter = anyio.CapacityLimiter(max(1, limit))

    def report_ready() -> None:
        nonlocal shown
        while shown < len(done) and (ready := done[shown]) is not None:
            report(ready)
            shown += 1

    async def run(index: int, name: str, image: Image) -> None:
        async with limiter:
            try:
                done[index] = (name, await build_one(name, image), None)
            except ImagedError as exc:
                done[index] = (name, None, exc)
        report_ready()

    async with anyio.create_task_group() as tg:
        for index, (name, image) in enumerate(images):
            tg.start_soon(run, index, name, image)


def _hashed(
    images: dict[str, Image], settings: Settings, as_json: bool
) -> tuple[dict[str, Image], dict[str, Hashed], int]:
    """The images whose inputs hash within ``hash_timeout`` (so a hung mount under one
    image's folder fails that image, not the run), their digests (hashed once, here: the
    registry check and abuild use them), and how many failed."""
    from imaged.digest.bounds import hash_within
    from imaged.pipeline.build import Hashed

    kept: dict[str, Image] = {}
    hashed: dict[str, Hashed] = {}
    for name, image in images.items():
        effective = override_registry(image, settings.registry)  # the image abuild builds
        try:
            hashed[name] = Hashed(
                effective, hash_within(effective, settings.hash_timeout, name=name)
            )
        except HashTimeoutError as exc:
            _report(None, name, exc, as_json)
            continue
        except ImagedError:
            pass  # abuild reports it, as it validates first
        kept[name] = image
    return kept, hashed, len(images) - len(kept)


async def _check_all(
    hashed: dict[str, Hashed], settings: Settings, client: RegistryClient
) -> dict[str, Existence]:
    """Ask the registry about every hashed image at once; errors are left for abuild."""
    from imaged.pipeline.logins import check_images
    from imaged.registry.client import Existence

    wanted = {h.image.uri_for(h.digest.tag): h.image for h in hashed.values() if h.image.registry}
    found = await check_images(client, wanted, settings)
    return {uri: answer for uri, answer in found.items() if isinstance(answer, Existence)}


def _ordered(images: dict[str, Image]) -> list[tuple[str, Image]]:
    """Parents (images another one is built from) first."""
    from imaged.spec.image import ParentBase

    def depth(image: Image) -> int:
        base = image.base
        return 1 + depth(base.image) if isinstance(base, ParentBase) else 0

    return sorted(images.items(), key=lambda item: depth(item[1]))


def run_build(
    targets: str | Sequence[str],
    *,
    recursive: bool | None = None,
    force: bool,
    dry_run: bool,
    as_json: bool,
    overrides: dict[str, Any],
    config_file: Path | None,
) -> int:
    """Returns the number of images that failed."""
    sweep_stale_scratch()  # secret files a killed build left behind
    export_config_file(config_file)
    settings = load_settings(config_file=config_file)
    deep = settings.recursive if recursive is None else recursive
    cache_path = _digest_cache_path(settings)
    preload = threading.Thread(target=_preload, args=(cache_path,), daemon=True)
    preload.start()
    images = load_targets(
        (targets,) if isinstance(targets, str) else targets,
        recursive=deep,
        timeout=settings.load_timeout,
        echo=lambda line: click.echo(line, err=True),
    )
    preload.join()

    async def main() -> int:
        return await _build_all(
            images,
            force=force,
            dry_run=dry_run,
            as_json=as_json,
            overrides=overrides,
            config_file=config_file,
        )

    try:
        return anyio.run(main)
    finally:
        if not dry_run:
            _save_digest_cache(cache_path)
