"""The pool builder: several engines behind the Builder protocol, each build placed where its
cache is warm, with capacity limits, failover and probing of engines that went down.

Each entry of ``pool`` wraps a builder that exists already: a Docker engine URL or context is a
:class:`~imaged.builders.remote.RemoteBuilder` (it builds and pushes from the engine itself), a
``buildx:NAME`` entry the buildx builder (``imaged.builders.buildx``, loaded lazily). Placement:

1. the engine that built the image last, while it is up and under capacity ("last built here");
2. else the engine that built its family's root (its parent chain's first image): the parent
   is already in that engine ("parent built here");
3. else the least-loaded up engine whose platform labels cover the image's platforms.

An engine whose build fails as the engine's fault (:class:`EngineError`, or what
:func:`imaged.failures.classify` calls ``engine``) is marked down and the build moves to another
engine, inside this one call; a down engine is probed with exponential backoff (1 s doubling to
30 s), at placement (so a CLI build needs no background task) and by the daemon's engine loop
(so the view shows it back even while nothing builds). With no engine up, a build fails with a
transient EngineError ("no engine available"): the scheduler retries it with backoff.

An engine that hangs (alive, not answering: stopped, wedged, its host swapping) fails no
build by itself: the CLI waits on its socket forever. So while a build runs, the pool pings
its engine every ``hang_probe_seconds`` (10 s), each ping given as long to answer; after
``hang_probes`` (3) missed in a row (30-60 s of silence) the engine is marked down and the
build is cancelled (its CLI stopped) and retried on another engine, as for any engine
failure. A ping is cheap (``/_ping``; ``buildx inspect`` for a buildx builder) and answers
while the engine is busy building, so a long build on a loaded engine is never cut short.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from imaged.atomic_write import write_atomic
from imaged.builders.base import Builder, BuildOutcome, BuildRequest
from imaged.builders.local import find_docker_cli
from imaged.builders.remote import RemoteBuilder
from imaged.config import ENV_VARS, PoolEntry, Settings, without_secrets
from imaged.errors import BuildError, ConfigError, EngineError, ImagedError, is_transient
from imaged.events import BuildBuilding, EventSink, send
from imaged.failures import classify

PROBE_INITIAL = 1.0
PROBE_MAX = 30.0
PROBE_TIMEOUT = 15.0
HANG_PROBE_SECONDS = 10.0  # a running build's engine is pinged this often...
HANG_PROBES = 3  # ...and declared hung after this many missed pings in a row
WAIT_POLL = 1.0  # a build waiting for capacity looks again at least this often
STATE_FILE = "pool.json"  # in state_dir: the engine each image was built on last


@dataclass
class Engine:
    """One engine of the pool and what the pool knows of it."""

    name: str
    builder: Builder
    capacity: int
    labels: tuple[str, ...] = ()
    running: int = 0
    up: bool = True
    error: str | None = None
    failures: int = 0  # consecutive failed probes
    next_probe: float = 0.0
    probing: bool = False
    builds: int = 0

    @property
    def platforms(self) -> frozenset[str]:
        """The labels that are platforms (``os/arch``); none means any platform."""
        return frozenset(label for label in self.labels if "/" in label)

    def can_build(self, platforms: tuple[str, ...]) -> bool:
        return not self.platforms or set(platforms) <= self.platforms

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "state": "up" if self.up else "down",
            "running": self.running,
            "capacity": self.capacity,
            "labels": list(self.labels),
            "builds": self.builds,
            "error": self.error,
        }


@dataclass(frozen=True)
class Placement:
    """Where one build goes, and why."""

    engine: Engine
    why: str


def _buildx_builder(settings: Settings, entry: PoolEntry) -> Builder:
    try:
        module = importlib.import_module("imaged.builders.buildx")
    except ModuleNotFoundError as exc:
        if exc.name != "imaged.builders.buildx":
            raise
        raise ConfigError(
            f"pool entry {entry.address!r}: this imaged has no buildx builder "
            "(imaged.builders.buildx is missing)",
            key="pool",
        ) from exc
    _check_buildx_exists(settings, entry)
    builder: Builder = module.BuildxBuilder(settings, builder_name=entry.target)
    return builder


def _check_buildx_exists(settings: Settings, entry: PoolEntry) -> None:
    """``docker buildx inspect NAME`` answers, or a ConfigError naming the entry."""
    cli = find_docker_cli(settings.docker_cli or os.environ.get(ENV_VARS["docker_cli"]))
    if not cli.buildx:
        raise ConfigError(
            f"pool entry {entry.address!r}: the docker CLI {cli.path} has no buildx plugin",
            key="pool",
        )
    try:
        done = subprocess.run(
            [cli.path, "buildx", "inspect", entry.target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=without_secrets(os.environ),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"pool entry {entry.address!r}: {exc}", key="pool") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(
            f"pool entry {entry.address!r}: no buildx builder {entry.target!r} "
            f"(docker buildx inspect: {said[-1] if said else f'exit {done.returncode}'})",
            key="pool",
        )


def _docker_builder(settings: Settings, entry: PoolEntry) -> Builder:
    if entry.kind == "context":
        remote = RemoteBuilder(replace(settings, docker_host=None, docker_context=entry.target))
        try:
            remote.client_kwargs()  # the context exists in the Docker config
        except ConfigError as exc:
            raise ConfigError(f"pool entry {entry.address!r}: {exc}", key="pool") from exc
        return remote
    return RemoteBuilder(replace(settings, docker_host=entry.address, docker_context=None))


def engines_from_settings(settings: Settings) -> list[Engine]:
    """One :class:`Engine` per ``pool`` entry; ConfigError naming an entry that cannot be."""
    engines = []
    for entry in settings.pool:
        make = _buildx_builder if entry.kind == "buildx" else _docker_builder
        capacity = entry.capacity or settings.pool_capacity
        engines.append(Engine(entry.address, make(settings, entry), capacity, entry.labels))
    return engines


async def _answers(builder: Builder) -> None:
    """Whether the engine answers: a Docker engine is pinged with a short timeout, in a
    thread a timed-out probe abandons (a hung engine never holds up placement); any other
    builder is asked its own ``check``. Each ping has a limiter of its own: in anyio's shared
    one (40 threads) it would queue behind the pushes, each holding a thread for its whole
    length, and time out on a healthy engine, which would then be marked down."""
    if not isinstance(builder, RemoteBuilder):
        await builder.check()
        return
    own = anyio.CapacityLimiter(1)
    await anyio.to_thread.run_sync(_ping, builder, abandon_on_cancel=True, limiter=own)


def _ping(builder: RemoteBuilder) -> None:
    import docker
    import requests

    try:
        api = docker.APIClient(version="auto", timeout=PROBE_TIMEOUT, **builder.client_kwargs())
        try:
            api.ping()
        finally:
            api.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise builder.unreachable(exc) from exc


def engine_failed(exc: BaseException) -> bool:
    """The engine stopped answering (not the image's fault): EngineError, or a transient
    failure the one table (:mod:`imaged.failures`) calls the engine's."""
    if isinstance(exc, EngineError):
        return True
    return is_transient(exc) and classify(str(exc)).kind == "engine"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@dataclass
class _Wakeup:
    """Wakes builds waiting for capacity when a slot frees or an engine comes back."""

    event: anyio.Event | None = None

    async def wait(self) -> None:
        """Until the next wake-up, or at most WAIT_POLL seconds."""
        if self.event is None:
            self.event = anyio.Event()
        with anyio.move_on_after(WAIT_POLL):
            await self.event.wait()

    def set(self) -> None:
        event, self.event = self.event, None
        if event is not None:
            event.set()


@dataclass
class _LastBuilt:
    """The engine each image was built on last, kept in ``state_dir/pool.json``."""

    path: Path | None
    engines: dict[str, str] = field(default_factory=dict)

    def load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and isinstance(data.get("last_built"), dict):
            self.engines = {str(k): str(v) for k, v in data["last_built"].items()}

    def record(self, image: str, engine: str) -> None:
        if self.engines.get(image) == engine:
            return
        self.engines[image] = engine
        if self.path is None:
            return
        # Affinity is an optimisation: a read-only state folder costs only cache hits.
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps({"last_built": self.engines}), durable=False)


