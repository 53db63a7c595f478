"""The builder interface the build pipeline calls, builder selection, and BuildKit output parsing.

A builder turns a staged build context into an image in an engine and, when asked, pushes it.
``local``, ``remote``, ``buildx`` and ``pool`` ship with imaged; other builders register an entry point in the group
``imaged.builders`` whose object is called with the :class:`~imaged.config.Settings`.
This module imports no I/O library: the builders themselves load lazily.
"""

from __future__ import annotations

import importlib
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from imaged.config import DEFAULTS, ENV_VARS, Settings
from imaged.errors import ConfigError
from imaged.events import EventSink

if TYPE_CHECKING:
    import importlib.metadata

ENTRY_POINT_GROUP = "imaged.builders"
BUILTIN_BUILDERS: dict[str, str] = {
    "local": "imaged.builders.local:LocalBuilder",
    "remote": "imaged.builders.remote:RemoteBuilder",
    "buildx": "imaged.builders.buildx:BuildxBuilder",
    "pool": "imaged.builders.pool:shared_pool",
}
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class SecretSource:
    """A secret's value, resolved on the build host: never logged, never on an argv."""

    id: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class BuildRequest:
    """One build: a staged context, the Dockerfile inside it, and where the result goes."""

    image_name: str
    context_dir: Path
    dockerfile: Path
    tags: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    secrets: tuple[SecretSource, ...] = ()
    no_cache: bool = False
    push: bool = True
    # Registry credentials, resolved by the pipeline on its one credential path: the engine's
    # push body (``auth_config``; empty = anonymous) and, when an image has a registry_secret,
    # the Docker config the build CLI must use to pull its base (and buildx to push).
    push_auth: Mapping[str, str] = field(default_factory=dict, repr=False)
    docker_config: bytes | None = field(default=None, repr=False)
    # The root of the image's parent chain (its own name when it has no parent): a pool
    # builds a parent and its children on one engine, where the parent already is.
    family: str | None = None

    def __post_init__(self) -> None:
        if not self.tags:
            raise ValueError(f"BuildRequest for {self.image_name!r} needs at least one tag")


@dataclass(frozen=True)
class BuildOutcome:
    """What a build produced and how long it took."""

    image_id: str | None
    manifest_digest: str | None
    build_seconds: float
    push_seconds: float
    command: tuple[str, ...]
    # Set by a pool: the engine that built it, and why it was placed there.
    engine: str | None = None
    placement: str | None = None


@runtime_checkable
class Builder(Protocol):
    """Builds images. ``check`` raises EngineError naming the engine when it is unreachable."""

    name: str

    async def check(self) -> dict[str, str]: ...

    async def build(
        self, request: BuildRequest, *, on_event: EventSink | None = None
    ) -> BuildOutcome: ...

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]: ...


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    import importlib.metadata  # ~0.1 s (email, zipfile): only for a builder not built in

    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_builders() -> list[str]:
    """Every builder name :func:`get_builder` accepts, sorted."""
    return sorted(set(BUILTIN_BUILDERS) | set(_entry_points()))


def _load_factory(name: str) -> object:
    target = BUILTIN_BUILDERS.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    entry = _entry_points().get(name)
    if entry is None:
        raise ConfigError(
            f"unknown builder {name!r}; available: {', '.join(available_builders())}",
            key="builder",
        )
    try:
        return entry.load()
    except Exception as exc:
        raise ConfigError(
            f"builder {name!r} ({entry.value}) failed to load: {exc}", key="builder"
        ) from exc


def _builder_name(name: str | None, settings: Settings) -> str:
    """``name``, else the setting; a non-empty ``pool`` turns the default ``local`` into
    ``pool``, and contradicts any other builder."""
    chosen = name or settings.builder or DEFAULTS.builder
    if settings.pool and chosen == "local":
        return "pool"
    if settings.pool and chosen != "pool":
        raise ConfigError(
            f"{ENV_VARS['pool']} lists engines, but the builder is {chosen!r}: set "
            f"{ENV_VARS['builder']} to pool (or local), or empty the pool",
            key="pool",
        )
    if chosen == "pool" and not settings.pool:
        raise ConfigError(
            f"the pool builder needs engines: set {ENV_VARS['pool']} "
            "(for example unix:///var/run/docker.sock,tcp://10.0.0.5:2375)",
            key="pool",
        )
    return chosen


def get_builder(name: str | None, settings: Settings) -> Builder:
    """The builder called ``name`` (default: ``settings.builder``, ``IMAGED_BUILDER``).

    >>> get_builder("local", Settings()).name
    'local'
    """
    chosen = _builder_name(name, settings)
    factory = _load_factory(chosen)
    if not callable(factory):
        raise ConfigError(f"builder {chosen!r} is not callable: {factory!r}", key="builder")
    builder = factory(settings)
    if not isinstance(builder, Builder):
        raise ConfigError(
            f"builder {chosen!r} does not implement check/build/describe_command "
            f"(set with {ENV_VARS['builder']})",
            key="builder",
        )
    return builder


