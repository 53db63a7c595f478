"""The buildx builder: ``docker buildx build --push`` on a named buildx builder, any driver.

The builder (docker-container, remote, kubernetes; ``docker buildx create``) builds and pushes
the image itself (``--push``): it never comes back through this host as a tarball
(docker/buildx#107). Secrets reach it as ``--secret id=X,src=FILE`` from a private 0600 file,
never an argv or a log; registry credentials through the build's Docker config
(``DOCKER_CONFIG``), which buildx hands to the builder for its pushes and pulls. The pushed
manifest digest is buildx's ``--metadata-file`` (``containerimage.digest``).

Real buildx has not been run against this module: no Debian (bookworm) or PyPI package ships
the plugin. Its end-to-end test drives a stand-in ``docker-buildx`` plugin that records its
argv and environment and builds and pushes with the real engine (tests/fake_buildx.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping

import anyio
import anyio.to_thread

from imaged.builders.base import (
    BuildOutcome,
    BuildOutput,
    BuildRequest,
    build_arg_env,
    build_arg_flags,
    cache_refs,
)
from imaged.builders.local import run_build_cli, secret_flags
from imaged.config import ENV_VARS, Settings, without_secrets
from imaged.errors import BuildError, ConfigError, EngineError, PushError
from imaged.events import BuildDone, EventSink, RefPushed, send
from imaged.failures import classify_output

INSPECT_TIMEOUT = 60.0
_BUILDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NO_PLUGIN = re.compile(r"'buildx' is not a docker command|unknown command.*buildx", re.I)
_NO_BUILDER = re.compile(r"no builder .* found", re.I)
_FIELD = re.compile(r"^\s*(Driver|Status|Platforms|Endpoint|Name):\s*(.*)$")
INSTALL_HINT = (
    "install the buildx plugin: put the docker-buildx binary of a release of "
    "github.com/docker/buildx in ~/.docker/cli-plugins/ (chmod +x), or install "
    "docker-buildx-plugin from Docker's apt repository (Debian bookworm ships none)"
)


def buildx_argv(
    cli: str,
    builder: str,
    request: BuildRequest,
    *,
    secret_files: Mapping[str, str],
    metadata_file: str,
    extra: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """``docker buildx build --builder B --push ...``; secrets as ``src=FILE`` only.

    >>> from pathlib import Path
    >>> r = BuildRequest("x", Path("ctx"), Path("ctx/Dockerfile"), ("reg/x:1",))
    >>> " ".join(buildx_argv("docker", "farm", r, secret_files={}, metadata_file="m.json"))
    'docker buildx build --builder farm --progress=plain --push --metadata-file m.json -t reg/x:1 -f ctx/Dockerfile ctx'
    """
    if not request.push:
        raise BuildError(
            "the buildx builder pushes from the builder and never loads an image back: give "
            "the image a registry, or build it with the local builder",
            image=request.image_name,
        )
    argv = [cli, "buildx", "build", "--builder", builder, "--progress=plain", "--push"]
    argv += ["--metadata-file", metadata_file]
    for tag in request.tags:
        argv += ["-t", tag]
    argv += ["-f", str(request.dockerfile)]
    if request.platforms:
        argv += ["--platform", ",".join(request.platforms)]
    if request.no_cache:
        argv.append("--no-cache")
    argv += secret_flags(request, secret_files)
    argv += extra
    argv.append(str(request.context_dir))
    return tuple(argv)


def _inspect_fields(output: str) -> dict[str, str]:
    """The first Name/Driver/Status/Platforms/Endpoint lines of ``docker buildx inspect``."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if (match := _FIELD.match(line)) and match[1].lower() not in found:
            found[match[1].lower()] = match[2].strip()
    return found


