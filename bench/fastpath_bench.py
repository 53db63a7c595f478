"""Issue #9's targets: one-file edits to a new tag listed by the registry, side by side.

Needs the test infrastructure (``scripts/test-infra.sh``); reads its state file
(``$IMAGED_TEST_INFRA``, default ``<repo>/.imaged-test-infra.json``). In one run, for a
project of 5,000 files (~22 MB) and one of 200 files, each image the Debian python base, a
command layer (a recipe layer), then ``with_source_folder``; every edit appends a line to
one file, and each side has its own copy of the tree that gets the same edit:

a) plain: ``DOCKER_BUILDKIT=1 docker build`` + ``docker push`` of the hand-written
   Dockerfile (FROM base, RUN the command, COPY src);
b) daemon: ``imaged watch DEFS --json`` with the default settings;
c) build: ``imaged build DEFS --json``, a fresh process per edit, as a user runs it.

Each is timed from right before the write until the new tag is in the registry's
``GET /v2/<repo>/tags/list`` (polled every 10 ms). The sides alternate edit by edit, the
one that goes first rotating, so all three see the same machine noise. Then: d) bytes
uploaded per edit (``uploaded_bytes``, once the fast path reports it) against the folder's
compressed size; e) where the time goes (``imaged build`` timings, daemon event times) and
the physical floor measured in the same run; f) compression libraries over the folder's tar.

Run: ``python bench/fastpath_bench.py [--quick] [--edits N] [--json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from isal import isal_zlib

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _support import (  # noqa: E402
    DaemonRun,
    Event,
    count_events,
    edit,
    first_times,
    imaged_argv,
    infra_env,
    is_push_of,
    load_state,
    make_tree,
    p90,
    plain_build_push,
    subprocess_env,
    wait_initial_pushes,
)
from layertar_bench import plain_tar, stream_rates  # noqa: E402

from imaged.config import load_settings  # noqa: E402
from imaged.definitions.loader import load_definitions  # noqa: E402
from imaged.digest.cache import DigestCache  # noqa: E402
from imaged.digest.files import folder_rules  # noqa: E402
from imaged.digest.image_digest import hash_image  # noqa: E402
from imaged.digest.trees import TreeIndex  # noqa: E402
from imaged.registry.client import MANIFEST_MEDIA_TYPES  # noqa: E402
from imaged.render import layertar  # noqa: E402
from imaged.spec.image import Image  # noqa: E402

TOTAL_BYTES_5000 = 21 * 1024 * 1024  # 22.0 MB
SIZES = ((5000, TOTAL_BYTES_5000), (200, 200 * 4096))
# (side, files) -> the most side/plain may be (issue 9, "Targets")
TARGETS = {("daemon", 5000): 0.1, ("daemon", 200): 0.35, ("build", 5000): 0.5}
SIDES = ("plain", "daemon", "build")
RECIPE = "echo fastpath-bench > /etc/fastpath-bench"
BUILD_TIMINGS = ("hash", "check", "stem", "tail_tar", "upload", "manifest")
FULL_PATH_TIMINGS = ("stage", "build", "push")
DAEMON_EVENTS = ("changed", "queued", "building", "pushing", "pushed")
POLL_S = 0.010
SETTLE_S = 0.5
TIMEOUT_S = 600.0
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


# -- the summary: pure, tested in tests/test_fastpath_bench.py ------------------------------


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values present; None when none is (a field not reported yet)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= target else "FAIL"


def fmt(value: float | None, unit: str = "ms") -> str:
    """Seconds as ms (or s), bytes as kB/MB, a ratio as 0.00x; "n/a" for None."""
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value * 1000:.1f} ms" if value < 0.01 else f"{value * 1000:.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "bytes":
        return f"{value / 1e3:.1f} kB" if value < 1e6 else f"{value / 1e6:.2f} MB"
    raise ValueError(unit)


def path_taken(record: dict[str, Any]) -> str:
    """An ImageBuild or pushed event's path; before the fast path there was only "full"."""
    return str(record.get("path") or "full")


