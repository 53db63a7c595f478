"""Benchmark the edit loop's fixed costs: from a write to the build starting, stage by stage.

Needs the test infrastructure (``scripts/test-infra.sh``). Two parts, in one run:

a) the watcher alone (no daemon, no Docker): ``WatchfilesBackend`` on a folder, the seconds
   from a one-file write to the raw batch that names it, at each ``--steps`` watch step;
b) ``imaged watch --json`` daemons side by side, one per settings row (``old``: the
   defaults before issue 9 item 7, ``IMAGED_DEBOUNCE_MS=200 IMAGED_SETTLE_MS=200
   IMAGED_WATCH_STEP_MS=10``; ``new``: today's defaults, no IMAGED_* timing variable; with
   ``--leading``, also ``IMAGED_SETTLE_MS=0``: build at once), each on its own copy of a
   tree of ``--files`` files and one image with that folder. One-file edits interleaved
   across the rows (the row that goes first rotates). Per edit, from the write, by the
   events' own ``ts``: ``changed`` (watcher, relevance filter, rehash), ``building`` (the
   scheduler's quiet period and hand-off), ``pushed`` and the tag answering ``HEAD`` in the
   registry (polled every 10 ms); and the count of ``building`` events (one per edit);
c) the daemon's own steps in this process: the relevance filter and the rehash
   (``ImageTracker``) of one edited path in the same tree, a thread hop, and the
   scheduler's hand-off from a request to the build coroutine (settle 0).
   With ``--plain``, ``docker build && docker push`` of the same edit on a copy, for the
   ratio the issue's targets are stated in.

Medians over ``--edits`` (default 9). Parts a and c need no Docker. Run: ``python bench/edit_loop_bench.py [--files N]
[--edits N] [--plain] [--leading] [--row LABEL:IMAGED_X=1,...]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
from daemon_bench import (
    TOTAL_BYTES_5000,
    DaemonRun,
    EditResult,
    Watched,
    daemon_edit,
    load_state,
    make_tree,
    plain_context,
    plain_edit,
    settings_env,
    wait_initial_pushes,
    write_project,
)

from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.daemon.tracker import ImageTracker
from imaged.daemon.watcher import WatchfilesBackend
from imaged.definitions.loader import load_definitions
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image

OLD = {"IMAGED_DEBOUNCE_MS": "200", "IMAGED_SETTLE_MS": "200", "IMAGED_WATCH_STEP_MS": "10"}
ROWS: dict[str, dict[str, str]] = {"old": OLD, "new": {}}
LEADING = {"IMAGED_SETTLE_MS": "0"}
IDLE_S = 3.0
TIMING_VARS = ("IMAGED_DEBOUNCE_MS", "IMAGED_SETTLE_MS", "IMAGED_WATCH_STEP_MS")


# -- a) the watcher alone -----------------------------------------------------------------


async def raw_latencies(folder: Path, step_ms: int, edits: int, idle: list[float]) -> list[float]:
    """Seconds from each write to the backend's batch that names the file; appends to
    ``idle`` the CPU share this process used while the watcher had nothing to report."""
    stop = anyio.Event()
    target = folder / f"step{step_ms}.txt"
    seen: list[float] = []
    arrived = anyio.Event()
    batches = WatchfilesBackend().watch(
        [folder], stop_event=stop, debounce_ms=2 * step_ms, step_ms=step_ms
    )

    async def consume() -> None:
        nonlocal arrived
        async for batch in batches:
            if any(path == str(target) for _, path in batch):
                seen.append(time.perf_counter())
                arrived.set()

    latencies = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.3)  # the watch is in place
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(IDLE_S)
        idle.append((time.process_time() - cpu) / (time.perf_counter() - wall))
        for n in range(edits):
            arrived = anyio.Event()
            written = time.perf_counter()
            target.write_text(f"{n}\n")
            with anyio.fail_after(5):
                await arrived.wait()
            latencies.append(seen[-1] - written)
            await anyio.sleep(0.05)
        stop.set()
        tg.cancel_scope.cancel()
    return latencies


def bench_watcher(steps: list[int], edits: int) -> None:
    print("\na) watcher alone: write -> raw batch naming the file (ms)")
    print(f"step_ms  median     min     max  idle CPU % (over {IDLE_S:g} s)")
    with tempfile.TemporaryDirectory(prefix="imaged-edit-loop-watch-") as tmp:
        for step in steps:
            idle: list[float] = []
            got = anyio.run(raw_latencies, Path(tmp), step, edits, idle)
            print(
                f"{step:7d}  {ms(statistics.median(got))}  {ms(min(got))}  {ms(max(got))}"
                f"  {idle[0] * 100:6.2f}"
            )


# -- c) the daemon's own steps, in this process -------------------------------------------


def bench_steps(files: int, edits: int) -> None:
    """The steps between the watcher's batch and the build starting, one by one."""
    with tempfile.TemporaryDirectory(prefix="imaged-edit-loop-steps-") as tmp:
        root = Path(tmp)
        size = TOTAL_BYTES_5000 * files // 5000 if files >= 1000 else files * 4096
        paths = make_tree(root / "src", files, size)
        defs = write_project(root, {"steps": "src"})
        image = load_definitions(str(defs))["steps"]
        tracker = ImageTracker(DigestCache())
        tracker.set_images({"steps": image})
        filters, rehashes = [], []
        for n in range(edits):
            path = paths[(n * 37) % len(paths)]
            path.write_text(f"step edit {n}\n")
            t0 = time.perf_counter()
            tracker.is_relevant(path)
            t1 = time.perf_counter()
            tracker.apply_changes([path])
            t2 = time.perf_counter()
            filters.append(t1 - t0)
            rehashes.append(t2 - t1)
    hops = anyio.run(thread_hops, edits)
    handoffs = anyio.run(scheduler_handoffs, edits)
    print(f"\nc) the daemon's steps in this process, {files} files (ms, medians)")
    print(f"relevance filter, one path     {ms(statistics.median(filters))}")
    print(f"rehash (apply_changes), 1 file {ms(statistics.median(rehashes))}")
    print(f"thread hop (to_thread, no-op)  {ms(statistics.median(hops))}")
    print(f"scheduler request -> build     {ms(statistics.median(handoffs))}  (settle 0)")


