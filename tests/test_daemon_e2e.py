"""End to end: the daemon as a real process on real files, inotify, engine, registry, signals."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bad_inputs import FIFO_REASON, fifo_ignore_file
from daemon_support import (
    CLI,
    DaemonProcess,
    Event,
    NotifySocket,
    daemon_env,
    descendants,
    is_event,
    still_running,
    wait_for,
)
from e2e_support import DATA, docker, pull_fresh, run_id, skopeo_inspect
from test_events import assert_declared

from imaged.definitions.loader import load_definitions
from imaged.digest.image_digest import hash_image
from imaged.events import DAEMON_EVENTS

pytestmark = [pytest.mark.docker, pytest.mark.timeout(150)]

SETTLE = 2.0  # seconds without new builds after which a count is final
BUILD_TIMEOUT = 90.0
Launch = Callable[..., DaemonProcess]

DEFS = """\
from imaged import Image
{imports}
_base = Image.from_debian_base(python_version=(3, 11))
alpha = _base.clone(name="{alpha}").with_env_vars({{"ROLE": {role}}}).with_source_folder("shared", "/app")
beta = _base.clone(name="{beta}").with_env_vars({{"ROLE": "beta"}}).with_source_folder("shared", "/app")
gamma = _base.clone(name="{gamma}").with_source_folder("other", "/app")
{extra}
"""


@dataclass(frozen=True)
class Project:
    """A definitions module with three images; alpha and beta share the folder ``shared``."""

    root: Path
    run: str

    @property
    def defs(self) -> Path:
        return self.root / "images.py"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def other(self) -> Path:
        return self.root / "other"

    def name(self, short: str) -> str:
        return f"dte-{self.run}-{short}"

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.name("alpha"), self.name("beta"), self.name("gamma"))

    def write_defs(self, *, imports: str = "", role: str = '"alpha"', extra: str = "") -> None:
        alpha, beta, gamma = self.names
        text = DEFS.format(
            imports=imports, alpha=alpha, beta=beta, gamma=gamma, role=role, extra=extra
        )
        self.defs.write_text(text)


def fresh() -> str:
    """Content no earlier run has pushed."""
    return uuid.uuid4().hex + "\n"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(root=tmp_path / "proj", run=run_id())
    proj.shared.mkdir(parents=True)
    proj.other.mkdir()
    (proj.shared / "a.txt").write_text(fresh())
    (proj.shared / "scratch.log").write_text("ignored\n")
    (proj.shared / ".dockerignore").write_text("scratch.log\n")
    (proj.other / "b.txt").write_text(fresh())
    proj.write_defs()
    return proj


@pytest.fixture
def launch(infra: Any, tmp_path: Path) -> Iterator[Launch]:
    """Start ``imaged ARGS...``; every process started is SIGKILLed at teardown if alive."""
    started: list[DaemonProcess] = []

    def start(*args: str, events_on: str = "stdout", **env: str) -> DaemonProcess:
        environ = daemon_env(infra, tmp_path / "state", **env)
        daemon = DaemonProcess([*CLI, *args], environ, tmp_path, events_on=events_on)
        started.append(daemon.start())
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
    for daemon in started:
        if daemon.events_on == "stdout":  # NDJSON: each line a documented kind
            lines = [{k: v for k, v in e.items() if k != "_seen"} for e in daemon.since()]
            assert_declared(lines, DAEMON_EVENTS)


@pytest.fixture
def watch(launch: Launch, infra: Any) -> Callable[..., DaemonProcess]:
    """``imaged watch PATH... --json --registry <test registry>``."""

    def start(*paths: Path, **env: str) -> DaemonProcess:
        return launch("watch", *map(str, paths), "--json", "--registry", infra.registry, **env)

    return start


def done(name: str) -> Callable[[Event], bool]:
    return lambda e: e.get("image") == name and e.get("event") in ("pushed", "skipped")


def settle_initial(daemon: DaemonProcess, names: tuple[str, ...]) -> None:
    """Wait for ready, every image's first push, then a quiet spell."""
    daemon.wait_event(is_event("ready"), 60)
    daemon.wait_all([done(n) for n in names], BUILD_TIMEOUT)
    daemon.wait_quiet(0.5, 30)


def builds_after(daemon: DaemonProcess, mark: int, names: tuple[str, ...]) -> dict[str, int]:
    """How many builds started per image since ``mark``."""
    return {n: daemon.count("building", n, mark) for n in names}


def pushes_after(daemon: DaemonProcess, mark: int, names: tuple[str, ...]) -> dict[str, int]:
    return {n: daemon.count("pushed", n, mark) for n in names}


