"""Benchmark the watching daemon: edit-to-registry latency, ignored edits and idle cost.

Needs the test infrastructure (``scripts/test-infra.sh``); reads its state file
(``$IMAGED_TEST_INFRA``, default ``<repo>/.imaged-test-infra.json``). In one run, for a
project of 200 files and one of 5,000 files (~21 MB):

a) ``imaged watch DEFS --json --registry R`` runs as a subprocess; after each one-file edit,
   the time from the write to the new tag's manifest answering ``HEAD`` in the registry
   (polled every 10 ms), and to the daemon's ``pushed`` event;
b) ``DOCKER_BUILDKIT=1 docker build`` + ``docker push`` of the equivalent hand-written
   Dockerfile, on an identical copy of the tree (which the daemon does not watch) that gets
   the same edits, interleaved with (a) so both see the same machine noise; the ratio a/b;
c) an edit of an ignored file (``src/x.log``): the time to a ``nothing_to_do`` event, or
   "no event" within 2 s; and a same-content rewrite of a tracked file (a relevant path whose
   digest does not move) to ``nothing_to_do``.

Then d) idle CPU and RSS of the daemon (and its child processes) watching 50 images.

Run: ``python bench/daemon_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _support import (  # noqa: E402
    DaemonRun,
    count_events,
    edit,
    first_times,
    infra_env,
    is_push_of,
    load_state,
    make_tree,
    p90,
    plain_build_push,
    wait_initial_pushes,
)

from imaged.definitions.loader import load_definitions  # noqa: E402
from imaged.digest.cache import DigestCache  # noqa: E402
from imaged.digest.image_digest import hash_image  # noqa: E402
from imaged.registry.client import MANIFEST_MEDIA_TYPES  # noqa: E402
from imaged.spec.image import Image  # noqa: E402

Event = dict[str, Any]
POLL_S = 0.010
IGNORED_WINDOW_S = 2.0
SETTLE_S = 0.5
TOTAL_BYTES_5000 = 21 * 1024 * 1024


# -- setup --------------------------------------------------------------------------------


def settings_env(state: dict[str, Any]) -> dict[str, str]:
    """The IMAGED_* settings for both the daemon and this process's hashing."""
    return {
        **infra_env(state),
        "IMAGED_RECONCILE_SECONDS": "0",
        "IMAGED_STATUS_ADDRESS": "127.0.0.1:0",
    }


def write_project(root: Path, images: dict[str, str]) -> Path:
    """``images.py`` with one image per (name, source folder), each FROM the Debian base."""
    lines = [
        "from pathlib import Path",
        "",
        "from imaged import Image",
        "",
        "",
        "def _image(name: str, src: str) -> Image:",
        "    base = Image.from_debian_base(python_version=(3, 11), name=name)",
        '    return base.with_source_folder(Path(src), "/app")',
        "",
        "",
    ]
    for i, (name, src) in enumerate(images.items()):
        lines.append(f"image_{i:03d} = _image({name!r}, {src!r})")
    defs = root / "images.py"
    defs.write_text("\n".join(lines) + "\n")
    return defs


# -- the daemon subprocess ----------------------------------------------------------------


def metric_value(address: str, line_prefix: str) -> float:
    """One sample of the daemon's /metrics (0 when the series is absent)."""
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- a) edits under the daemon ------------------------------------------------------------


@dataclass
class EditResult:
    """One edit under the daemon: seconds from the write, and the events it caused."""

    to_visible: float
    to_pushed_event: float
    tag_known: float
    build_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # event -> first ts - write


def wait_visible(http: httpx.Client, registry: str, name: str, tag: str, timeout: float) -> float:
    """Poll ``HEAD /v2/<name>/manifests/<tag>`` every 10 ms; the wall time it answered 200."""
    url = f"http://{registry}/v2/{name}/manifests/{tag}"
    headers = httpx.Headers([("Accept", t) for t in MANIFEST_MEDIA_TYPES])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.head(url, headers=headers).status_code == 200:
            return time.time()
        time.sleep(POLL_S)
    raise RuntimeError(f"{registry}/{name}:{tag} not visible within {timeout:g} s")


@dataclass
class Watched:
    """The running daemon and what this process needs to predict its tags."""

    daemon: DaemonRun
    image: Image
    name: str
    registry: str
    cache: DigestCache
    http: httpx.Client


