"""Benchmark imaged's build path against plain ``docker build`` + ``docker push``.

Needs the test infrastructure (``scripts/test-infra.sh``); reads its state file
(``$IMAGED_TEST_INFRA``, default ``<repo>/.imaged-test-infra.json``). Measures, in one run:

a) the existence check of 50 images that exist (``RegistryClient.check_many``), median of 5;
b) ``imaged.abuild`` after a one-file edit in a ``with_source_folder`` layer of 200 and of
   5,000 files (~21 MB), 10 edits each, median;
c) ``DOCKER_BUILDKIT=1 docker build`` + ``docker push`` of the equivalent hand-written
   Dockerfile (FROM base + COPY src) for the same edits, median; and the ratio b/c.

Run: ``python bench/build_bench.py [--edits N]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imaged import Image  # noqa: E402
from imaged.pipeline.build import abuild  # noqa: E402
from imaged.registry.client import Existence, RegistryClient  # noqa: E402

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
EXISTING_IMAGES = 50
CHECK_ROUNDS = 5
TOTAL_BYTES_5000 = 21 * 1024 * 1024


def load_state() -> dict[str, Any]:
    path = Path(os.environ.get("IMAGED_TEST_INFRA", REPO / ".imaged-test-infra.json"))
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def configure(state: dict[str, Any]) -> None:
    """The settings imaged reads: local base, host CA bundle, docker CLI."""
    os.environ["IMAGED_DEBIAN_BASE"] = state["debian_base_template"]
    if state.get("ca_bundle"):
        os.environ["IMAGED_BUILD_CA_BUNDLE"] = state["ca_bundle"]
    os.environ["IMAGED_DOCKER_CLI"] = state["docker_cli"]
    os.environ.pop("IMAGED_REGISTRY", None)


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


# -- a) existence checks ------------------------------------------------------------------


def make_existing_tags(registry: str, base: str, repo: str, count: int) -> list[str]:
    """Tag the base manifest ``count`` times in ``repo`` (blobs mounted, nothing uploaded)."""
    base_repo, _, base_tag = base.removeprefix(f"{registry}/").rpartition(":")
    url = f"http://{registry}/v2"
    with httpx.Client(timeout=30) as http:
        got = http.get(f"{url}/{base_repo}/manifests/{base_tag}", headers={"Accept": MANIFEST_V2})
        got.raise_for_status()
        manifest = got.json()
        for digest in [
            manifest["config"]["digest"],
            *(lay["digest"] for lay in manifest["layers"]),
        ]:
            mount = http.post(f"{url}/{repo}/blobs/uploads/?mount={digest}&from={base_repo}")
            if mount.status_code != 201:
                raise RuntimeError(f"blob mount of {digest} failed: {mount.status_code}")
        tags = [f"exists-{i}" for i in range(count)]
        for tag in tags:
            put = http.put(
                f"{url}/{repo}/manifests/{tag}",
                content=got.content,
                headers={"Content-Type": MANIFEST_V2},
            )
            put.raise_for_status()
    return [f"{registry}/{repo}:{tag}" for tag in tags]


async def check_all(uris: list[str]) -> None:
    async with RegistryClient() as client:
        results = await client.check_many(uris)
    wrong = [uri for uri, res in results.items() if res is not Existence.EXISTS]
    if wrong:
        raise RuntimeError(f"{len(wrong)} images reported missing or failed: {wrong[:3]}")


def bench_existence(registry: str, base: str) -> list[float]:
    uris = make_existing_tags(registry, base, f"imaged-bench/exists-{uuid.uuid4().hex[:6]}", 50)
    anyio.run(check_all, uris)  # warm-up, also proves they all exist
    return [timed(lambda: anyio.run(check_all, uris)) for _ in range(CHECK_ROUNDS)]


# -- b) and c) one-file edits -------------------------------------------------------------


def make_tree(root: Path, files: int, total_bytes: int) -> list[Path]:
    """``files`` files in folders of 100, ``total_bytes`` in all, distinct contents."""
    size = max(total_bytes // files, 16)
    paths = []
    for i in range(files):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = f"file {i} ".encode()
        path.write_bytes((line * (size // len(line) + 1))[:size])
        paths.append(path)
    return paths


def edit(path: Path, counter: int) -> None:
    with path.open("a") as handle:
        handle.write(f"edit {counter}\n")


def bench_imaged(
    image: Image, paths: list[Path], edits: int, phases: dict[str, list[float]]
) -> list[float]:
    async def one() -> None:
        result = await abuild(image)
        if result.status != "pushed":
            raise RuntimeError(f"expected a push, got {result.status}")
        for phase, seconds in result.timings.items():
            phases.setdefault(phase, []).append(seconds)

    anyio.run(one)  # warm-up: first build of this tree
    phases.clear()
    times = []
    for n in range(edits):
        edit(paths[(n * 37) % len(paths)], n)
        times.append(timed(lambda: anyio.run(one)))
    return times


def docker_cli(state: dict[str, Any], *args: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    subprocess.run(
        [state["docker_cli"], *args], check=True, env=env, capture_output=True, timeout=600
    )


def bench_plain(
    state: dict[str, Any], context: Path, paths: list[Path], edits: int, repo: str
) -> list[float]:
    (context / "Dockerfile").write_text(f"FROM {state['debian_base']}\nCOPY src /app/src\n")

    def one(tag: str) -> None:
        ref = f"{state['registry']}/{repo}:{tag}"
        docker_cli(state, "build", "-q", "-t", ref, str(context))
        docker_cli(state, "push", "-q", ref)

    one("warmup")
    times = []
    for n in range(edits):
        edit(paths[(n * 37) % len(paths)], 1000 + n)
        times.append(timed(functools.partial(one, f"e{n}")))
    return times


def bench_size(
    state: dict[str, Any], files: int, total_bytes: int, edits: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians of (b) and (c) for one tree size, and of imaged's phases."""
    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="imaged-bench-") as tmp:
        context = Path(tmp)
        src = context / "src"
        paths = make_tree(src, files, total_bytes)
        image = (
            Image.from_base(state["debian_base"])
            .clone(name=f"imaged-bench/imaged-{files}-{run}", registry=state["registry"])
            .with_source_folder(src, "/app")
        )
        phases: dict[str, list[float]] = {}
        imaged_times = bench_imaged(image, paths, edits, phases)
        plain_times = bench_plain(state, context, paths, edits, f"imaged-bench/plain-{files}-{run}")
    medians = {
        "imaged": statistics.median(imaged_times),
        "plain": statistics.median(plain_times),
    }
    return medians, {phase: statistics.median(values) for phase, values in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10, help="one-file edits per tree size")
    args = parser.parse_args()
    state = load_state()
    configure(state)
    checks = bench_existence(state["registry"], state["debian_base"])
    print(
        f"a) existence check, {EXISTING_IMAGES} existing images, check_many: "
        f"median {statistics.median(checks) * 1000:.1f} ms of {CHECK_ROUNDS} "
        f"(min {min(checks) * 1000:.1f} ms)"
    )
    for files, total in ((200, 200 * 4096), (5000, TOTAL_BYTES_5000)):
        res, phases = bench_size(state, files, total, args.edits)
        print(
            f"{files:>5} files ({total / 1e6:.1f} MB), one-file edit, median of {args.edits}: "
            f"b) imaged abuild {res['imaged']:.3f} s | "
            f"c) docker build+push {res['plain']:.3f} s | "
            f"ratio b/c {res['imaged'] / res['plain']:.2f}"
        )
        print(
            "      imaged phases (median s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
        )


if __name__ == "__main__":
    main()
