"""The ``imaged`` command line: hash, dockerfile, build, and how errors are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import (
    DENIED_REASON,
    DEVICE_REASON,
    FIFO_REASON,
    TOO_LONG_REASON,
    MakeBadInput,
    deep_path,
    dev_zero_ignore_file,
    fifo_ignore_file,
    hung_folder,
    hung_fuse_mount,
    hung_reason,
    locked_folder,
    unlock,
    without_root_reads,
)
from click.testing import CliRunner, Result
from e2e_support import run_id

from imaged.cli.main import handle_errors, main
from imaged.definitions.loader import load_definitions
from imaged.digest.image_digest import hash_image
from imaged.errors import ConfigError, ImagedError
from imaged.render.dockerfile import render_dockerfile
from imaged.safe_read import shown_path

REGISTRY = "registry.example:5000"
DEFS = f"""
from imaged import Image

alpha = Image.from_debian_base(
    python_version=(3, 11), registry="{REGISTRY}", name="alpha"
).with_pip_packages("tomli==2.0.1")
beta = (
    Image.from_base("{REGISTRY}/base:1")
    .clone(name="beta", registry="{REGISTRY}")
    .with_workdir("/app")
)
"""


@pytest.fixture(autouse=True)
def _base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", REGISTRY + "/python:{major}.{minor}-slim")


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    path = tmp_path / "images.py"
    path.write_text(DEFS)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def expected_rows(target: str) -> dict[str, tuple[str, str]]:
    """name -> (uri, tag), computed with the library."""
    rows = {}
    for name, image in load_definitions(target).items():
        tag = hash_image(image).tag
        rows[name] = (image.uri_for(tag), tag)
    return rows


def test_hash_prints_one_line_per_image(defs: Path) -> None:
    result = invoke("hash", str(defs))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t") for line in lines] == [
        [name, uri, tag] for name, (uri, tag) in expected_rows(str(defs)).items()
    ]
    assert [line.split("\t")[0] for line in lines] == ["alpha", "beta"]
    assert lines[0].split("\t")[1].startswith(f"{REGISTRY}/alpha:")


def test_hash_json_has_every_field(defs: Path) -> None:
    result = invoke("hash", str(defs), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = expected_rows(str(defs))
    assert [row["name"] for row in rows] == ["alpha", "beta"]
    for row in rows:
        assert set(row) >= {"name", "uri", "tag", "digest", "layers"}
        assert (row["uri"], row["tag"]) == expected[row["name"]]
        assert row["digest"].startswith("sha256:")
        assert all(set(layer) >= {"kind", "digest"} for layer in row["layers"])
    kinds = {row["name"]: [layer["kind"] for layer in row["layers"]] for row in rows}
    assert "pip_packages" in kinds["alpha"]
    assert "workdir" in kinds["beta"]


def test_hash_one_image_by_name(defs: Path) -> None:
    result = invoke("hash", f"{defs}:beta")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    uri, tag = expected_rows(str(defs))["beta"]
    assert line == f"beta\t{uri}\t{tag}"


def test_dockerfile_of_one_image(defs: Path) -> None:
    result = invoke("dockerfile", f"{defs}:alpha")
    assert result.exit_code == 0, result.output
    image = load_definitions(f"{defs}:alpha")["alpha"]
    assert result.stdout == render_dockerfile(image).dockerfile
    assert result.stdout.startswith(f"FROM {REGISTRY}/python:3.11-slim\n")
    assert "tomli==2.0.1" in result.stdout


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process, to see exactly what a user sees."""
    code = "from imaged.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("source", "suffix", "fragments"),
    [
        pytest.param(
            "from imaged import Image\n\nx = (1,\n",
            "",
            ["images.py:3", "syntax error"],
            id="syntax-error",
        ),
        pytest.param(
            "from imaged import Image\nraise RuntimeError('boom in definitions')\n",
            "",
            ["images.py:2", "RuntimeError: boom in definitions"],
            id="raising-module",
        ),
        pytest.param(
            "import imaged\n\ndef f():\n    return 1 / 0\n\nvalue = f()\n",
            "",
            ["images.py:4", "ZeroDivisionError"],
            id="raising-function",
        ),
        pytest.param(DEFS, ":gamma", ["no image named 'gamma'", "alpha, beta"], id="unknown-name"),
        pytest.param(
            DEFS + "import sys\nsys.exit(0)\n",
            "",
            ["images.py:13", "called sys.exit(0)"],
            id="sys-exit-0",
        ),
        pytest.param(
            "import sys\nsys.exit('bye')\n",
            "",
            ["images.py:2", "sys.exit('bye')"],
            id="sys-exit-text",
        ),
        pytest.param(
            DEFS + "raise SystemExit\n",
            "",
            ["images.py:12", "sys.exit(None)"],
            id="raise-systemexit",
        ),
        pytest.param(
            DEFS + "import os\nos._exit(0)\n",
            "",
            ["images.py: definition loader exited with code 0", "os._exit()"],
            id="os-exit-0",
        ),
        pytest.param(
            "from imaged import Image\nX = 1\n",
            "",
            ["images.py: defines no Image"],
            id="no-image",
        ),
    ],
)
@pytest.mark.parametrize("command", ["hash", "dockerfile", "build"])
def test_definition_errors_are_one_clear_message(
    tmp_path: Path, source: str, suffix: str, fragments: list[str], command: str
) -> None:
    path = tmp_path / "images.py"
    path.write_text(source)
    proc = run_cli(command, f"{path}{suffix}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in proc.stderr


PRINTING_DEFS = (
    """
import os, subprocess, sys
print("hello from print")
os.write(1, b"hello from fd 1\\n")
subprocess.run([sys.executable, "-c", "print('hello from a child')"], check=True)
"""
    + DEFS
)


@pytest.mark.parametrize(
    ("args", "parse"),
    [
        pytest.param(("hash", "--json"), json.loads, id="hash-json"),
        pytest.param(("hash",), str.splitlines, id="hash"),
        pytest.param(
            ("build", "--dry-run", "--json"),
            lambda out: [json.loads(line) for line in out.splitlines()],
            id="build-dry-run-json",
        ),
    ],
)
def test_definition_output_goes_to_stderr_never_into_stdout(
    tmp_path: Path, args: tuple[str, ...], parse: Any
) -> None:
    path = tmp_path / "images.py"
    path.write_text(PRINTING_DEFS)
    proc = run_cli(*args, str(path))
    assert proc.returncode == 0, proc.stderr
    assert "hello" not in proc.stdout
    assert len(parse(proc.stdout)) == 2
    for said in ("hello from print", "hello from fd 1", "hello from a child"):
        assert said in proc.stderr


def test_dockerfile_output_is_only_the_dockerfile(tmp_path: Path) -> None:
    path = tmp_path / "images.py"
    path.write_text(PRINTING_DEFS)
    proc = run_cli("dockerfile", f"{path}:beta")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"FROM {REGISTRY}/base:1")
    assert "hello" not in proc.stdout


