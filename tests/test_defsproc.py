"""Tests for imaged.definitions.child: loading definitions in a child interpreter, and discovery."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from imaged.definitions.child import (
    LoadedModule,
    discover_definition_files,
    load_module_in_child,
    load_target,
)
from imaged.definitions.loader import load_definitions
from imaged.errors import DefinitionError

HEADER = 'from imaged import Image\nBASE = Image.from_base("127.0.0.1:5000/python:3.11")\n'
GOOD = HEADER + textwrap.dedent("""\
    api = BASE.clone(registry="127.0.0.1:5000", name="api").with_pip_packages("rich")
    worker = (
        api.clone(name="worker")
        .with_apt_packages("curl")
        .with_source_file("job.py", dst="/app")
    )
""")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(path: Path, *, timeout: float = 30.0) -> LoadedModule:
    async def run() -> LoadedModule:
        return await load_module_in_child(path, timeout=timeout)

    return anyio.run(run)


def test_good_module_round_trips_its_images(tmp_path: Path) -> None:
    write(tmp_path, "job.py", "print('job')\n")
    path = write(tmp_path, "images.py", GOOD)
    loaded = load(path)
    expected = load_definitions(str(path))
    assert loaded.path == path.resolve()
    assert list(loaded.images) == ["api", "worker"]
    assert {k: v.to_json() for k, v in loaded.images.items()} == {
        k: v.to_json() for k, v in expected.items()
    }
    assert loaded.images == expected
    assert loaded.imported_files == (path.resolve(),)


def test_reports_helpers_imported_from_beside_it(tmp_path: Path) -> None:
    write(tmp_path, "common.py", HEADER + "REG = '127.0.0.1:5000'\n")
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/names.py", "NAME = 'api'\n")
    path = write(
        tmp_path,
        "images.py",
        "import json\nfrom common import BASE, REG\nfrom pkg.names import NAME\n"
        "api = BASE.clone(registry=REG, name=NAME)\n",
    )
    loaded = load(path)
    assert loaded.images["api"].registry == "127.0.0.1:5000"
    names = {p.relative_to(tmp_path.resolve()).as_posix() for p in loaded.imported_files}
    assert names == {"images.py", "common.py", "pkg/__init__.py", "pkg/names.py"}


def test_reports_helpers_under_the_project_root(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n")
    write(tmp_path, "src/shared.py", "NAME = 'api'\n")
    path = write(
        tmp_path,
        "deploy/images.py",
        "import sys, pathlib\n"
        "sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / 'src'))\n"
        "from shared import NAME\n" + HEADER + "api = BASE.clone(name=NAME)\n",
    )
    loaded = load(path)
    assert set(loaded.imported_files) == {path.resolve(), (tmp_path / "src/shared.py").resolve()}


FAILURES = [
    pytest.param("import os\nx = (\n", "images.py", 2, "syntax error", id="syntax-error"),
    pytest.param(
        HEADER + "\n\nraise RuntimeError('boom')\n",
        "images.py",
        5,
        "RuntimeError: boom",
        id="exception",
    ),
    pytest.param(
        "import helper\n",
        "helper.py",
        2,
        "ZeroDivisionError",
        id="exception-in-helper",
    ),
    pytest.param(
        HEADER + "a = BASE.clone(name='x')\nb = BASE.clone(name='x').with_apt_packages('git')\n"
        "c = BASE.clone(name='x').with_apt_packages('curl')\n",
        "images.py",
        None,
        "duplicate image name 'x'",
        id="duplicate-names",
    ),
    pytest.param("from imaged import Image\n", "images.py", None, "no Image", id="no-images"),
    pytest.param(
        "import sys\nsys.exit(4)\n",
        "images.py",
        2,
        r"called sys\.exit\(4\)",
        id="sys-exit",
    ),
]


@pytest.mark.parametrize(("text", "where", "line", "message"), FAILURES)
def test_failures_name_file_and_line(
    tmp_path: Path, text: str, where: str, line: int | None, message: str
) -> None:
    write(tmp_path, "helper.py", "X = 1\nY = 1 / 0\n")
    path = write(tmp_path, "images.py", text)
    with pytest.raises(DefinitionError, match=message) as info:
        load(path)
    assert info.value.file == str((tmp_path / where).resolve())
    assert info.value.line == line


def test_module_that_prints_to_stdout_still_loads(tmp_path: Path) -> None:
    text = (
        "import os, subprocess, sys\nprint('{\"ok\": false}')\n"
        "os.write(1, b'raw fd write\\n')\n"
        "subprocess.run([sys.executable, '-c', 'print(42)'], check=True)\n"
        + HEADER
        + "api = BASE.clone(name='api')\n"
    )
    loaded = load(write(tmp_path, "images.py", text))
    assert list(loaded.images) == ["api"]


def test_hanging_module_times_out_and_the_child_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    text = (
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(100)\n"
    )
    path = write(tmp_path, "images.py", text)
    started = time.monotonic()
    with pytest.raises(DefinitionError, match=r"timed out after 3 s") as info:
        load(path, timeout=3)
    assert time.monotonic() - started < 3 + 2
    assert info.value.file == str(path.resolve())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


CRASHES = [
    pytest.param("os._exit(3)", "exited with code 3", id="exit-code"),
    pytest.param("os.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV", id="segfault"),
]


@pytest.mark.parametrize(("crash", "message"), CRASHES)
def test_child_crash_reports_exit_and_stderr(tmp_path: Path, crash: str, message: str) -> None:
    text = f"import os, signal, sys\nsys.stderr.write('about to die\\n')\n{crash}\n"
    path = write(tmp_path, "images.py", text)
    with pytest.raises(DefinitionError, match=message) as info:
        load(path)
    assert info.value.file == str(path.resolve())
    assert info.value.line is None
    assert str(info.value).endswith("about to die")


def test_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="not found"):
        load(tmp_path / "absent.py")


# -- discovery ---------------------------------------------------------------------------

TREE = {
    "images.py": "from imaged import Image\n",
    "other.py": "import os\n",
    "lookalike.py": "import imaged_extras\n",
    "notes.txt": "import imaged\n",
    "sub/jobs.py": "import imaged\n",
    "sub/deeper/more.py": "from imaged.spec.image import Image\n",
    ".hidden/x.py": "import imaged\n",
    "__pycache__/y.py": "import imaged\n",
    ".venv/lib/z.py": "import imaged\n",
    "lib/site-packages/w.py": "import imaged\n",
}

DISCOVERY = [
    pytest.param(["."], False, ["images.py"], id="folder"),
    pytest.param(["."], True, ["images.py", "sub/deeper/more.py", "sub/jobs.py"], id="recursive"),
    pytest.param(["other.py", "sub"], False, ["other.py", "sub/jobs.py"], id="file-and-folder"),
    pytest.param(["sub", "sub/jobs.py"], True, ["sub/deeper/more.py", "sub/jobs.py"], id="dedup"),
]


@pytest.mark.parametrize(("paths", "recursive", "expected"), DISCOVERY)
def test_discover_definition_files(
    tmp_path: Path, paths: list[str], recursive: bool, expected: list[str]
) -> None:
    for name, text in TREE.items():
        write(tmp_path, name, text)
    found = discover_definition_files([tmp_path / p for p in paths], recursive=recursive)
    assert found == [(tmp_path / e).resolve() for e in expected]


def test_discover_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="not found"):
        discover_definition_files([tmp_path / "nope"])


def test_result_from_another_imaged_version_is_a_definition_error(tmp_path: Path) -> None:
    fake = write(
        tmp_path,
        "fakepy",
        "#!/bin/sh\n"
        'echo \'{"ok": true, "images": {"a": {"imaged_spec": 99}}, "imported_files": []}\'\n',
    )
    fake.chmod(0o755)
    path = write(tmp_path, "images.py", HEADER)

    async def run() -> LoadedModule:
        return await load_module_in_child(path, python=str(fake))

    with pytest.raises(DefinitionError, match="unreadable loader result: unsupported spec"):
        anyio.run(run)


def test_the_loader_child_sees_no_secret_value_or_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_SECRET_TOKEN", "value-that-must-not-leak")
    monkeypatch.setenv("IMAGED_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("IMAGED_REGISTRY", "127.0.0.1:5000")
    dump = tmp_path / "env.json"
    text = f"import json, os\nopen({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
    load(write(tmp_path, "images.py", text + GOOD))
    seen = json.loads(dump.read_text())
    assert seen["IMAGED_REGISTRY"] == "127.0.0.1:5000"  # other settings still reach it
    assert not [k for k in seen if k.startswith("IMAGED_SECRET")]
    assert "value-that-must-not-leak" not in dump.read_text()


def test_load_target_selects_by_name_or_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "images.py", GOOD + "alias = worker\n")
    write(tmp_path, "job.py", "print(1)\n")
    assert list(load_target(str(path))) == ["api", "worker"]
    assert list(load_target(f"{path}:alias")) == ["worker"]
    with pytest.raises(DefinitionError, match=r"no image named 'nope' \(images: api, worker\)"):
        load_target(f"{path}:nope")
