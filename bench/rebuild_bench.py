"""Benchmark of a rebuild after one file event: the time from the event to the build's start.

In one process, as the daemon does it: a one-file edit, the tracker folds the event in
(``apply_changes``), then ``abuild`` validates, hashes, renders and stages the image and
calls the builder; a recording builder notes the time and returns. Measured two ways on the
same tree, edits interleaved:

* ``walked``: ``abuild`` serves trees itself (the process-wide store, which re-stats every
  tree on each of its two hashes): what the daemon did before it lent its trees;
* ``lent``: ``abuild(trees=tracker.lend_tree)``, the trees the events keep current.

No engine or registry is needed. Run: ``python bench/rebuild_bench.py [--files 2000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imaged.builders.base import BuildOutcome, BuildRequest  # noqa: E402
from imaged.config import Settings  # noqa: E402
from imaged.daemon.tracker import ImageTracker  # noqa: E402
from imaged.digest.cache import DigestCache  # noqa: E402
from imaged.digest.trees import TreeProvider  # noqa: E402
from imaged.pipeline.build import abuild  # noqa: E402
from imaged.spec.image import Image  # noqa: E402


class StartClock:
    """A builder that records when the build would start."""

    name = "clock"

    def __init__(self) -> None:
        self.started = 0.0

    async def check(self) -> dict[str, str]:
        return {}

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        self.started = time.perf_counter()
        return BuildOutcome(None, None, 0.0, 0.0, ("clock",))

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ("clock",)


def make_tree(root: Path, files: int) -> list[Path]:
    """``files`` small files in folders of 100, mtimes in the past (outside the racy window)."""
    past = time.time() - 10
    paths = []
    for i in range(files):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 20)
        os.utime(path, (past, past))
        paths.append(path)
    return paths


def one_rebuild(
    tracker: ImageTracker, image: Image, path: Path, n: int, settings: Settings, lend: bool
) -> tuple[float, float, float, float]:
    """Seconds from the event to the build's start, and of them: the tracker's
    apply_changes, abuild's first hash, and its stage (hash again, render, copy)."""
    path.write_text(f"VALUE = 'edit {n} {lend}'\n")
    clock = StartClock()
    trees: TreeProvider | None = tracker.lend_tree if lend else None
    event = time.perf_counter()
    tracker.apply_changes([path])
    applied = time.perf_counter()

    async def run() -> dict[str, float]:
        result = await abuild(
            image, settings=settings, builder=clock, cache=tracker.cache, trees=trees
        )
        return result.timings

    timings = anyio.run(run)
    return clock.started - event, applied - event, timings["hash"], timings["stage"]


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(values) * 1e3:6.2f} ms, p90 {p90 * 1e3:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_tree(root / "src", args.files)
        image = Image.from_base("debian:12").clone(name="bench", registry=None)
        image = image.with_source_folder(root / "src", "/app")
        settings = Settings(state_dir=root / "state")
        tracker = ImageTracker(DigestCache())
        tracker.set_images({"bench": image})
        for lend in (False, True):  # warm up: the first staging copies everything
            one_rebuild(tracker, image, paths[0], 0, settings, lend)
        results: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
        for n in range(1, args.edits + 1):
            for lend in (False, True):
                path = paths[(n * 7919) % len(paths)]
                results[lend].append(one_rebuild(tracker, image, path, n, settings, lend))
    print(f"{args.files} files, {args.edits} one-file edits each way, event -> build start:")
    labels = {False: "walked: abuild re-stats its trees", True: "lent: the daemon's trees"}
    for lend, label in labels.items():
        columns = list(zip(*results[lend], strict=True))
        print(f"   {label}: {ms(list(columns[0]))}")
        for name, values in zip(("tracker apply", "hash", "stage"), columns[1:], strict=False):
            print(f"      {name:14s} {ms(list(values))}")


if __name__ == "__main__":
    main()
