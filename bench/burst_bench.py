"""Benchmark bursts of edits under the watching daemon: one build start per burst?

Needs the test infrastructure (``scripts/test-infra.sh``). ``imaged watch images.py --json``
runs as a subprocess on one image with a source folder, with the default timing settings
(``settle_ms``, ``debounce_ms``, ``watch_step_ms``; ``--env KEY=VALUE`` sets others).
Then, one after the other:

* ``--runs`` bursts (default 10): 2,000 new files, their writes paced over ``--spread``
  seconds (default 0.25; the issue's bursts took 0.2-0.4 s), the writer stalling
  ``--stall`` seconds half-way (default 0: no stall), then a wait for the push and a quiet
  spell. Per run: the number of ``building`` and ``superseded`` events, and the seconds
  from the last write to the first ``building``;
* ``--singles`` one-file edits (default 10): the seconds from the write to ``building``,
  the common latency that a fix for bursts must not make worse.

Run: ``python bench/burst_bench.py [--runs N] [--singles N] [--files N] [--spread S]
[--stall S] [--env IMAGED_SETTLE_MS=0 ...]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from daemon_bench import DaemonRun, Event, is_push_of, load_state, settings_env

TIMING_VARS = ("IMAGED_DEBOUNCE_MS", "IMAGED_SETTLE_MS", "IMAGED_WATCH_STEP_MS")
QUIET_S = 1.5  # no build starts this long after a push: the run's count is final


def write_project(root: Path, name: str) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    (src / "app.txt").write_text("app\n")
    defs = root / "images.py"
    defs.write_text(
        "from imaged import Image\n"
        f'image = Image.from_debian_base(python_version=(3, 11), name="{name}")'
        '.with_source_folder("src", "/app")\n'
    )
    return defs


def burst(
    folder: Path, files: int, spread: float, label: str, stall: float = 0.0
) -> tuple[float, float]:
    """``files`` new files in ``folder``, paced evenly over ``spread`` seconds (a checkout,
    an install, a loaded machine), with no write for ``stall`` seconds half-way (a writer
    descheduled, a slow disk); the wall times of the first and the last write."""
    folder.mkdir()
    bodies = [f"{label} {i}\n" for i in range(files)]
    first = paced = time.time()
    for i, body in enumerate(bodies):
        if i == files // 2 and stall:
            time.sleep(stall)
            paced += stall  # the pacing goes on where it stopped
        with open(folder / f"f{i:04d}.txt", "w") as handle:
            handle.write(body)
        ahead = paced + spread * (i + 1) / files - time.time()
        if ahead > 0.002:
            time.sleep(ahead)
    return first, time.time()


def settle(daemon: DaemonRun, name: str, start: int) -> list[Event]:
    """Wait for the push, then until no event came for QUIET_S; every event since ``start``."""
    if daemon.wait_for(is_push_of(name), start=start, timeout=300) is None:
        raise RuntimeError(f"no push within 300 s: {daemon.tail()}")
    while True:
        mark = daemon.mark()
        time.sleep(QUIET_S)
        if daemon.mark() == mark and not _busy(daemon, name, start):
            return [event for _, event in daemon.since(start)]


def _busy(daemon: DaemonRun, name: str, start: int) -> bool:
    """A build started after the last push (it would push again)."""
    kinds = [e.get("event") for _, e in daemon.since(start) if e.get("image") == name]
    last_push = max((i for i, k in enumerate(kinds) if k in ("pushed", "skipped")), default=-1)
    return "building" in kinds[last_push + 1 :]


def first_ts(events: list[Event], kind: str) -> float:
    return min(float(e["ts"]) for e in events if e.get("event") == kind)


def count(events: list[Event], kind: str) -> int:
    return sum(1 for e in events if e.get("event") == kind)


def run_bursts(
    daemon: DaemonRun, src: Path, name: str, runs: int, files: int, spread: float, stall: float
) -> list[float]:
    stalled = f", stalling {stall:g} s half-way" if stall else ""
    print(f"\n{runs} bursts of {files} new files, paced over {spread:g} s{stalled}")
    print("run  write s  building  superseded  pushed  last write -> building s")
    latencies = []
    for run in range(runs):
        start = daemon.mark()
        first, last = burst(
            src / f"burst-{run:02d}", files, spread, f"run {run} {time.time()}", stall
        )
        events = settle(daemon, name, start)
        latency = first_ts(events, "building") - last
        latencies.append(latency)
        print(
            f"{run:3d}  {last - first:7.3f}  {count(events, 'building'):8d}"
            f"  {count(events, 'superseded'):10d}  {count(events, 'pushed'):6d}  {latency:8.3f}"
        )
    return latencies


def run_singles(daemon: DaemonRun, src: Path, name: str, edits: int) -> list[float]:
    latencies = []
    for edit in range(edits):
        start = daemon.mark()
        written = time.time()
        (src / "app.txt").write_text(f"edit {edit} {written}\n")
        events = settle(daemon, name, start)
        latencies.append(first_ts(events, "building") - written)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="bursts (default 10)")
    parser.add_argument("--singles", type=int, default=10, help="one-file edits (default 10)")
    parser.add_argument("--files", type=int, default=2000, help="files per burst (default 2000)")
    parser.add_argument(
        "--spread", type=float, default=0.25, help="seconds a burst's writes span (default 0.25)"
    )
    parser.add_argument(
        "--stall", type=float, default=0.0, help="seconds the writer stops half-way (default 0)"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the daemon (repeatable)"
    )
    args = parser.parse_args()
    state = load_state()
    extra = dict(item.split("=", 1) for item in args.env)
    env = {k: v for k, v in settings_env(state).items() if k not in TIMING_VARS} | extra
    print(
        f"timing settings: {' '.join(args.env) or 'the defaults'}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="imaged-burst-") as tmp:
        root = Path(tmp) / "proj"
        name = f"burst-bench-{os.getpid()}"
        defs = write_project(root, name)
        env["IMAGED_STATE_DIR"] = str(Path(tmp) / "state")
        daemon = DaemonRun(defs, registry=state["registry"], env=env, log=Path(tmp) / "log")
        try:
            settle(daemon, name, 0)
            bursts = run_bursts(
                daemon, root / "src", name, args.runs, args.files, args.spread, args.stall
            )
            singles = run_singles(daemon, root / "src", name, args.singles)
        finally:
            daemon.stop()
    print(f"\nmedian last write -> building, bursts: {statistics.median(bursts):.3f} s")
    if singles:
        print(
            f"median write -> building, {len(singles)} one-file edits: "
            f"{statistics.median(singles):.3f} s (min {min(singles):.3f}, max {max(singles):.3f})"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