def daemon_edit(w: Watched, path: Path, label: str) -> EditResult:
    start = w.daemon.mark()
    t0 = edit(path, label)
    tag = hash_image(w.image, w.cache).tag
    tag_known = time.time() - t0
    visible = wait_visible(w.http, w.registry, w.name, tag, timeout=300)
    pushed = w.daemon.wait_for(is_push_of(w.name, tag), start=start, timeout=300)
    if pushed is None:
        raise RuntimeError(f"tag {tag} is in the registry but the daemon sent no pushed event")
    time.sleep(SETTLE_S)  # so that a second build for the same edit would show in the counts
    _, event = pushed
    events = w.daemon.since(start)
    return EditResult(
        to_visible=visible - t0,
        to_pushed_event=float(event["ts"]) - t0,
        tag_known=tag_known,
        build_seconds=float(event.get("seconds", 0.0)),
        counts=count_events(events),
        phases=first_times(events, t0),
    )


# -- b) plain docker build + push ---------------------------------------------------------


def plain_context(state: dict[str, Any], context: Path, repo: str) -> str:
    """The hand-written Dockerfile beside ``src``; one untimed build + push; the repo ref."""
    (context / "Dockerfile").write_text(f"FROM {state['debian_base']}\nCOPY src/ /app/src/\n")
    (context / ".dockerignore").write_text("src/*.log\n")
    ref = f"{state['registry']}/{repo}"
    plain_build_push(state, context, f"{ref}:warmup")
    return ref


def plain_edit(state: dict[str, Any], context: Path, path: Path, label: str, ref: str) -> float:
    """Seconds from the write to ``docker push`` returning."""
    t0 = edit(path, label)
    plain_build_push(state, context, ref)
    return time.time() - t0


# -- c) ignored and no-op edits -----------------------------------------------------------


def ignored_edits(w: Watched, log_file: Path, count: int, address: str) -> dict[str, Any]:
    """Write an ignored file ``count`` times; seconds to the daemon's ``ignored`` decision
    (or to any other event, which would be a bug), None when nothing came within 2 s.
    The daemon says ``ignored`` at most once a second, so edits are spaced 1.1 s apart."""
    batches_before = metric_value(address, 'imaged_watch_events_total{kind="batch"}')
    waits: list[float | None] = []
    kinds: list[str] = []
    for n in range(count):
        start = w.daemon.mark()
        t0 = time.time()
        log_file.write_text(f"log line {n} {uuid.uuid4().hex}\n")
        found = w.daemon.wait_for(lambda _e: True, start=start, timeout=IGNORED_WINDOW_S)
        waits.append(None if found is None else found[0] - t0)
        if found is not None:
            kinds.append(str(found[1].get("event")))
        time.sleep(max(SETTLE_S, 1.1))
    batches_after = metric_value(address, 'imaged_watch_events_total{kind="batch"}')
    return {"waits": waits, "kinds": kinds, "batches": batches_after - batches_before}


def noop_edits(w: Watched, paths: list[Path], count: int) -> list[float]:
    """Rewrite a tracked file with its own content; seconds to the ``nothing_to_do`` event."""
    times = []
    for n in range(count):
        path = paths[(n * 53 + 11) % len(paths)]
        content = path.read_bytes()
        start = w.daemon.mark()
        t0 = time.time()
        path.write_bytes(content)
        found = w.daemon.wait_for(
            lambda e: e.get("event") in ("nothing_to_do", "changed"), start=start, timeout=10
        )
        if found is None or found[1].get("event") != "nothing_to_do":
            raise RuntimeError(f"same-content rewrite of {path}: expected nothing_to_do, {found}")
        times.append(found[0] - t0)
        time.sleep(SETTLE_S)
    return times


# -- one project size ---------------------------------------------------------------------


@dataclass
class SizeResult:
    files: int
    total_bytes: int
    initial_push: float
    daemon: list[EditResult]
    plain: list[float]
    ignored: dict[str, Any]
    noop: list[float]


@dataclass(frozen=True)
class Plan:
    edits: int
    ignored: int
    noop: int
    idle_images: int
    idle_seconds: float


@dataclass(frozen=True)
class Trees:
    """The watched project and its copy for the plain build: same files, same edits."""

    project: Path
    paths: list[Path]
    plain: Path
    plain_paths: list[Path]


def make_trees(root: Path, files: int, total_bytes: int, salt: str) -> Trees:
    """``salt`` makes the contents new to the engine's build cache and the registry: a
    tree another run already built would make every build a cache hit."""
    project, plain = root / "project", root / "plain"
    paths = make_tree(project / "src", files, total_bytes, salt=salt)
    (project / "src" / ".dockerignore").write_text("*.log\n")
    shutil.copytree(project / "src", plain / "src")
    plain_paths = [plain / p.relative_to(project) for p in paths]
    os.sync()  # no writeback of the fresh trees during the timed edits
    return Trees(project, paths, plain, plain_paths)


