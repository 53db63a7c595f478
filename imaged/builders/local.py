"""The local builder: BuildKit builds through the docker CLI, tag and push through the Docker SDK.

The SDK only reaches the legacy builder, so builds go through a docker CLI: ``docker buildx build``
when the buildx plugin is there, else a classic CLI (before 23.0) whose built-in BuildKit works
with ``DOCKER_BUILDKIT=1``. Secret values go to 0600 files in a private 0700 folder, deleted
when the build ends (or swept by :mod:`imaged.builders.scratch` after a SIGKILL), never to a child's
environment: the ``env=`` form of ``--secret`` would spare the files, but one variable
is capped at 128 KiB on Linux (a CA bundle is bigger) and cannot hold a NUL byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import Process

from imaged.builders.base import (
    BuildOutcome,
    BuildOutput,
    BuildRequest,
    SecretSource,
    build_arg_env,
    build_arg_flags,
    cache_refs,
)
from imaged.builders.scratch import SCRATCH_PREFIX, mark_owner, scratch_parent
from imaged.config import ENV_VARS, Settings, without_secrets
from imaged.errors import BuildError, ConfigError, EngineError, PushError
from imaged.events import (
    BuildDone,
    BuildOutputLine,
    BuildStarted,
    Event,
    EventSink,
    PushStatus,
    RefPushed,
    send,
)
from imaged.failures import classify_output

T = TypeVar("T")

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
CLI_CANDIDATES = ("docker", "/usr/bin/docker", "/usr/local/bin/docker")
TERMINATE_GRACE = 5.0
_SECRET_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NO_BUILDX = re.compile(r"buildx component is missing|'buildx' is not a docker command", re.I)
_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_QUIET_PUSH_STATUSES = frozenset({"Pushing", "Preparing", "Waiting"})


@dataclass(frozen=True)
class DockerCli:
    """A probed docker CLI: its path, client version and whether ``buildx`` works."""

    path: str
    version: str
    buildx: bool

    @property
    def builtin_buildkit(self) -> bool:
        """Classic CLIs before 23.0 build with BuildKit themselves (``DOCKER_BUILDKIT=1``)."""
        major = self.version.split(".", 1)[0]
        return major.isdigit() and int(major) < 23


def _probe_cli(path: str) -> DockerCli | None:
    env = without_secrets(os.environ)
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=True, env=env
        ).stdout
        buildx = subprocess.run(
            [path, "buildx", "version"], capture_output=True, timeout=20, check=False, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version ([0-9][^,\s]*)", out)
    return DockerCli(path=path, version=match[1] if match else "", buildx=buildx.returncode == 0)


@lru_cache(maxsize=8)
def find_docker_cli(explicit: str | None = None) -> DockerCli:
    """The docker CLI to build with: ``explicit`` if given, else the best one installed.

    Preference: a CLI with buildx, then a classic CLI with built-in BuildKit, then any.
    The probe result is cached per ``explicit`` value.
    """
    if explicit:
        found = _probe_cli(shutil.which(explicit) or explicit)
        if found is None:
            raise ConfigError(f"{explicit!r} is not a working docker CLI", key="docker_cli")
        return found
    paths = {os.path.realpath(p): p for c in CLI_CANDIDATES if (p := shutil.which(c))}
    probed = [cli for p in paths.values() if (cli := _probe_cli(p)) is not None]
    for usable in (lambda c: c.buildx, lambda c: c.builtin_buildkit, lambda c: True):
        for cli in probed:
            if usable(cli):
                return cli
    raise ConfigError(
        f"no docker CLI found; install one or set {ENV_VARS['docker_cli']}", key="docker_cli"
    )


def build_argv(
    cli: DockerCli,
    request: BuildRequest,
    *,
    secret_files: Mapping[str, str],
    global_args: tuple[str, ...] = (),
    metadata_file: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """The docker argv for a build; secrets appear as ``id=X,src=FILE`` only, never values.
    ``extra`` (build arguments, cache flags) goes just before the context."""
    multi = len(request.platforms) > 1
    if multi and not cli.buildx:
        raise BuildError(
            f"building for several platforms ({', '.join(request.platforms)}) needs docker "
            f"buildx, and {cli.path} has none",
            image=request.image_name,
        )
    if multi and not request.push:
        raise BuildError(
            "a multi-platform image cannot be loaded into the engine; build it with push",
            image=request.image_name,
        )
    argv = [cli.path, *global_args, *(("buildx", "build") if cli.buildx else ("build",))]
    argv += ["--progress=plain", "-f", str(request.dockerfile)]
    for tag in request.tags:
        argv += ["-t", tag]
    if request.platforms:
        argv += ["--platform", ",".join(request.platforms)]
    if request.no_cache:
        argv.append("--no-cache")
    argv += secret_flags(request, secret_files)
    if cli.buildx:
        argv += ["--push", "--metadata-file", metadata_file or "METADATA"] if multi else ["--load"]
    argv += extra
    argv.append(str(request.context_dir))
    return tuple(argv)


def secret_flags(request: BuildRequest, secret_files: Mapping[str, str]) -> list[str]:
    """``--secret id=X,src=FILE`` for each secret: the file's path, never its value."""
    flags: list[str] = []
    for secret in request.secrets:
        if not _SECRET_ID.match(secret.id):
            raise BuildError(f"invalid secret id {secret.id!r}", image=request.image_name)
        flags += ["--secret", f"id={secret.id},src={secret_files[secret.id]}"]
    return flags


