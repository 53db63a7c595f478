"""``imaged plan``: a one-shot dry run of what the daemon would do, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import click

from imaged.config import Settings
from imaged.errors import ImagedError
from imaged.hashing import hash_image
from imaged.image import Image
from imaged.loader import load_definitions
from imaged.registry import Existence, RegistryClient


def _layer_diff(pushed: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """Reasons naming each layer whose digest differs from the last pushed state."""
    before = {layer["label"]: layer for layer in pushed}
    reasons: list[str] = []
    for layer in now:
        old = before.pop(layer["label"], None)
        if old is None:
            reasons.append(f"layer `{layer['label']}` is new")
        elif old["digest"] != layer["digest"]:
            changed = sorted(
                path
                for path, digest in layer.get("files", {}).items()
                if old.get("files", {}).get(path) != digest
            )
            trees = [
                root
                for root, digest in layer.get("trees", {}).items()
                if old.get("trees", {}).get(root) != digest
            ]
            detail = (
                ", ".join(Path(p).name for p in changed)
                or ", ".join(f"{Path(t).name}/ contents" for t in trees)
                or "inputs"
            )
            reasons.append(f"layer `{layer['label']}` moved: {detail} changed")
    reasons += [f"layer `{label}` was removed" for label in before]
    return reasons


def _collect(paths: tuple[Path, ...], settings: Settings) -> dict[str, Image]:
    from imaged.defsproc import discover_definition_files

    images: dict[str, Image] = {}
    for file in discover_definition_files(list(paths), recursive=settings.recursive):
        for name, image in load_definitions(str(file)).items():
            images[name] = image.clone(registry=settings.registry) if settings.registry else image
    return images


async def _plan(images: dict[str, Image], settings: Settings) -> list[dict[str, Any]]:
    from imaged.state import StateStore

    records = StateStore(settings.resolved_state_dir).load()
    digests = {name: hash_image(image) for name, image in images.items()}
    uris = {name: images[name].uri_for(d.tag) for name, d in digests.items()}
    async with RegistryClient(insecure_hosts=settings.insecure_registries) as client:
        found = await client.check_many([u for n, u in uris.items() if images[n].registry])
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
            record = records.get(name)
            layers = [d.to_json() for d in digest.layers]
            row["reasons"] = (
                _layer_diff(record.layers, layers)
                if record and record.layers
                else ["never pushed by this state directory"]
            )
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
