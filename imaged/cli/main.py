"""The ``imaged`` command line: thin wrappers over the library; errors map to exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from imaged.config import SETTING
from imaged.errors import ImagedError

if TYPE_CHECKING:
    from imaged.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _help(key: str) -> str:
    """An option's help: its setting's, with the variable that sets it too."""
    return f"{SETTING[key].help} [env {SETTING[key].env}]"


def _out(text: str) -> None:
    click.echo(text)


def _err(text: str) -> None:
    click.echo(text, err=True)


def _imaged_leaves(group: BaseExceptionGroup[BaseException]) -> list[ImagedError] | None:
    """The errors in a (nested) exception group when every one is an ImagedError."""
    leaves: list[ImagedError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _imaged_leaves(exc)
            if inner is None:
                return None
            leaves += inner
        elif isinstance(exc, ImagedError):
            leaves.append(exc)
        else:
            return None
    return leaves


def handle_errors(func: F) -> F:
    """Print an ImagedError as one clear message and exit with its code; no crash dump.
    A task group's ExceptionGroup of ImagedErrors prints each one and exits with the
    first one's code; a group holding anything else is a bug and keeps its traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ImagedError as exc:
            _err(f"error: {exc}")
            sys.exit(exc.exit_code)
        except ExceptionGroup as group:
            leaves = _imaged_leaves(group)
            if not leaves:
                raise
            for leaf in leaves:
                _err(f"error: {leaf}")
            sys.exit(leaves[0].exit_code)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="imaged")
def main() -> None:
    """imaged: container images as Python code, tagged by their content digest."""


def _load(target: str) -> dict[str, Any]:
    """The images of ``PATH[:NAME]``, imported in a child interpreter: a module that exits
    is an error, and what it prints goes to stderr, never into our stdout (``--json``)."""
    from imaged.config import load_settings
    from imaged.definitions.child import load_target

    return load_target(target, timeout=load_settings().load_timeout, echo=_err)


def _load_all(targets: tuple[str, ...], recursive: bool | None) -> dict[str, Any]:
    from imaged.config import load_settings
    from imaged.definitions.child import load_targets

    settings = load_settings()
    deep = settings.recursive if recursive is None else recursive
    return load_targets(targets, recursive=deep, timeout=settings.load_timeout, echo=_err)


_recursive_option = click.option(
    "--recursive",
    is_flag=True,
    default=None,
    help=_help("recursive"),
)


_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file [env IMAGED_CONFIG].",
)
_registry_option = click.option("--registry", default=None, help=_help("registry"))
_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help=_help("state_dir"),
)


def _settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings for a command, with ``--config`` exported to definition modules too."""
    from imaged.config import export_config_file, load_settings

    export_config_file(config_file)
    return load_settings(config_file=config_file, overrides=overrides)


@main.command("hash")
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per image.")
@_registry_option
@_recursive_option
@handle_errors
def hash_command(
    targets: tuple[str, ...], as_json: bool, registry: str | None, recursive: bool | None
) -> None:
    """Print each image's name, URI and content tag. TARGETS are PATH[:NAME] or folders."""
    from imaged.config import load_settings
    from imaged.digest.bounds import hash_within
    from imaged.spec.image import override_registry

    settings = load_settings(overrides={"registry": registry})
    rows, errors = [], []
    for name, found in _load_all(targets, recursive).items():
        image = override_registry(found, settings.registry)  # the URI `imaged build` pushes
        try:
            digest = hash_within(image, settings.hash_timeout, name=name)
        except ImagedError as exc:  # this image fails; the others still hash
            _err(f"error: {exc}")
            errors.append(exc)
            continue
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
    else:
        for row in rows:
            _out(f"{row['name']}\t{row['uri']}\t{row['tag']}")
    if errors:
        sys.exit(errors[0].exit_code)


@main.command("dockerfile")
@click.argument("target")
@_registry_option
@handle_errors
def dockerfile_command(target: str, registry: str | None) -> None:
    """Print the Dockerfile imaged would build for PATH:NAME."""
    from imaged.config import load_settings
    from imaged.render.dockerfile import render_dockerfile
    from imaged.spec.image import override_registry

    images = _load(target)
    if len(images) != 1:
        raise click.UsageError(f"pick one image with PATH:NAME (images: {', '.join(images)})")
    (image,) = images.values()
    # The registry `imaged build` would use, so a parent image's FROM names the same URI.
    image = override_registry(image, load_settings(overrides={"registry": registry}).registry)
    sys.stdout.write(render_dockerfile(image).dockerfile)


