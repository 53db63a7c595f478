"""The truth campaign: does the tag move exactly when the image would change, and does the
image under a tag hold what the tree says?

A seeded random sequence of mutations of a small tree (same- and other-size edits,
same-content rewrites, touch, chmod, renames and moves, new and deleted files and folders,
.dockerignore edits and ignored files, symlinks added and retargeted, names with spaces,
non-ASCII and leading dots). After each one it builds two images of the tree with
``imaged.build`` (a source folder copied to /app, and the same plus ``RUN cp -a /app
/derived``), reads /app (and /derived) back from the engine, and counts

* false hits: the tag stayed while the files the tree describes changed;
* false misses: the tag moved while the image (files and config) did not;
* stale images: a new tag's image does not hold the tree's files (path, type, mode,
  owner, link target, content sha256).

Needs the test infrastructure (``scripts/test-infra.sh``); reads its state file
(``$IMAGED_TEST_INFRA``, default ``<repo>/.imaged-test-infra.json``). Exits 1 when it finds
a false hit or a stale image.

Run: ``python scripts/truth_campaign.py [--mutations 300] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from truth_support import (  # noqa: E402
    Campaign,
    ImageState,
    Variant,
    derived_expect,
    plain_expect,
    read_image,
    seed_tree,
)

from imaged import Image, build  # noqa: E402
from imaged.config import Settings, load_settings  # noqa: E402


def load_state() -> dict[str, Any]:
    path = Path(os.environ.get("IMAGED_TEST_INFRA", REPO / ".imaged-test-infra.json"))
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def docker_env(state: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    if state.get("docker_host"):
        env["DOCKER_HOST"] = state["docker_host"]
    return env


def variants(state: dict[str, Any], tree: Path, run: str) -> list[Variant]:
    plain = (
        Image.from_base(state["debian_base"])
        .clone(registry=state["registry"], name=f"truth-{run}", extendable=True)
        .with_source_folder(tree, dst="/app", copy_contents_only=True)
    )
    derived = plain.with_commands("cp -a /app /derived").clone(name=f"truth-derived-{run}")
    return [
        Variant(plain, ("/app",), plain_expect),
        Variant(derived, ("/app", "/derived"), derived_expect),
    ]


def campaign(
    state: dict[str, Any], work: Path, settings: Settings, paths: dict[str, int]
) -> Campaign:
    tree, cli, env = work / "tree", state["docker_cli"], docker_env(state)
    tree.mkdir()
    seed_tree(tree)

    def build_one(image: Image) -> tuple[str, str]:
        result = build(image, settings=settings)
        if result.pushed:
            key = f"{image.name.rpartition('-')[0]} {result.path}"
            paths[key] = paths.get(key, 0) + 1
        return result.tag, result.uri

    def read(uri: str, paths: tuple[str, ...]) -> ImageState:
        return read_image(cli, uri, paths, env)

    return Campaign(tree, variants(state, tree, uuid.uuid4().hex[:8]), build_one, read)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show", type=int, default=20, help="problems to print")
    parser.add_argument(
        "--fast-path",
        choices=("on", "off"),
        default="on",
        help="the registry fast path (default on, as imaged's default; off: every build full)",
    )
    args = parser.parse_args()
    state = load_state()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imaged-truth-") as tmp:
        settings = dataclasses.replace(
            load_settings(),
            state_dir=Path(tmp) / "state",
            docker_cli=state["docker_cli"],
            fast_path=args.fast_path == "on",
        )
        paths: dict[str, int] = {}
        run = campaign(state, Path(tmp), settings, paths)
        try:
            figures = run.run(random.Random(args.seed), args.mutations)
        finally:
            cli, env = state["docker_cli"], docker_env(state)
            subprocess.run([cli, "rmi", *sorted(run.uris)], env=env, capture_output=True)
    for problem in figures.problems[: args.show]:
        print(problem)
    taken = ", ".join(f"{k}: {v}" for k, v in sorted(paths.items()))
    print(f"builds pushed by variant and path: {taken}")
    print(f"seed {args.seed}: {figures.summary()} ({time.perf_counter() - started:.0f} s)")
    return 1 if figures.false_hits or figures.stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
