"""Helpers for the daemon end-to-end tests: a daemon subprocess, its events, a notify socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parent.parent
# `python -m imaged.cli.main` has no __main__ guard: call the console entry point directly.
CLI = [sys.executable, "-c", "import sys; from imaged.cli.main import main; sys.exit(main())"]

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


def wait_for(predicate: Callable[[], bool], timeout: float, *, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def is_event(name: str, image: str | None = None, **fields: Any) -> Predicate:
    """A predicate matching one event name (and image, and exact field values)."""

    def match(event: Event) -> bool:
        if event.get("event") != name or (image is not None and event.get("image") != image):
            return False
        return all(event.get(k) == v for k, v in fields.items())

    return match


def daemon_env(infra: Any, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a test daemon runs in: local base, CA bundle, CLI, no stat sweep;
    the default timing settings (settle_ms, debounce_ms, watch_step_ms)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("IMAGED_", "NOTIFY_", "WATCHDOG_"))
    }
    env.update(
        IMAGED_DEBIAN_BASE=infra.debian_base_template,
        IMAGED_DOCKER_CLI=infra.docker_cli,
        IMAGED_STATE_DIR=str(state_dir),
        IMAGED_RECONCILE_SECONDS="0",
        IMAGED_STATUS_ADDRESS="127.0.0.1:0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if infra.ca_bundle:
        env["IMAGED_BUILD_CA_BUNDLE"] = infra.ca_bundle
    if infra.docker_host:
        env["DOCKER_HOST"] = infra.docker_host
    env.update(extra)
    return env


@dataclass
class DaemonProcess:
    """A running ``imaged watch --json`` or ``imaged daemon``; its JSON lines as events.

    Events are read from stdout (``watch --json``) or stderr (``daemon``'s structlog JSON);
    each gets a ``_seen`` monotonic time. Lines that are not JSON objects go to ``noise``.
    """

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    events_on: str = "stdout"
    events: list[Event] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> DaemonProcess:
        self.process = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("stdout", "stderr"):
            stream = getattr(self.process, name)
            thread = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _read(self, stream: IO[str], name: str) -> None:
        for line in stream:
            parsed = _parse(line) if name == self.events_on else None
            with self._lock:
                if parsed is None:
                    self.noise.append(f"{name}: {line.rstrip()}")
                else:
                    parsed["_seen"] = time.monotonic()
                    self.events.append(parsed)

    # -- reading events

    def mark(self) -> int:
        """The index of the next event: pass it as ``since`` to look only at later ones."""
        with self._lock:
            return len(self.events)

    def since(self, index: int = 0) -> list[Event]:
        with self._lock:
            return list(self.events[index:])

    def matching(self, predicate: Predicate, since: int = 0) -> list[Event]:
        return [e for e in self.since(since) if predicate(e)]

    def count(self, name: str, image: str | None = None, since: int = 0) -> int:
        return len(self.matching(is_event(name, image), since))

    def wait_event(self, predicate: Predicate, timeout: float, *, since: int = 0) -> Event:
        """The first event from ``since`` on that matches; fail with the log on timeout."""
        if not wait_for(lambda: bool(self.matching(predicate, since)) or not self.alive(), timeout):
            raise AssertionError(f"no matching event within {timeout} s\n{self.transcript()}")
        found = self.matching(predicate, since)
        if not found:
            raise AssertionError(f"the daemon exited ({self.returncode()})\n{self.transcript()}")
        return found[0]

    def wait_all(self, predicates: Iterable[Predicate], timeout: float, *, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        for predicate in predicates:
            self.wait_event(predicate, max(0.1, deadline - time.monotonic()), since=since)

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Wait until no event arrived for ``quiet`` seconds."""

        def calm() -> bool:
            last = self.since(max(0, self.mark() - 1))
            return not last or time.monotonic() - float(last[-1]["_seen"]) >= quiet

        assert wait_for(calm, timeout), f"never quiet for {quiet} s\n{self.transcript()}"

    def transcript(self, last: int = 60) -> str:
        lines = [json.dumps({k: v for k, v in e.items() if k != "_seen"}) for e in self.since()]
        with self._lock:
            noise = self.noise[-20:]
        return "\n".join(["events:", *lines[-last:], "other output:", *noise])

    # -- process control

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self._close()
        return code

    def _close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)
        assert self.process is not None
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait for the exit code."""
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the daemon if it still runs (the fixture finalizer)."""
        if self.process is None:
            return
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=10)
        self._close()

    def status_address(self, timeout: float = 30) -> str:
        return str(self.wait_event(is_event("status_listening"), timeout)["address"])

    def healthz(self) -> int:
        address = self.status_address()
        return httpx.get(f"http://{address}/healthz", timeout=5, trust_env=False).status_code


def _parse(line: str) -> Event | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "event" in value else None


# -- processes ----------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, by pid, with its command line."""
    parents = {int(p.name): _ppid(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found: dict[int, str] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found.update({pid: cmdline(pid) for pid in frontier})
    return found


def still_running(processes: Mapping[int, str]) -> dict[int, str]:
    """Those of ``processes`` that still run the same command line."""
    return {pid: cmd for pid, cmd in processes.items() if cmd and cmdline(pid) == cmd}


# -- systemd notify ------------------------------------------------------------------------


@dataclass
class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    path: Path
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> NotifySocket:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def _loop(self) -> None:
        while (sock := self._sock) is not None:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def received(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def kinds(self) -> list[str]:
        """Each message as its first key=value (READY=1, STATUS=..., WATCHDOG=1, ...)."""
        return [_kind(fields) for _, fields in self.received()]


def _kind(fields: Mapping[str, str]) -> str:
    for key in ("READY", "RELOADING", "STOPPING", "WATCHDOG"):
        if key in fields:
            return f"{key}={fields[key]}"
    return "STATUS" if "STATUS" in fields else ",".join(fields)