def paths_summary(records: Sequence[dict[str, Any]]) -> str:
    """``full x9`` or ``fast x8, full x1 (reason)``: the paths taken and their reasons."""
    counts: dict[str, int] = {}
    for record in records:
        reason = record.get("path_reason")
        key = path_taken(record) + (f" ({reason})" if reason else "")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{key} x{n}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def field_values(records: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    return [None if record.get(key) is None else float(record[key]) for record in records]


def timing_values(records: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    return [record.get("timings", {}).get(key) for record in records]


# -- the registry -------------------------------------------------------------------------


class Registry:
    """The plain HTTP API of the test registry: tags lists, manifests, blob uploads."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.base = f"http://{address}/v2"
        self.http = httpx.Client(timeout=30)

    def tags(self, repo: str) -> set[str]:
        got = self.http.get(f"{self.base}/{repo}/tags/list")
        if got.status_code == 404:  # no push to the repository yet
            return set()
        got.raise_for_status()
        return set(got.json().get("tags") or [])

    def wait_listed(
        self, repo: str, before: set[str], done: Callable[[], str | None], timeout: float
    ) -> tuple[float, str]:
        """Poll the tags list every 10 ms, noting when each new tag first showed, until
        ``done()`` names the tag that matters and it has shown; (wall time, tag)."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while True:
            listed = self.tags(repo)
            now = time.time()
            for tag in listed - before:
                seen.setdefault(tag, now)
            wanted = done()
            if wanted is not None and wanted in seen:
                return seen[wanted], wanted
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.address}/{repo}: no new tag {wanted} listed within {timeout:g} s"
                )
            time.sleep(POLL_S)

    def manifest(self, repo: str, ref: str) -> dict[str, Any]:
        """The manifest of ``repo:ref``; of an index, its linux/amd64 one."""
        headers = httpx.Headers([("Accept", t) for t in MANIFEST_MEDIA_TYPES])
        got = self.http.get(f"{self.base}/{repo}/manifests/{ref}", headers=headers)
        got.raise_for_status()
        data: dict[str, Any] = got.json()
        if "manifests" in data:
            amd64 = [m for m in data["manifests"] if m.get("platform", {}).get("os") == "linux"]
            return self.manifest(repo, (amd64 or data["manifests"])[0]["digest"])
        return data

    def upload(self, repo: str, data: bytes, digest: str) -> None:
        """One monolithic blob upload: POST, then PUT the bytes with their digest."""
        started = self.http.post(f"{self.base}/{repo}/blobs/uploads/")
        if started.status_code != 202:
            raise RuntimeError(f"blob upload to {repo} refused: {started.status_code}")
        location = urljoin(f"http://{self.address}", started.headers["Location"])
        sep = "&" if "?" in location else "?"
        put = self.http.put(
            f"{location}{sep}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if put.status_code != 201:
            raise RuntimeError(f"blob PUT to {repo} failed: {put.status_code} {put.text[:200]}")

    def put_manifest(self, repo: str, tag: str, manifest: bytes) -> None:
        put = self.http.put(
            f"{self.base}/{repo}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": MANIFEST_V2},
        )
        put.raise_for_status()


# -- the three sides ----------------------------------------------------------------------


@dataclass
class Sample:
    """One edit on one side: seconds from the write, and what the side reported."""

    listed: float  # to the new tag in the tags list
    finished: float  # to docker push returning / the pushed event's ts / the process exiting
    tag: str
    record: dict[str, Any] = field(default_factory=dict)  # pushed event / ImageBuild JSON
    phases: dict[str, float] = field(default_factory=dict)  # daemon: event -> first ts
    counts: dict[str, int] = field(default_factory=dict)  # daemon: events per kind


class Background(threading.Thread):
    """``fn`` in a thread; its result, the wall time it ended, and its error re-raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended = 0.0
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # re-raised in the main thread by finished()
            self.error = exc
        self.ended = time.time()

    def finished(self) -> bool:
        if self.is_alive():
            return False
        if self.error is not None:
            raise self.error
        return True


@dataclass
class Project:
    """One side's copy of the tree, its definitions and repository."""

    root: Path
    paths: list[Path]
    name: str  # image name = repository
    defs: Path | None = None
    image: Image | None = None