def interleaved_edits(
    state: dict[str, Any], w: Watched, trees: Trees, edits: int, plain_ref: str
) -> tuple[list[EditResult], list[float]]:
    """Edit n goes to the same file in both trees; the side that goes first alternates."""
    daemon_results, plain_times = [], []
    for n in range(edits):
        index = (n * 37) % len(trees.paths)
        for side in (0, 1) if n % 2 == 0 else (1, 0):
            if side == 0:
                daemon_results.append(daemon_edit(w, trees.paths[index], f"daemon {n}"))
            else:
                path = trees.plain_paths[index]
                ref = f"{plain_ref}:b{n}"
                plain_times.append(plain_edit(state, trees.plain, path, f"plain {n}", ref))
    return daemon_results, plain_times


def bench_size(state: dict[str, Any], files: int, total_bytes: int, plan: Plan) -> SizeResult:
    run = uuid.uuid4().hex[:6]
    name = f"imaged-bench/daemon-{files}-{run}"
    with tempfile.TemporaryDirectory(prefix="imaged-daemon-bench-") as tmp:
        root = Path(tmp)
        trees = make_trees(root, files, total_bytes, f"{run} ")
        plain_ref = plain_context(state, trees.plain, f"imaged-bench/plain-{files}-{run}")
        defs = write_project(trees.project, {name: "src"})
        image = load_definitions(str(defs))[name].clone(registry=state["registry"])
        env = {**settings_env(state), "IMAGED_STATE_DIR": str(root / "state")}
        daemon = DaemonRun(defs, registry=state["registry"], env=env, log=root / "daemon.log")
        try:
            initial = wait_initial_pushes(daemon, [name], timeout=600)
            with httpx.Client(timeout=10) as http:
                w = Watched(daemon, image, name, state["registry"], DigestCache(), http)
                hash_image(image, w.cache)  # warm this process's cache, as the daemon's is
                results, plain = interleaved_edits(state, w, trees, plan.edits, plain_ref)
                address = daemon.status_address()
                log_file = trees.project / "src" / "x.log"
                ignored = ignored_edits(w, log_file, plan.ignored, address)
                noop = noop_edits(w, trees.paths, plan.noop)
        finally:
            daemon.stop()
    return SizeResult(files, total_bytes, initial, results, plain, ignored, noop)


# -- d) idle ------------------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process, plus those of its waited-for children (cutime, cstime)."""
    fields = _stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def inotify_watches(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += fd.read_text().count("inotify wd:")
        except OSError:
            continue
    return count


def tree_sample(root: int) -> tuple[int, int, int]:
    """(CPU ticks, RSS KiB, processes) summed over the live tree; vanished ones skipped."""
    ticks = rss = procs = 0
    for pid in process_tree(root):
        try:
            ticks += cpu_ticks(pid)
            rss += rss_kib(pid)
            procs += 1
        except (OSError, ValueError, IndexError):
            continue
    return ticks, rss, procs


@dataclass
class IdleResult:
    images: int
    startup: float
    seconds: float
    cpu_percent: float
    rss_mib: list[float]
    processes: int
    watches: int


def bench_idle(state: dict[str, Any], plan: Plan) -> IdleResult:
    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="imaged-daemon-idle-") as tmp:
        root = Path(tmp)
        images = {}
        for i in range(plan.idle_images):
            make_tree(root / "project" / f"src{i:02d}", 20, 20 * 512, salt=f"{run}-{i} ")
            images[f"imaged-bench/idle-{run}-{i:02d}"] = f"src{i:02d}"
        defs = write_project(root / "project", images)
        env = {**settings_env(state), "IMAGED_STATE_DIR": str(root / "state")}
        daemon = DaemonRun(defs, registry=state["registry"], env=env, log=root / "daemon.log")
        try:
            startup = wait_initial_pushes(daemon, list(images), timeout=1800)
            time.sleep(3)  # let the last push's bookkeeping finish
            return sample_idle(daemon, len(images), startup, plan.idle_seconds)
        finally:
            daemon.stop()


