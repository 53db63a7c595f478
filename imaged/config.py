"""Every setting of imaged, its IMAGED_* variable, and where it is read from.

Precedence: command-line flags > ``IMAGED_*`` environment variables > the config file
(``--config`` / ``IMAGED_CONFIG``, else ``./imaged.toml``, else ``[tool.imaged]`` in
``./pyproject.toml``, else ``/etc/imaged/imaged.toml``) > defaults.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from imaged.errors import ConfigError
from imaged.safe_read import read_regular

DEFAULT_DEBIAN_BASE = "python:{major}.{minor}-slim-bookworm"
SYSTEM_CONFIG = Path("/etc/imaged/imaged.toml")


@dataclass(frozen=True)
class Setting:
    """One setting: its config key, environment variable, parser and help."""

    key: str
    env: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "debian_base",
        "IMAGED_DEBIAN_BASE",
        "Reference template for from_debian_base, with {major} and {minor}.",
    ),
    Setting("registry", "IMAGED_REGISTRY", "Registry that overrides every image's registry."),
    Setting(
        "default_platforms",
        "IMAGED_DEFAULT_PLATFORMS",
        "Comma-separated platforms of an image that names none (default linux/amd64).",
    ),
    Setting(
        "image_refs",
        "IMAGED_IMAGE_REFS",
        "Images Image.from_ref_name resolves: a table name = reference, or 'name=ref,...'.",
    ),
    Setting("builder", "IMAGED_BUILDER", "Builder name: local, remote, or an entry point."),
    Setting("docker_cli", "IMAGED_DOCKER_CLI", "Path of the docker CLI used for BuildKit builds."),
    Setting(
        "docker_host",
        "IMAGED_DOCKER_HOST",
        "Engine URL for the remote builder (tcp://, ssh://, unix://).",
    ),
    Setting("docker_context", "IMAGED_DOCKER_CONTEXT", "Docker context for the remote builder."),
    Setting(
        "build_ca_bundle",
        "IMAGED_BUILD_CA_BUNDLE",
        "Extra CA bundle trusted during builds (mounted as a secret, never in a layer).",
    ),
    Setting("secrets_dir", "IMAGED_SECRETS_DIR", "Folder holding <group>/<key> secret files."),
    Setting(
        "insecure_registries",
        "IMAGED_INSECURE_REGISTRIES",
        "Comma-separated registries spoken to over plain HTTP.",
    ),
    Setting("state_dir", "IMAGED_STATE_DIR", "Where the daemon keeps its state."),
    Setting("push_timeout", "IMAGED_PUSH_TIMEOUT", "Seconds an engine call may take (push)."),
    Setting(
        "definitions",
        "IMAGED_DEFINITIONS",
        "Comma-separated definition files or folders the daemon loads.",
    ),
    Setting("recursive", "IMAGED_RECURSIVE", "Search definition folders recursively."),
    Setting("debounce_ms", "IMAGED_DEBOUNCE_MS", "Quiet period after a change before building."),
    Setting("max_wait_ms", "IMAGED_MAX_WAIT_MS", "Longest a stream of changes may delay a build."),
    Setting(
        "image_debounce_ms",
        "IMAGED_IMAGE_DEBOUNCE_MS",
        "Per-image quiet periods: a table name = ms, or 'name=ms,name2=ms'.",
    ),
    Setting("concurrency", "IMAGED_CONCURRENCY", "Builds at once (default: number of cores)."),
    Setting("supersede", "IMAGED_SUPERSEDE", "cancel (default) or queue a build that went stale."),
    Setting(
        "reconcile_seconds",
        "IMAGED_RECONCILE_SECONDS",
        "Period of the stat-only reconcile pass; 0 turns it off.",
    ),
    Setting(
        "status_address",
        "IMAGED_STATUS_ADDRESS",
        "127.0.0.1:PORT for /status, /metrics and /healthz; empty turns it off.",
    ),
    Setting("load_timeout", "IMAGED_LOAD_TIMEOUT", "Seconds a definition module may take to load."),
    Setting(
        "shutdown_timeout",
        "IMAGED_SHUTDOWN_TIMEOUT",
        "Seconds a graceful stop waits for builds to cancel.",
    ),
)
ENV_VARS: dict[str, str] = {s.key: s.env for s in SETTINGS}
# The other variables imaged reads, which are not settings of their own.
OTHER_ENV_VARS: dict[str, str] = {
    "IMAGED_CONFIG": "The config file to read (what --config sets for definition modules too).",
    "IMAGED_SECRET_<ID>": "The value of the build secret <ID> (Secret.env_name), on the build host.",
}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _path(value: Any) -> Path | None:
    if isinstance(value, Path):
        return value.expanduser()
    text = _text(value)
    return Path(text).expanduser() if text else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError("expected a list of strings or a comma-separated string")


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("expected true or false")


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool | float):
        raise TypeError("expected a whole number")
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


def _positive_int(value: Any) -> int:
    number = _non_negative_int(value)
    if number == 0:
        raise ValueError("must be at least 1")
    return number


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    number = float(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _per_image_ms(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("expected name=ms pairs separated by commas")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise TypeError("expected a table of image name = milliseconds")
    return tuple(sorted((str(k), _non_negative_int(v)) for k, v in value.items()))


def _image_refs(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
            raise ValueError("expected name=reference pairs separated by commas")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict) or not all(
        isinstance(v, str) and v.strip() for v in value.values()
    ):
        raise TypeError("expected a table of name = image reference")
    return tuple(sorted((str(k), v.strip()) for k, v in value.items()))


def _platform_list(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    if not items or any(item.count("/") not in (1, 2) for item in items):
        raise ValueError("expected platforms such as linux/amd64,linux/arm64")
    return items


def _supersede(value: Any) -> str:
    if value not in ("cancel", "queue"):
        raise ValueError("must be 'cancel' or 'queue'")
    return str(value)


def _address(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        raise ValueError("must be 127.0.0.1:PORT (imaged listens on loopback only)")
    return text


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imaged"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build one with :func:`load_settings`."""

    debian_base: str = DEFAULT_DEBIAN_BASE
    registry: str | None = None
    default_platforms: tuple[str, ...] = ("linux/amd64",)
    image_refs: tuple[tuple[str, str], ...] = ()
    builder: str = "local"
    docker_cli: str | None = None
    docker_host: str | None = None
    docker_context: str | None = None
    build_ca_bundle: Path | None = None
    secrets_dir: Path | None = None
    insecure_registries: tuple[str, ...] = ()
    state_dir: Path | None = None
    push_timeout: float = 1800.0
    definitions: tuple[str, ...] = ()
    recursive: bool = False
    debounce_ms: int = 200
    max_wait_ms: int = 5000
    image_debounce_ms: tuple[tuple[str, int], ...] = ()
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    supersede: str = "cancel"
    reconcile_seconds: float = 300.0
    status_address: str | None = "127.0.0.1:9477"
    load_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    source: str = "defaults"

    def debian_base_for(self, major: int, minor: int) -> str:
        """Resolve the debian base template for a Python version."""
        try:
            return self.debian_base.format(major=major, minor=minor)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"bad template {self.debian_base!r}: {exc}", key="debian_base", file=self.source
            ) from exc

    def image_ref(self, name: str) -> str:
        """The reference ``image_refs`` gives ``name`` (Image.from_ref_name)."""
        refs = dict(self.image_refs)
        if name not in refs:
            known = ", ".join(sorted(refs)) or "none"
            raise ConfigError(
                f"no image reference named {name!r} (known: {known}); add it to the config "
                f'file as [image_refs] {name} = "registry/repo:tag", or to '
                f"{ENV_VARS['image_refs']} as {name}=registry/repo:tag",
                key="image_refs",
                file=self.source,
            )
        return refs[name]

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or _default_state_dir()


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "debian_base": lambda v: _text(v) or DEFAULT_DEBIAN_BASE,
    "registry": _text,
    "default_platforms": _platform_list,
    "image_refs": _image_refs,
    "builder": lambda v: _text(v) or "local",
    "docker_cli": _text,
    "docker_host": _text,
    "docker_context": _text,
    "build_ca_bundle": _path,
    "secrets_dir": _path,
    "insecure_registries": _strings,
    "state_dir": _path,
    "push_timeout": _positive_float,
    "definitions": _strings,
    "recursive": _bool,
    "debounce_ms": _non_negative_int,
    "max_wait_ms": _positive_int,
    "image_debounce_ms": _per_image_ms,
    "concurrency": _positive_int,
    "supersede": _supersede,
    "reconcile_seconds": _non_negative_float,
    "status_address": _address,
    "load_timeout": _positive_float,
    "shutdown_timeout": _positive_float,
}