@dataclass
class Bench:
    state: dict[str, Any]
    registry: Registry
    env: dict[str, str]
    cache: DigestCache = field(default_factory=DigestCache)


def plain_sample(b: Bench, p: Project, index: int, n: int) -> Sample:
    tag = f"b{n}"
    before = b.registry.tags(p.name)
    ref = f"{b.registry.address}/{p.name}:{tag}"
    t0 = edit(p.paths[index], f"plain {n}")
    job = Background(lambda: plain_build_push(b.state, p.root, ref))
    listed, _ = b.registry.wait_listed(p.name, before, lambda: tag, TIMEOUT_S)
    job.join()
    job.finished()
    return Sample(listed - t0, job.ended - t0, tag)


def daemon_sample(b: Bench, p: Project, daemon: DaemonRun, index: int, n: int) -> Sample:
    before = b.registry.tags(p.name)
    start = daemon.mark()
    t0 = edit(p.paths[index], f"daemon {n}")
    pushed: list[Event] = []

    def done() -> str | None:
        if not pushed:
            found = daemon.wait_for(is_push_of(p.name), start=start, timeout=0)
            if found is None:
                return None
            pushed.append(found[1])
        return str(pushed[0]["uri"]).rpartition(":")[2]

    listed, tag = b.registry.wait_listed(p.name, before, done, TIMEOUT_S)
    time.sleep(SETTLE_S)  # so that a second build for the same edit shows in the counts
    check_tag(b, p, tag, "the daemon")
    events = daemon.since(start)
    finished = float(pushed[0]["ts"]) - t0
    return Sample(
        listed - t0, finished, tag, pushed[0], first_times(events, t0), count_events(events)
    )


def build_sample(b: Bench, p: Project, index: int, n: int) -> Sample:
    before = b.registry.tags(p.name)
    t0 = edit(p.paths[index], f"build {n}")
    job = Background(lambda: run_build(b, p))
    listed, tag = b.registry.wait_listed(
        p.name, before, lambda: str(job.result["tag"]) if job.finished() else None, TIMEOUT_S
    )
    check_tag(b, p, tag, "imaged build")
    assert job.result is not None
    return Sample(listed - t0, job.ended - t0, tag, job.result)


