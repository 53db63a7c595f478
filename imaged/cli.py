"""The ``imaged`` command line: thin wrappers over the library; errors map to exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from imaged.errors import ImagedError

F = TypeVar("F", bound=Callable[..., Any])


def _out(text: str) -> None:
    click.echo(text)


def _err(text: str) -> None:
    click.echo(text, err=True)


def handle_errors(func: F) -> F:
    """Print an ImagedError as one clear message and exit with its code; no crash dump."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ImagedError as exc:
            _err(f"error: {exc}")
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="imaged")
def main() -> None:
    """imaged: container images as Python code, tagged by their content digest."""


def _load(target: str) -> dict[str, Any]:
    from imaged.loader import load_definitions

    return load_definitions(target)


@main.command("hash")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per image.")
@handle_errors
def hash_command(target: str, as_json: bool) -> None:
    """Print each image's name, URI and content tag. TARGET is PATH[:NAME]."""
    from imaged.hashing import hash_image

    rows = []
    for name, image in _load(target).items():
        digest = hash_image(image)
        rows.append(
            {
                "name": name,
                "uri": image.uri_for(digest.tag),
                "tag": digest.tag,
                "digest": digest.digest,
                "layers": [
                    {"kind": d.kind, "label": d.label, "digest": d.digest} for d in digest.layers
                ],
            }
        )
    if as_json:
        _out(json.dumps(rows, indent=2))
        return
    for row in rows:
        _out(f"{row['name']}\t{row['uri']}\t{row['tag']}")


@main.command("dockerfile")
@click.argument("target")
@handle_errors
def dockerfile_command(target: str) -> None:
    """Print the Dockerfile imaged would build for PATH:NAME."""
    from imaged.dockerfile import render_dockerfile

    images = _load(target)
    if len(images) != 1:
        raise click.UsageError(f"pick one image with PATH:NAME (images: {', '.join(images)})")
    (image,) = images.values()
    sys.stdout.write(render_dockerfile(image).dockerfile)


@main.command("build")
@click.argument("target")
@click.option(
    "--force", is_flag=True, help="Rebuild without the build cache, even if the tag exists."
)
@click.option(
    "--dry-run", is_flag=True, help="Print Dockerfile, context and command; build nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image.")
@click.option(
    "--registry", default=None, help="Override every image's registry [env IMAGED_REGISTRY]."
)
@click.option(
    "--builder", default=None, help="local, remote, or an entry point [env IMAGED_BUILDER]."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file [env IMAGED_CONFIG].",
)
@handle_errors
def build_command(
    target: str,
    force: bool,
    dry_run: bool,
    as_json: bool,
    registry: str | None,
    builder: str | None,
    config_file: Path | None,
) -> None:
    """Build and push the images of PATH[:NAME] whose content tag is missing."""
    from imaged.cmd_build import run_build

    failed = run_build(
        target,
        force=force,
        dry_run=dry_run,
        as_json=as_json,
        overrides={"registry": registry, "builder": builder},
        config_file=config_file,
    )
    sys.exit(1 if failed else 0)