def test_a_target_may_name_the_variable_holding_an_image(tmp_path: Path) -> None:
    path = tmp_path / "images.py"
    path.write_text(DEFS + "second = beta\n")
    proc = run_cli("hash", f"{path}:second")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("beta\t")


# -- the daemon's start-up errors, and error groups -------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from imaged.daemon.store import ImageRecord, StateStore
store = StateStore(Path(sys.argv[1]))
store.lock()
store.save({"api": ImageRecord("api", uri="api:1", tag="1")})
print("locked", flush=True)
time.sleep(60)
"""


def test_watch_of_a_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    proc = run_cli("watch", str(missing), "--json", IMAGED_STATE_DIR=str(tmp_path / "state"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr == f"error: {missing}: definition file or folder not found\n"
    assert not (tmp_path / "state").exists()  # checked before the state was touched


def test_watch_on_a_held_state_dir_names_the_holder_and_wipes_nothing(
    tmp_path: Path, defs: Path
) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        saved = (state / "state.json").read_text()
        proc = run_cli("watch", str(defs), "--json", IMAGED_STATE_DIR=str(state))
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr + proc.stdout
        assert proc.stderr == f"error: state directory {state} is in use by pid {holder.pid}\n"
        assert (state / "state.json").read_text() == saved
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("group", "code", "lines"),
    [
        pytest.param(
            ExceptionGroup("startup", [ImagedError("first"), ConfigError("second")]),
            1,
            ["error: first", "error: second"],
            id="flat",
        ),
        pytest.param(
            ExceptionGroup("outer", [ExceptionGroup("inner", [ConfigError("bad key")])]),
            78,
            ["error: bad key"],
            id="nested",
        ),
    ],
)
def test_handle_errors_prints_each_imaged_error_of_a_group(
    capsys: pytest.CaptureFixture[str],
    group: ExceptionGroup[Exception],
    code: int,
    lines: list[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        handle_errors(_raise)(group)
    assert exited.value.code == code
    assert capsys.readouterr().err.splitlines() == lines


def test_handle_errors_keeps_the_traceback_of_a_group_with_a_bug() -> None:
    group = ExceptionGroup("startup", [ImagedError("fine"), KeyError("bug")])
    with pytest.raises(ExceptionGroup) as raised:
        handle_errors(_raise)(group)
    assert raised.value is group


# -- building (needs the engine and the test registry) ------------------------------------

BUILD_DEFS = """
from imaged import Image