def run_build(b: Bench, p: Project) -> dict[str, Any]:
    """``imaged build DEFS --json`` in a fresh process; the ImageBuild of the image."""
    assert p.defs is not None
    argv = imaged_argv("build", str(p.defs), "--json", "--registry", b.registry.address)
    env = subprocess_env({**b.env, "IMAGED_STATE_DIR": str(p.root / ".state")})
    done = subprocess.run(
        argv, cwd=p.root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    for line in done.stdout.splitlines():
        record: dict[str, Any] = json.loads(line)
        if record.get("name") == p.name and done.returncode == 0:
            return record
    raise RuntimeError(f"imaged build failed ({done.returncode}): {done.stdout}{done.stderr}")


def check_tag(b: Bench, p: Project, tag: str, who: str) -> None:
    """Untimed: the pushed tag is the content tag of the edited tree."""
    assert p.image is not None
    expected = hash_image(p.image, b.cache).tag
    if tag != expected:
        raise RuntimeError(f"{who} pushed {p.name}:{tag}, the edited tree's tag is {expected}")


# -- one project size ---------------------------------------------------------------------


def write_definitions(p: Project) -> Path:
    defs = p.root / "images.py"
    defs.write_text(
        "from pathlib import Path\n\nfrom imaged import Image\n\n"
        f"image = (\n    Image.from_debian_base(python_version=(3, 11), name={p.name!r})\n"
        f"    .with_commands({RECIPE!r})\n"
        '    .with_source_folder(Path("src"), "/app")\n)\n'
    )
    return defs


def make_projects(root: Path, files: int, total_bytes: int, b: Bench) -> dict[str, Project]:
    """One copy of the tree per side; the plain one with its Dockerfile; one untimed
    build and push each (plain, build) to warm the engine's cache and push the stem."""
    run = uuid.uuid4().hex[:6]
    first = root / "plain"
    # salted by the run: a tree an earlier run built would make every build a cache hit
    paths = make_tree(first / "src", files, total_bytes, salt=run, source_like=True)
    (first / "src" / ".dockerignore").write_text("*.log\n")
    projects = {}
    for side in SIDES:
        if side != "plain":
            shutil.copytree(first / "src", root / side / "src")
        rel = [root / side / q.relative_to(first) for q in paths]
        projects[side] = Project(root / side, rel, f"imaged-bench/fastpath-{side}-{files}-{run}")
    os.sync()
    plain = projects["plain"]
    base = b.state["debian_base"]
    (plain.root / "Dockerfile").write_text(f"FROM {base}\nRUN {RECIPE}\nCOPY src/ /app/src/\n")
    (plain.root / ".dockerignore").write_text("src/*.log\n")
    plain_build_push(b.state, plain.root, f"{b.registry.address}/{plain.name}:warmup")
    for side in ("daemon", "build"):
        p = projects[side]
        p.defs = write_definitions(p)
        p.image = load_definitions(str(p.defs))[p.name].clone(registry=b.registry.address)
        hash_image(p.image, b.cache)  # warm this process's cache for check_tag
    run_build(b, projects["build"])
    return projects


@dataclass
class SizeResult:
    files: int
    total_bytes: int
    samples: dict[str, list[Sample]]
    floor: dict[str, Any]
    compressed: dict[str, Any]
    streams: list[dict[str, Any]]


def bench_size(b: Bench, files: int, total_bytes: int, edits: int) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix="imaged-fastpath-bench-") as tmp:
        root = Path(tmp)
        projects = make_projects(root, files, total_bytes, b)
        plain = projects["plain"]
        entries = folder_entries(plain.root / "src")
        tar = plain_tar(entries)
        edited = [plain.paths[edit_index(n, plain)] for n in range(edits)]
        floor = Floor.prepare(b.registry, entries, edited)
        d = projects["daemon"]
        assert d.defs is not None
        env = {**b.env, "IMAGED_STATE_DIR": str(root / "daemon-state")}
        daemon = DaemonRun(d.defs, registry=b.registry.address, env=env, log=root / "daemon.log")
        try:
            wait_initial_pushes(daemon, [d.name], timeout=TIMEOUT_S)
            samples = interleaved(b, projects, daemon, floor, edits)
        finally:
            daemon.stop()
        tail = tail_sizes(b, d.name, samples["daemon"][-1].tag)
        streams = stream_rates(tar) if files == max(f for f, _ in SIZES) else []
        compressed = {"tar_bytes": len(tar), "gzip6_bytes": gzip6_size(tar), "pushed": tail}
    return SizeResult(files, total_bytes, samples, floor.summary(), compressed, streams)


def edit_index(n: int, p: Project) -> int:
    return (n * 37) % len(p.paths)


def interleaved(
    b: Bench, projects: dict[str, Project], daemon: DaemonRun, floor: Floor, edits: int
) -> dict[str, list[Sample]]:
    """Edit n goes to the same file on every side, and the floor is measured for it; the
    one that goes first rotates."""
    samples: dict[str, list[Sample]] = {side: [] for side in SIDES}
    order = (*SIDES, "floor")
    for n in range(edits):
        index = edit_index(n, projects["plain"])
        for side in order[n % 4 :] + order[: n % 4]:
            p = projects.get(side)
            if p is None:
                floor.once(n)
            elif side == "plain":
                samples[side].append(plain_sample(b, p, index, n))
            elif side == "daemon":
                samples[side].append(daemon_sample(b, p, daemon, index, n))
            else:
                samples[side].append(build_sample(b, p, index, n))
    return samples


# -- d) sizes and e) the physical floor ---------------------------------------------------


def folder_entries(src: Path) -> list[layertar.LayerEntry]:
    index = TreeIndex.build(src, folder_rules(src), DigestCache())
    return layertar.tree_entries(index, "/app/src")


def gzip6_size(tar: bytes) -> int:
    import zlib

    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    return len(deflate.compress(tar)) + len(deflate.flush())