@dataclass(frozen=True)
class Scratch:
    """A private folder for one build: the secret files, the buildx metadata file and, for
    a build with registry logins of its own, the Docker config folder its CLI reads."""

    folder: str
    secret_paths: dict[str, str]
    docker_config_dir: str | None = None

    @property
    def metadata_file(self) -> str:
        return os.path.join(self.folder, "metadata.json")


def _write_private(path: str, value: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)


def _user_docker_config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def _write_docker_config(folder: str, config: bytes) -> str:
    """``folder/docker-config/config.json`` (0700/0600), beside a link to every other entry
    of the user's config folder: the CLI finds its plugins (``cli-plugins``, buildx itself),
    buildx its builders (``buildx``) and both the contexts (``contexts``) where they were."""
    path = os.path.join(folder, "docker-config")
    os.mkdir(path, 0o700)
    _write_private(os.path.join(path, "config.json"), config)
    _link_user_config_entries(path)
    return path


def _link_user_config_entries(path: str) -> None:
    """Link (never copy: the links are removed with the folder, the targets stay) each entry
    of the user's Docker config folder but ``config.json``; none when it does not exist."""
    user_dir = _user_docker_config_dir()
    try:
        names = os.listdir(user_dir)
    except OSError:
        return
    for name in names:
        if name != "config.json":
            os.symlink(os.path.join(user_dir, name), os.path.join(path, name))