first = Image.from_base({base!r}).clone(name="cli-first-{run}").with_commands("echo 1 > /one")
second = Image.from_base({base!r}).clone(name="cli-second-{run}").with_workdir("/w")
"""
FAILING_DEFS = """
from imaged import Image

good = Image.from_base({base!r}).clone(name="cli-good-{run}").with_commands("echo ok > /ok")
bad = Image.from_base({base!r}).clone(name="cli-bad-{run}").with_commands(
    "sh -c 'echo cli-boom >&2; exit 7'"
)
"""


@pytest.fixture
def build_env(infra: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    if infra.ca_bundle:
        monkeypatch.setenv("IMAGED_BUILD_CA_BUNDLE", infra.ca_bundle)
    monkeypatch.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    monkeypatch.delenv("IMAGED_REGISTRY", raising=False)
    if infra.docker_host:
        monkeypatch.setenv("DOCKER_HOST", infra.docker_host)
    return infra


def write_defs(tmp_path: Path, template: str, infra: Any) -> Path:
    path = tmp_path / "images.py"
    path.write_text(template.format(base=infra.debian_base, run=run_id()))
    return path


def json_lines(text: str) -> dict[str, dict[str, Any]]:
    """Each stdout line is one JSON object; by image name."""
    objects = [json.loads(line) for line in text.splitlines()]
    return {obj["name"]: obj for obj in objects}


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_build_then_skip(build_env: Any, tmp_path: Path) -> None:
    path = write_defs(tmp_path, BUILD_DEFS, build_env)
    registry = build_env.registry
    first = invoke("build", str(path), "--registry", registry)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == 2
    assert all(": built and pushed " + registry in line for line in lines), lines
    again = invoke("build", str(path), "--registry", registry)
    assert again.exit_code == 0, again.output
    skipped = again.stdout.splitlines()
    assert len(skipped) == 2
    assert all(": skipped, " + registry in line for line in skipped), skipped
    as_json = invoke("build", str(path), "--registry", registry, "--json")
    assert as_json.exit_code == 0, as_json.output
    objects = json_lines(as_json.stdout)
    assert len(objects) == 2
    for obj in objects.values():
        assert obj["status"] == "skipped"
        assert obj["uri"].startswith(f"{registry}/{obj['name']}:{obj['tag']}")


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_build_exits_non_zero_when_one_image_fails(build_env: Any, tmp_path: Path) -> None:
    path = write_defs(tmp_path, FAILING_DEFS, build_env)
    result = invoke("build", str(path), "--registry", build_env.registry, "--json")
    assert result.exit_code == 1
    objects = json_lines(result.stdout)
    good, bad = (
        next(o for n, o in objects.items() if n.startswith(p)) for p in ("cli-good", "cli-bad")
    )
    assert good["status"] == "pushed"
    assert bad["status"] == "failed"
    assert "exit 7" in bad["error"]
    assert "cli-boom" in bad["error"]


def test_state_dir_flag_is_accepted(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from imaged.cli.main import main

    defs = tmp_path / "defs.py"
    defs.write_text(
        "from imaged import Image\nimg = Image.from_base('debian:12').clone(name='local-only')\n"
    )
    result = CliRunner().invoke(main, ["plan", str(defs), "--state-dir", str(tmp_path / "st")])
    assert result.exit_code == 0, result.output
    assert "local-only: local" in result.output


def test_hash_shows_the_uri_build_pushes_with_a_registry_override(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from imaged.cli.main import main

    defs = tmp_path / "defs.py"
    defs.write_text(
        "from imaged import Image\n"
        "img = Image.from_base('debian:12').clone(name='app', registry='a.example:5000')\n"
    )
    plain = CliRunner().invoke(main, ["hash", str(defs)])
    moved = CliRunner().invoke(main, ["hash", str(defs), "--registry", "127.0.0.1:5000"])
    assert plain.exit_code == moved.exit_code == 0
    tag = plain.output.split()[-1]
    assert f"a.example:5000/app:{tag}" in plain.output
    assert f"127.0.0.1:5000/app:{tag}" in moved.output


def test_plan_config_reaches_the_definitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from imaged.cli.main import main

    config = tmp_path / "ci.toml"
    config.write_text('debian_base = "ci.local/py:{major}.{minor}"\n')
    defs = tmp_path / "defs.py"
    defs.write_text(
        "from imaged import Image\n"
        "img = Image.from_debian_base(python_version=(3, 11), name='app')\n"
        "assert img.base_label == 'ci.local/py:3.11', img.base_label\n"
    )
    monkeypatch.delenv("IMAGED_DEBIAN_BASE")  # this module's autouse fixture sets it
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(main, ["plan", str(defs), "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_dockerfile_names_the_parent_in_the_overridden_registry(tmp_path: Path) -> None:
    defs = tmp_path / "defs.py"
    defs.write_text(
        "from imaged import Image\n"
        "parent = Image.from_base('debian:12').clone(name='parent', registry='a.example:5000')\n"
        "child = Image.from_base(parent).clone(name='child', registry='a.example:5000')\n"
    )
    result = CliRunner().invoke(
        main, ["dockerfile", f"{defs}:child", "--registry", "127.0.0.1:5000"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("FROM 127.0.0.1:5000/parent:")


# -- inputs that are not plain files and folders (issue 11) ---------------------------------

BAD_INPUT_DEFS = f"""
from imaged import Image

