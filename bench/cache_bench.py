"""The shared registry cache (``registry_cache``) across two real engines: what the export
costs on the engine that builds first, and what the import saves on the other one.

Needs the test infrastructure (``scripts/test-infra.sh``): the local dockerd is engine A, the
"remote" dockerd on tcp loopback engine B (both 20.10, whose built-in BuildKit exports inline
caches only, so this measures the Docker-engine path: ``BUILDKIT_INLINE_CACHE=1``, the image
also pushed as ``<repo>:imaged-latest``, ``--cache-from`` of it). buildx's ``type=registry``
export is not measured: the buildx plugin is not installable here.

Each round uses two fresh images (a nonce in the slow step, a repository each), so neither
engine has either in its own cache:

* A plain: image 1 built and pushed on A, ``registry_cache`` off;
* A export: image 2 built and pushed on A, ``registry_cache`` on (the export's cost is
  A export - A plain);
* B cold: image 1 built on B, off (B never saw it: every step runs);
* B import: image 2 built on B, on (its slow step should come from A's cache).

Run: ``python bench/cache_bench.py [--rounds 3] [--sleep 8] [--megabytes 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _support import load_state  # noqa: E402

from imaged.builders.base import BuildRequest  # noqa: E402
from imaged.builders.local import LocalBuilder  # noqa: E402
from imaged.builders.remote import RemoteBuilder  # noqa: E402
from imaged.config import Settings  # noqa: E402

_HEADER = re.compile(r"^#(\d+) (\[[^\]]+\] .+)$")
_CACHED = re.compile(r"^#(\d+) CACHED")
ROWS = ("A plain", "A export", "B cold", "B import")


def dockerfile(base: str, nonce: str, seconds: float, megabytes: int) -> str:
    return (
        f"FROM {base}\n"
        f"RUN echo {nonce} > /nonce && sleep {seconds} "
        f"&& head -c {megabytes}M /dev/urandom > /data\n"
        "RUN echo done > /done\n"
    )


def engine(state: dict[str, Any], name: str, *, cache: bool) -> LocalBuilder:
    """Engine A or B: the remote dockerd or the local one, as ``--exporter`` chose."""
    settings = Settings(docker_cli=state["docker_cli"], registry_cache=cache)
    if (name == "A") == (state["exporter"] == "local"):
        return LocalBuilder(settings)
    return RemoteBuilder(replace(settings, docker_host=state["remote_docker_host"]))


async def build(builder: LocalBuilder, context: Path, tag: str) -> tuple[float, int]:
    """Seconds to build and push ``tag`` from ``context``, and the RUN steps BuildKit took
    from a cache."""
    lines: list[str] = []

    def sink(event: dict[str, Any]) -> None:
        if event.get("event") == "build_output":
            lines.append(str(event["line"]))

    request = BuildRequest("cache-bench", context, context / "Dockerfile", (tag,))
    started = time.perf_counter()
    await builder.build(request, on_event=sink)
    seconds = time.perf_counter() - started
    steps = {m[1]: m[2] for line in lines if (m := _HEADER.match(line))}
    cached = {m[1] for line in lines if (m := _CACHED.match(line))}
    return seconds, sum(" RUN " in steps.get(step, "") for step in cached)


async def warm_up(state: dict[str, Any], root: Path) -> None:
    """Both engines hold the base image before the first round (a pull is not a cache)."""
    context = root / "warm-up"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {state['debian_base']}\n")
    for where in ("A", "B"):
        tag = f"{state['registry']}/imaged-bench/cache-warm-up:{uuid.uuid4().hex[:8]}"
        await build(engine(state, where, cache=False), context, tag)


def image(root: Path, state: dict[str, Any], args: argparse.Namespace) -> tuple[Path, str]:
    """A fresh image's context and repository (one repository per image, so its
    ``imaged-latest`` is that image's)."""
    nonce = uuid.uuid4().hex[:12]
    context = root / nonce
    context.mkdir()
    text = dockerfile(state["debian_base"], nonce, args.sleep, args.megabytes)
    (context / "Dockerfile").write_text(text)
    return context, f"{state['registry']}/imaged-bench/cache-{nonce}"


async def one_round(root: Path, state: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    (ctx1, repo1), (ctx2, repo2) = image(root, state, args), image(root, state, args)
    plan = (
        ("A plain", "A", False, ctx1, f"{repo1}:a"),
        ("A export", "A", True, ctx2, f"{repo2}:a"),
        ("B cold", "B", False, ctx1, f"{repo1}:b"),
        ("B import", "B", True, ctx2, f"{repo2}:b"),
    )
    result: dict[str, Any] = {}
    for row, where, cache, context, tag in plan:
        seconds, cached = await build(engine(state, where, cache=cache), context, tag)
        result[row] = {"seconds": seconds, "cached_run_steps": cached}
        print(f"  {row:9} {seconds:7.2f} s  RUN steps from a cache: {cached}/2", flush=True)
    return result


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    medians = {row: statistics.median(r[row]["seconds"] for r in rounds) for row in ROWS}
    export_cost = medians["A export"] - medians["A plain"]
    saving = medians["B cold"] - medians["B import"]
    print(
        f"\nmedians over {len(rounds)} rounds (slow step: sleep {args.sleep} s + "
        f"{args.megabytes} MB written):"
    )
    for row in ROWS:
        print(f"  {row:9} {medians[row]:7.2f} s")
    print(f"export cost on A:           {export_cost:+.2f} s per build")
    print(f"saved on B by the import:   {saving:+.2f} s per build that lands there cold")
    if saving > 0 and export_cost <= 0:
        print(
            "the export cost nothing measurable (an inline cache is metadata in the image "
            "config plus one more tag): it pays from the first build that lands on an engine "
            "whose own cache does not hold the image"
        )
    elif saving > 0:
        share = export_cost / saving
        print(
            f"it pays when more than {share:.0%} of builds land on an engine whose own cache "
            "does not hold the image (a new engine, a failover, a pruned cache, another "
            "engine of the pool)"
        )
    else:
        print("the import saved nothing here: it does not pay for this recipe")
    return {"medians": medians, "export_cost": export_cost, "saving": saving, "rounds": rounds}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=8.0, help="seconds of the slow step")
    parser.add_argument("--megabytes", type=int, default=30, help="bytes the slow step writes")
    parser.add_argument(
        "--exporter",
        choices=("remote", "local"),
        default="remote",
        help="which engine is A (default remote: the local one built the base image itself)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = {**load_state(two_engines="the bench"), "exporter": args.exporter}
    print(f"engine A: the {args.exporter} dockerd; engine B: the other one")
    os.environ.pop("DOCKER_HOST", None)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="imaged-cache-bench-") as root:
        await warm_up(state, Path(root))
        for number in range(1, args.rounds + 1):
            print(f"round {number}:", flush=True)
            rounds.append(await one_round(Path(root), state, args))
    summary = report(rounds, args)
    if args.json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    anyio.run(main)
