"""Eight builds on one engine against the same eight on a pool of two engines, the same
capacity per engine: wall times, the speed-up, and the time to place and start a build.

Needs the test infrastructure (``scripts/test-infra.sh``: the local dockerd and the "remote"
dockerd on tcp loopback, the registry, the Debian base) and the engine pool (the ``pool``
setting, ``IMAGED_POOL``): without it the bench stops with a message before it builds,
unless ``--single-only`` asks for the one-engine half alone.

Each image is ``from_debian_base((3, 11))`` plus one recipe step, ``RUN echo <nonce> && sleep
3``: the nonce makes each image new to both engines (nothing cached), the sleep makes the
step wait rather than compute, as a download would. All eight start at once through
``abuild``; on one engine at most ``--capacity`` build at a time (a limiter here, as the
daemon's ``concurrency``), on the pool each engine takes ``--capacity``
(``IMAGED_POOL="unix:///var/run/docker.sock capacity=N, tcp://... capacity=N"``).

"Place and start" is, per build, the time from the pipeline's ``building`` event (it hands the
request to the builder) to the builder's ``build_started`` (the CLI is launched on the chosen
engine), stamped as the events arrive; on one engine it is the builder's own overhead, on the
pool it adds the placement and any wait for a free slot.

Run: ``python bench/pool_bench.py [--capacity 2] [--images 8] [--single-only] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _support import load_state  # noqa: E402

from imaged import Image  # noqa: E402
from imaged.builders.base import Builder, available_builders, get_builder  # noqa: E402
from imaged.config import SETTING, Settings, load_settings  # noqa: E402
from imaged.pipeline.build import abuild  # noqa: E402

LOCAL_ENGINE = "unix:///var/run/docker.sock"


def require_pool() -> None:
    if "pool" not in SETTING:
        sys.exit(
            "this imaged has no engine pool: `pool` (IMAGED_POOL) is not one of its settings. "
            "The pool comes with builders/pool.py (issue #12); run this bench on a checkout "
            "that has it, or pass --single-only for the one-engine half"
        )


def configure(state: dict[str, Any]) -> None:
    """The settings images and builds read from the environment: the loopback base (read
    when an Image is made), the host CA bundle, the docker CLI; the local engine."""
    os.environ["IMAGED_DEBIAN_BASE"] = state["debian_base_template"]
    os.environ["IMAGED_DOCKER_CLI"] = state["docker_cli"]
    if state.get("ca_bundle"):
        os.environ["IMAGED_BUILD_CA_BUNDLE"] = state["ca_bundle"]
    for name in ("IMAGED_REGISTRY", "IMAGED_POOL", "DOCKER_HOST"):
        os.environ.pop(name, None)


def settings_for(*, pool: str | None = None) -> Settings:
    environ = dict(os.environ)
    if pool is not None:
        environ["IMAGED_POOL"] = pool
    return load_settings(environ=environ, cwd=Path("/"))


def pool_builder(settings: Settings) -> Builder:
    """The pool: the builder named "pool" when it is one, else the one the settings pick."""
    return get_builder("pool" if "pool" in available_builders() else None, settings)


def images(state: dict[str, Any], count: int, label: str) -> list[Image]:
    run = uuid.uuid4().hex[:8]
    return [
        Image.from_debian_base(
            python_version=(3, 11), registry=state["registry"], name=f"pool-bench-{label}-{i}"
        ).with_commands(f"echo {run}-{label}-{i} > /nonce && sleep 3")
        for i in range(count)
    ]


class Stamps:
    """Each image's events as they arrive, stamped with a monotonic clock."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    def sink(self, event: dict[str, Any]) -> None:
        self.events.setdefault(str(event.get("image")), []).append((time.monotonic(), event))

    def first(self, image: str, kind: str) -> float | None:
        return next((t for t, e in self.events.get(image, []) if e["event"] == kind), None)

    def place_and_start(self) -> list[float]:
        spans = []
        for image in self.events:
            building, started = self.first(image, "building"), self.first(image, "build_started")
            if building is not None and started is not None:
                spans.append(started - building)
        return spans

    def engines(self) -> Counter[str]:
        """How many builds each engine ran, from any event naming an ``engine``."""
        seen: dict[str, str] = {}
        for image, stamped in self.events.items():
            for _t, event in stamped:
                if isinstance(event.get("engine"), str):
                    seen[image] = event["engine"]
        return Counter(seen.values())


async def run_all(
    builder: Builder, settings: Settings, todo: list[Image], limit: int
) -> dict[str, Any]:
    stamps = Stamps()
    limiter = anyio.CapacityLimiter(limit)

    async def one(image: Image) -> None:
        async with limiter:
            result = await abuild(image, builder=builder, settings=settings, on_event=stamps.sink)
        assert result.status == "pushed", (image.name, result.status)

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for image in todo:
            group.start_soon(one, image)
    wall = time.monotonic() - started
    spans = stamps.place_and_start()
    return {
        "wall_seconds": wall,
        "place_and_start_median": statistics.median(spans) if spans else None,
        "place_and_start_max": max(spans) if spans else None,
        "builds_per_engine": dict(stamps.engines()),
    }


def show(name: str, row: dict[str, Any]) -> None:
    median, worst = row["place_and_start_median"], row["place_and_start_max"]
    print(
        f"{name:12} wall {row['wall_seconds']:6.2f} s   place+start median "
        f"{median:.3f} s, max {worst:.3f} s   per engine {row['builds_per_engine'] or '-'}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=2, help="builds at once per engine")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--single-only", action="store_true", help="no pool: one engine only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.single_only:
        require_pool()
    state = load_state(two_engines="the pool half")
    configure(state)
    results: dict[str, Any] = {}
    single = settings_for()
    local = get_builder("local", single)
    results["one engine"] = await run_all(
        local, single, images(state, args.images, "one"), args.capacity
    )
    show("one engine", results["one engine"])
    if not args.single_only:
        entries = [f"{LOCAL_ENGINE} capacity={args.capacity}"]
        entries.append(f"{state['remote_docker_host']} capacity={args.capacity}")
        pooled = settings_for(pool=", ".join(entries))
        results["pool of two"] = await run_all(
            pool_builder(pooled), pooled, images(state, args.images, "pool"), 2 * args.capacity
        )
        show("pool of two", results["pool of two"])
        speed_up = results["one engine"]["wall_seconds"] / results["pool of two"]["wall_seconds"]
        results["speed_up"] = speed_up
        print(f"speed-up {speed_up:.2f}x (ideal 2x: twice the builds at once)")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    anyio.run(main)