@contextmanager
def open_scratch(
    secrets: tuple[SecretSource, ...], *, docker_config: bytes | None = None
) -> Iterator[Scratch]:
    """Write secret values to 0600 files in a fresh 0700 folder; remove it all on exit.
    The folder names its owner, so a later start sweeps it if this process is killed."""
    # mkdtemp makes a fresh 0700 folder, so a shared parent is safe.
    folder = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent())
    try:
        mark_owner(folder)
        paths: dict[str, str] = {}
        for index, secret in enumerate(secrets):
            paths[secret.id] = os.path.join(folder, f"secret-{index}")
            _write_private(paths[secret.id], secret.value)
        config_dir = None if docker_config is None else _write_docker_config(folder, docker_config)
        yield Scratch(folder=folder, secret_paths=paths, docker_config_dir=config_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_metadata_digest(path: str) -> str | None:
    """``containerimage.digest`` from a buildx ``--metadata-file`` (multi-platform pushes)."""
    try:
        with open(path, encoding="utf-8") as handle:
            digest = json.load(handle).get("containerimage.digest")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def _send_from_thread(on_event: EventSink | None, event: Event) -> None:
    if on_event is None:
        return
    with suppress(RuntimeError):  # the event loop is gone: the caller was cancelled
        anyio.from_thread.run_sync(send, on_event, event)


def _signal_group(process: Process, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


async def _terminate(process: Process) -> None:
    """SIGTERM the CLI's process group, SIGKILL it after a grace period, and reap it."""
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        with anyio.move_on_after(TERMINATE_GRACE):
            await process.wait()
    if process.returncode is None:
        _signal_group(process, signal.SIGKILL)
        await process.wait()


async def _pump(
    process: Process, output: BuildOutput, on_event: EventSink | None, image: str | None
) -> None:
    assert process.stdout is not None
    pending = b""
    async for chunk in process.stdout:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            output.add(line)
            send(on_event, BuildOutputLine(image=image, line=line))
    if pending:
        output.add(pending.decode("utf-8", "replace"))


async def run_cli(
    argv: tuple[str, ...],
    *,
    env: Mapping[str, str],
    on_event: EventSink | None = None,
    image: str | None = None,
) -> tuple[int, BuildOutput]:
    """Run a docker CLI build to its end; on cancellation, stop it and re-raise."""
    output = BuildOutput()
    process = await anyio.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
    try:
        await _pump(process, output, on_event, image)
        return await process.wait(), output
    finally:
        with anyio.CancelScope(shield=True):
            await _terminate(process)
            await process.aclose()


async def run_build_cli(
    request: BuildRequest,
    argv_for: Callable[[Mapping[str, str], str], tuple[str, ...]],
    *,
    env: Mapping[str, str],
    on_event: EventSink | None,
    failure: Callable[[BuildOutput], Exception],
) -> tuple[tuple[str, ...], str | None]:
    """One BuildKit build through a docker CLI, in the request's private scratch folder (its
    secret files, the metadata file, the Docker config with its logins): the argv
    ``argv_for(secret_paths, metadata_file)`` makes, announced, run to its end; ``failure``
    of its output raised when it fails. The argv and the digest the metadata file names."""
    with open_scratch(request.secrets, docker_config=request.docker_config) as scratch:
        argv = argv_for(scratch.secret_paths, scratch.metadata_file)
        send(on_event, BuildStarted(image=request.image_name, argv=argv))
        if scratch.docker_config_dir is not None:
            env = {**env, "DOCKER_CONFIG": scratch.docker_config_dir}
        code, output = await run_cli(argv, env=env, on_event=on_event, image=request.image_name)
        if code != 0:
            raise failure(output)
        return argv, read_metadata_digest(scratch.metadata_file)


class LocalBuilder:
    """Builds in the engine the docker CLI and SDK find by default (``DOCKER_HOST`` or the socket).

    >>> LocalBuilder(Settings()).name
    'local'
    """

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def engine_address(self) -> str:
        return str(self.client_kwargs().get("base_url") or DEFAULT_ENGINE)

    def cli(self) -> DockerCli:
        """The docker CLI (``IMAGED_DOCKER_CLI``, else probed once and cached)."""
        return find_docker_cli(self.settings.docker_cli or os.environ.get(ENV_VARS["docker_cli"]))

    def cli_global_args(self) -> tuple[str, ...]:
        return ()

    def build_flags(self, request: BuildRequest) -> tuple[str, ...]:
        """The build arguments of every build and, with ``registry_cache`` and a push, the
        inline cache: the engine's BuildKit (dockerd 20.10) exports no other kind, so the
        image carries it and is also pushed as ``<repo>:imaged-latest``, which the next
        build on any engine imports, with a buildx builder's ``<repo>:imaged-cache``.
        ``--pull``: an engine that holds the base resolves it locally, one that does not
        through the registry, and their cache keys differ (measured with dockerd 20.10: no
        hit across engines without it); resolved through the registry on every engine, the
        keys match, for one manifest request per build."""
        flags = build_arg_flags(self.settings)
        if not (self.settings.registry_cache and request.push):
            return flags
        buildx_cache, latest = cache_refs(request)
        inline = ("--pull", "--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", latest)
        return (*flags, *inline, "--cache-from", buildx_cache, "-t", latest)

    def push_refs(self, request: BuildRequest) -> tuple[str, ...]:
        """Every ref the push sends: the request's tags, then the inline-cache image."""
        if not self.settings.registry_cache:
            return request.tags
        return (*request.tags, cache_refs(request)[1])

    def cli_env(self) -> dict[str, str]:
        """The build CLI's environment: secrets reach it as files (``--secret src=``) only;
        the ``build_args`` values are here, read by ``--build-arg KEY`` (never on argv)."""
        env = without_secrets(os.environ)
        proxies = build_arg_env(self.settings, os.environ, engine_host=self._engine_host())
        env.update(proxies, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")
        return env

    def _engine_host(self) -> str | None:
        """The host of a tcp:// engine (a proxy could be in the way), else None."""
        if not self.settings.build_args:
            return None
        base_url = str(self.client_kwargs().get("base_url") or "")
        parts = urlsplit(base_url)
        return parts.hostname if parts.scheme in ("tcp", "http", "https") else None

    def client_kwargs(self) -> dict[str, Any]:
        """SDK client arguments: ``DOCKER_HOST``, else the CLI's current context (Docker Desktop)."""
        from docker.context.config import get_current_context_name
        from docker.utils import kwargs_from_env

        if os.environ.get("DOCKER_HOST"):
            return dict(kwargs_from_env())
        context = os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
        if context and context != "default":
            return context_client_kwargs(context)
        return dict(kwargs_from_env())

    def api(self) -> Any:
        """A connected ``docker.APIClient`` (blocking); EngineError when unreachable."""
        import docker
        import requests

        try:
            return docker.APIClient(
                version="auto", timeout=self.settings.push_timeout, **self.client_kwargs()
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self.unreachable(exc) from exc

    def unreachable(self, detail: object) -> EngineError:
        return EngineError(f"Docker engine at {self.engine_address} is unreachable: {detail}")

    async def check(self) -> dict[str, str]:
        """Ping the engine and report versions: engine address, server, API, CLI, buildx."""
        info = await anyio.to_thread.run_sync(self._check_sync)
        cli = await anyio.to_thread.run_sync(self.cli)
        info.update(cli=cli.path, cli_version=cli.version, buildx="yes" if cli.buildx else "no")
        return info

    def _check_sync(self) -> dict[str, str]:
        import docker
        import requests

        api = self.api()
        try:
            api.ping()
            version = api.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self.unreachable(exc) from exc
        finally:
            api.close()
        return {
            "builder": self.name,
            "engine": self.engine_address,
            "server_version": str(version.get("Version", "")),
            "api_version": str(version.get("ApiVersion", "")),
        }

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        """The argv a build would run, secret files shown as placeholders."""
        placeholders = {s.id: f"<temp file for secret {s.id}>" for s in request.secrets}
        cli = self.cli()
        if len(request.platforms) > 1:
            # A dry run builds nothing: show the buildx build it needs, whatever CLI is here.
            cli, request = replace(cli, buildx=True), replace(request, push=True)
        return build_argv(
            cli,
            request,
            secret_files=placeholders,
            global_args=self.cli_global_args(),
            metadata_file="<temp metadata file>",
            extra=self.build_flags(request),
        )

    async def build(
        self, request: BuildRequest, *, on_event: EventSink | None = None
    ) -> BuildOutcome:
        """Build with BuildKit through the CLI, then push every tag when ``request.push``."""
        cli = await anyio.to_thread.run_sync(self.cli)
        started = time.monotonic()
        argv, pushed_digest = await run_build_cli(
            request,
            lambda secret_files, metadata_file: build_argv(
                cli,
                request,
                secret_files=secret_files,
                global_args=self.cli_global_args(),
                metadata_file=metadata_file,
                extra=self.build_flags(request),
            ),
            env=self.cli_env(),
            on_event=on_event,
            failure=lambda output: self._build_failure(request, cli, output),
        )
        build_seconds = time.monotonic() - started
        send(on_event, BuildDone(image=request.image_name, seconds=round(build_seconds, 3)))
        if pushed_digest is not None or not request.push:
            image_id = None if pushed_digest else await self._image_id(request)
            return BuildOutcome(image_id, pushed_digest, build_seconds, 0.0, argv)
        started = time.monotonic()
        image_id, digest = await run_push(lambda stop: self._push_sync(request, on_event, stop))
        return BuildOutcome(image_id, digest, build_seconds, time.monotonic() - started, argv)

    def _build_failure(
        self, request: BuildRequest, cli: DockerCli, output: BuildOutput
    ) -> EngineError | BuildError:
        lines = output.lines
        verdict = classify_output(lines)
        if verdict.transient and not verdict.evidence.startswith("#"):
            # The CLI's own line, not a step's: its connection to the engine failed.
            return self.unreachable(verdict.evidence)
        message = f"docker build failed ({cli.path})"
        if any(_NO_BUILDX.search(line) for line in lines):
            message += (
                f": this CLI needs the buildx plugin for BuildKit; install it or point "
                f"{ENV_VARS['docker_cli']} at a CLI with buildx or a classic CLI before 23.0"
            )
        return BuildError(
            message,
            image=request.image_name,
            instruction=output.instruction,
            output_tail=output.tail,
            transient=verdict.transient,
        )

    async def _image_id(self, request: BuildRequest) -> str | None:
        def inspect() -> str | None:
            api = self.api()
            try:
                return _inspect_id(api, request.tags[0])
            finally:
                api.close()

        return await anyio.to_thread.run_sync(inspect)

    def _push_sync(
        self, request: BuildRequest, on_event: EventSink | None, stop: PushStop
    ) -> tuple[str | None, str | None]:
        api = self.api()
        api.hooks["response"].append(stop.track)
        try:
            image_id = _inspect_id(api, request.tags[0])
            digests = []
            for ref in self.push_refs(request):
                stop.check()
                digests.append(self._push_ref(api, request, ref, on_event, stop))
        finally:
            api.close()
        return image_id, digests[0]

    def _push_ref(
        self,
        api: Any,
        request: BuildRequest,
        ref: str,
        on_event: EventSink | None,
        stop: PushStop,
    ) -> str | None:
        import docker
        import requests
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(ref)
        try:
            digest = None
            # The pipeline's credentials, never the SDK's own lookup ({} pushes anonymously).
            auth = dict(request.push_auth)
            for entry in api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
                stop.check()
                digest = _push_entry(entry, ref, request.image_name, on_event) or digest
        except docker.errors.DockerException as exc:
            raise PushError(f"push of {ref} failed: {exc}", image=request.image_name) from exc
        except requests.exceptions.ConnectionError as exc:
            raise self.unreachable(exc) from exc
        except requests.exceptions.RequestException as exc:
            raise PushError(f"push of {ref} failed: {exc}", image=request.image_name) from exc
        _send_from_thread(on_event, RefPushed(image=request.image_name, ref=ref, digest=digest))
        return digest


class PushStopped(Exception):
    """Raised in a push thread whose push was cancelled: it ends there."""


class PushStop:
    """How a cancelled push is stopped for real, not abandoned: a flag the push thread
    checks between progress entries and refs, and the engine connections it opened (a
    ``requests`` response hook records them), shut down so a read blocked on a hung engine
    returns and the engine, seeing its client gone, cancels the push: a late push can no
    longer move a tag after the build has moved to another engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._responses: list[Any] = []
        self.ended = threading.Event()

    def track(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._responses.append(response)
            stopped = self._stopped
        if stopped:
            _cut(response)
        return response

    def check(self) -> None:
        if self._stopped:
            raise PushStopped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            responses = list(self._responses)
        for response in responses:
            _cut(response)


def _cut(response: Any) -> None:
    """Shut ``response``'s socket (a blocked read in another thread returns), then close it."""
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        with suppress(OSError, AttributeError):  # closed already; an ssh:// pseudo-socket
            sock.shutdown(socket.SHUT_RDWR)
    with suppress(Exception):  # whatever state the other thread left it in
        response.close()


async def run_push(push: Callable[[PushStop], T]) -> T:
    """``push(stop)`` in a worker thread. Cancelled, it is stopped (:class:`PushStop`) and
    waited for, shielded: the caller (the pool, holding the engine's slot) returns only once
    the thread has ended, so the slot is never freed under a push still running."""
    stop = PushStop()

    def work() -> T:
        try:
            return push(stop)
        finally:
            stop.ended.set()

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        stop.stop()
        with anyio.CancelScope(shield=True):
            waiter = anyio.CapacityLimiter(1)  # not behind the builds in the shared limiter
            await anyio.to_thread.run_sync(stop.ended.wait, limiter=waiter)
        raise


def _inspect_id(api: Any, ref: str) -> str | None:
    import docker

    try:
        image_id = api.inspect_image(ref).get("Id")
    except docker.errors.DockerException as exc:
        raise BuildError(f"built image {ref} is not in the engine: {exc}") from exc
    return str(image_id) if image_id else None


def _push_entry(
    entry: dict[str, Any], ref: str, image: str, on_event: EventSink | None
) -> str | None:
    """Check one push progress entry; return the manifest digest when it names one."""
    if "errorDetail" in entry or "error" in entry:
        detail = entry.get("errorDetail") or {}
        message = detail.get("message") if isinstance(detail, dict) else None
        raise PushError(f"push of {ref} failed: {message or entry.get('error')}", image=image)
    aux = entry.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
        return str(aux["Digest"])
    status = str(entry.get("status", ""))
    if status and status not in _QUIET_PUSH_STATUSES:
        progress = PushStatus(image=image, ref=ref, status=status, id=entry.get("id"))
        _send_from_thread(on_event, progress)
    match = _DIGEST.search(status)
    return match[1] if match else None


def context_client_kwargs(name: str) -> dict[str, Any]:
    """SDK client arguments for the endpoint of the docker context ``name``."""
    from docker.context import ContextAPI

    context = ContextAPI.get_context(name)
    if context is None:
        config_dir = os.environ.get("DOCKER_CONFIG", "~/.docker")
        raise ConfigError(f"no docker context {name!r} in {config_dir}", key="docker_context")
    host = str(context.Host)
    kwargs: dict[str, Any] = {"base_url": host, "use_ssh_client": host.startswith("ssh://")}
    if context.TLSConfig:
        kwargs["tls"] = context.TLSConfig
    return kwargs
