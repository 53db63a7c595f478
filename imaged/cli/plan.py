"""``imaged plan``: a one-shot dry run of what the daemon would do, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import click

from imaged.config import Settings
from imaged.daemon.store import ImageRecord, StateStore
from imaged.definitions.loader import load_definitions
from imaged.digest.image_digest import ImageDigest, hash_image
from imaged.errors import ImagedError
from imaged.pipeline.logins import check_images
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


def _collect(paths: tuple[Path, ...], settings: Settings) -> dict[str, Image]:
    from imaged.definitions.child import discover_definition_files

    images: dict[str, Image] = {}
    for file in discover_definition_files(list(paths), recursive=settings.recursive):
        for name, image in load_definitions(str(file)).items():
            images[name] = override_registry(image, settings.registry)
    return images


async def _plan(images: dict[str, Image], settings: Settings) -> list[dict[str, Any]]:
    records = StateStore(settings.resolved_state_dir).load()
    digests = {name: hash_image(image) for name, image in images.items()}
    uris = {name: images[name].uri_for(d.tag) for name, d in digests.items()}
    wanted = {u: images[n] for n, u in uris.items() if images[n].registry}
    async with create_registry_client(settings) as client:
        found = await check_images(client, wanted, settings)
    rows = []
    for name, digest in digests.items():
        outcome = found.get(uris[name])
        status = (
            "exists"
            if outcome is Existence.EXISTS
            else "missing"
            if outcome is Existence.MISSING
            else "local"
            if outcome is None
            else "unknown"
        )
        row: dict[str, Any] = {"name": name, "uri": uris[name], "status": status, "reasons": []}
        if isinstance(outcome, ImagedError):
            row["error"] = str(outcome)
        if status != "exists":
            row["reasons"] = _reasons(records.get(name), digest, status)
        rows.append(row)
    return rows


def run_plan(paths: tuple[Path, ...], *, settings: Settings, as_json: bool) -> int:
    """Print the plan; exit code 1 when some registry could not answer."""
    images = _collect(paths, settings)
    rows = anyio.run(_plan, images, settings)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
            continue
        click.echo(f"{row['name']}: {row['status']} {row['uri']}")
        for reason in row["reasons"]:
            click.echo(f"    {reason}")
        if "error" in row:
            click.echo(f"    error: {row['error']}")
    return 1 if any(r["status"] == "unknown" for r in rows) else 0
