"""Every setting of imaged, its IMAGED_* variable, and where it is read from.

Precedence: command-line flags > ``IMAGED_*`` environment variables > the config file
(``--config`` / ``IMAGED_CONFIG``, else ``./imaged.toml``, else ``[tool.imaged]`` in
``./pyproject.toml``, else ``/etc/imaged/imaged.toml``) > defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from imaged.errors import ConfigError
from imaged.safe_read import read_regular

SYSTEM_CONFIG = Path("/etc/imaged/imaged.toml")
_SETTING = "imaged.setting"  # the metadata key of a Settings field that is a setting
T = TypeVar("T")
# What becomes of a build that went stale while running (the ``supersede`` setting).
Supersede = Literal["cancel", "queue"]


@dataclass(frozen=True)
class Setting:
    """One setting, read off its row in :class:`Settings`: config key, ``IMAGED_*``
    variable, default, parser and help."""

    key: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    blank_is_default: bool = False  # an empty value ("") means the default, not "unset"

    @property
    def env(self) -> str:
        return "IMAGED_" + self.key.upper()

    def read(self, raw: Any) -> Any:
        """``raw`` (from a file, the environment or a flag) parsed; TypeError/ValueError."""
        value = self.parse(raw)
        return self.default if value is None and self.blank_is_default else value


@dataclass(frozen=True)
class _Row:
    parse: Callable[[Any], Any]
    help: str
    blank_is_default: bool


def _setting(
    default: T, parse: Callable[[Any], T | None], help: str, *, blank_is_default: bool = False
) -> T:
    """A :class:`Settings` field that is a setting: its one declaration (the row)."""
    row = {_SETTING: _Row(parse, help, blank_is_default)}
    return field(default=default, metadata=row)


def _computed_setting(factory: Callable[[], T], parse: Callable[[Any], T], help: str) -> T:
    """A setting whose default depends on the machine (read when Settings is built)."""
    return field(default_factory=factory, metadata={_SETTING: _Row(parse, help, False)})


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


DOCKER_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "npipe://", "fd://")


def _docker_host(value: Any) -> str | None:
    """An engine URL the docker CLI and SDK both take, or a ValueError naming the scheme."""
    host = _text(value)
    if host is not None and not host.startswith(DOCKER_HOST_SCHEMES):
        scheme = host.split("://", 1)[0] if "://" in host else host
        raise ValueError(f"wrong scheme {scheme!r} (expected unix://, tcp://, ssh://)")
    return host


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


def _supersede(value: Any) -> Supersede:
    if value == "cancel" or value == "queue":
        return value  # type: ignore[no-any-return]
    raise ValueError("must be 'cancel' or 'queue'")


def _address(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        raise ValueError("must be 127.0.0.1:PORT (imaged listens on loopback only)")
    return text


POOL_SCHEMES = ("unix://", "tcp://", "ssh://", "context:", "buildx:")
_LABEL = re.compile(r"^[A-Za-z0-9_.:/-]+$")
_POOL_KEYS = frozenset({"address", "capacity", "labels"})


@dataclass(frozen=True)
class PoolEntry:
    """One engine of the build pool: where it is, how many builds at once (None: the
    ``pool_capacity`` default) and its labels (platforms it builds, say ``linux/arm64``).

    >>> PoolEntry("tcp://10.0.0.5:2375", 4, ("linux/amd64",)).kind
    'docker'
    """

    address: str
    capacity: int | None = None
    labels: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``docker`` (an engine URL), ``context`` (a Docker context) or ``buildx``."""
        scheme = self.address.split(":", 1)[0]
        return scheme if scheme in ("context", "buildx") else "docker"

    @property
    def target(self) -> str:
        """The engine URL, the context's name or the buildx builder's name."""
        return self.address.split(":", 1)[1] if self.kind != "docker" else self.address


def _check_address(address: str) -> str:
    if not address.startswith(POOL_SCHEMES):
        scheme = address.split(":", 1)[0] if ":" in address else address
        raise ValueError(
            f"pool entry {address!r}: wrong scheme {scheme!r} (expected unix://, tcp://, "
            "ssh://, context:NAME or buildx:NAME)"
        )
    rest = address.split(":", 1)[1].removeprefix("//")
    if not rest or (address.startswith("tcp://") and not re.fullmatch(r"[^/:]+:\d+/?", rest)):
        what = "HOST:PORT" if address.startswith("tcp://") else "a name or path"
        raise ValueError(f"pool entry {address!r}: needs {what} after the scheme")
    return address