def tail_sizes(b: Bench, repo: str, tag: str) -> dict[str, Any]:
    """The layers of the pushed image past the base's and the recipe's: the folder."""
    base_repo, _, base_tag = b.state["debian_base"].partition("/")[2].rpartition(":")
    base_layers = len(b.registry.manifest(base_repo, base_tag)["layers"])
    layers = b.registry.manifest(repo, tag)["layers"][base_layers + 1 :]
    return {"layers": len(layers), "bytes": sum(int(layer["size"]) for layer in layers)}


@dataclass
class FloorInput:
    """What one edit changes: the file's new bytes, the tar of the layer holding it and
    the size of that layer's blob as imaged writes it (one gzip member per entry)."""

    file: bytes
    layer_tar: bytes
    layer_gz_size: int


@dataclass
class Floor:
    """The least a one-file edit can cost, measured per edit: sha256 and compress (with
    imaged's deflate and level) the changed file, and the layer holding it; one monolithic
    upload of that many fresh random bytes; one manifest PUT naming them."""

    registry: Registry
    repo: str
    config: bytes
    inputs: list[FloorInput]
    layers: int
    split_bytes: int
    rows: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls, registry: Registry, entries: list[layertar.LayerEntry], edited: list[Path]
    ) -> Floor:
        """Untimed: each edit's inputs (before the edits move the files), the config blob."""
        split_bytes = load_settings().fastpath_split_bytes
        parts = layertar.split_entries(entries, split_bytes=split_bytes)
        inputs = []
        for n, path in enumerate(edited):
            suffix = "/" + path.relative_to(path.parent.parent.parent).as_posix()
            part = next(p for p in parts if any(e.path.endswith(suffix) for e in p))
            content = path.read_bytes() + f"edit floor {n}\n".encode()
            inputs.append(FloorInput(content, plain_tar(part), layertar.write_layer(part).size))
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        repo = f"imaged-bench/floor-{uuid.uuid4().hex[:6]}"
        registry.upload(repo, config, sha256_digest(config))
        return cls(registry, repo, config, inputs, len(parts), split_bytes)

    def once(self, n: int) -> None:
        data = self.inputs[n]
        for what, raw, size in (
            ("file", data.file, None),
            ("layer", data.layer_tar, data.layer_gz_size),
        ):
            for key, value in self.measure(raw, size, f"floor-{what}-{n}").items():
                self.rows.setdefault(f"{what}_{key}", []).append(value)

    def measure(self, raw: bytes, upload_size: int | None, tag: str) -> dict[str, float]:
        """sha256 + compress ``raw`` (and sha256 the result); upload that many fresh bytes
        (or ``upload_size``); PUT a manifest naming them. Seconds of each."""
        started = time.perf_counter()
        hashlib.sha256(raw).digest()
        gz = compress(raw)
        hashlib.sha256(gz).digest()  # the blob digest
        hashed = time.perf_counter()
        blob = os.urandom(len(gz) if upload_size is None else upload_size)
        digest = sha256_digest(blob)  # the real blob's digest was timed above
        before_upload = time.perf_counter()
        self.registry.upload(self.repo, blob, digest)
        uploaded = time.perf_counter()
        self.registry.put_manifest(self.repo, tag, manifest_for(self.config, digest, len(blob)))
        return {
            "hash_compress": hashed - started,
            "upload": uploaded - before_upload,
            "manifest": time.perf_counter() - uploaded,
        }

    def summary(self) -> dict[str, Any]:
        def typical(values: list[int]) -> int:
            return int(statistics.median(values))

        return {
            "file_bytes": typical([len(i.file) for i in self.inputs]),
            "file_gz_bytes": typical([len(compress(i.file)) for i in self.inputs]),
            "layer_tar_bytes": typical([len(i.layer_tar) for i in self.inputs]),
            "layer_gz_bytes": typical([i.layer_gz_size for i in self.inputs]),
            "layers": self.layers,
            "split_bytes": self.split_bytes,
            **{key: statistics.median(values) for key, values in self.rows.items()},
        }