# BuildKit plain progress: "#5 [2/2] RUN make", "#5 ERROR: ...", " > [2/2] RUN make:".
_STEP_HEADER = re.compile(r"^#(\d+) (\[[^\]]+\] .+)$")
_STEP_ERROR = re.compile(r"^#(\d+) ERROR:? ")
_ERROR_SUMMARY = re.compile(r"^ > (\[[^\]]+\] .+):$")
_PARSE_ERROR = re.compile(r"dockerfile parse error (line \d+: .+)$", re.IGNORECASE)
_FINAL_ERROR = re.compile(r"^(ERROR: .+|.*executor failed running \[.+)$")


class BuildOutput:
    """Follows BuildKit ``--progress=plain`` output: keeps the tail and finds the failed step.

    Step headers are remembered as they stream by, so the failing instruction is found even when
    its header scrolled out of the tail long before the error.
    """

    def __init__(self, *, tail_lines: int = OUTPUT_TAIL_LINES) -> None:
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._headers: dict[str, str] = {}
        self._failed_step: str | None = None
        self._summary: str | None = None
        self._parse_error: str | None = None
        self._final: str | None = None

    def add(self, raw: str) -> None:
        """Record one output line."""
        line = raw.rstrip("\r\n")
        self._tail.append(line)
        if match := _STEP_HEADER.match(line):
            self._headers[match[1]] = match[2]
        elif (match := _STEP_ERROR.match(line)) and match[1] in self._headers:
            self._failed_step = self._failed_step or self._headers[match[1]]
        elif match := _ERROR_SUMMARY.match(line):
            self._summary = self._summary or match[1]
        elif match := _PARSE_ERROR.search(line):
            self._parse_error = f"Dockerfile {match[1]}"
        elif _FINAL_ERROR.match(line):
            self._final = self._final or line.strip()

    @property
    def tail(self) -> str:
        """The last lines, joined."""
        return "\n".join(self._tail)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._tail)

    @property
    def instruction(self) -> str | None:
        """The failing step (``[2/3] RUN make``), else the error summary BuildKit printed."""
        return self._failed_step or self._summary or self._parse_error or self._final


def parse_failed_instruction(lines: Iterable[str]) -> str | None:
    """The Dockerfile instruction that failed, from BuildKit ``--progress=plain`` output.

    >>> parse_failed_instruction(["#5 [2/2] RUN false", "#5 ERROR: exit code: 1"])
    '[2/2] RUN false'
    """
    output = BuildOutput()
    for line in lines:
        output.add(line)
    return output.instruction


# The registry cache (the ``registry_cache`` setting): buildx builders export BuildKit's
# cache as <repo>:CACHE_TAG (type=registry, mode=max); Docker engines, whose built-in BuildKit
# exports inline caches only, push the image with its inline cache as <repo>:LATEST_TAG too.
# Every builder imports both, so a cache made on one engine serves all of them.
CACHE_TAG = "imaged-cache"
LATEST_TAG = "imaged-latest"


def repository_of(ref: str) -> str:
    """``ref`` without its tag or digest.

    >>> repository_of("127.0.0.1:5000/team/app:abc123")
    '127.0.0.1:5000/team/app'
    """
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def build_arg_flags(settings: Settings) -> tuple[str, ...]:
    """``--build-arg KEY`` for each of ``settings.build_args`` (vetted by config): no value,
    so the docker CLI (and buildx) reads it from its environment (:func:`build_arg_env`). A
    proxy URL may hold a password, and argv is public (``ps``, /proc/PID/cmdline, the
    build_started event, the dry run's command line): those values never go there. NO_PROXY
    (a host list, nothing secret) stays ``KEY=VALUE``: the CLI's own NO_PROXY is not it.

    >>> build_arg_flags(Settings(build_args=(("HTTPS_PROXY", "http://u:pw@p:3128"),)))
    ('--build-arg', 'HTTPS_PROXY')
    """
    return tuple(
        flag
        for key, value in settings.build_args
        for flag in ("--build-arg", f"{key}={value}" if _is_no_proxy(key) else key)
    )


def build_arg_env(
    settings: Settings, environ: Mapping[str, str], *, engine_host: str | None = None
) -> dict[str, str]:
    """The proxy values of ``settings.build_args``, for the build CLI's environment. The CLI
    reads them for its own connections too (measured with docker 20.10: a tcp:// engine is
    then reached through HTTP_PROXY), so ``engine_host`` joins the CLI's NO_PROXY.

    >>> build_arg_env(Settings(build_args=(("HTTP_PROXY", "http://p:1"),)), {},
    ...               engine_host="10.0.0.5")
    {'HTTP_PROXY': 'http://p:1', 'NO_PROXY': '10.0.0.5', 'no_proxy': '10.0.0.5'}
    """
    env = {key: value for key, value in settings.build_args if not _is_no_proxy(key)}
    if env and engine_host:
        current = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
        exempt = ",".join(item for item in (current, engine_host) if item)
        env.update(NO_PROXY=exempt, no_proxy=exempt)
    return env


def _is_no_proxy(key: str) -> bool:
    return key.upper() == "NO_PROXY"


def cache_refs(request: BuildRequest) -> tuple[str, str]:
    """The registry cache refs of ``request``'s repository: (buildx cache, inline-cache image)."""
    repo = repository_of(request.tags[0])
    return f"{repo}:{CACHE_TAG}", f"{repo}:{LATEST_TAG}"