def _pool_capacity(address: str, raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        if isinstance(raw, bool | float) or int(raw) < 1:
            raise ValueError
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"pool entry {address!r}: capacity {raw!r} is not a whole number >= 1"
        ) from None


def _pool_labels(address: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [label for label in raw.split("+") if label]
    if not isinstance(raw, list) or not all(isinstance(v, str) and _LABEL.match(v) for v in raw):
        raise ValueError(
            f"pool entry {address!r}: labels {raw!r} must be names such as linux/arm64 "
            "(a list, or a+b in a string)"
        )
    return tuple(raw)


def _pool_entry_text(text: str) -> PoolEntry:
    """``ADDRESS [capacity=N] [labels=a+b]``."""
    address, *options = text.split()
    _check_address(address)
    table: dict[str, Any] = {"address": address}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("capacity", "labels") or key in table:
            raise ValueError(
                f"pool entry {text!r}: {option!r} is not capacity=N or labels=a+b (once each)"
            )
        table[key] = value
    return _pool_entry_table(table)


def _pool_entry_table(table: Mapping[str, Any]) -> PoolEntry:
    address = table.get("address")
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"pool entry {dict(table)!r} needs an address")
    address = _check_address(address.strip())
    unknown = sorted(set(table) - _POOL_KEYS)
    if unknown:
        raise ValueError(
            f"pool entry {address!r}: unknown key {unknown[0]!r} (address, capacity, labels)"
        )
    capacity = _pool_capacity(address, table.get("capacity"))
    return PoolEntry(address, capacity, _pool_labels(address, table.get("labels", [])))


def _pool(value: Any) -> tuple[PoolEntry, ...]:
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, list | tuple):
        raise TypeError("expected a list of engines or 'ADDRESS [capacity=N] [labels=a+b],...'")
    entries: list[PoolEntry] = []
    for item in value:
        if isinstance(item, PoolEntry):
            entry = item
        elif isinstance(item, str):
            entry = _pool_entry_text(item.strip())
        elif isinstance(item, dict):
            entry = _pool_entry_table(item)
        else:
            raise TypeError(f"pool entry {item!r} is neither a string nor a table")
        if any(e.address.rstrip("/") == entry.address.rstrip("/") for e in entries):
            raise ValueError(f"pool entry {entry.address!r} is listed twice")
        entries.append(entry)
    return tuple(entries)


# The build arguments ``build_args`` accepts: BuildKit's predefined proxy arguments. BuildKit
# keeps them out of the cache key and the image's history unless a Dockerfile declares them,
# and they choose the network path, not the bytes (as build_ca_bundle), so they may stay out
# of the digest. Any other argument could change an image (a user's Dockerfile ARG) without
# moving its digest, and the BUILDKIT_* ones change how it is built (registry_cache owns
# BUILDKIT_INLINE_CACHE): refused.
BUILD_ARG_KEYS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
# Line breaks and NUL: the same set as imaged.spec.checks.LINE_BREAKS (this module comes
# before spec in the import order; tests/test_config.py holds the two equal).
BUILD_ARG_BREAKS = "\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _build_arg(key: Any, value: Any) -> tuple[str, str]:
    if not isinstance(key, str) or not isinstance(value, str):
        raise TypeError(f'expected KEY = "value" strings, not {key!r} = {value!r}')
    if not (key.isascii() and key.isidentifier()):
        raise ValueError(f"build argument name {key!r} is not an identifier")
    if key not in BUILD_ARG_KEYS:
        raise ValueError(
            f"build argument {key!r} is not accepted: only BuildKit's proxy arguments "
            f"({', '.join(sorted(k for k in BUILD_ARG_KEYS if k.isupper()))} and their "
            "lower-case forms) may be given to every build, because they cannot change an "
            "image; a value that changes one belongs in its definition, where the digest sees it"
        )
    if any(char in BUILD_ARG_BREAKS for char in value):
        raise ValueError(f"build argument {key} holds a line break or NUL")
    return key, value