# -- 1-3: what an edit rebuilds -------------------------------------------------------------


def test_shared_folder_edit_pushes_exactly_the_images_using_it(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    alpha, beta, gamma = project.names
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    mark = daemon.mark()
    (project.shared / "a.txt").write_text(fresh())
    daemon.wait_all(
        [is_event("pushed", alpha), is_event("pushed", beta)], BUILD_TIMEOUT, since=mark
    )
    time.sleep(SETTLE)
    assert pushes_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}
    assert builds_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}
    whys = {e["image"]: e["why"] for e in daemon.matching(is_event("changed"), mark)}
    assert set(whys) == {alpha, beta}
    for why in whys.values():
        assert "source_folder shared/" in why
        assert "shared/a.txt" in why


def test_ignored_or_unrelated_edit_builds_nothing(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    alpha, beta, gamma = project.names
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    mark = daemon.mark()
    (project.shared / "scratch.log").write_text(fresh())
    (project.root / "notes.txt").write_text(fresh())
    time.sleep(SETTLE)
    assert daemon.matching(lambda e: e["event"] in ("changed", "queued", "building"), mark) == []
    # The daemon did see the edits and decided they touch no image.
    ignored = daemon.matching(lambda e: e["event"] == "ignored", mark)
    assert ignored, "no 'ignored' event for the ignored/unrelated edits"
    assert any(p.endswith(("scratch.log", "notes.txt")) for e in ignored for p in e["paths"])
    # The watcher is alive: a tracked edit right after does build.
    (project.other / "b.txt").write_text(fresh())
    daemon.wait_event(is_event("pushed", gamma), BUILD_TIMEOUT, since=mark)
    assert builds_after(daemon, mark, project.names) == {alpha: 0, beta: 0, gamma: 1}


def test_uv_lock_edit_rebuilds_the_uv_project_image(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    shutil.copytree(DATA / "uvproj", project.root / "uvproj")
    uv = project.name("uv")
    extra = (
        f'uvimg = _base.clone(name="{uv}").with_uv_project('
        '"uvproj/pyproject.toml", project_install_mode="dependencies_only")'
    )
    project.write_defs(extra=extra)
    names = (*project.names, uv)
    daemon = watch(project.defs)
    settle_initial(daemon, names)
    mark = daemon.mark()
    with (project.root / "uvproj" / "uv.lock").open("a") as lock:
        lock.write(f"# edited {fresh()}")
    changed = daemon.wait_event(is_event("changed", uv), 30, since=mark)
    assert "uv.lock" in changed["why"]
    daemon.wait_event(is_event("pushed", uv), BUILD_TIMEOUT, since=mark)
    time.sleep(SETTLE)
    assert builds_after(daemon, mark, names) == dict.fromkeys(project.names, 0) | {uv: 1}


# -- 4: definitions -------------------------------------------------------------------------


def status_json(daemon: DaemonProcess) -> dict[str, Any]:
    response = httpx.get(f"http://{daemon.status_address()}/status", timeout=5, trust_env=False)
    data: dict[str, Any] = response.json()
    return data


def test_broken_definition_keeps_last_good_images_and_recovers(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    alpha, beta, gamma = project.names
    (project.root / "helper.py").write_text('ROLE = "one"\n')
    project.write_defs(imports="from helper import ROLE", role="ROLE")
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    good = project.defs.read_text()

    mark = daemon.mark()
    lines = good.splitlines()
    project.defs.write_text("\n".join([*lines[:3], "def broken(:", *lines[3:]]) + "\n")
    error = daemon.wait_event(is_event("definition_error"), 30, since=mark)
    assert Path(error["file"]).resolve() == project.defs.resolve()
    assert error["line"] == 4
    assert daemon.healthz() == 200
    status = status_json(daemon)
    assert sorted(v["name"] for v in status["images"]) == sorted(project.names)
    assert status["modules"][str(project.defs.resolve())]

    mark = daemon.mark()
    project.write_defs(imports="from helper import ROLE", role='ROLE + "-fixed"')
    daemon.wait_event(is_event("definitions_loaded"), 30, since=mark)
    daemon.wait_event(is_event("pushed", alpha), BUILD_TIMEOUT, since=mark)

    mark = daemon.mark()
    (project.root / "helper.py").write_text('ROLE = "two"\n')
    loaded = daemon.wait_event(is_event("definitions_loaded"), 30, since=mark)
    assert sorted(loaded["images"]) == sorted(project.names)
    daemon.wait_event(is_event("pushed", alpha), BUILD_TIMEOUT, since=mark)
    time.sleep(SETTLE)
    assert builds_after(daemon, mark, project.names) == {alpha: 1, beta: 0, gamma: 0}
    assert status_json(daemon)["modules"][str(project.defs.resolve())] is None


def test_a_fifo_ignore_file_fails_its_images_and_the_others_build(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    """Issue 11: a FIFO read as ``.dockerignore`` used to hang the first hash: no ``ready``,
    no /status, nothing built, unrelated images included."""
    alpha, beta, gamma = project.names
    fifo = project.shared / ".dockerignore"
    fifo.unlink()
    fifo_ignore_file(project.shared)
    daemon = watch(project.defs)
    daemon.wait_event(is_event("ready"), 30)
    daemon.wait_event(is_event("pushed", gamma), BUILD_TIMEOUT)
    errors = {e["image"]: e["error"] for e in daemon.matching(is_event("hash_error"))}
    assert set(errors) == {alpha, beta}
    assert (
        errors[alpha] == f"image {alpha!r}, layer #2 source_folder shared/: {fifo}: {FIFO_REASON}"
    )
    status = status_json(daemon)
    views = {v["name"]: v for v in status["images"]}
    assert status["ready"] is True
    assert (views[alpha]["state"], views[alpha]["error"]) == ("failed", errors[alpha])
    assert views[gamma]["state"] == "up to date"

    mark = daemon.mark()
    fifo.unlink()
    fifo.write_text("scratch.log\n")
    daemon.wait_all([done(alpha), done(beta)], BUILD_TIMEOUT, since=mark)
    views = {v["name"]: v for v in status_json(daemon)["images"]}
    assert {views[n]["state"] for n in project.names} == {"up to date"}


# -- 5-6: bursts and supersede --------------------------------------------------------------


def test_burst_of_2000_files_builds_each_affected_image_once(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    alpha, beta, gamma = project.names
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    mark = daemon.mark()
    # Paced over 0.25 s, as in issue 11 item 7: the burst spans several watcher batches
    # (an unpaced loop fits in one), and a batch of it used to be filtered for longer than
    # the quiet period, so the first batch's build started and the next superseded it.
    took = write_burst(project.shared, 2000, spread=0.25)
    daemon.wait_all(
        [is_event("pushed", alpha), is_event("pushed", beta)], BUILD_TIMEOUT, since=mark
    )
    daemon.wait_quiet(SETTLE, 60)
    said = f"2,000 writes in {took:.2f} s\n{daemon.transcript()}"
    assert builds_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}, said
    assert daemon.count("superseded", since=mark) == 0, said
    assert pushes_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}


def save_atomically(target: Path, text: str) -> None:
    """As VS Code, JetBrains and most libraries save: a temp file beside it, renamed over."""
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:6]}")
    with temp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temp, target)