base = Image.from_base("{REGISTRY}/base:1")
bad = base.clone(name="bad", registry="{REGISTRY}").with_source_folder("src", "/app")
good = base.clone(name="good", registry="{REGISTRY}").with_source_folder("other", "/app")
"""
BAD_LAYER = "image 'bad', layer #1 source_folder src/"


def bad_input_project(tmp_path: Path, make: MakeBadInput) -> tuple[Path, Path]:
    """Definitions of ``bad`` (copies ``src``, which holds the bad input) and ``good``."""
    for folder in ("src", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.py").write_text("print('hi')\n")
    (tmp_path / "images.py").write_text(BAD_INPUT_DEFS)
    return tmp_path / "images.py", make(tmp_path / "src")


def run_cli_confined(*args: str) -> subprocess.CompletedProcess[str]:
    """run_cli in a child that cannot read a mode-000 folder even as root, with its memory
    capped; a hang fails the test at the timeout instead of stalling the suite."""
    return subprocess.run(
        [sys.executable, "-c", "from imaged.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=without_root_reads,
    )


def _expected(bad: Path, reason: str) -> str:
    return f"{BAD_LAYER}: {shown_path(bad)}: {reason}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(fifo_ignore_file, FIFO_REASON, id="fifo-dockerignore"),
        pytest.param(dev_zero_ignore_file, DEVICE_REASON, id="dev-zero-dockerignore"),
        pytest.param(locked_folder, DENIED_REASON, id="mode-000-folder"),
    ],
)
@pytest.mark.parametrize("command", ["hash", "build"])
def test_a_bad_input_is_one_clear_error_and_exit_1(
    tmp_path: Path, make: MakeBadInput, reason: str, command: str
) -> None:
    defs, bad = bad_input_project(tmp_path, make)
    try:
        extra = ["--dry-run"] if command == "build" else []
        proc = run_cli_confined(command, str(defs), *extra)
    finally:
        if make is locked_folder:
            unlock(bad)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    if command == "hash":
        assert proc.stderr == f"error: {_expected(bad, reason)}\n"
    else:  # every image is tried: the good one still renders
        assert proc.stderr == f"bad: FAILED: {_expected(bad, reason)}\n"
        assert "# good: registry.example:5000/good:" in proc.stdout


def test_a_path_longer_than_path_max_is_one_clear_error(tmp_path: Path) -> None:
    defs, _ = bad_input_project(tmp_path, deep_path)
    proc = run_cli_confined("hash", str(defs))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {BAD_LAYER}: {tmp_path}/src/ddd")
    assert proc.stderr.endswith(f" characters): {TOO_LONG_REASON}\n")
    assert len(proc.stderr) < 400  # the 4 KiB path is shortened


@pytest.mark.parametrize(
    ("command", "suffix", "via_file"),
    [
        pytest.param("hash", "", False, id="hash-env"),
        pytest.param("dockerfile", ":beta", False, id="dockerfile-env"),
        pytest.param("build", "", False, id="build-env"),
        pytest.param("build", "", True, id="build-config-file"),
    ],
)
def test_the_cli_loads_definitions_within_the_configured_load_timeout(
    tmp_path: Path, command: str, suffix: str, via_file: bool
) -> None:
    """``load_timeout`` (30 s by default) reaches the CLI's child loads, not only the daemon's."""
    path = tmp_path / "images.py"
    path.write_text("import time\ntime.sleep(20)\n" + DEFS)
    args: list[str] = [command, f"{path}{suffix}"]
    env = {}
    if via_file:
        config = tmp_path / "imaged.toml"
        config.write_text("load_timeout = 0.5\n")
        args = [command, "--config", str(config), "--dry-run", args[1]]
    else:
        env = {"IMAGED_LOAD_TIMEOUT": "0.5"}
        args += ["--dry-run"] if command == "build" else []
    proc = run_cli(*args, **env)
    assert proc.returncode == 1
    assert "loading timed out after 0.5 s" in proc.stderr


# -- a hung filesystem under one image's folder (issue 11) ----------------------------------

# The CLI with every listing of $TEST_HUNG_FOLDER blocked for good, as on a hung NFS or FUSE
# mount (the definitions load in a child, which lists nothing; the hashing is done here).
HUNG_CLI = """
import os, sys, threading
from imaged.cli.main import main