def compress(data: bytes) -> bytes:
    """gzip of ``data`` with the deflate and level render/layertar.py uses."""
    deflate = isal_zlib.compressobj(layertar.LEVEL, isal_zlib.DEFLATED, 31)
    return bytes(deflate.compress(data) + deflate.flush())


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def manifest_for(config: bytes, layer: str, size: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer,
                    "size": size,
                }
            ],
        }
    ).encode()


# -- report -------------------------------------------------------------------------------


def side_rows(res: SizeResult) -> list[dict[str, Any]]:
    """Per side: medians and p90s of write -> listed, the ratio to plain, the target."""
    plain = median([s.listed for s in res.samples["plain"]])
    rows = []
    for side in SIDES:
        listed = [s.listed for s in res.samples[side]]
        target = TARGETS.get((side, res.files))
        value = None if side == "plain" else ratio(median(listed), plain)
        rows.append(
            {
                "side": side,
                "median_s": median(listed),
                "p90_s": p90(listed),
                "finished_s": median([s.finished for s in res.samples[side]]),
                "ratio": value,
                "target": target,
                "verdict": None if target is None else verdict(value, target),
            }
        )
    return rows


LABELS = {
    "plain": "a) docker build + docker push",
    "daemon": "b) daemon (imaged watch, defaults)",
    "build": "c) imaged build (fresh process)",
}
FINISHED = {
    "plain": "docker push returned",
    "daemon": "'pushed' event ts",
    "build": "process exited",
}


def print_size(res: SizeResult) -> None:
    n = len(res.samples["plain"])
    print(f"\n{res.files} files ({res.total_bytes / 1e6:.1f} MB), {n} one-file edits")
    print(f"   {'write -> tag listed':37} {'median':>8} {'p90':>8}  {'x (a)':>6}  target")
    for row in side_rows(res):
        target = f"<= {row['target']:.2f}x {row['verdict']}" if row["target"] else ""
        x = "" if row["side"] == "plain" else fmt(row["ratio"], "x")
        print(
            f"   {LABELS[row['side']]:37} {fmt(row['median_s']):>8} {fmt(row['p90_s']):>8}"
            f"  {x:>6}  {target}"
        )
    finished = ", ".join(
        f"{FINISHED[side]} {fmt(median([s.finished for s in res.samples[side]]))}" for side in SIDES
    )
    print(f"   (write -> {finished})")
    daemon = [s.record for s in res.samples["daemon"]]
    build = [s.record for s in res.samples["build"]]
    print(f"   path taken: daemon {paths_summary(daemon)}; build {paths_summary(build)}")
    print_bytes(res, daemon, build)
    print_where(res, daemon, build)
    if res.streams:
        print(
            f"   f) the folder's tar ({res.compressed['tar_bytes'] / 1e6:.1f} MB) as one gzip stream:"
        )
        for row in res.streams:
            text = row.get("error") or f"{row['mb_s']:7.1f} MB/s, ratio {row['ratio']:.3f}"
            print(f"      {row['row']:26} {text}")


def print_bytes(res: SizeResult, daemon: list[dict[str, Any]], build: list[dict[str, Any]]) -> None:
    c = res.compressed
    up_daemon = median(field_values(daemon, "uploaded_bytes"))
    up_build = median(field_values(build, "uploaded_bytes"))
    gz = c["gzip6_bytes"]
    share = ratio(up_daemon if up_daemon is not None else up_build, gz)
    print(
        f"   d) uploaded per edit (median uploaded_bytes): daemon {fmt(up_daemon, 'bytes')}, "
        f"build {fmt(up_build, 'bytes')}"
        + (f" = {share:.1%} of the folder's gzip -6" if share is not None else "")
    )
    print(
        f"      the folder: tar {fmt(c['tar_bytes'], 'bytes')}, gzip -6 {fmt(gz, 'bytes')}; "
        f"the pushed image's folder layers: {c['pushed']['layers']}, "
        f"{fmt(c['pushed']['bytes'], 'bytes')}"
    )


