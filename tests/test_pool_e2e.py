"""The pool on real engines: the shared local dockerd and the infra's second ("remote") dockerd
on tcp loopback spread a set of images and keep each on its engine (BuildKit says CACHED the
second time); a PRIVATE engine (the only one ever killed) dies mid-build, is marked down, the
build completes on the other engine, and the killed engine rejoins once restarted."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from private_engine import PrivateEngine, open_private_engine

from imaged.builders.pool import PoolBuilder
from imaged.config import PoolEntry, Settings
from imaged.pipeline.build import ImageBuild, abuild
from imaged.spec.image import Image

pytestmark = pytest.mark.docker
SLEEP_SECONDS = 3


def _local_engine(infra: Any) -> str:
    return str(infra.docker_host or "unix:///var/run/docker.sock")


def _image(infra: Any, name: str, nonce: str, *, env: str = "1") -> Image:
    return (
        # Recipe layers only (no file tail), so the whole image is a BuildKit build on the
        # engine the pool places it on; ``env`` changes the last step, not the slow one.
        Image.from_base(infra.debian_base)
        .with_commands(f"echo run-{nonce}-started && sleep {SLEEP_SECONDS}")
        .with_commands(f"echo {env} > /pool-test")
        .clone(name=name, registry=infra.registry)
    )


def _tag_exists(infra: Any, uri: str) -> bool:
    repo, tag = uri.removeprefix(infra.registry + "/").rsplit(":", 1)
    return httpx.head(f"http://{infra.registry}/v2/{repo}/manifests/{tag}").status_code == 200


def _settings(infra: Any, tmp_path: Path, *entries: PoolEntry) -> Settings:
    return Settings(docker_cli=infra.docker_cli, state_dir=tmp_path / "state", pool=entries)


async def _build(
    image: Image, settings: Settings, pool: PoolBuilder, events: list[dict[str, Any]]
) -> ImageBuild:
    return await abuild(image, settings=settings, builder=pool, on_event=events.append)


def test_images_spread_over_two_engines_and_come_back_to_their_cache(
    infra: Any, tmp_path: Path
) -> None:
    local, remote = _local_engine(infra), str(infra.remote_docker_host)
    settings = _settings(infra, tmp_path, PoolEntry(local, 1), PoolEntry(remote, 1))
    pool = PoolBuilder(settings)
    nonce = uuid.uuid4().hex[:10]
    runs = {f"pool-spread-{nonce}-{i}": f"{nonce}-{i}" for i in range(4)}
    images = [_image(infra, name, run) for name, run in runs.items()]
    first: dict[str, ImageBuild] = {}

    async def spread() -> None:
        async def one(image: Image) -> None:
            first[image.name or ""] = await _build(image, settings, pool, [])

        async with anyio.create_task_group() as tg:
            for image in images:
                tg.start_soon(one, image)

    started = time.monotonic()
    anyio.run(spread)
    spread_seconds = time.monotonic() - started
    engines = {name: result.engine for name, result in first.items()}
    assert set(engines.values()) == {local, remote}, engines  # spread over both
    assert all(_tag_exists(infra, r.uri) and r.status == "pushed" for r in first.values())
    assert all(r.placement and r.placement.startswith("least loaded") for r in first.values())

    # The second build of each image (a new last layer) goes back where its RUN is cached.
    events: dict[str, list[dict[str, Any]]] = {}

    async def again() -> dict[str, ImageBuild]:
        results = {}
        for name, run in runs.items():
            events[name] = []
            changed = _image(infra, name, run, env="2")
            results[name] = await _build(changed, settings, pool, events[name])
        return results

    second = anyio.run(again)
    for name, result in second.items():
        assert (result.engine, result.placement) == (engines[name], "last built here"), name
        lines = [str(e.get("line", "")) for e in events[name] if e["event"] == "build_output"]
        run_step = [line for line in lines if "RUN" in line and "sleep" in line]
        assert run_step, lines
        step = run_step[0].split(" ", 1)[0]  # "#6"
        assert f"{step} CACHED" in lines, lines
        placed = [e for e in events[name] if e["event"] == "building" and e.get("engine")]
        assert [(e["engine"], e["placement"]) for e in placed] == [
            (engines[name], "last built here")
        ]
    print(f"\n4 images on 2 engines (capacity 1 each): {spread_seconds:.1f}s")  # noqa: T201


@pytest.fixture
def private(infra: Any) -> Iterator[PrivateEngine]:
    with open_private_engine(infra.docker_cli) as started:
        pulled = started.docker("pull", infra.debian_base)
        assert pulled.returncode == 0, pulled.stderr
        yield started


def test_an_engine_killed_mid_build_is_marked_down_and_the_build_completes_elsewhere(
    infra: Any, private: PrivateEngine, tmp_path: Path
) -> None:
    remote = str(infra.remote_docker_host)
    settings = _settings(infra, tmp_path, PoolEntry(private.host, 1), PoolEntry(remote, 1))
    pool = PoolBuilder(settings)
    nonce = uuid.uuid4().hex[:10]
    image = _image(infra, f"pool-kill-{nonce}", nonce)
    events: list[dict[str, Any]] = []
    killed = False

    def on_event(event: dict[str, Any]) -> None:
        nonlocal killed
        events.append(event)
        line = str(event.get("line", ""))
        if not killed and line.startswith("#") and "-started" in line:
            private.kill()  # kill -9 while the RUN step sleeps
            killed = True

    async def main() -> ImageBuild:
        with anyio.fail_after(180):
            return await abuild(image, settings=settings, builder=pool, on_event=on_event)

    result = anyio.run(main)
    assert killed
    assert result.status == "pushed"
    assert _tag_exists(infra, result.uri)
    assert result.engine == remote
    assert result.placement is not None
    assert f"moved from {private.host} (down: " in result.placement
    placed = [
        (e["engine"], e["placement"])
        for e in events
        if e["event"] == "building" and e.get("engine")
    ]
    assert [engine for engine, _ in placed] == [private.host, remote]
    states = {e["engine"]: e for e in pool.engine_states()}
    assert states[private.host]["state"] == "down"
    assert "unexpected EOF" in str(states[private.host]["error"])
    assert states[remote]["state"] == "up"

    # Restarted, the engine answers a probe (after its backoff) and takes builds again.
    private.start()

    async def rejoin() -> float:
        started = time.monotonic()
        with anyio.fail_after(60):
            while states_of(pool)[private.host] != "up":
                await pool.probe_due()
                await anyio.sleep(0.2)
        return time.monotonic() - started

    waited = anyio.run(rejoin)
    fresh = _image(infra, f"pool-rejoin-{nonce}", f"{nonce}-r")
    after = anyio.run(_build, fresh, settings, pool, [])
    assert after.engine == private.host
    assert after.placement == "least loaded (0/1)"
    print(f"\nrejoined {waited:.1f}s after the restart")  # noqa: T201


def states_of(pool: PoolBuilder) -> dict[str, str]:
    return {e["engine"]: e["state"] for e in pool.engine_states()}


def test_a_fast_path_image_names_the_engine_its_stem_was_built_on(
    infra: Any, tmp_path: Path
) -> None:
    """The tail is appended by imaged itself; the engine reported is where the stem (the
    image's BuildKit part) was built in this call, and no engine when the stem was there."""
    local, remote = _local_engine(infra), infra.remote_docker_host
    settings = _settings(infra, tmp_path, PoolEntry(local, 1), PoolEntry(remote, 1))
    pool = PoolBuilder(settings)
    nonce = uuid.uuid4().hex[:10]
    image = (
        Image.from_base(infra.debian_base)
        .with_commands(f"echo {nonce} > /pool-stem")
        .with_env_vars({"POOL_TEST": "1"})
        .clone(name=f"pool-fast-{nonce}", registry=infra.registry)
    )
    first = anyio.run(_build, image, settings, pool, [])
    assert (first.path, first.status) == ("fast", "pushed"), first.path_reason
    assert first.engine in {local, remote}
    assert first.placement
    again = anyio.run(_build, image.with_env_vars({"POOL_TEST": "2"}), settings, pool, [])
    assert (again.path, again.status) == ("fast", "pushed")
    assert (again.engine, again.placement) == (None, None)  # the stem was in the registry
    assert _tag_exists(infra, again.uri)


def test_an_engine_that_hangs_mid_build_is_marked_down_and_the_build_moves(
    infra: Any, private: PrivateEngine, tmp_path: Path
) -> None:
    """SIGSTOP (alive, not answering) the PRIVATE engine while its RUN step sleeps: the pool's
    pings of the engine go unanswered, it is marked down, the build is cancelled and completes
    on the other engine; after SIGCONT a probe brings the engine back."""
    remote = str(infra.remote_docker_host)
    settings = _settings(infra, tmp_path, PoolEntry(private.host, 1), PoolEntry(remote, 1))
    pool = PoolBuilder(settings, hang_probe_seconds=2.0, hang_probes=2)
    nonce = uuid.uuid4().hex[:10]
    image = _image(infra, f"pool-hang-{nonce}", nonce)
    events: list[dict[str, Any]] = []
    assert private.process is not None
    stopped = False

    def on_event(event: dict[str, Any]) -> None:
        nonlocal stopped
        events.append(event)
        line = str(event.get("line", ""))
        if not stopped and line.startswith("#") and "-started" in line:
            os.kill(private.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            stopped = True

    async def main() -> ImageBuild:
        with anyio.fail_after(240):
            return await abuild(image, settings=settings, builder=pool, on_event=on_event)

    try:
        result = anyio.run(main)
        states = {e["engine"]: e for e in pool.engine_states()}
    finally:
        os.kill(private.process.pid, signal.SIGCONT)
    assert stopped
    assert (result.status, result.engine) == ("pushed", remote)
    assert _tag_exists(infra, result.uri)
    assert result.placement is not None
    assert f"moved from {private.host} (down: engine {private.host} stopped answering" in (
        result.placement
    )
    placed = [e["engine"] for e in events if e["event"] == "building" and e.get("engine")]
    assert placed == [private.host, remote]
    assert states[private.host]["state"] == "down"
    assert states[private.host]["running"] == 0

    async def rejoin() -> None:
        with anyio.fail_after(90):
            while states_of(pool)[private.host] != "up":
                await pool.probe_due()
                await anyio.sleep(0.2)

    anyio.run(rejoin)
    assert pool.engine_states()[0]["error"] is None