def sample_idle(daemon: DaemonRun, images: int, startup: float, seconds: float) -> IdleResult:
    pid = daemon.proc.pid
    start = daemon.mark()
    ticks0, _, _ = tree_sample(pid)
    began = time.monotonic()
    rss: list[float] = []
    procs = 0
    while time.monotonic() - began < seconds:
        time.sleep(1.0)
        _, kib, procs = tree_sample(pid)
        rss.append(kib / 1024)
    ticks1, _, _ = tree_sample(pid)
    elapsed = time.monotonic() - began
    noise = [e for _, e in daemon.since(start)]
    if noise:
        print(f"   note: {len(noise)} events during the idle window: {noise[:3]}")
    return IdleResult(
        images=images,
        startup=startup,
        seconds=elapsed,
        cpu_percent=100 * (ticks1 - ticks0) / CLK_TCK / elapsed,
        rss_mib=rss,
        processes=procs,
        watches=inotify_watches(pid),
    )


# -- report -------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.0f} ms, p90 {p90(values) * 1000:7.0f} ms"


def print_size(res: SizeResult) -> None:
    visible = [r.to_visible for r in res.daemon]
    event = [r.to_pushed_event for r in res.daemon]
    n = len(visible)
    print(f"\n{res.files} files ({res.total_bytes / 1e6:.1f} MB), {n} one-file edits")
    print(f"   daemon start to initial push: {res.initial_push:.1f} s")
    print(f"   a) daemon, write -> manifest in registry: {ms(visible)}")
    print(f"      daemon, write -> 'pushed' event:       {ms(event)}")
    own = [r.build_seconds for r in res.daemon]
    print(f"      (daemon's own build+push 'seconds':     {ms(own)})")
    print(f"      (this process's expected-tag hash:      {ms([r.tag_known for r in res.daemon])})")
    print(f"   b) docker build + docker push:            {ms(res.plain)}")
    ratio = statistics.median(visible) / statistics.median(res.plain)
    ratio90 = p90(visible) / p90(res.plain)
    print(f"   ratio a/b (daemon/plain): median {ratio:.2f}, p90 {ratio90:.2f}")
    print_phases(res.daemon)
    print_counts(res.daemon)
    print_ignored(res.ignored)
    print(f"   c) same-content rewrite of a tracked file -> 'nothing_to_do': {ms(res.noop)}")


def print_phases(results: list[EditResult]) -> None:
    kinds = ("changed", "queued", "building", "pushing", "pushed")
    medians = [
        f"{k} {statistics.median(r.phases[k] for r in results) * 1000:.0f}"
        for k in kinds
        if all(k in r.phases for r in results)
    ]
    print(f"      daemon event times after the write (median ms): {', '.join(medians)}")


def print_counts(results: list[EditResult]) -> None:
    totals: dict[str, int] = {}
    for r in results:
        for kind, count in r.counts.items():
            totals[kind] = totals.get(kind, 0) + count
    shown = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
    print(f"      daemon events over the {len(results)} edits: {shown}")
    extra = [i for i, r in enumerate(results) if r.counts.get("building", 0) != 1]
    if extra:
        builds = [results[i].counts.get("building", 0) for i in extra]
        print(f"      WARNING: edits {extra} caused {builds} builds (expected 1 each)")


def print_ignored(ignored: dict[str, Any]) -> None:
    waits = [w for w in ignored["waits"] if w is not None]
    count = len(ignored["waits"])
    prefix = f"   c) ignored-file edit (src/x.log) x{count}:"
    if waits:
        print(
            f"{prefix} write -> daemon decision {ms(waits)} (events: {sorted(set(ignored['kinds']))})"
        )
    silent = count - len(waits)
    if silent:
        print(
            f"{prefix} no event within {IGNORED_WINDOW_S:g} s for {silent} of {count} "
            f"(watch batches handled meanwhile: {ignored['batches']:g})"
        )


def print_idle(res: IdleResult) -> None:
    print(f"\nidle, {res.images} images watched (startup incl. initial pushes {res.startup:.1f} s)")
    print(
        f"   d) over {res.seconds:.0f} s idle: CPU {res.cpu_percent:.2f}% of one core, "
        f"RSS median {statistics.median(res.rss_mib):.1f} MiB (max {max(res.rss_mib):.1f}), "
        f"{res.processes} process(es), {res.watches} inotify watches"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 edits, 3 ignored, 10 idle images for 10 s"
    )
    args = parser.parse_args()
    plan = Plan(20, 10, 5, 50, 30.0) if not args.quick else Plan(5, 3, 3, 10, 10.0)
    state = load_state()
    os.environ.update(settings_env(state))  # this process hashes the same definitions
    os.environ.pop("IMAGED_REGISTRY", None)
    print(
        "daemon settings: the default timing settings, "
        "IMAGED_RECONCILE_SECONDS=0, registry poll every 10 ms; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    for files, total in ((200, 200 * 4096), (5000, TOTAL_BYTES_5000)):
        print_size(bench_size(state, files, total, plan))
    print_idle(bench_idle(state, plan))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
