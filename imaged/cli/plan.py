"""``imaged plan``: a one-shot dry run of what the daemon would do, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import click

from imaged.config import Settings
from imaged.daemon.store import ImageRecord, StateStore
from imaged.definitions.child import load_targets
from imaged.digest.bounds import hash_within
from imaged.digest.image_digest import ImageDigest
from imaged.errors import ImagedError
from imaged.pipeline.logins import check_images
from imaged.pipeline.route import describe_layer, route
from imaged.registry.client import Existence, create_registry_client
from imaged.spec.image import Image, override_registry


def _layer_diff(pushed: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """Reasons naming each layer whose digest differs from the last pushed state."""
    before = {layer["label"]: layer for layer in pushed}
    reasons: list[str] = []
    for layer in now:
        old = before.pop(layer["label"], None)
        if old is None:
            reasons.append(f"layer `{layer['label']}` is new")
        elif old["digest"] != layer["digest"]:
            changed = _moved_keys(old.get("files", {}), layer.get("files", {}))
            trees = _moved_keys(old.get("trees", {}), layer.get("trees", {}))
            detail = (
                ", ".join(Path(p).name for p in changed)
                or ", ".join(f"{Path(t).name}/ contents" for t in trees)
                or "inputs"
            )
            reasons.append(f"layer `{layer['label']}` moved: {detail} changed")
    reasons += [f"layer `{label}` was removed" for label in before]
    return reasons


def _moved_keys(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Paths whose digest differs, including those added or gone."""
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))


def _reasons(record: ImageRecord | None, digest: ImageDigest, status: str) -> list[str]:
    """Why an image whose tag is not known to exist would be built."""
    if record is None or not record.layers:
        return ["never pushed by this state directory"]
    reasons = _layer_diff(record.layers, [d.to_json() for d in digest.layers])
    if reasons:
        return reasons
    if record.tag != digest.tag:
        return [
            f"no layer moved, but the base or build inputs did: tag {record.tag} -> {digest.tag}"
        ]
    if status == "missing":
        return ["no layer moved since the last push, but the tag is gone from the registry"]
    return ["no layer moved since the last push"]


def _collect(targets: tuple[str, ...], settings: Settings) -> dict[str, Image]:
    """The images of ``targets``, each module loaded in a child (no secrets in its
    environment, within ``load_timeout``; what it prints goes to stderr, never the plan)."""
    images = load_targets(
        targets,
        recursive=settings.recursive,
        timeout=settings.load_timeout,
        echo=lambda line: click.echo(line, err=True),
    )
    return {name: override_registry(image, settings.registry) for name, image in images.items()}


def _hashed(
    images: dict[str, Image], settings: Settings
) -> tuple[dict[str, ImageDigest], dict[str, ImagedError]]:
    """Each image's digest within ``hash_timeout``, or the error that image failed with."""
    digests: dict[str, ImageDigest] = {}
    errors: dict[str, ImagedError] = {}
    for name, image in images.items():
        try:
            digests[name] = hash_within(image, settings.hash_timeout, name=name)
        except ImagedError as exc:  # this image fails; the others are still planned
            errors[name] = exc
    return digests, errors


def _status(outcome: Existence | ImagedError | None) -> str:
    if outcome is Existence.EXISTS:
        return "exists"
    if outcome is Existence.MISSING:
        return "missing"
    return "local" if outcome is None else "unknown"


def _row(name: str, uri: str, outcome: Existence | ImagedError | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "uri": uri, "status": _status(outcome), "reasons": []}
    if isinstance(outcome, ImagedError):
        row["error"] = str(outcome)
    return row


def _failed(name: str, error: ImagedError) -> dict[str, Any]:
    """The row of an image that could not be hashed: no tag, so no URI."""
    return {"name": name, "uri": None, "status": "failed", "reasons": [], "error": str(error)}


async def _plan(images: dict[str, Image], settings: Settings) -> list[dict[str, Any]]:
    records = StateStore(settings.resolved_state_dir).load()
    digests, errors = _hashed(images, settings)  # a one-shot command: nothing else waits
    uris = {name: images[name].uri_for(d.tag) for name, d in digests.items()}
    wanted = {u: images[n] for n, u in uris.items() if images[n].registry}
    async with create_registry_client(settings) as client:
        found = await check_images(client, wanted, settings)
    rows: list[dict[str, Any]] = []
    for name in images:
        if name in errors:
            rows.append(_failed(name, errors[name]))
            continue
        row = _row(name, uris[name], found.get(uris[name]))
        if row["status"] != "exists":
            row["reasons"] = _reasons(records.get(name), digests[name], row["status"])
        rows.append(row | _path(images[name], settings))
    return rows


def _path(image: Image, settings: Settings) -> dict[str, Any]:
    """The path a build of ``image`` takes (fast or full), why, and the layer forcing a
    full build (``layer 3 (source_folder src/)``), if one does."""
    decided = route(image, settings)
    forcing = None if decided.forcing is None else describe_layer(image, decided.forcing)
    return {"path": decided.path, "path_reason": decided.reason, "forcing_layer": forcing}


def run_plan(targets: tuple[str, ...], *, settings: Settings, as_json: bool) -> int:
    """Print the plan; exit code 1 when an image failed to hash or its registry could not
    answer (the other images are still planned)."""
    images = _collect(targets, settings)
    rows = anyio.run(_plan, images, settings)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
            continue
        where = f" {row['uri']}" if row["uri"] else ""
        click.echo(f"{row['name']}: {row['status']}{where}")
        for reason in row["reasons"]:
            click.echo(f"    {reason}")
        if row["status"] != "exists" and "path" in row:
            click.echo(f"    {row['path']} path: {row['path_reason']}")
        if "error" in row:
            click.echo(f"    error: {row['error']}")
    return 1 if any(r["status"] in ("unknown", "failed") for r in rows) else 0
