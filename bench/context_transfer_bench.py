"""Benchmark BuildKit's incremental context transfer with content-derived staged mtimes.

Issue #7 made every staged file's mtime a function of its bytes, so a same-size edit is
resent. This checks that unchanged files still are not: one same-size edit in a folder of
5,000 files (~21 MB), built by ``imaged.abuild`` with

a) the stable per-image context folder (what imaged does), and
b) a fresh state folder for every build (the only remedy before the fix: a full transfer),

interleaved, medians of the build phase (stage + BuildKit + export) and of the whole call, and
the ratio a/b. Every build is checked to serve the edited bytes (``docker run ... cat``).

Needs the test infra (``scripts/test-infra.sh``). Run:
``python bench/context_transfer_bench.py [--edits N] [--files N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from build_bench import configure, load_state, make_tree  # noqa: E402

from imaged import Image  # noqa: E402
from imaged.config import Settings, load_settings  # noqa: E402
from imaged.pipeline.build import abuild  # noqa: E402

MARK = b"EDIT-"  # every file starts with "file N": the edit overwrites its first 10 bytes


def same_size_edit(path: Path, counter: int) -> bytes:
    """Overwrite the first bytes of ``path`` in place with a counter: size unchanged."""
    data = bytearray(path.read_bytes())
    stamp = MARK + f"{counter:05d}".encode()
    data[: len(stamp)] = stamp
    path.write_bytes(bytes(data))
    return stamp


def build_once(image: Image, settings: Settings) -> tuple[float, float, str]:
    async def one() -> tuple[float, str]:
        result = await abuild(image, settings=settings)
        if result.status != "pushed":
            raise RuntimeError(f"expected a push, got {result.status}")
        return result.timings.get("build", 0.0) + result.timings.get("stage", 0.0), result.uri

    started = time.perf_counter()
    phase, uri = anyio.run(one)
    return phase, time.perf_counter() - started, uri


def served(cli: str, uri: str, relpath: str, length: int) -> bytes:
    out = subprocess.run(
        [cli, "run", "--rm", uri, "head", "-c", str(length), f"/app/{relpath}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=9, help="same-size edits per mode")
    parser.add_argument("--files", type=int, default=5000)
    args = parser.parse_args()
    state = load_state()
    configure(state)
    base_settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="imaged-xfer-") as tmp:
        root = Path(tmp)
        src = root / "src"
        paths = make_tree(src, args.files, args.files * 4400)
        image = (
            Image.from_base(state["debian_base"])
            .clone(name=f"imaged-bench/xfer-{uuid.uuid4().hex[:6]}", registry=state["registry"])
            .with_source_folder(src, "/app", copy_contents_only=True)
        )
        stable = dataclasses.replace(base_settings, state_dir=root / "stable-state")
        build_once(image, stable)  # warm-up: the first, full transfer into the stable folder
        rows: dict[str, list[tuple[float, float]]] = {"stable": [], "fresh": []}
        wrong = 0
        for n in range(args.edits):
            for mode in ("stable", "fresh"):
                path = paths[(n * 37 + (mode == "fresh")) % len(paths)]
                counter = n * 2 + (mode == "fresh")
                stamp = same_size_edit(path, counter)
                settings = stable
                if mode == "fresh":
                    settings = dataclasses.replace(base_settings, state_dir=root / f"fresh-{n}")
                phase, total, uri = build_once(image, settings)
                rows[mode].append((phase, total))
                rel = str(path.relative_to(src))
                wrong += served(state["docker_cli"], uri, rel, len(stamp)) != stamp
    med = {m: [statistics.median(v[i] for v in rows[m]) for i in (0, 1)] for m in rows}
    print(f"{args.files} files, one same-size edit, median of {args.edits} each (interleaved):")
    print(
        f"  a) stable context folder: stage+build {med['stable'][0]:.3f} s, abuild {med['stable'][1]:.3f} s"
    )
    print(
        f"  b) fresh context folder : stage+build {med['fresh'][0]:.3f} s, abuild {med['fresh'][1]:.3f} s"
    )
    print(
        f"  ratio a/b: stage+build {med['stable'][0] / med['fresh'][0]:.2f}, abuild {med['stable'][1] / med['fresh'][1]:.2f}"
    )
    print(f"  builds serving stale bytes: {wrong} of {2 * args.edits}")


if __name__ == "__main__":
    main()
