"""Tests for imaged.builders.scratch: build folders holding secrets are swept once their owner is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from imaged.builders.scratch import (
    OWNER_FILE,
    SCRATCH_PREFIX,
    UNMARKED_GRACE,
    mark_owner,
    process_start_time,
    scratch_parent,
    sweep_stale_scratch,
)

SECRET_VALUE = "scratch-secret-91c2"


def _folder(parent: Path, name: str, owner: str | None) -> Path:
    folder = parent / f"{SCRATCH_PREFIX}{name}"
    folder.mkdir(mode=0o700)
    (folder / "secret-0").write_text(SECRET_VALUE)
    if owner is not None:
        (folder / OWNER_FILE).write_text(owner + "\n")
    return folder


def _dead_pid() -> tuple[int, str]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_start_time(child.pid)
    child.kill()
    child.wait()
    assert started is not None
    return child.pid, started


def test_sweep_removes_folders_of_dead_or_replaced_owners_only(tmp_path: Path) -> None:
    me, my_start = os.getpid(), process_start_time(os.getpid())
    dead_pid, dead_start = _dead_pid()
    dead = _folder(tmp_path, "dead", f"{dead_pid} {dead_start}")
    reused = _folder(tmp_path, "reused", f"{me} 1")  # our pid, another process's start time
    garbled = _folder(tmp_path, "garbled", "not a record")
    live = _folder(tmp_path, "live", f"{me} {my_start}")
    fresh = _folder(tmp_path, "unmarked-fresh", None)
    old = _folder(tmp_path, "unmarked-old", None)
    long_ago = time.time() - UNMARKED_GRACE - 60
    os.utime(old, (long_ago, long_ago))
    other = tmp_path / "not-imaged"
    other.mkdir()
    removed = sweep_stale_scratch(str(tmp_path))
    assert sorted(removed) == sorted([dead, reused, garbled, old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, fresh.name, other.name])


def test_mark_owner_records_pid_and_start_time(tmp_path: Path) -> None:
    mark_owner(str(tmp_path))
    assert (tmp_path / OWNER_FILE).read_text() == (
        f"{os.getpid()} {process_start_time(os.getpid())}\n"
    )
    folder = _folder(tmp_path, "mine", None)
    mark_owner(str(folder))
    assert sweep_stale_scratch(str(tmp_path)) == []


KILLED_BUILD = """
import anyio, sys
from pathlib import Path
from imaged.builders.base import BuildRequest, SecretSource
from imaged.builders.local import LocalBuilder
from imaged.config import Settings

context = Path(sys.argv[2])
request = BuildRequest(
    image_name="app", context_dir=context, dockerfile=context / "Dockerfile",
    tags=("127.0.0.1:5000/app:1",), secrets=(SecretSource("tok", sys.argv[3].encode()),),
)
anyio.run(LocalBuilder(Settings(docker_cli=sys.argv[1])).build, request)
"""


def test_a_build_killed_with_sigkill_leaves_secrets_that_the_next_build_sweeps(
    tmp_path: Path,
) -> None:
    args = tmp_path / "args"
    cli = tmp_path / "docker"
    cli.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            if [ "$1" = "--version" ]; then echo "Docker version 20.10.24, build x"; exit 0; fi
            if [ "$1" = "buildx" ]; then exit 1; fi
            echo "$$ $*" > {args}.tmp && mv {args}.tmp {args}
            exec sleep 60
            """)
    )
    cli.chmod(0o755)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    build = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(cli), str(tmp_path), SECRET_VALUE], env=env
    )
    deadline = time.monotonic() + 30
    while not args.exists():
        assert build.poll() is None, "the build ended before its CLI started"
        assert time.monotonic() < deadline, "the build's CLI never started"
        time.sleep(0.05)
    cli_pid, *argv = args.read_text().split()
    os.kill(int(cli_pid), signal.SIGKILL)  # the CLI runs in its own session
    build.send_signal(signal.SIGKILL)
    build.wait()
    src = next(a for a in argv if a.startswith("id=tok,src=")).removeprefix("id=tok,src=")
    folder = Path(src).parent
    assert folder.parent == Path(scratch_parent() or tempfile.gettempdir())
    assert Path(src).read_text() == SECRET_VALUE  # what the issue saw: the value left behind
    assert (folder / OWNER_FILE).read_text().split()[0] == str(build.pid)
    # The next `imaged build` sweeps it before anything else (here: a definition with no image).
    defs = tmp_path / "images.py"
    defs.write_text("X = 1\n")
    code = "from imaged.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "build", str(defs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "defines no Image" in done.stderr
    assert not folder.exists()