def print_where(res: SizeResult, daemon: list[dict[str, Any]], build: list[dict[str, Any]]) -> None:
    keys = list(BUILD_TIMINGS) + [
        k for k in FULL_PATH_TIMINGS if any(k in r.get("timings", {}) for r in build)
    ]
    timings = ", ".join(f"{k} {fmt(median(timing_values(build, k)))}" for k in keys)
    total = median(timing_values(build, "total"))
    wall = [s.finished for s in res.samples["build"]]
    overhead = [
        None if t is None else w - t
        for w, t in zip(wall, timing_values(build, "total"), strict=True)
    ]
    print(f"   e) imaged build timings (median): {timings}; total {fmt(total)}")
    print(f"      process start, imports and exit (wall - total): {fmt(median(overhead))}")
    phases = [s.phases for s in res.samples["daemon"]]
    kinds = [k for k in DAEMON_EVENTS if any(k in p for p in phases)]
    times = ", ".join(f"{k} {fmt(median([p.get(k) for p in phases]))}" for k in kinds)
    print(f"      daemon events after the write (median): {times}")
    print(f"      daemon's own 'seconds' in pushed: {fmt(median(field_values(daemon, 'seconds')))}")
    print_counts(res.samples["daemon"])
    print_floor(res.floor)


def print_counts(samples: list[Sample]) -> None:
    totals: dict[str, int] = {}
    for s in samples:
        for kind, count in s.counts.items():
            totals[kind] = totals.get(kind, 0) + count
    print(
        f"      daemon events over the edits: {', '.join(f'{k} {v}' for k, v in sorted(totals.items()))}"
    )
    extra = [i for i, s in enumerate(samples) if s.counts.get("building", 0) > 1]
    if extra:
        print(f"      WARNING: edits {extra} caused more than one build")


def print_floor(f: dict[str, Any]) -> None:
    for what, raw, gz, note in (
        ("file", f["file_bytes"], f["file_gz_bytes"], "the changed file"),
        (
            "layer",
            f["layer_tar_bytes"],
            f["layer_gz_bytes"],
            f"the layer holding it (1 of {f['layers']}"
            + (", the whole folder)" if f["layers"] == 1 else ")"),
        ),
    ):
        parts = [f[f"{what}_{k}"] for k in ("hash_compress", "upload", "manifest")]
        print(
            f"      floor, {note}: {fmt(raw, 'bytes')} -> {fmt(gz, 'bytes')}: sha256+compress "
            f"{fmt(parts[0])}, upload {fmt(parts[1])}, manifest PUT {fmt(parts[2])} "
            f"= {fmt(sum(parts))}"
        )


def print_targets(results: list[SizeResult]) -> None:
    print("\ntargets (issue 9), medians of write -> tag listed against (a):")
    for res in results:
        for row in side_rows(res):
            if row["target"]:
                print(
                    f"   {row['side']:6} {res.files:5} files: {fmt(row['ratio'], 'x'):>6} "
                    f"<= {row['target']:.2f}x  {row['verdict']}"
                )


def settings_note() -> str:
    own = sorted(k for k in os.environ if k.startswith("IMAGED_") and k != "IMAGED_TEST_INFRA")
    return ", ".join(f"{k}={os.environ[k]}" for k in own) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 edits per side (a smoke run)")
    parser.add_argument("--edits", type=int, help="edits per side and size (default 9)")
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args()
    edits = args.edits or (3 if args.quick else 9)
    state = load_state()
    callers = settings_note()
    env = {**infra_env(state), "IMAGED_STATUS_ADDRESS": "127.0.0.1:0"}
    os.environ.update(infra_env(state))  # this process hashes the same definitions
    os.environ.pop("IMAGED_REGISTRY", None)
    print(
        f"IMAGED_* set by the caller: {callers}; the rest default but the infrastructure's "
        "base, CLI and CA and the daemon's status port; tags/list polled every 10 ms; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    b = Bench(state, Registry(state["registry"]), env)
    results = [bench_size(b, files, total, edits) for files, total in SIZES]
    for res in results:
        print_size(res)
    print_targets(results)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        print(json.dumps([as_json(res) for res in results], indent=2))


def as_json(res: SizeResult) -> dict[str, Any]:
    data = asdict(res)
    data["sides"] = side_rows(res)
    return data


if __name__ == "__main__":
    main()