def save_as_vim(target: Path, text: str) -> None:
    """As vim saves with ``backupcopy=no``: the original renamed to a backup, the new file
    written, the backup deleted."""
    backup = target.with_name(target.name + "~")
    os.rename(target, backup)
    target.write_text(text)
    backup.unlink()


def save_slowly(target: Path, text: str) -> None:
    """An atomic save whose rename comes 0.1 s after the temp file (a slow fsync): longer
    than settle_ms, shorter than debounce_ms."""
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:6]}")
    temp.write_text(text)
    time.sleep(0.1)
    os.rename(temp, target)


@pytest.mark.parametrize(
    "save",
    [
        pytest.param(save_atomically, id="temp-file-and-rename"),
        pytest.param(save_as_vim, id="vim"),
        pytest.param(save_slowly, id="slow-rename"),
    ],
)
def test_an_editors_save_pushes_exactly_one_tag_of_the_final_content(
    project: Project,
    watch: Callable[..., DaemonProcess],
    infra: Any,
    monkeypatch: pytest.MonkeyPatch,
    save: Callable[[Path, str], None],
) -> None:
    # The default timing settings (issue 9 item 7: a save builds within settle_ms): a temp
    # state (a temp file, or a backup without the target) must never be built or pushed.
    alpha, beta, gamma = project.names
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    mark = daemon.mark()
    save(project.shared / "a.txt", fresh())
    daemon.wait_all(
        [is_event("pushed", alpha), is_event("pushed", beta)], BUILD_TIMEOUT, since=mark
    )
    daemon.wait_quiet(SETTLE, 60)
    said = daemon.transcript()
    assert builds_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}, said
    assert pushes_after(daemon, mark, project.names) == {alpha: 1, beta: 1, gamma: 0}, said
    assert daemon.count("superseded", since=mark) == 0, said

    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    images = load_definitions(str(project.defs))
    for name in (alpha, beta):
        image = images[name].clone(registry=infra.registry)
        pushed = daemon.matching(is_event("pushed", name), mark)
        assert [e["uri"] for e in pushed] == [image.uri_for(hash_image(image).tag)]
    assert sorted(p.name for p in project.shared.iterdir()) == [
        ".dockerignore",
        "a.txt",
        "scratch.log",
    ]


