"""The builders against a real engine and registry: secrets stay out of images, errors, cancel."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_events import assert_declared

from imaged.builders.base import BuildOutcome, BuildRequest, SecretSource
from imaged.builders.local import LocalBuilder, run_push
from imaged.builders.remote import RemoteBuilder
from imaged.config import Settings
from imaged.errors import BuildError, EngineError
from imaged.events import BUILD_EVENTS
from imaged.pipeline.secrets import ca_bundle_secret
from imaged.render.dockerfile import CA_SECRET_ID

pytestmark = pytest.mark.docker

SECRET_VALUE = "tok-" + uuid.uuid4().hex
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.manifest.v1+json"
)


def _docker(infra: Any, *args: str, env: dict[str, str] | None = None) -> bytes:
    done = subprocess.run(
        [infra.docker_cli, *args], capture_output=True, check=True, timeout=120, env=env
    )
    return done.stdout


def _context(tmp_path: Path, dockerfile: str) -> Path:
    folder = tmp_path / "context"
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    return folder


def _request(infra: Any, context: Path, **changes: Any) -> BuildRequest:
    values: dict[str, Any] = {
        "image_name": "builder-test",
        "context_dir": context,
        "dockerfile": context / "Dockerfile",
        "tags": (f"{infra.registry}/imaged-test/builder:{uuid.uuid4().hex[:12]}",),
        "platforms": ("linux/amd64",),
    }
    values.update(changes)
    return BuildRequest(**values)


def _registry_digest(infra: Any, ref: str) -> str:
    repo, tag = ref.removeprefix(infra.registry + "/").rsplit(":", 1)
    response = httpx.head(
        f"http://{infra.registry}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def _process_cmdlines() -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


SECRET_DOCKERFILE = """\
FROM {base}
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha256
RUN --mount=type=secret,id={ca_id},target=/run/secrets/{ca_id} wc -c < /run/secrets/{ca_id} > /ca.size
"""


def test_build_push_run_keeps_secrets_out_of_the_image(infra: Any, tmp_path: Path) -> None:
    dockerfile = SECRET_DOCKERFILE.format(base=infra.debian_base, ca_id=CA_SECRET_ID)
    ca_marker = f"# imaged test bundle {uuid.uuid4().hex}\n".encode()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(infra.ca_bundle).read_bytes() + ca_marker)
    ca = ca_bundle_secret(Settings(build_ca_bundle=bundle))
    assert ca is not None
    assert len(ca.value) > 128 * 1024  # too big for the env= form of --secret
    secrets = (SecretSource("tok", SECRET_VALUE.encode()), ca)
    request = _request(infra, _context(tmp_path, dockerfile), secrets=secrets, no_cache=True)
    events: list[dict[str, object]] = []
    outcome = anyio.run(lambda: LocalBuilder(Settings()).build(request, on_event=events.append))
    ref = request.tags[0]

    assert outcome.manifest_digest == _registry_digest(infra, ref)
    assert outcome.image_id is not None
    assert outcome.image_id.startswith("sha256:")
    assert not any(SECRET_VALUE in arg for arg in outcome.command)
    assert any(e["event"] == "build_output" for e in events)
    assert {"build_started", "build_done", "ref_pushed"} <= {str(e["event"]) for e in events}
    assert_declared(events, BUILD_EVENTS)

    _docker(infra, "rmi", ref)
    _docker(infra, "pull", ref)
    hashed = _docker(infra, "run", "--rm", ref, "cat", "/tok.sha256").decode().strip()
    assert hashed == hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    ca_size = _docker(infra, "run", "--rm", ref, "cat", "/ca.size").decode().strip()
    assert int(ca_size) == len(ca.value)

    saved = _docker(infra, "save", ref)
    assert hashed.encode() in saved  # the scan sees layer contents (uncompressed layer tars)
    assert SECRET_VALUE.encode() not in saved
    assert ca_marker not in saved
    history = _docker(infra, "history", "--no-trunc", ref)
    inspect = _docker(infra, "inspect", ref)
    assert SECRET_VALUE.encode() not in history + inspect


def test_failing_run_raises_build_error(infra: Any, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {infra.debian_base}\nRUN echo {marker}-out && exit 7\n"
    request = _request(infra, _context(tmp_path, dockerfile))
    with pytest.raises(BuildError) as info:
        anyio.run(LocalBuilder(Settings()).build, request)
    error = info.value
    assert error.instruction == f"[2/2] RUN echo {marker}-out && exit 7"
    assert f"{marker}-out" in error.output_tail
    assert "exit code: 7" in error.output_tail
    assert error.image == "builder-test"


def _running(marker: str) -> bool:
    return any(marker in c for c in _process_cmdlines())


def _wait_until_running(marker: str) -> bool:
    deadline = time.monotonic() + 60
    while not _running(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_cancel_stops_the_cli_and_the_step(infra: Any, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {infra.debian_base}\nRUN sleep 60 && echo {marker}\n"
    request = _request(infra, _context(tmp_path, dockerfile))

    async def build_then_cancel() -> float:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(LocalBuilder(Settings()).build, request)
                # The RUN step must be running before we cancel.
                assert await anyio.to_thread.run_sync(_wait_until_running, marker)
                await anyio.sleep(0.5)
                cancelled_at = time.monotonic()
                scope.cancel()
        return time.monotonic() - cancelled_at

    assert anyio.run(build_then_cancel) < 10
    assert not [c for c in _process_cmdlines() if str(request.dockerfile) in c]
    deadline = time.monotonic() + 15
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _running(marker), "the RUN step kept running after the CLI was stopped"


def _remote_host(infra: Any) -> str:
    host: str | None = infra.remote_docker_host
    if host is None:
        if os.environ.get("IMAGED_REQUIRE_DOCKER"):
            pytest.fail("IMAGED_REQUIRE_DOCKER is set but the test infra has no remote engine")
        pytest.skip("no remote engine in the test infra")
    return host


def test_remote_builder_builds_and_pushes_through_the_other_engine(
    infra: Any, tmp_path: Path
) -> None:
    host = _remote_host(infra)
    marker = uuid.uuid4().hex
    # COPY, not RUN: the test infra's remote engine runs with --bridge=none (no RUN network).
    context = _context(tmp_path, f"FROM {infra.debian_base}\nCOPY marker /marker\n")
    (context / "marker").write_text(marker)
    request = _request(infra, context)
    builder = RemoteBuilder(Settings(docker_host=host))
    info = anyio.run(builder.check)
    assert info["engine"] == host
    outcome: BuildOutcome = anyio.run(builder.build, request)
    ref = request.tags[0]
    assert outcome.manifest_digest == _registry_digest(infra, ref)
    remote_env = {**os.environ, "DOCKER_HOST": host}
    assert _docker(infra, "image", "inspect", ref, env=remote_env)
    local_env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    with pytest.raises(subprocess.CalledProcessError):
        _docker(infra, "image", "inspect", ref, env=local_env)


@pytest.mark.parametrize(
    "step", [pytest.param("check", id="check"), pytest.param("build", id="build")]
)
def test_unreachable_engine_is_engine_error(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    request = _request(infra, _context(tmp_path, f"FROM {infra.debian_base}\n"))
    for builder in (
        LocalBuilder(Settings()),
        RemoteBuilder(Settings(docker_host="tcp://127.0.0.1:1")),
    ):
        call = builder.check if step == "check" else lambda b=builder: b.build(request)
        with pytest.raises(EngineError, match=r"tcp://127\.0\.0\.1:1") as info:
            anyio.run(call)
        assert info.value.transient


PROXY_DOCKERFILE = """\
FROM {base}
RUN printf %s "$HTTPS_PROXY" | sha256sum | cut -d' ' -f1 > /proxy.sha256
"""


def _recording_cli(tmp_path: Path, infra: Any) -> tuple[Path, Path]:
    """A docker CLI that appends its own /proc/PID/cmdline to a log, then is the real one."""
    log = tmp_path / "cmdlines"
    cli = tmp_path / "docker"
    cli.write_text(
        f'#!/bin/sh\ncat /proc/$$/cmdline >> "{log}"; echo >> "{log}"\n'
        f'exec {infra.docker_cli} "$@"\n'
    )
    cli.chmod(0o755)
    return cli, log


def test_proxy_build_args_reach_the_build_and_stay_off_argv(
    infra: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-" + uuid.uuid4().hex
    proxy = f"http://bob:{password}@proxy.invalid:3128"
    cli, log = _recording_cli(tmp_path, infra)
    settings = Settings(docker_cli=str(cli), build_args=(("HTTPS_PROXY", proxy),))
    request = _request(
        infra, _context(tmp_path, PROXY_DOCKERFILE.format(base=infra.debian_base)), no_cache=True
    )
    builder = LocalBuilder(settings)
    events: list[dict[str, object]] = []
    caplog.set_level("DEBUG")
    dry_run = builder.describe_command(request)
    outcome = anyio.run(lambda: builder.build(request, on_event=events.append))

    ref = request.tags[0]
    hashed = _docker(infra, "run", "--rm", ref, "cat", "/proxy.sha256").decode().strip()
    assert hashed == hashlib.sha256(proxy.encode()).hexdigest()  # the value reached RUN
    assert "HTTPS_PROXY" in dry_run
    assert dry_run[dry_run.index("HTTPS_PROXY") - 1] == "--build-arg"
    cmdlines = log.read_bytes()
    assert b"build" in cmdlines
    assert b"HTTPS_PROXY" in cmdlines
    exposed = [
        " ".join(dry_run),
        " ".join(outcome.command),
        repr(events),
        caplog.text,
        cmdlines.decode(errors="replace"),
        _docker(infra, "history", "--no-trunc", ref).decode(),
    ]
    assert not [text for text in exposed if password in text]


def test_a_cancelled_engine_push_is_stopped_in_the_engine(infra: Any, tmp_path: Path) -> None:
    # The hang watchdog's cancel: the push's connection to the engine is cut, dockerd sees
    # its client gone and cancels the push, so the tag never moves later.
    dockerfile = f"FROM {infra.debian_base}\nRUN head -c 64000000 /dev/urandom > /big\n"
    request = _request(infra, _context(tmp_path, dockerfile), no_cache=True)
    ref = request.tags[0]
    _docker(infra, "build", "-q", "-t", ref, str(request.context_dir))
    builder = LocalBuilder(Settings())

    async def main() -> None:
        started = anyio.Event()  # set in the event loop: the thread sends its events there

        def on_event(event: object) -> None:
            started.set()

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def push() -> None:
                    await run_push(lambda stop: builder._push_sync(request, on_event, stop))

                tg.start_soon(push)
                await started.wait()  # the engine has started the push
                scope.cancel()

    anyio.run(main)
    # Another push of the same layers ends after any upload the first one still had going.
    _docker(infra, "tag", ref, ref + "-other")
    _docker(infra, "push", ref + "-other")
    repo, tag = ref.removeprefix(infra.registry + "/").rsplit(":", 1)
    for _ in range(5):
        time.sleep(1)
        response = httpx.head(
            f"http://{infra.registry}/v2/{repo}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPES},
        )
        assert response.status_code == 404, "the cancelled push moved the tag"
    _docker(infra, "rmi", ref, ref + "-other")