async def thread_hops(count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        await anyio.to_thread.run_sync(lambda: None)
        out.append(time.perf_counter() - t0)
    return out


async def scheduler_handoffs(count: int) -> list[float]:
    started: list[float] = []
    built = anyio.Event()

    async def build(name: str, reason: str) -> None:
        started.append(time.perf_counter())
        built.set()

    sched = Scheduler(build, SchedulerOptions(debounce=0.0, settle=0.0))
    out = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        await anyio.sleep(0.05)
        for n in range(count):
            built = anyio.Event()
            t0 = time.perf_counter()
            sched.request("a", f"edit {n}")
            await built.wait()
            out.append(started[-1] - t0)
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return out


# -- b) the daemon ------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    env: dict[str, str]
    watched: Watched
    paths: list[Path]
    results: list[EditResult]


def start_row(
    state: dict[str, Any], root: Path, label: str, env: dict[str, str], files: int, size: int
) -> tuple[Row, DaemonRun]:
    project = root / label
    paths = make_tree(project / "src", files, size)
    name = f"imaged-bench/edit-loop-{label}-{files}-{uuid.uuid4().hex[:6]}"
    defs = write_project(project, {name: "src"})
    image = load_definitions(str(defs))[name].clone(registry=state["registry"])
    full = {k: v for k, v in settings_env(state).items() if k not in TIMING_VARS}
    full |= env | {"IMAGED_STATE_DIR": str(project / "state")}
    daemon = DaemonRun(defs, registry=state["registry"], env=full, log=project / "daemon.log")
    watched = Watched(daemon, image, name, state["registry"], DigestCache(), http=None)  # type: ignore[arg-type]
    return Row(label, env, watched, paths, []), daemon


def phase(result: EditResult, kind: str) -> float:
    return result.phases.get(kind, float("nan"))


def print_rows(rows: list[Row], plain: list[float]) -> None:
    print("\nb) daemon, write -> ... medians (ms); builds per edit")
    print(
        "row      settings                                        changed  building"
        "  build->pushed  pushed  visible  builds/edit"
    )
    medians: dict[str, float] = {}
    for row in rows:
        res = row.results
        changed = statistics.median(phase(r, "changed") for r in res)
        building = statistics.median(phase(r, "building") for r in res)
        pushed = statistics.median(r.to_pushed_event for r in res)
        run = statistics.median(r.to_pushed_event - phase(r, "building") for r in res)
        visible = statistics.median(r.to_visible for r in res)
        builds = statistics.mean(r.counts.get("building", 0) for r in res)
        medians[row.label] = building
        settings = " ".join(f"{k.removeprefix('IMAGED_')}={v}" for k, v in row.env.items())
        print(
            f"{row.label:7s}  {settings or '(defaults)':46s}  {ms(changed)}  {ms(building)}"
            f"  {ms(run):>13s}  {ms(pushed)}  {ms(visible)}  {builds:11.2f}"
        )
        if plain:
            ratio = visible / statistics.median(plain)
            print(f"{'':7s}  write -> visible / plain docker build && push: {ratio:.2f}x")
    if "old" in medians:
        for label, value in medians.items():
            if label != "old":
                print(f"write -> building, {label} / old: {value / medians['old']:.2f}")
    if plain:
        print(f"plain docker build && docker push, median: {ms(statistics.median(plain))} ms")


def interleave(
    state: dict[str, Any], rows: list[Row], plain: tuple[Path, list[Path], str] | None, edits: int
) -> list[float]:
    plain_times: list[float] = []
    sides: list[Row | None] = [*rows, None] if plain else list(rows)
    for n in range(edits):
        index = (n * 37) % len(rows[0].paths)
        for side in sides[n % len(sides) :] + sides[: n % len(sides)]:
            if side is None:
                assert plain is not None
                context, paths, ref = plain
                plain_times.append(plain_edit(state, context, paths[index], f"plain {n}", ref))
            else:
                result = daemon_edit(side.watched, side.paths[index], f"{side.label} {n}")
                side.results.append(result)
    return plain_times


def bench_daemon(args: argparse.Namespace, state: dict[str, Any]) -> None:
    size = TOTAL_BYTES_5000 * args.files // 5000 if args.files >= 1000 else args.files * 4096
    table = dict(ROWS) | ({"leading": LEADING} if args.leading else {})
    for spec in args.row:
        label, _, settings = spec.partition(":")
        table[label] = dict(item.split("=", 1) for item in settings.split(",") if item)
    with tempfile.TemporaryDirectory(prefix="imaged-edit-loop-") as tmp:
        root = Path(tmp)
        rows, daemons = [], []
        try:
            for label, env in table.items():
                row, daemon = start_row(state, root, label, env, args.files, size)
                rows.append(row)
                daemons.append(daemon)
            plain = None
            if args.plain:
                shutil.copytree(root / "old" / "src", root / "plain" / "src")
                ref = plain_context(
                    state, root / "plain", f"imaged-bench/edit-loop-plain-{tmp[-6:]}"
                )
                plain_paths = [root / "plain" / p.relative_to(root / "old") for p in rows[0].paths]
                plain = (root / "plain", plain_paths, ref)
            os.sync()
            with httpx.Client(timeout=10) as http:
                for row, daemon in zip(rows, daemons, strict=True):
                    wait_initial_pushes(daemon, [row.watched.name], timeout=600)
                    row.watched.http = http
                    hash_image(row.watched.image, row.watched.cache)
                plain_times = interleave(state, rows, plain, args.edits)
        finally:
            for daemon in daemons:
                daemon.stop()
    print_rows(rows, plain_times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files in the folder (200)")
    parser.add_argument("--edits", type=int, default=9, help="edits per row (9)")
    parser.add_argument("--plain", action="store_true", help="also docker build && push")
    parser.add_argument("--leading", action="store_true", help="also a settle_ms=0 row")
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        help="one more row, LABEL:IMAGED_X=1,IMAGED_Y=2 (repeatable)",
    )
    parser.add_argument(
        "--steps", default="10,5,2", help="watch steps for part a, ms (default 10,5,2)"
    )
    args = parser.parse_args()
    state = load_state()
    os.environ.update(settings_env(state))  # this process hashes the same definitions
    os.environ.pop("IMAGED_REGISTRY", None)
    print(
        f"{args.files} files, {args.edits} edits per row; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    bench_watcher([int(s) for s in args.steps.split(",")], args.edits)
    bench_steps(args.files, args.edits)
    bench_daemon(args, state)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
