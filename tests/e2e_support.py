"""Helpers for the end-to-end tests: docker CLI calls, image probes, argv watching."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imaged.builders.base import BuildOutcome, BuildRequest
from imaged.events import EventSink

DATA = Path(__file__).resolve().parent / "data"

# Runs inside the image: prints one JSON object describing what the spec asks about.
_PROBE = r"""
import importlib.metadata as md, importlib.util as iu, json, os, subprocess, sys
spec = json.loads(sys.argv[1])
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
def mode(path):
    return oct(os.lstat(path).st_mode & 0o7777) if os.path.lexists(path) else None
def text(path):
    return open(path).read() if os.path.isfile(path) else None
def run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
print(json.dumps({
    "versions": {d: version(d) for d in spec["dists"]},
    "importable": {m: iu.find_spec(m) is not None for m in spec["modules"]},
    "modes": {p: mode(p) for p in spec["paths"]},
    "texts": {p: text(p) for p in spec["texts"]},
    "outputs": [run(a) for a in spec["commands"]],
    "env": dict(os.environ),
    "cwd": os.getcwd(),
}))
"""


def set_build_env(mp: pytest.MonkeyPatch, infra: Any) -> None:
    """The settings every real build needs: the loopback base, the host CA bundle, the docker
    CLI and engine of the test infra, and no registry override."""
    mp.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    if infra.ca_bundle:
        mp.setenv("IMAGED_BUILD_CA_BUNDLE", infra.ca_bundle)
    mp.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    mp.delenv("IMAGED_REGISTRY", raising=False)
    if infra.docker_host:
        mp.setenv("DOCKER_HOST", infra.docker_host)
    else:
        mp.delenv("DOCKER_HOST", raising=False)


def run_id() -> str:
    """A short suffix that makes image names unique per test run."""
    return uuid.uuid4().hex[:8]


def docker(
    cli: str, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; raise with its stderr when ``check`` and it fails."""
    proc = subprocess.run(
        [cli, *args], capture_output=True, text=True, env=dict(env or os.environ), timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def pull_fresh(cli: str, uri: str, *, env: Mapping[str, str] | None = None) -> None:
    """Drop the local tag, then pull ``uri`` back from its registry."""
    docker(cli, "rmi", "-f", uri, check=False, env=env)
    docker(cli, "pull", "-q", uri, env=env)


@dataclass(frozen=True)
class ProbeSpec:
    """What to ask a running image about."""

    dists: Sequence[str] = ()
    modules: Sequence[str] = ()
    paths: Sequence[str] = ()
    texts: Sequence[str] = ()
    commands: Sequence[Sequence[str]] = ()


def probe_image(cli: str, uri: str, spec: ProbeSpec) -> dict[str, Any]:
    """Run ``python3`` in the image and return the facts the probe script collected."""
    payload = json.dumps(
        {
            "dists": list(spec.dists),
            "modules": list(spec.modules),
            "paths": list(spec.paths),
            "texts": list(spec.texts),
            "commands": [list(c) for c in spec.commands],
        }
    )
    out = docker(cli, "run", "--rm", uri, "python3", "-c", _PROBE, payload).stdout
    facts: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return facts


def image_config(cli: str, uri: str) -> dict[str, Any]:
    """``docker image inspect``'s Config of a local image."""
    data = json.loads(docker(cli, "image", "inspect", uri).stdout)
    config: dict[str, Any] = data[0]["Config"]
    return config


def saved_blobs(cli: str, uri: str, dest: Path) -> dict[str, bytes]:
    """``docker save`` the image; every member of the archive (layers, config) by name."""
    archive = dest / "image.tar"
    docker(cli, "save", "-o", str(archive), uri)
    blobs: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            handle = outer.extractfile(member) if member.isfile() else None
            if handle is not None:
                blobs[member.name] = handle.read()
    return blobs


def layer_tars(blobs: Mapping[str, bytes]) -> dict[str, bytes]:
    """The layer tarballs of a ``docker save`` archive, with every file inside each."""
    return {name: data for name, data in blobs.items() if name.endswith("layer.tar")}


def skopeo_inspect(uri: str, *, creds: str | None = None) -> subprocess.CompletedProcess[str]:
    """``skopeo inspect`` a registry image over plain HTTP."""
    argv = ["skopeo", "inspect", "--tls-verify=false"]
    if creds:
        argv += ["--creds", creds]
    return subprocess.run(
        [*argv, f"docker://{uri}"], capture_output=True, text=True, timeout=60, check=False
    )


def write_tree(root: Path, files: Mapping[str, tuple[str, int]]) -> Path:
    """Create ``relpath -> (content, mode)`` files under ``root``."""
    for relpath, (content, mode) in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    return root


@dataclass
class ArgvWatcher:
    """Polls every process's command line in a thread; records those containing ``needle``."""

    needle: bytes
    hits: list[str] = field(default_factory=list)
    scans: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ArgvWatcher:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.01)

    def scan(self) -> None:
        self.scans += 1
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            hit = cmdline.replace(b"\0", b" ").decode(errors="replace")
            if self.needle in cmdline and hit not in self.hits:
                self.hits.append(hit)


@dataclass
class RefusingBuilder:
    """A builder that must not be called: counts calls and fails the build."""

    name: str = "refusing"
    calls: int = 0

    async def check(self) -> dict[str, str]:
        return {"engine": "none"}

    async def build(
        self, request: BuildRequest, *, on_event: EventSink | None = None
    ) -> BuildOutcome:
        self.calls += 1
        raise AssertionError(f"the engine was called for {request.tags}")

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ("refusing", *request.tags)