@main.command("build")
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--force", is_flag=True, help="Rebuild without the build cache, even if the tag exists."
)
@click.option(
    "--dry-run", is_flag=True, help="Print Dockerfile, context and command; build nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image.")
@_registry_option
@click.option("--builder", default=None, help=_help("builder"))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file [env IMAGED_CONFIG].",
)
@_recursive_option
@handle_errors
def build_command(
    targets: tuple[str, ...],
    force: bool,
    dry_run: bool,
    as_json: bool,
    registry: str | None,
    builder: str | None,
    config_file: Path | None,
    recursive: bool | None,
) -> None:
    """Build and push the images of PATH[:NAME] (or folders) whose content tag is missing."""
    from imaged.cli.build import run_build

    failed = run_build(
        targets,
        recursive=recursive,
        force=force,
        dry_run=dry_run,
        as_json=as_json,
        overrides={"registry": registry, "builder": builder},
        config_file=config_file,
    )
    sys.exit(1 if failed else 0)


def _daemon_overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@main.command("watch")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="NDJSON events instead of the live view.")
@click.option("--recursive", is_flag=True, default=None, help=_help("recursive"))
@_registry_option
@_state_dir_option
@click.option("--status-address", default=None, help=_help("status_address"))
@_config_option
@handle_errors
def watch_command(
    paths: tuple[Path, ...],
    as_json: bool,
    recursive: bool | None,
    registry: str | None,
    state_dir: Path | None,
    status_address: str | None,
    config_file: Path | None,
) -> None:
    """Watch definitions and their inputs; rebuild and push images whose digest moved."""
    from imaged.cli.watch import pick_mode, run_daemon

    overrides = _daemon_overrides(
        recursive=recursive, registry=registry, state_dir=state_dir, status_address=status_address
    )
    settings = _settings(config_file, overrides)
    run_daemon(
        paths,
        mode=pick_mode(as_json),
        settings=settings,
        config_file=config_file,
        overrides=overrides,
    )


@main.command("daemon")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--recursive", is_flag=True, default=None, help=_help("recursive"))
@_state_dir_option
@_config_option
@handle_errors
def daemon_command(
    paths: tuple[Path, ...],
    recursive: bool | None,
    state_dir: Path | None,
    config_file: Path | None,
) -> None:
    """Run as a service (systemd Type=notify): structured logs, no terminal view."""
    from imaged.cli.watch import run_daemon

    overrides = _daemon_overrides(recursive=recursive, state_dir=state_dir)
    settings = _settings(config_file, overrides)
    run_daemon(paths, mode="log", settings=settings, config_file=config_file, overrides=overrides)


@main.command("plan")
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@_registry_option
@_state_dir_option
@_config_option
@_recursive_option
@handle_errors
def plan_command(
    targets: tuple[str, ...],
    as_json: bool,
    registry: str | None,
    state_dir: Path | None,
    config_file: Path | None,
    recursive: bool | None,
) -> None:
    """Dry run: which tags exist, and for the rest which layers differ and why.
    TARGETS are PATH[:NAME] or folders."""
    from imaged.cli.plan import run_plan

    overrides = _daemon_overrides(registry=registry, state_dir=state_dir, recursive=recursive)
    sys.exit(run_plan(targets, settings=_settings(config_file, overrides), as_json=as_json))


@main.command("status")
@click.option("--address", default=None, help="Daemon status address [env IMAGED_STATUS_ADDRESS].")
@_config_option
@handle_errors
def status_cmd(address: str | None, config_file: Path | None) -> None:
    """Ask a running daemon for its per-image view."""
    from imaged.cli.watch import status_command
    from imaged.config import load_settings

    settings = load_settings(config_file=config_file, overrides={"status_address": address})
    if not settings.status_address:
        raise click.UsageError("no status address configured")
    sys.exit(status_command(settings.status_address))


if __name__ == "__main__":
    main()