def _build_args(value: Any) -> tuple[tuple[str, str], ...]:
    """A table KEY = "value", or (the variable) KEY=VALUE entries separated by white space."""
    if isinstance(value, str):
        entries = [item.partition("=") for item in value.split()]
        if any(not sep for _key, sep, _value in entries):
            raise ValueError("expected KEY=VALUE entries separated by spaces")
        value = {key: item for key, _sep, item in entries}
    if not isinstance(value, dict):
        raise TypeError('expected a table of KEY = "value"')
    return tuple(sorted(_build_arg(key, item) for key, item in value.items()))


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imaged"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build one with :func:`load_settings`.

    Each field but ``source`` is a setting, declared once here (default, parser, help); its
    config key is the field name and its variable ``IMAGED_<KEY>`` (see :data:`SETTINGS`).
    """

    debian_base: str = _setting(
        "python:{major}.{minor}-slim-bookworm",
        _text,
        "Reference template for from_debian_base, with {major} and {minor}.",
        blank_is_default=True,
    )
    registry: str | None = _setting(None, _text, "Registry that overrides every image's registry.")
    default_platforms: tuple[str, ...] = _setting(
        ("linux/amd64",),
        _platform_list,
        "Comma-separated platforms of an image that names none (default linux/amd64).",
    )
    image_refs: tuple[tuple[str, str], ...] = _setting(
        (),
        _image_refs,
        "Images Image.from_ref_name resolves: a table name = reference, or 'name=ref,...'.",
    )
    builder: str = _setting(
        "local",
        _text,
        "Builder name: local, remote, or an entry point.",
        blank_is_default=True,
    )
    docker_cli: str | None = _setting(
        None, _text, "Path of the docker CLI used for BuildKit builds."
    )
    docker_host: str | None = _setting(
        None, _docker_host, "Engine URL for the remote builder (tcp://, ssh://, unix://)."
    )
    docker_context: str | None = _setting(None, _text, "Docker context for the remote builder.")
    pool: tuple[PoolEntry, ...] = _setting(
        (),
        _pool,
        "Build engines: 'ADDRESS [capacity=N] [labels=a+b],...' (unix://, tcp://, ssh://, "
        "context:NAME, buildx:NAME); empty: one engine, as the builder setting says.",
    )
    pool_capacity: int = _setting(
        2, _positive_int, "Builds at once per pool engine that names no capacity."
    )
    build_ca_bundle: Path | None = _setting(
        None,
        _path,
        "Extra CA bundle trusted during builds (mounted as a secret, never in a layer).",
    )
    buildx_builder: str | None = _setting(
        None, _text, "Name of the buildx builder the buildx builder builds on (docker buildx ls)."
    )
    build_args: tuple[tuple[str, str], ...] = _setting(
        (),
        _build_args,
        "Build arguments of every build: proxies only (a table, or 'HTTP_PROXY=... NO_PROXY=...').",
    )
    registry_cache: bool = _setting(
        False,
        _bool,
        "Share BuildKit's cache across engines through the registry (<repo>:imaged-cache).",
    )
    secrets_dir: Path | None = _setting(None, _path, "Folder holding <group>/<key> secret files.")
    insecure_registries: tuple[str, ...] = _setting(
        (), _strings, "Comma-separated registries spoken to over plain HTTP."
    )
    state_dir: Path | None = _setting(
        None, _path, "Where the daemon keeps its state (default $XDG_STATE_HOME/imaged)."
    )
    push_timeout: float = _setting(
        1800.0, _positive_float, "Seconds an engine call may take (push)."
    )
    fast_path: bool = _setting(
        True,
        _bool,
        "Append file-only tail layers to a pushed stem in the registry instead of building.",
    )
    fastpath_split_bytes: int = _setting(
        8 << 20,
        _positive_int,
        "Tar bytes past which the fast path splits a folder into several layers.",
    )
    definitions: tuple[str, ...] = _setting(
        (), _strings, "Comma-separated definition files or folders the daemon loads."
    )
    recursive: bool = _setting(False, _bool, "Search definition folders recursively.")
    debounce_ms: int = _setting(
        200,
        _non_negative_int,
        "Quiet period before building while changes keep coming (a burst).",
    )
    settle_ms: int = _setting(
        25,
        _non_negative_int,
        "Quiet period before building the first change after a quiet spell (a save).",
    )
    watch_step_ms: int = _setting(
        5, _positive_int, "How often the watcher collects the OS's file events."
    )
    max_wait_ms: int = _setting(
        5000, _positive_int, "Longest a stream of changes may delay a build."
    )
    image_debounce_ms: tuple[tuple[str, int], ...] = _setting(
        (),
        _per_image_ms,
        "Per-image quiet periods, for every change (no settle_ms): name = ms, or 'name=ms,n2=ms'.",
    )
    concurrency: int = _computed_setting(
        lambda: os.cpu_count() or 2,
        _positive_int,
        "Builds at once (default: number of cores).",
    )
    supersede: Supersede = _setting(
        "cancel", _supersede, "cancel (default) or queue a build that went stale."
    )
    reconcile_seconds: float = _setting(
        300.0,
        _non_negative_float,
        "Period of the stat sweep (re-stat every input for missed file events); 0 turns it off.",
    )
    status_address: str | None = _setting(
        "127.0.0.1:9477",
        _address,
        "127.0.0.1:PORT for /status, /metrics and /healthz; empty turns it off.",
    )
    load_timeout: float = _setting(
        30.0, _positive_float, "Seconds a definition module may take to load."
    )
    hash_timeout: float = _setting(
        60.0,
        _positive_float,
        "Seconds the first walk of a folder may take before its images fail (a hung mount).",
    )
    shutdown_timeout: float = _setting(
        10.0, _positive_float, "Seconds a graceful stop waits for builds to cancel."
    )
    source: str = "defaults"  # not a setting: where the values came from

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


def _settings_table() -> tuple[Setting, ...]:
    rows = []
    for f in fields(Settings):
        row = f.metadata.get(_SETTING)
        if isinstance(row, _Row):
            default = f.default if f.default_factory is MISSING else f.default_factory()
            rows.append(Setting(f.name, default, row.parse, row.help, row.blank_is_default))
    return tuple(rows)


# Every setting in declaration order, derived from the rows of Settings: what env parsing,
# file parsing, the example-config check and the error messages read.
SETTINGS: tuple[Setting, ...] = _settings_table()
SETTING: dict[str, Setting] = {s.key: s for s in SETTINGS}
ENV_VARS: dict[str, str] = {s.key: s.env for s in SETTINGS}
DEFAULTS = Settings()
DEFAULT_DEBIAN_BASE: str = DEFAULTS.debian_base
# The other variables imaged reads, which are not settings of their own.
OTHER_ENV_VARS: dict[str, str] = {
    "IMAGED_CONFIG": "The config file to read (what --config sets for definition modules too).",
    "IMAGED_SECRET_<ID>": "The value of the build secret <ID> (Secret.env_name), on the build host.",
}
SECRET_ENV_PREFIX = "IMAGED_SECRET_"  # + Secret.env_name: a build secret's value


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without build secrets (``IMAGED_SECRET_*``) or where their files are
    (``IMAGED_SECRETS_DIR``): the environment of every child that does not read them.

    >>> without_secrets({"IMAGED_SECRET_TOK": "x", "IMAGED_SECRETS_DIR": "/s", "HOME": "/r"})
    {'HOME': '/r'}
    """
    hidden = ENV_VARS["secrets_dir"]
    return {k: v for k, v in environ.items() if not k.startswith(SECRET_ENV_PREFIX) and k != hidden}


