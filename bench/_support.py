"""Helpers shared by the bench scripts that drive the real engine, registry and daemon.

The infrastructure's state file, generated source trees, the ``imaged watch --json``
subprocess with its events, one-file edits, plain ``docker build`` + ``docker push``, and
the small statistics the tables print. Not part of the ``imaged`` package.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent

Event = dict[str, Any]
FAILURES = {"failed", "hash_error", "definition_error", "config_error", "status_error"}


# -- setup --------------------------------------------------------------------------------


def load_state(*, two_engines: str | None = None) -> dict[str, Any]:
    """The infrastructure's state file; ``two_engines`` (who needs them) also requires its
    second ("remote") engine."""
    path = Path(os.environ.get("IMAGED_TEST_INFRA", REPO / ".imaged-test-infra.json"))
    if not path.is_file():
        sys.exit(f"error: {path} not found; start the infrastructure: bash scripts/test-infra.sh")
    state: dict[str, Any] = json.loads(path.read_text())
    if two_engines and not state.get("remote_docker_host"):
        sys.exit(f"{path} names no remote engine: {two_engines} needs two engines")
    return state


def infra_env(state: dict[str, Any]) -> dict[str, str]:
    """The IMAGED_* settings that point imaged at the infrastructure (base, CLI, CA)."""
    env = {
        "IMAGED_DEBIAN_BASE": state["debian_base_template"],
        "IMAGED_DOCKER_CLI": state["docker_cli"],
    }
    if state.get("ca_bundle"):
        env["IMAGED_BUILD_CA_BUNDLE"] = state["ca_bundle"]
    return env


def make_tree(
    root: Path, files: int, total_bytes: int, *, salt: str = "", source_like: bool = False
) -> list[Path]:
    """``files`` files in folders of 100, ``total_bytes`` in all, mtimes 10 s in the past.

    Each file repeats one line (gzip makes ~1% of it), or with ``source_like`` holds
    seeded code-like text that compresses about as source code does (a gzip ratio of
    ~0.3). The old mtimes keep the digest caches from re-reading every file (the racy-git
    rule distrusts entries recorded within 2 s of a file's mtime).
    """
    size = max(total_bytes // files, 16)
    past = time.time() - 10
    paths = []
    for i in range(files):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if source_like:
            path.write_bytes(source_text(random.Random(f"{salt}{i}"), size))
        else:
            line = f"file {salt}{i} ".encode()
            path.write_bytes((line * (size // len(line) + 1))[:size])
        os.utime(path, (past, past))
        paths.append(path)
    return paths


_TOKENS = [
    "def",
    "return",
    "self",
    "import",
    "from",
    "class",
    "for",
    "in",
    "if",
    "else",
    "elif",
    "None",
    "True",
    "False",
    "=",
    "==",
    "(",
    ")",
    ":",
    ",",
    "[",
    "]",
    "+",
    "-",
    "*",
    ".",
    "await",
    "async",
    "with",
    "as",
    "try",
    "except",
    "raise",
    "yield",
    "lambda",
    "not",
    "and",
    "or",
]
_NAMES = [
    "value",
    "path",
    "data",
    "result",
    "name",
    "items",
    "config",
    "index",
    "count",
    "key",
    "node",
    "event",
    "image",
]


def source_text(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of code-like lines: indentation, keywords and numbered names."""
    lines, held = [], 0
    while held < size:
        words = [
            rng.choice(_TOKENS)
            if rng.random() < 0.6
            else f"{rng.choice(_NAMES)}_{rng.randrange(400)}"
            for _ in range(rng.randrange(2, 10))
        ]
        line = "    " * rng.randrange(4) + " ".join(words) + "\n"
        lines.append(line)
        held += len(line)
    return "".join(lines).encode()[:size]


def edit(path: Path, label: str) -> float:
    """Give ``path`` new content; the wall time right before the write."""
    content = path.read_bytes()
    started = time.time()
    path.write_bytes(content + f"edit {label}\n".encode())
    return started


def imaged_argv(*args: str) -> list[str]:
    """The ``imaged`` CLI of this checkout, as a fresh Python process."""
    return [sys.executable, "-c", "from imaged.cli.main import main; main()", *args]


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


# -- the daemon subprocess ----------------------------------------------------------------


class DaemonRun:
    """``imaged watch --json`` as a subprocess; its events, each with its arrival time."""

    def __init__(self, defs: Path, *, registry: str, env: dict[str, str], log: Path) -> None:
        argv = imaged_argv("watch", str(defs), "--json", "--registry", registry)
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(
            argv,
            cwd=defs.parent,
            env=subprocess_env(env),
            stdout=subprocess.PIPE,
            stderr=self._log_handle,
        )
        self.events: list[tuple[float, Event]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            try:
                event: Event = json.loads(raw)
            except ValueError:
                event = {"event": "non_json", "line": raw.decode(errors="replace")}
            with self._cond:
                self.events.append((time.time(), event))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def since(self, start: int) -> list[tuple[float, Event]]:
        with self._cond:
            return list(self.events[start:])

    def wait_for(
        self, match: Callable[[Event], bool], *, start: int, timeout: float
    ) -> tuple[float, Event] | None:
        """The first event from index ``start`` on that matches; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                for arrived, event in self.events[index:]:
                    self._check(event)
                    if match(event):
                        return arrived, event
                index = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.tail()}")
                self._cond.wait(min(left, 0.5))

    def _check(self, event: Event) -> None:
        if event.get("event") in FAILURES:
            raise RuntimeError(f"daemon reported {event}; log tail: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._log_handle.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def status_address(self) -> str:
        found = self.wait_for(lambda e: e.get("event") == "status_listening", start=0, timeout=60)
        if found is None:
            raise RuntimeError("the daemon never reported its status address")
        return str(found[1]["address"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log_handle.close()


def is_push_of(name: str, tag: str | None = None) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        if event.get("event") not in ("pushed", "skipped") or event.get("image") != name:
            return False
        return tag is None or str(event.get("uri", "")).endswith(f":{tag}")

    return match


def wait_initial_pushes(daemon: DaemonRun, names: list[str], *, timeout: float) -> float:
    """Wait for ``ready`` and a push of every image; the seconds it took from start."""
    started = time.monotonic()
    if daemon.wait_for(lambda e: e.get("event") == "ready", start=0, timeout=timeout) is None:
        raise RuntimeError(f"no ready event within {timeout:g} s: {daemon.tail()}")
    for name in names:
        left = timeout - (time.monotonic() - started)
        if daemon.wait_for(is_push_of(name), start=0, timeout=max(left, 0.1)) is None:
            raise RuntimeError(f"no initial push of {name} within {timeout:g} s: {daemon.tail()}")
    return time.monotonic() - started


def count_events(events: list[tuple[float, Event]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, event in events:
        kind = str(event.get("event"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def first_times(events: list[tuple[float, Event]], t0: float) -> dict[str, float]:
    """Seconds from the write to the first event of each kind (by the event's own ts)."""
    firsts: dict[str, float] = {}
    for _, event in events:
        firsts.setdefault(str(event.get("event")), float(event["ts"]) - t0)
    return firsts


# -- plain docker build + push ------------------------------------------------------------


def docker(state: dict[str, Any], *args: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    subprocess.run(
        [state["docker_cli"], *args], check=True, env=env, capture_output=True, timeout=600
    )


def plain_build_push(state: dict[str, Any], context: Path, ref: str) -> None:
    docker(state, "build", "-q", "-t", ref, str(context))
    docker(state, "push", "-q", ref)


# -- statistics ---------------------------------------------------------------------------


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]