def write_burst(folder: Path, count: int, *, spread: float) -> float:
    """``count`` new files in ``folder``, paced evenly over ``spread`` s; the seconds taken."""
    started = time.monotonic()
    for i in range(count):
        (folder / f"burst-{i:04d}.txt").write_text(f"{i}\n")
        ahead = started + spread * (i + 1) / count - time.monotonic()
        if ahead > 0.002:
            time.sleep(ahead)
    return time.monotonic() - started


SLOW = """\
from imaged import Image
slow = (
    Image.from_debian_base(python_version=(3, 11))
    .clone(name="{name}")
    .with_source_folder("shared", "/app", copy_contents_only=True)
    .with_commands("{command}")
)
"""


def test_edit_during_build_supersedes_it_and_pushes_the_final_content(
    project: Project,
    watch: Callable[..., DaemonProcess],
    infra: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = project.name("slow")
    project.defs.write_text(SLOW.format(name=name, command="sleep 5 && ls /app > /listing.txt"))
    daemon = watch(project.defs)
    settle_initial(daemon, (name,))
    mark = daemon.mark()
    (project.shared / "first.txt").write_text(fresh())
    daemon.wait_event(is_event("building", name), 30, since=mark)
    time.sleep(1)
    (project.shared / "second.txt").write_text(fresh())
    daemon.wait_event(is_event("superseded", name), 30, since=mark)
    pushed = daemon.wait_event(is_event("pushed", name), BUILD_TIMEOUT, since=mark)
    time.sleep(SETTLE)
    assert daemon.count("pushed", name, mark) == 1

    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    image = load_definitions(str(project.defs))[name].clone(registry=infra.registry)
    expected = image.uri_for(hash_image(image).tag)
    assert pushed["uri"] == expected
    assert skopeo_inspect(expected).returncode == 0
    pull_fresh(infra.docker_cli, expected, env=infra.docker_env())
    listing = docker(infra.docker_cli, "run", "--rm", expected, "cat", "/listing.txt").stdout
    assert {"a.txt", "first.txt", "second.txt"} <= set(listing.split())


# -- 7-8: restart and stop ------------------------------------------------------------------


def test_restart_with_nothing_changed_builds_nothing(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    first = watch(project.defs)
    settle_initial(first, project.names)
    assert first.stop() == 0
    assert first.count("stopped") == 1
    second = watch(project.defs)
    second.wait_event(is_event("ready"), 60)
    time.sleep(3)
    busy = second.matching(lambda e: e["event"] in ("queued", "building", "pushed"))
    assert busy == []


def test_sigterm_during_build_exits_cleanly_without_orphans(
    project: Project, watch: Callable[..., DaemonProcess], infra: Any
) -> None:
    name = project.name("sleepy")
    project.defs.write_text(SLOW.format(name=name, command="sleep 60"))
    daemon = watch(project.defs, IMAGED_SHUTDOWN_TIMEOUT="10")
    daemon.wait_event(is_event("building", name), 60)
    cli = Path(infra.docker_cli).name

    def docker_children() -> dict[int, str]:
        return {p: c for p, c in descendants(daemon.pid).items() if cli in c}

    assert wait_for(lambda: bool(docker_children()), 30), daemon.transcript()
    children = descendants(daemon.pid)
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    code = daemon.wait_exit(15)
    assert time.monotonic() - started < 15
    assert code == 0, daemon.transcript()
    assert daemon.count("stopping") == 1
    assert daemon.count("stopped") == 1
    assert daemon.count("pushed", name) == 0
    assert wait_for(lambda: not still_running(children), 5), still_running(children)


# -- 9-10: imaged daemon: SIGHUP, systemd notify --------------------------------------------


def write_config(path: Path, infra: Any, definitions: list[Path]) -> None:
    listed = ", ".join(f'"{p}"' for p in definitions)
    path.write_text(f'registry = "{infra.registry}"\ndebounce_ms = 200\ndefinitions = [{listed}]\n')


def test_sighup_reloads_the_config(project: Project, launch: Launch, infra: Any) -> None:
    config = project.root.parent / "daemon.toml"
    write_config(config, infra, [project.defs])
    daemon = launch("daemon", "--config", str(config), events_on="stderr")
    assert daemon.wait_event(is_event("ready"), 60)["images"] == 3
    settle_initial(daemon, project.names)

    extra = project.root / "more.py"
    delta = project.name("delta")
    extra.write_text(
        "from imaged import Image\n"
        f'delta = Image.from_debian_base(python_version=(3, 11)).clone(name="{delta}")'
        '.with_source_folder("other", "/other")\n'
    )
    write_config(config, infra, [project.defs, extra])
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    assert daemon.wait_event(is_event("reloaded"), 30, since=mark)["images"] == 4
    loaded = daemon.wait_event(is_event("definitions_loaded", file=str(extra)), 5, since=mark)
    assert loaded["images"] == [delta]
    pushed = daemon.wait_event(is_event("pushed", delta), BUILD_TIMEOUT, since=mark)
    assert pushed["uri"].startswith(f"{infra.registry}/{delta}:")
    assert daemon.stop() == 0


def test_systemd_notify_messages_arrive_in_order(
    project: Project, launch: Launch, infra: Any, tmp_path: Path
) -> None:
    config = tmp_path / "daemon.toml"
    write_config(config, infra, [project.defs])
    with NotifySocket(tmp_path / "notify.sock") as notify:
        daemon = launch(
            "daemon",
            "--config",
            str(config),
            events_on="stderr",
            NOTIFY_SOCKET=str(notify.path),
            WATCHDOG_USEC="1000000",
        )
        assert wait_for(lambda: "READY=1" in notify.kinds(), 60), daemon.transcript()
        # The periodic STATUS= update comes every 5 s.
        assert wait_for(lambda: "STATUS" in notify.kinds(), 10), notify.kinds()
        pings = [t for t, fields in notify.received() if "WATCHDOG" in fields]
        mark = daemon.mark()
        daemon.send(signal.SIGHUP)
        daemon.wait_event(is_event("reloaded"), 30, since=mark)
        assert wait_for(lambda: notify.kinds().count("READY=1") == 2, 10), notify.kinds()
        assert daemon.stop() == 0
        assert wait_for(lambda: "STOPPING=1" in notify.kinds(), 5), notify.kinds()

    first_fields = notify.received()[0][1]
    assert first_fields["READY"] == "1"
    assert first_fields["STATUS"].startswith("3 images")
    steps = [k for k in notify.kinds() if k != "WATCHDOG=1"]
    assert re.fullmatch(
        r"READY=1 (STATUS )+RELOADING=1 READY=1 (STATUS )*STOPPING=1", " ".join(steps)
    )
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 8
    assert 0.35 < statistics.median(gaps) < 0.7


# -- imaged status ---------------------------------------------------------------------------


def test_status_command_lists_every_image(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    daemon = watch(project.defs)
    settle_initial(daemon, project.names)
    address = daemon.status_address()
    done_ = subprocess.run(
        [*CLI, "status", "--address", address], capture_output=True, text=True, timeout=30
    )
    assert done_.returncode == 0, done_.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in done_.stdout.splitlines()}
    assert sorted(rows) == sorted(project.names)
    tags = {e["image"]: e["uri"].rsplit(":", 1)[1] for e in daemon.matching(is_event("pushed"))}
    for name, row in rows.items():
        assert row[1:3] == ["up to date", tags[name]]


# -- the fast path ---------------------------------------------------------------------------


def test_the_daemon_reports_the_path_each_push_took(
    project: Project, watch: Callable[..., DaemonProcess]
) -> None:
    forced = project.name("forced")
    extra = (
        f'forced = _base.clone(name="{forced}").with_source_folder("other", "/app")'
        '.with_commands(["ls /app"])'
    )
    project.write_defs(extra=extra)
    names = (*project.names, forced)
    daemon = watch(project.defs)
    settle_initial(daemon, names)
    mark = daemon.mark()
    (project.shared / "a.txt").write_text(fresh())
    (project.other / "b.txt").write_text(fresh())
    alpha = project.names[0]
    fast = daemon.wait_event(is_event("pushed", alpha), BUILD_TIMEOUT, since=mark)
    full = daemon.wait_event(is_event("pushed", forced), BUILD_TIMEOUT, since=mark)
    assert fast["path"] == "fast"
    assert fast["path_reason"] == "2 file layers appended to the stem (built through the base)"
    assert 0 < fast["uploaded_bytes"] < 10_000  # one small layer and a config
    assert full["path"] == "full"
    assert full["uploaded_bytes"] == 0
    assert full["path_reason"] == (
        "layer 1 (source_folder other/) is followed by a recipe layer "
        "(layer 2 (commands ls /app)): a RUN must see the files it follows"
    )