class BuildxBuilder:
    """Builds and pushes on the buildx builder ``builder_name`` (else ``buildx_builder``).

    >>> BuildxBuilder(Settings(), builder_name="farm").engine_address
    'buildx:farm'
    """

    name = "buildx"

    def __init__(self, settings: Settings, *, builder_name: str | None = None) -> None:
        chosen = builder_name or settings.buildx_builder
        if not chosen:
            raise ConfigError(
                f"the buildx builder needs a builder name: set {ENV_VARS['buildx_builder']} "
                "(docker buildx ls lists them)",
                key="buildx_builder",
            )
        if not _BUILDER_NAME.match(chosen):
            raise ConfigError(f"{chosen!r} is not a buildx builder name", key="buildx_builder")
        self.settings = settings
        self.builder_name = chosen

    @property
    def engine_address(self) -> str:
        return f"buildx:{self.builder_name}"

    def cli(self) -> str:
        """The docker CLI whose buildx plugin runs the builds (``IMAGED_DOCKER_CLI``)."""
        explicit = self.settings.docker_cli or os.environ.get(ENV_VARS["docker_cli"])
        found = shutil.which(explicit or "docker")
        if not found:
            what = f"{explicit!r} is not an executable docker CLI" if explicit else "no docker CLI"
            raise ConfigError(
                f"{what}; install one or set {ENV_VARS['docker_cli']}", key="docker_cli"
            )
        return found

    def cli_env(self) -> dict[str, str]:
        """The CLI's environment: no build secrets (they reach it as files only); the
        ``build_args`` values, which buildx reads for ``--build-arg KEY`` (never on argv)."""
        env = without_secrets(os.environ)
        env.update(build_arg_env(self.settings, os.environ), BUILDKIT_PROGRESS="plain")
        return env

    def build_flags(self, request: BuildRequest) -> tuple[str, ...]:
        """The build arguments of every build and, with ``registry_cache``, the registry
        cache: export ``<repo>:imaged-cache`` (mode=max), import it and the inline cache
        the Docker engines push as ``<repo>:imaged-latest``."""
        flags = build_arg_flags(self.settings)
        if not self.settings.registry_cache:
            return flags
        buildx_cache, latest = cache_refs(request)
        return (
            *flags,
            "--cache-to",
            f"type=registry,ref={buildx_cache},mode=max",
            "--cache-from",
            f"type=registry,ref={buildx_cache}",
            "--cache-from",
            f"type=registry,ref={latest}",
        )

    def missing_plugin(self, cli: str) -> ConfigError:
        return ConfigError(f"{cli} has no buildx plugin; {INSTALL_HINT}", key="builder")

    def missing_builder(self, detail: str) -> ConfigError:
        return ConfigError(
            f"there is no buildx builder {self.builder_name!r} ({detail.strip()}); create it "
            f"with `docker buildx create --name {self.builder_name} --driver docker-container` "
            f"or set {ENV_VARS['buildx_builder']} to one `docker buildx ls` lists",
            key="buildx_builder",
        )

    async def check(self) -> dict[str, str]:
        """``docker buildx inspect NAME``: ConfigError when the plugin or the builder is
        missing, EngineError when the builder is there but does not answer."""
        cli = self.cli()
        argv = [cli, "buildx", "inspect", self.builder_name]
        try:
            with anyio.fail_after(INSPECT_TIMEOUT):
                done = await anyio.run_process(
                    argv, check=False, stdin=subprocess.DEVNULL, env=self.cli_env()
                )
        except OSError as exc:
            raise ConfigError(f"cannot run {cli}: {exc}", key="docker_cli") from exc
        except TimeoutError as exc:
            raise EngineError(
                f"buildx builder {self.builder_name!r} did not answer `docker buildx inspect` "
                f"within {INSPECT_TIMEOUT:.0f} s"
            ) from exc
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0:
            raise self._inspect_failure(cli, out)
        info = _inspect_fields(out)
        # "inactive" and "stopped" builders start on the next build; "error" ones do not.
        if info.get("status", "").lower() == "error":
            raise EngineError(f"buildx builder {self.builder_name!r} is {info['status']}: {out}")
        return {
            "builder": self.name,
            "engine": self.engine_address,
            "cli": cli,
            "buildx": "yes",
            **{key: value for key, value in info.items() if key != "name"},
        }

    def _inspect_failure(self, cli: str, out: str) -> ConfigError | EngineError:
        if _NO_PLUGIN.search(out):
            return self.missing_plugin(cli)
        if _NO_BUILDER.search(out):
            return self.missing_builder(out)
        return EngineError(f"buildx builder {self.builder_name!r} does not answer: {out.strip()}")

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        """The argv a build would run, secret files shown as placeholders."""
        placeholders = {s.id: f"<temp file for secret {s.id}>" for s in request.secrets}
        return buildx_argv(
            self.cli(),
            self.builder_name,
            request,
            secret_files=placeholders,
            metadata_file="<temp metadata file>",
            extra=self.build_flags(request),
        )

    async def build(
        self, request: BuildRequest, *, on_event: EventSink | None = None
    ) -> BuildOutcome:
        """Build and push on the builder; the manifest digest is the one buildx pushed."""
        cli = await anyio.to_thread.run_sync(self.cli)
        started = time.monotonic()
        argv, digest = await run_build_cli(
            request,
            lambda secret_files, metadata_file: buildx_argv(
                cli,
                self.builder_name,
                request,
                secret_files=secret_files,
                metadata_file=metadata_file,
                extra=self.build_flags(request),
            ),
            env=self.cli_env(),
            on_event=on_event,
            failure=lambda output: self._build_failure(request, cli, output),
        )
        seconds = time.monotonic() - started
        if digest is None:
            raise PushError(
                f"buildx builder {self.builder_name!r} reported success but its metadata file "
                "names no containerimage.digest (buildx 0.6 or newer writes it)",
                image=request.image_name,
            )
        send(on_event, BuildDone(image=request.image_name, seconds=round(seconds, 3)))
        for ref in request.tags:
            send(on_event, RefPushed(image=request.image_name, ref=ref, digest=digest))
        return BuildOutcome(None, digest, seconds, 0.0, argv)

    def _build_failure(
        self, request: BuildRequest, cli: str, output: BuildOutput
    ) -> ConfigError | EngineError | BuildError:
        lines = output.lines
        if any(_NO_PLUGIN.search(line) for line in lines):
            return self.missing_plugin(cli)
        builder_line = next((line for line in lines if "no builder" in line.lower()), None)
        if builder_line is not None:
            return self.missing_builder(builder_line)
        verdict = classify_output(lines)
        if verdict.transient and not verdict.evidence.startswith("#"):
            return EngineError(
                f"buildx builder {self.builder_name!r} is unreachable: {verdict.evidence}"
            )
        return BuildError(
            f"docker buildx build failed on builder {self.builder_name!r}",
            image=request.image_name,
            instruction=output.instruction,
            output_tail=output.tail,
            transient=verdict.transient,
        )