hung, real = os.environ.pop("TEST_HUNG_FOLDER"), os.scandir

def scandir(path="."):
    text = os.fspath(path)
    if text == hung or text.startswith(hung + os.sep):
        threading.Event().wait()
    return real(path)

os.scandir = scandir
main()
"""


@pytest.mark.parametrize("command", ["hash", "build"])
def test_a_hung_folder_fails_its_image_and_the_process_still_exits(
    tmp_path: Path, command: str
) -> None:
    defs, src = bad_input_project(tmp_path, lambda src: src)
    extra = ["--dry-run"] if command == "build" else []
    env = {**os.environ, "TEST_HUNG_FOLDER": str(src), "IMAGED_HASH_TIMEOUT": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", HUNG_CLI, command, str(defs), *extra],
        capture_output=True,
        text=True,
        timeout=30,  # the stuck walk must not keep the process alive
        check=False,
        env=env,
    )
    assert time.monotonic() - started < 15
    assert proc.returncode == 1, proc.stderr
    error = f"{BAD_LAYER}: hashing {src} {hung_reason(1)}"
    if command == "hash":
        assert proc.stderr == f"error: {error}\n"
        assert proc.stdout.startswith(f"good\t{REGISTRY}/good:")
    else:
        assert proc.stderr == f"bad: FAILED: {error}\n"
        assert "# good: registry.example:5000/good:" in proc.stdout


def test_hash_json_of_a_hung_folder_holds_the_other_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, src = bad_input_project(tmp_path, lambda src: src)
    monkeypatch.setenv("IMAGED_HASH_TIMEOUT", "1")
    with hung_folder(src):
        result = invoke("hash", str(defs), "--json")
    assert result.exit_code == 1
    assert [row["name"] for row in json.loads(result.stdout)] == ["good"]
    assert result.stderr == f"error: {BAD_LAYER}: hashing {src} {hung_reason(1)}\n"


def test_a_real_hung_fuse_mount_fails_its_image_and_the_process_still_exits(
    tmp_path: Path,
) -> None:
    """No patch: ``src/mnt`` is a FUSE mount whose server never answers, so the walk of
    ``src`` blocks in the kernel; the CLI fails that image and exits all the same."""
    defs, src = bad_input_project(tmp_path, lambda src: src)
    with ExitStack() as stack:
        try:
            stack.enter_context(hung_fuse_mount(src / "mnt"))
        except OSError as exc:
            pytest.skip(f"cannot mount FUSE here (root and /dev/fuse needed): {exc}")
        proc = subprocess.run(
            [sys.executable, "-m", "imaged", "hash", str(defs)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "IMAGED_HASH_TIMEOUT": "1"},
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"error: {BAD_LAYER}: hashing {src} {hung_reason(1)}\n"
    assert proc.stdout.startswith(f"good\t{REGISTRY}/good:")