class PoolBuilder:
    """Builds on several engines: cache affinity, capacity, platform labels and failover.

    >>> pool = PoolBuilder(Settings(pool=(PoolEntry("tcp://10.0.0.5:2375", 4),)))
    >>> [(e.name, e.capacity) for e in pool.engines]
    [('tcp://10.0.0.5:2375', 4)]
    """

    name = "pool"

    def __init__(
        self,
        settings: Settings,
        *,
        engines: list[Engine] | None = None,
        clock: Callable[[], float] = time.monotonic,
        state_file: Path | None = None,
        hang_probe_seconds: float = HANG_PROBE_SECONDS,
        hang_probes: int = HANG_PROBES,
    ) -> None:
        self.settings = settings
        self.hang_probe_seconds, self.hang_probes = hang_probe_seconds, hang_probes
        self.engines = engines if engines is not None else engines_from_settings(settings)
        if not self.engines:
            raise ConfigError(f"the pool builder needs engines: set {ENV_VARS['pool']}", key="pool")
        self._clock = clock
        self._wakeup = _Wakeup()
        path = state_file if engines is not None else settings.resolved_state_dir / STATE_FILE
        self._last = _LastBuilt(path)
        self._last.load()

    # -- what the daemon shows

    def engine_states(self) -> list[dict[str, Any]]:
        return [engine.to_json() for engine in self.engines]

    def last_built(self, image: str) -> str | None:
        return self._last.engines.get(image)

    # -- health

    def mark_down(self, engine: Engine, error: str) -> None:
        if engine.up:
            engine.failures = 0
        engine.up, engine.error = False, error
        engine.next_probe = self._clock() + PROBE_INITIAL
        self._wakeup.set()

    async def probe(self, engine: Engine) -> bool:
        """Ask a down engine whether it answers; back off (doubling, capped) while not."""
        engine.probing = True
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await _answers(engine.builder)
        except (ImagedError, TimeoutError, OSError) as exc:
            engine.failures += 1
            timed_out = isinstance(exc, TimeoutError) and not str(exc)
            engine.error = f"no answer within {PROBE_TIMEOUT:g}s" if timed_out else _short(exc)
            delay = min(PROBE_MAX, PROBE_INITIAL * 2**engine.failures)
            engine.next_probe = self._clock() + delay
            return False
        finally:
            engine.probing = False
        engine.up, engine.error, engine.failures = True, None, 0
        self._wakeup.set()
        return True

    async def probe_all(self) -> None:
        """Ask every engine at once whether it answers; mark each up or down (the daemon's
        start, so the view is true before the first build)."""

        async def one(engine: Engine) -> None:
            try:
                with anyio.fail_after(PROBE_TIMEOUT):
                    await _answers(engine.builder)
            except (ImagedError, TimeoutError, OSError) as exc:
                self.mark_down(engine, _short(exc) if str(exc) else "no answer")
            else:
                engine.up, engine.error = True, None

        async with anyio.create_task_group() as tg:
            for engine in self.engines:
                tg.start_soon(one, engine)

    async def probe_due(self) -> None:
        """Probe every down engine whose backoff has run out."""
        now = self._clock()
        for engine in self.engines:
            if not engine.up and not engine.probing and engine.next_probe <= now:
                await self.probe(engine)

    # -- placement

    def place(self, request: BuildRequest) -> Placement | None:
        """Where ``request`` goes now; None while every fitting engine is full. Raises a
        permanent BuildError when no engine builds its platforms, and a transient
        EngineError when none of those is up."""
        capable = [e for e in self.engines if e.can_build(request.platforms)]
        if not capable:
            raise BuildError(
                f"no engine in the pool builds {', '.join(request.platforms)} "
                f"(labels: {self._labels_text()})",
                image=request.image_name,
            )
        healthy = [e for e in capable if e.up]
        if not healthy:
            down = "; ".join(f"{e.name}: {e.error or 'down'}" for e in capable)
            raise EngineError(f"no engine available ({down})")
        free = [e for e in healthy if e.running < e.capacity]
        if not free:
            return None
        return self._choose(request, free, healthy)

    def _choose(
        self, request: BuildRequest, free: list[Engine], healthy: list[Engine]
    ) -> Placement:
        by_name = {e.name: e for e in free}
        last = self._last.engines.get(request.image_name)
        if last in by_name:
            return Placement(by_name[last], "last built here")
        family = request.family
        if family and family != request.image_name:
            parent = self._last.engines.get(family)
            if parent in by_name:
                return Placement(by_name[parent], "parent built here")
        if len(healthy) == 1:
            return Placement(free[0], "only healthy engine")
        order = {e.name: i for i, e in enumerate(self.engines)}
        best = min(free, key=lambda e: (e.running / e.capacity, order[e.name]))
        why = f"least loaded ({best.running}/{best.capacity})"
        if last is not None and last != best.name:
            why += f"; {last}, where it was built last, is {self._state_word(last)}"
        return Placement(best, why)

    def _state_word(self, name: str) -> str:
        engine = next((e for e in self.engines if e.name == name), None)
        if engine is None:
            return "no longer in the pool"
        return "down" if not engine.up else "full"

    def _labels_text(self) -> str:
        return ", ".join(f"{e.name}={'+'.join(e.labels) or 'any'}" for e in self.engines)

    async def acquire(self, request: BuildRequest) -> Placement:
        """Place ``request`` and take a slot on its engine, waiting while all are full."""
        while True:
            await self.probe_due()
            placement = self.place(request)
            if placement is not None:
                placement.engine.running += 1
                return placement
            await self._wakeup.wait()

    def release(self, engine: Engine) -> None:
        engine.running -= 1
        self._wakeup.set()

    # -- the Builder protocol

    async def check(self) -> dict[str, str]:
        """Check every engine; marks each up or down. EngineError when none answers."""
        info: dict[str, str] = {"builder": self.name}
        for engine in self.engines:
            try:
                await engine.builder.check()
            except EngineError as exc:
                self.mark_down(engine, _short(exc))
                info[engine.name] = f"down: {_short(exc)}"
            else:
                engine.up, engine.error = True, None
                info[engine.name] = f"up, capacity {engine.capacity}"
        if not any(e.up for e in self.engines):
            raise EngineError(
                "no engine available: " + "; ".join(f"{e.name}: {e.error}" for e in self.engines)
            )
        return info

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        """The command of the engine the build would be placed on now (the first if all are
        full or down)."""
        try:
            placement = self.place(request)
        except ImagedError:
            placement = None
        engine = placement.engine if placement else self.engines[0]
        return engine.builder.describe_command(request)

    async def build(
        self, request: BuildRequest, *, on_event: EventSink | None = None
    ) -> BuildOutcome:
        """Build on the engine placement picks; move to another when that engine fails."""
        moved: list[str] = []
        while True:
            placement = await self.acquire(request)
            engine = placement.engine
            why = placement.why + (f"; moved from {moved[-1]}" if moved else "")
            building = BuildBuilding(
                image=request.image_name, uri=request.tags[0], engine=engine.name, placement=why
            )
            send(on_event, building)
            try:
                outcome = await self._build_watched(engine, request, on_event)
            except Exception as exc:
                if not engine_failed(exc) or len(moved) >= 2 * len(self.engines):
                    raise
                self.mark_down(engine, _short(exc))
                moved.append(f"{engine.name} (down: {_short(exc)})")
                continue
            finally:
                self.release(engine)
            engine.builds += 1
            self._last.record(request.image_name, engine.name)
            return replace(outcome, engine=engine.name, placement=why)

    async def _build_watched(
        self, engine: Engine, request: BuildRequest, on_event: EventSink | None
    ) -> BuildOutcome:
        """``engine``'s build, cancelled with an EngineError when the engine hangs."""
        hung: list[str] = []
        failed: list[Exception] = []
        outcome: BuildOutcome | None = None
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as building:
                tg.start_soon(self._watch_hang, engine, building, hung)
                try:
                    outcome = await engine.builder.build(request, on_event=on_event)
                except Exception as exc:  # raised below, outside the task group (unwrapped)
                    failed.append(exc)
            tg.cancel_scope.cancel()
        if failed:
            raise failed[0]
        if hung:
            raise EngineError(
                f"engine {engine.name} stopped answering during the build of "
                f"{request.image_name}: {hung[0]}; the build moves to another engine"
            )
        assert outcome is not None
        return outcome

    async def _watch_hang(
        self, engine: Engine, building: anyio.CancelScope, hung: list[str]
    ) -> None:
        """Ping ``engine`` while ``building`` runs; cancel it after ``hang_probes`` misses."""
        every, missed = self.hang_probe_seconds, 0
        while missed < self.hang_probes:
            await anyio.sleep(every)
            try:
                with anyio.fail_after(every):
                    await _answers(engine.builder)
            except (ImagedError, TimeoutError, OSError):
                missed += 1
            else:
                missed = 0
        hung.append(f"{missed} pings in a row got no answer within {every:g}s")
        self.mark_down(engine, f"hung: no answer to {missed} pings during a build")
        building.cancel()


_SHARED: dict[Settings, PoolBuilder] = {}


def shared_pool(settings: Settings) -> PoolBuilder:
    """The one pool of this process for ``settings`` (``get_builder("pool")``): every build
    of a process sees the same load, health and last-built engines."""
    pool = _SHARED.get(settings)
    if pool is None:
        pool = _SHARED[settings] = PoolBuilder(settings)
    return pool
