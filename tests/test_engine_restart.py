"""An engine killed mid-build is a transient failure: the scheduler retries with backoff and the
image is pushed once the engine is back. Runs against a private dockerd (never a shared one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from private_engine import PrivateEngine, open_private_engine

from imaged.builders.remote import RemoteBuilder
from imaged.config import Settings
from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.errors import EngineError, is_transient
from imaged.pipeline.build import abuild
from imaged.spec.image import Image

pytestmark = pytest.mark.docker
RUN_SECONDS = 3


@pytest.fixture
def engine(infra: Any) -> Iterator[PrivateEngine]:
    with open_private_engine(infra.docker_cli) as started:
        pulled = started.docker("pull", infra.debian_base)
        assert pulled.returncode == 0, pulled.stderr
        yield started


def _image(infra: Any) -> Image:
    nonce = uuid.uuid4().hex[:12]
    return (
        Image.from_base(infra.debian_base)
        .with_commands(f"echo run-{nonce}-started && sleep {RUN_SECONDS}")
        .clone(name=f"engine-restart-{nonce}", registry=infra.registry)
    )


def _tag_exists(infra: Any, uri: str) -> bool:
    repo, tag = uri.removeprefix(infra.registry + "/").rsplit(":", 1)
    response = httpx.head(f"http://{infra.registry}/v2/{repo}/manifests/{tag}")
    return response.status_code == 200


def test_engine_killed_mid_run_is_retried_until_the_image_is_pushed(
    infra: Any, engine: PrivateEngine, tmp_path: Path
) -> None:
    settings = Settings(
        docker_host=engine.host, docker_cli=infra.docker_cli, state_dir=tmp_path / "state"
    )
    builder = RemoteBuilder(settings)
    image = _image(infra)
    events: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    killed, retrying, pushed = anyio.Event(), anyio.Event(), anyio.Event()
    uris: list[str] = []

    def on_scheduler_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "retrying":
            retrying.set()

    def on_build_event(event: dict[str, Any]) -> None:
        line = str(event.get("line", ""))
        if not killed.is_set() and line.startswith("#") and "-started" in line:
            engine.kill()  # kill -9 while the RUN step sleeps
            killed.set()
        if event.get("event") == "pushed" and "uri" in event:
            uris.append(str(event["uri"]))
            pushed.set()

    async def build(name: str, reason: str) -> None:
        try:
            await abuild(image, settings=settings, builder=builder, on_event=on_build_event)
        except Exception as exc:
            errors.append(exc)
            raise

    async def main() -> None:
        options = SchedulerOptions(debounce=0.0, retry_initial=0.3, retry_max=1.0)
        scheduler = Scheduler(build, options, on_event=on_scheduler_event)
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                scheduler.request(image.name or "", "test")
                await killed.wait()
                await retrying.wait()
                await anyio.to_thread.run_sync(engine.start)
                await pushed.wait()
                tg.cancel_scope.cancel()

    anyio.run(main)
    first = errors[0]
    assert isinstance(first, EngineError), first
    assert is_transient(first)
    assert "unexpected EOF" in str(first)
    assert engine.host in str(first)
    assert [e["event"] for e in events if e["event"] == "failed"] == []
    assert _tag_exists(infra, uris[0])