# Tables a config file may hold that are not settings, with why they are refused.
_REFUSED_TABLES: dict[str, str] = {
    "daemon": "there is no [daemon] table: the daemon's settings (definitions, debounce_ms, "
    "concurrency, ...) are top-level keys of the file",
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
        setting = SETTING.get(key)
        if setting is None:
            continue
        try:
            changes[key] = setting.read(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid value {raw!r}: {exc}", key=key, file=origin) from exc
    return replace(settings, **changes)


def _check_keys(table: Mapping[str, Any], path: Path) -> None:
    """Every key of a config file is a setting: an unknown key is an error naming it."""
    for key in table:
        if key in _REFUSED_TABLES:
            raise ConfigError(_REFUSED_TABLES[key], key=key, file=str(path))
        if key not in SETTING:
            raise ConfigError("unknown setting", key=key, file=str(path))


def load_settings(
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings: overrides > environment > config file > defaults.

    A key of the config file that is not a setting is an error naming the key and file.
    """
    env = os.environ if environ is None else environ
    settings = Settings()
    path = find_config_file(config_file, cwd=cwd)
    if path is not None:
        table = read_config_file(path)
        _check_keys(table, path)
        settings = replace(_apply(settings, table, origin=str(path)), source=str(path))
    from_env = {s.key: env[s.env] for s in SETTINGS if env.get(s.env)}
    settings = _apply(settings, from_env, origin="environment")
    if overrides:
        present = {k: v for k, v in overrides.items() if v is not None}
        settings = _apply(settings, present, origin="command line")
    return settings