def export_config_file(path: Path | None) -> None:
    """Make an explicit ``--config`` reach definition modules too (and the child processes
    that load them), through ``IMAGED_CONFIG``."""
    if path is not None:
        os.environ["IMAGED_CONFIG"] = str(path.resolve())


def find_config_file(explicit: Path | None = None, *, cwd: Path | None = None) -> Path | None:
    """The config file to read, by precedence; None when there is none."""
    if explicit is not None:
        return explicit
    env = os.environ.get("IMAGED_CONFIG")
    if env:
        return Path(env)
    here = cwd or Path.cwd()
    for candidate in (here / "imaged.toml", here / "pyproject.toml", SYSTEM_CONFIG):
        if candidate.is_file() and (
            candidate.name != "pyproject.toml" or _has_tool_table(candidate)
        ):
            return candidate
    return None


def _has_tool_table(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(read_regular(pyproject).decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(data.get("tool", {}).get("imaged"), dict)


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``imaged`` table of a config file (``[tool.imaged]`` for pyproject.toml)."""
    try:
        data = tomllib.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("config file not found", file=str(path)) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", file=str(path)) from exc
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("imaged", {})
        return dict(table) if isinstance(table, dict) else {}
    return data


def _apply(settings: Settings, values: Mapping[str, Any], *, origin: str) -> Settings:
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        parser = _PARSERS.get(key)
        if parser is None:
            continue
        try:
            changes[key] = parser(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid value {raw!r}: {exc}", key=key, file=origin) from exc
    return replace(settings, **changes)


def load_settings(
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    extra_keys: tuple[str, ...] = (),
) -> Settings:
    """Resolve settings: overrides > environment > config file > defaults.

    Unknown keys in the config file are an error naming the key, except those in
    ``extra_keys`` (tables other components read, such as ``daemon``).
    """
    env = os.environ if environ is None else environ
    settings = Settings()
    path = find_config_file(config_file, cwd=cwd)
    if path is not None:
        table = read_config_file(path)
        known = {f.name for f in fields(Settings)} | set(extra_keys) | {"daemon", "definitions"}
        for key in table:
            if key not in known:
                raise ConfigError("unknown setting", key=key, file=str(path))
        settings = replace(_apply(settings, table, origin=str(path)), source=str(path))
    from_env = {s.key: env[s.env] for s in SETTINGS if env.get(s.env)}
    settings = _apply(settings, from_env, origin="environment")
    if overrides:
        present = {k: v for k, v in overrides.items() if v is not None}
        settings = _apply(settings, present, origin="command line")
    return settings
