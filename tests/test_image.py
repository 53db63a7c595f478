"""Tests for imaged.spec.image: constructors, immutable with_* layers, path resolution, JSON, validate."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from imaged import Image, Secret
from imaged.errors import MissingPathError, ScriptHeaderError, SpecError
from imaged.spec.image import DebianBase, DockerfileBase, ParentBase, RefBase
from imaged.spec.layers import (
    INSTALL_MODES,
    LAYER_KINDS,
    CodeBundle,
    EnvVars,
    PipOptions,
    PipPackages,
    Requirements,
    SourceFolder,
    UvProject,
    UvScript,
)
from imaged.spec.pep723 import read_script_metadata

With = Callable[[Image], Image]

SCRIPT = textwrap.dedent("""\
    # /// script
    # requires-python = ">=3.11"
    # dependencies = ["rich>=13", "httpx"]
    # ///
    print("hello")
""")

# Every with_* method, with arguments that need no files at spec time.
WITH_CALLS = [
    pytest.param(lambda i: i.with_apt_packages("curl", "git"), "apt_packages", id="apt"),
    pytest.param(lambda i: i.with_pip_packages("rich", pre=True), "pip_packages", id="pip"),
    pytest.param(lambda i: i.with_requirements("/x/requirements.txt"), "requirements", id="req"),
    pytest.param(lambda i: i.with_env_vars({"A": "1"}), "env_vars", id="env"),
    pytest.param(lambda i: i.with_commands("echo hi"), "commands", id="commands"),
    pytest.param(lambda i: i.with_workdir("/app"), "workdir", id="workdir"),
    pytest.param(lambda i: i.with_source_folder("/x/src"), "source_folder", id="folder"),
    pytest.param(lambda i: i.with_source_file("/x/a.py"), "source_files", id="file"),
    pytest.param(lambda i: i.with_code_bundle(), "code_bundle", id="bundle"),
    pytest.param(lambda i: i.with_dockerignore("/x/.ignore"), "dockerignore", id="dockerignore"),
    pytest.param(lambda i: i.with_uv_project("/x/pyproject.toml"), "uv_project", id="uv"),
    pytest.param(
        lambda i: i.with_poetry_project("/x/pyproject.toml"), "poetry_project", id="poetry"
    ),
]

DEFINITIONS = textwrap.dedent("""\
    from imaged import Image, Secret

    REG = "127.0.0.1:5000"
    PIP = dict(index_url="https://idx/simple", extra_index_urls=["https://extra/simple"],
               pre=True, extra_args=["--no-deps", "--verbose"])
    base = Image.from_debian_base(python_version=(3, 11), registry=REG, name="every")
    every = (
        base.with_apt_packages("curl", "git", secret_mounts="apt_token")
        .with_pip_packages("rich", "httpx", secret_mounts=[Secret("tok", group="pypi",
                           as_env_var="PIP_TOKEN"), "other"], **PIP)
        .with_requirements("requirements.txt", **PIP)
        .with_uv_project("pyproject.toml", **PIP)
        .with_uv_project("pyproject.toml", "uv.lock", secret_mounts="u",
                         project_install_mode="install_project")
        .with_poetry_project("pyproject.toml", extra_args=["--only", "main"],
                             project_install_mode="install_project")
        .with_commands(["echo a", "echo b"], secret_mounts=Secret("k", mount="/run/k"))
        .with_env_vars({"A": "x y", "B": "'\\"$HOME\\\\n", "C": ""})
        .with_workdir("/app")
        .with_source_folder("src", "/app")
        .with_source_folder("src", "/flat", copy_contents_only=True)
        .with_source_file(["a.py", "b.py"], "/app")
        .with_code_bundle("all", "/code")
        .with_dockerignore("extra.dockerignore")
    )
    script = Image.from_uv_script("script.py", name="script", registry=REG, **PIP)
    ref = Image.from_base("127.0.0.1:5000/base:1").with_commands("true").clone(name="ref")
    parent = Image.from_base(every).with_commands("true").clone(name="child", registry=REG)
    docker = Image.from_dockerfile("docker/Dockerfile", REG, "df")
""")

PROJECT_FILES = {
    "pyproject.toml": '[project]\nname = "p"\nversion = "0"\n',
    "uv.lock": "version = 1\n",
    "poetry.lock": "# lock\n",
    "requirements.txt": "rich\n",
    "src/app.py": "print(1)\n",
    "a.py": "A = 1\n",
    "b.py": "B = 1\n",
    "script.py": SCRIPT,
    "extra.dockerignore": "*.tmp\n",
    "docker/Dockerfile": "FROM scratch\nCOPY f /f\n",
    "docker/f": "f\n",
}


@pytest.fixture(autouse=True)
def isolated(isolated_settings: Path) -> Path:
    """No IMAGED_* settings leak in; the cwd is an empty folder with no config."""
    return isolated_settings


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def load_module(path: Path, name: str) -> ModuleType:
    """Import a definition file the way a loader would, without touching sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write_tree(root, {**PROJECT_FILES, "defs.py": DEFINITIONS})
    return root


@pytest.fixture
def defs(project: Path) -> ModuleType:
    return load_module(project / "defs.py", "imaged_test_defs")


def ref_image() -> Image:
    return Image.from_base("127.0.0.1:5000/base:1").clone(name="app", registry="127.0.0.1:5000")


# -- construction and immutability ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((), {}, id="no-args"),
        pytest.param(("python:3.11",), {}, id="positional"),
        pytest.param((), {"name": "x"}, id="keyword"),
    ],
)
def test_direct_construction_points_to_constructors(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError, match=r"Image\.from_debian_base\(\).*from_dockerfile"):
        Image(*args, **kwargs)


def test_image_is_immutable() -> None:
    img = ref_image().with_commands("true")
    with pytest.raises(AttributeError, match="immutable"):
        img.name = "other"
    with pytest.raises(AttributeError, match="immutable"):
        img.layers = ()
    with pytest.raises(AttributeError, match="immutable"):
        del img.name
    with pytest.raises(AttributeError):
        img.new_attribute = 1
    assert img.name == "app"


@pytest.mark.parametrize(("call", "kind"), WITH_CALLS)
def test_with_returns_new_image_and_leaves_receiver(call: With, kind: str) -> None:
    base = ref_image().with_workdir("/w")
    before = base.dumps()
    result = call(base)
    assert result is not base
    assert base.dumps() == before
    assert len(base.layers) == 1
    assert result.layers[:1] == base.layers
    assert [layer.kind for layer in result.layers[1:]] == [kind]
    assert (result.name, result.registry, result.base) == (base.name, base.registry, base.base)


# -- from_debian_base -------------------------------------------------------------------


def test_debian_default_python_is_running_interpreter() -> None:
    img = Image.from_debian_base(name="x")
    assert img.python_version == sys.version_info[:2]
    assert isinstance(img.base, DebianBase)
    major, minor = sys.version_info[:2]
    assert img.base.ref == f"python:{major}.{minor}-slim-bookworm"


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("3.11", id="str"),
        pytest.param((3,), id="one-tuple"),
        pytest.param((3, "11"), id="str-minor"),
        pytest.param((True, 1), id="bool"),
        pytest.param(3.11, id="float"),
        pytest.param([3, 11], id="list"),
        pytest.param((3, 11, 2), id="three-tuple"),
    ],
)
def test_debian_bad_python_version(version: object) -> None:
    with pytest.raises(TypeError, match="python_version"):
        Image.from_debian_base(python_version=version, name="x")  # type: ignore[arg-type]


def test_debian_base_env_template_changes_ref_and_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    default = Image.from_debian_base(python_version=(3, 11), name="x")
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", "127.0.0.1:5000/python:{major}.{minor}-slim-bookworm")
    mirrored = Image.from_debian_base(python_version=(3, 11), name="x")
    assert isinstance(mirrored.base, DebianBase)
    assert mirrored.base.ref == "127.0.0.1:5000/python:3.11-slim-bookworm"
    assert mirrored.digest != default.digest


def test_debian_base_from_the_config_beside_the_definitions_and_env_wins(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = isolated.parent / "project"
    project.mkdir()
    (project / "imaged.toml").write_text('debian_base = "file.local/py:{major}.{minor}"\n')
    (project / "defs.py").write_text(
        "from imaged import Image\nimg = Image.from_debian_base(python_version=(3, 12), name='x')\n"
    )
    from_file = load_module(project / "defs.py", "defs_cfg_a").img
    assert from_file.base_label == "file.local/py:3.12"
    # A config in the current directory does not change what the definitions mean.
    (isolated / "imaged.toml").write_text('debian_base = "cwd.local/py:{major}.{minor}"\n')
    assert load_module(project / "defs.py", "defs_cfg_b").img.digest == from_file.digest
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", "env.local/py:{major}{minor}")
    from_env = load_module(project / "defs.py", "defs_cfg_c").img
    assert from_env.base_label == "env.local/py:312"
    assert from_env.digest != from_file.digest


def test_an_explicit_config_file_reaches_the_definitions(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = isolated / "ci.toml"
    config.write_text('debian_base = "ci.local/py:{major}.{minor}"\n')
    monkeypatch.setenv("IMAGED_CONFIG", str(config))
    assert Image.from_debian_base(python_version=(3, 11), name="x").base_label == "ci.local/py:3.11"


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        pytest.param(None, ("linux/amd64",), id="default"),
        pytest.param("linux/arm64", ("linux/arm64",), id="str"),
        pytest.param(["linux/amd64", "linux/arm64"], ("linux/amd64", "linux/arm64"), id="list"),
    ],
)
def test_platform(platform: str | list[str] | None, expected: tuple[str, ...]) -> None:
    assert Image.from_debian_base(name="x", platform=platform).platform == expected


@pytest.mark.parametrize(
    "platform", [pytest.param("amd64", id="no-slash"), pytest.param([1], id="int")]
)
def test_bad_platform(platform: object) -> None:
    with pytest.raises(TypeError, match="platform"):
        Image.from_debian_base(name="x", platform=platform)  # type: ignore[arg-type]


def test_platform_is_in_the_digest() -> None:
    amd = Image.from_base("r:1", platform="linux/amd64").clone(name="x")
    arm = Image.from_base("r:1", platform="linux/arm64").clone(name="x")
    assert amd.digest != arm.digest


# -- from_base --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [pytest.param("", id="empty"), pytest.param("  ", id="blank"), pytest.param(3, id="int")],
)
def test_from_base_rejects(value: object) -> None:
    with pytest.raises(TypeError, match="from_base"):
        Image.from_base(value)  # type: ignore[arg-type]


def test_from_base_parent_inherits_platform_and_python() -> None:
    parent = Image.from_debian_base(python_version=(3, 12), name="p", platform="linux/arm64")
    child = Image.from_base(parent)
    assert isinstance(child.base, ParentBase)
    assert child.platform == ("linux/arm64",)
    assert child.python_version == (3, 12)
    assert child.base_label == "image p"
    assert Image.from_base("r:1").python_version is None


def test_parent_digest_moves_child_digest() -> None:
    parent = Image.from_base("r:1").clone(name="p")
    child = Image.from_base(parent).clone(name="c")
    moved = Image.from_base(parent.with_commands("x")).clone(name="c")
    assert child.digest != moved.digest


# -- from_dockerfile --------------------------------------------------------------------


@pytest.mark.parametrize(("call", "kind"), WITH_CALLS)
def test_dockerfile_image_is_not_extendable(tmp_path: Path, call: With, kind: str) -> None:
    dockerfile = tmp_path / "Dockerfile"
    img = Image.from_dockerfile(dockerfile, "reg", "df")
    with pytest.raises(ValueError, match="Dockerfile") as info:
        call(img)
    assert str(dockerfile) in str(info.value)


def test_dockerfile_base_paths(tmp_path: Path) -> None:
    img = Image.from_dockerfile(str(tmp_path / "d" / "Dockerfile"), None, "df")
    assert img.base == DockerfileBase(
        dockerfile=tmp_path / "d" / "Dockerfile", context=tmp_path / "d"
    )
    assert img.extendable is False
    assert img.python_version is None


# -- from_uv_script ---------------------------------------------------------------------


def test_uv_script_layer(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    img = Image.from_uv_script(script, name="s", python_version=(3, 12), secret_mounts="tok")
    assert img.python_version == (3, 12)
    assert [type(layer) for layer in img.layers] == [UvScript]
    layer = img.layers[0]
    assert isinstance(layer, UvScript)
    assert layer.script == script
    assert layer.secret_mounts == (Secret("tok"),)
    assert read_script_metadata(layer.script).dependencies == ("rich>=13", "httpx")
    assert img.extendable
    assert img.with_apt_packages("git").layers[0] == layer


def test_uv_script_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text('# /// script\n# dependencies = ["rich"\n# ///\nprint(1)\n')
    with pytest.raises(ScriptHeaderError) as info:
        Image.from_uv_script(script, name="bad")
    assert info.value.file == str(script)
    assert info.value.line is not None
    assert info.value.line >= 2
    assert f"{script}:{info.value.line}" in str(info.value)


# -- argument checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda i: i.with_pip_packages(["a", "b"]), id="pip-list"),
        pytest.param(lambda i: i.with_pip_packages(("a", "b")), id="pip-tuple"),
        pytest.param(lambda i: i.with_pip_packages("x", {"a"}), id="pip-set"),
        pytest.param(lambda i: i.with_apt_packages(["a", "b"]), id="apt-list"),
    ],
)
def test_packages_as_one_list_argument(call: With) -> None:
    with pytest.raises(TypeError, match="pass items as separate arguments"):
        call(ref_image())


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(lambda i: i.with_pip_packages(), SpecError, id="pip-none"),
        pytest.param(lambda i: i.with_apt_packages(), SpecError, id="apt-none"),
        pytest.param(lambda i: i.with_pip_packages(""), TypeError, id="pip-empty"),
        pytest.param(lambda i: i.with_apt_packages(3), TypeError, id="apt-int"),
        pytest.param(lambda i: i.with_commands([]), SpecError, id="commands-none"),
        pytest.param(lambda i: i.with_commands(["ok", " "]), SpecError, id="commands-blank"),
        pytest.param(lambda i: i.with_source_file([]), SpecError, id="source-file-none"),
        pytest.param(lambda i: i.with_source_folder("/x", dst=""), TypeError, id="empty-dst"),
        pytest.param(lambda i: i.with_source_folder(3), TypeError, id="path-int"),
        pytest.param(
            lambda i: i.with_uv_project("/p.toml", project_install_mode="all"),
            SpecError,
            id="bad-mode",
        ),
        pytest.param(lambda i: i.with_env_vars([("A", "1")]), TypeError, id="env-not-dict"),
    ],
)
def test_bad_arguments(call: With, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(ref_image())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("requirements.in", id="in"),
        pytest.param("requirements", id="no-suffix"),
        pytest.param("pyproject.toml", id="toml"),
        pytest.param("req.txt.bak", id="bak"),
    ],
)
def test_requirements_must_be_txt(name: str) -> None:
    with pytest.raises(SpecError, match=r"\.txt") as info:
        ref_image().with_requirements(f"/x/{name}")
    assert info.value.layer == "requirements"
    assert info.value.image == "app"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("1A", id="leading-digit"),
        pytest.param("A-B", id="dash"),
        pytest.param("", id="empty"),
        pytest.param("A B", id="space"),
    ],
)
def test_env_vars_bad_names(name: str) -> None:
    with pytest.raises(SpecError, match="environment variable name"):
        ref_image().with_env_vars({name: "v"})


@pytest.mark.parametrize(
    "value",
    [pytest.param(1, id="int"), pytest.param(None, id="none"), pytest.param(["x"], id="list")],
)
def test_env_vars_non_str_values(value: object) -> None:
    with pytest.raises(TypeError):
        ref_image().with_env_vars({"A": value})  # type: ignore[dict-item]


def test_env_var_values_are_kept_exactly() -> None:
    env = {
        "SPACES": "  a  b  ",
        "QUOTES": 'it\'s "quoted"',
        "DOLLAR": "$HOME ${PATH} $$",
        "BACKSLASH": "C:\\dir\\n \\",
        "TAB": "a\tb",
        "EMPTY": "",
    }
    img = ref_image().with_env_vars(env)
    back = Image.loads(img.dumps())
    layer = back.layers[0]
    assert isinstance(layer, EnvVars)
    assert dict(layer.env) == env
    assert [k for k, _ in layer.env] == list(env)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a\nb", id="newline"),
        pytest.param("a\rb", id="cr"),
        pytest.param("a\x00b", id="nul"),
    ],
)
def test_env_var_values_that_a_dockerfile_cannot_hold_are_refused(value: str) -> None:
    with pytest.raises(SpecError, match="line break or NUL") as info:
        ref_image().with_env_vars({"X": value})
    assert info.value.layer == "#1 env_vars"


def test_source_file_basename_collision() -> None:
    with pytest.raises(ValueError, match="collide") as info:
        ref_image().with_source_file(["/a/x.py", "/b/x.py", "/c/y.py"], "/app")
    assert "x.py" in str(info.value)
    assert "y.py" not in str(info.value)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("app", id="relative"),
        pytest.param("./app", id="dot"),
        pytest.param("", id="empty"),
    ],
)
def test_workdir_must_be_absolute(path: str) -> None:
    with pytest.raises(SpecError, match="absolute"):
        ref_image().with_workdir(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("tok", (Secret("tok"),), id="str"),
        pytest.param(Secret("tok", group="g"), (Secret("tok", group="g"),), id="secret"),
        pytest.param(
            ["a", Secret("b", as_env_var="B")],
            (Secret("a"), Secret("b", as_env_var="B")),
            id="list",
        ),
        pytest.param(None, (), id="none"),
    ],
)
@pytest.mark.parametrize(
    "method",
    [
        pytest.param(lambda i, s: i.with_apt_packages("x", secret_mounts=s), id="apt"),
        pytest.param(lambda i, s: i.with_pip_packages("x", secret_mounts=s), id="pip"),
        pytest.param(lambda i, s: i.with_commands("x", secret_mounts=s), id="commands"),
        pytest.param(lambda i, s: i.with_requirements("/r.txt", secret_mounts=s), id="req"),
        pytest.param(lambda i, s: i.with_uv_project("/p.toml", secret_mounts=s), id="uv"),
        pytest.param(lambda i, s: i.with_poetry_project("/p.toml", secret_mounts=s), id="poetry"),
    ],
)
def test_secret_mounts_accepts(
    method: Callable[[Image, object], Image], value: object, expected: tuple[Secret, ...]
) -> None:
    assert method(ref_image(), value).layers[-1].secrets == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(5, id="int"),
        pytest.param(["ok", 5], id="int-in-list"),
        pytest.param([["a"]], id="nested"),
    ],
)
def test_secret_mounts_rejects(value: object) -> None:
    with pytest.raises(TypeError, match="secret_mounts"):
        ref_image().with_commands("x", secret_mounts=value)  # type: ignore[arg-type]


# -- relative paths ---------------------------------------------------------------------


def test_relative_paths_resolve_against_defining_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "defs"
    write_tree(root, {"src/m.py": "x = 1\n", "requirements.txt": "rich\n"})
    (root / "images.py").write_text(
        "from imaged import Image\n"
        "img = Image.from_base('r:1').clone(name='rel')"
        ".with_source_folder('src').with_requirements('./requirements.txt')\n"
    )
    digests = []
    for cwd in (tmp_path / "one", tmp_path / "two" / "deeper"):
        cwd.mkdir(parents=True)
        write_tree(cwd, {"src/other.py": "different\n", "requirements.txt": "other\n"})
        monkeypatch.chdir(cwd)
        img = load_module(root / "images.py", "imaged_test_relative").img
        folder, req = img.layers
        assert isinstance(folder, SourceFolder)
        assert isinstance(req, Requirements)
        assert folder.src == root / "src"
        assert req.file == root / "requirements.txt"
        assert img.source_file == str(root / "images.py")
        digests.append(img.digest)
    assert digests[0] == digests[1]


def test_code_bundle_root_is_nearest_pyproject(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_tree(
        root,
        {
            "pyproject.toml": "",
            "pkg/deploy/images.py": (
                "from imaged import Image\nimg = Image.from_base('r:1').with_code_bundle('all', '/code')\n"
            ),
        },
    )
    img = load_module(root / "pkg/deploy/images.py", "imaged_test_bundle").img
    assert img.layers[0] == CodeBundle(root=root, dst="/code")


# -- JSON -------------------------------------------------------------------------------


IMAGE_NAMES = ["every", "script", "ref", "parent", "docker", "base"]


@pytest.mark.parametrize("attr", [pytest.param(n, id=n) for n in IMAGE_NAMES])
def test_json_round_trip(defs: ModuleType, attr: str) -> None:
    img: Image = getattr(defs, attr)
    text = img.dumps()
    back = Image.loads(text)
    assert back == img
    assert hash(back) == hash(img)
    assert back.dumps() == text
    assert json.loads(json.dumps(img.to_json())) == img.to_json()
    assert back.digest == img.digest
    assert [d.digest for d in back.layer_digests] == [d.digest for d in img.layer_digests]


def test_every_kind_and_base_is_in_the_round_trip(defs: ModuleType) -> None:
    kinds = {layer.kind for name in IMAGE_NAMES for layer in getattr(defs, name).layers}
    assert kinds == set(LAYER_KINDS)
    bases = {type(getattr(defs, name).base) for name in IMAGE_NAMES}
    assert bases == {DebianBase, RefBase, ParentBase, DockerfileBase}
    modes = {layer.mode for layer in defs.every.layers if isinstance(layer, UvProject)}
    assert modes == set(INSTALL_MODES)
    pip = next(x for x in defs.every.layers if isinstance(x, PipPackages)).pip
    assert pip == PipOptions(
        "https://idx/simple", ("https://extra/simple",), True, ("--no-deps", "--verbose")
    )


def test_from_json_rejects_other_versions(defs: ModuleType) -> None:
    data = defs.every.to_json()
    data["imaged_spec"] = 99
    with pytest.raises(SpecError, match="unsupported spec version 99"):
        Image.from_json(data)


def test_from_json_rejects_unknown_base() -> None:
    data = ref_image().to_json()
    data["base"] = {"kind": "nix"}
    with pytest.raises(SpecError, match="unknown base kind"):
        Image.from_json(data)


# -- validate ---------------------------------------------------------------------------


def test_validate_passes_on_complete_project(defs: ModuleType) -> None:
    for name in IMAGE_NAMES:
        img: Image = getattr(defs, name)
        assert img.validate() is img


@pytest.mark.parametrize(
    ("rel", "make", "call", "label", "what"),
    [
        pytest.param(
            "nope.txt",
            None,
            lambda i, p: i.with_requirements(p),
            "#2 requirements",
            "does not exist",
            id="missing-file",
        ),
        pytest.param(
            "nope",
            None,
            lambda i, p: i.with_source_folder(p),
            "#2 source_folder",
            "does not exist",
            id="missing-folder",
        ),
        pytest.param(
            "dir.txt",
            "dir",
            lambda i, p: i.with_requirements(p),
            "#2 requirements",
            "is not a file",
            id="folder-not-file",
        ),
        pytest.param(
            "file",
            "file",
            lambda i, p: i.with_source_folder(p),
            "#2 source_folder",
            "is not a folder",
            id="file-not-folder",
        ),
        pytest.param(
            "file",
            "file",
            lambda i, p: i.with_uv_project(p / "pyproject.toml"),
            "#2 uv_project",
            "does not exist",
            id="uv-under-file",
        ),
        pytest.param(
            "gone.py",
            None,
            lambda i, p: i.with_source_file([p]),
            "#2 source_files",
            "does not exist",
            id="source-file",
        ),
    ],
)
def test_validate_names_path_and_layer(
    tmp_path: Path,
    rel: str,
    make: str | None,
    call: Callable[[Image, Path], Image],
    label: str,
    what: str,
) -> None:
    path = tmp_path / rel
    if make == "dir":
        path.mkdir()
    elif make == "file":
        path.write_text("x")
    img = call(ref_image().with_workdir("/w"), path)
    with pytest.raises(MissingPathError, match=what) as info:
        img.validate()
    message = str(info.value)
    assert str(path) in message
    assert path.is_absolute()
    assert label in message
    assert "'app'" in message


def test_validate_missing_dockerfile(tmp_path: Path) -> None:
    img = Image.from_dockerfile(tmp_path / "Dockerfile", None, "df")
    with pytest.raises(MissingPathError, match="from_dockerfile") as info:
        img.validate()
    assert str(tmp_path / "Dockerfile") in str(info.value)


def test_validate_checks_parent(tmp_path: Path) -> None:
    parent = ref_image().with_source_folder(tmp_path / "missing")
    with pytest.raises(MissingPathError, match="missing"):
        Image.from_base(parent).validate()


# -- names, tags, clone -----------------------------------------------------------------


def test_clone_keeps_layers_and_digest(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x")
    img = ref_image().with_source_folder(tmp_path / "src").with_pip_packages("rich")
    clone = img.clone(name="other", registry="reg.example:5000/team")
    assert clone.layers == img.layers
    assert clone.base == img.base
    assert clone.digest == img.digest
    assert clone.uri == f"reg.example:5000/team/other:{img.tag}"
    assert img.uri == f"127.0.0.1:5000/app:{img.tag}"
    assert clone != img


def test_tag_digest_uri_shapes() -> None:
    img = ref_image().with_pip_packages("rich")
    assert img.digest.startswith("sha256:")
    assert len(img.digest) == len("sha256:") + 64
    assert len(img.tag) >= 32
    assert set(img.tag) <= set("0123456789abcdef")
    assert img.digest.removeprefix("sha256:").startswith(img.tag)
    assert img.uri == f"127.0.0.1:5000/app:{img.tag}"
    assert img.clone(registry="").uri == f"app:{img.tag}"


def test_uri_needs_a_name() -> None:
    with pytest.raises(SpecError, match="no name"):
        _ = Image.from_base("r:1").uri


def test_answers_are_not_cached(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("rich\n")
    img = ref_image().with_requirements(req)
    first = (img.digest, img.tag, img.uri)
    req.write_text("httpx\n")
    second = (img.digest, img.tag, img.uri)
    assert all(a != b for a, b in zip(first, second, strict=True))
    req.write_text("rich\n")
    assert (img.digest, img.tag, img.uri) == first


def test_repr_and_labels(tmp_path: Path) -> None:
    img = ref_image().with_pip_packages("rich", "httpx").with_workdir("/w")
    assert repr(img) == "<Image app from 127.0.0.1:5000/base:1: [pip_packages, workdir]>"
    assert img.layer_label(0) == "#1 pip_packages rich httpx"
    assert img.layer_label(1) == "#2 workdir /w"


def test_override_registry_moves_the_parent_chain_too() -> None:
    from imaged.render.dockerfile import base_reference
    from imaged.spec.image import ParentBase, override_registry

    parent = Image.from_base("debian:12").clone(name="parent", registry="a.example:5000")
    child = Image.from_base(parent).clone(name="child", registry="a.example:5000")
    moved = override_registry(child, "127.0.0.1:5000")
    assert moved.registry == "127.0.0.1:5000"
    assert isinstance(moved.base, ParentBase)
    assert moved.base.image.registry == "127.0.0.1:5000"
    assert base_reference(moved).startswith("127.0.0.1:5000/parent:")
    assert moved.digest == child.digest
    assert override_registry(child, None) is child


@pytest.mark.parametrize(
    ("define", "layer", "value"),
    [
        pytest.param(lambda i, p: i.with_workdir("/srv/$APP"), "workdir", "/srv/$APP", id="wd"),
        pytest.param(lambda i, p: i.with_workdir("/x/${HOME}"), "workdir", "/x/${HOME}", id="wd-b"),
        pytest.param(
            lambda i, p: i.with_source_folder(p, "/opt/$APP"),
            "source_folder",
            "/opt/$APP",
            id="folder",
        ),
        pytest.param(lambda i, p: i.with_workdir("/q'a'b"), "workdir", "/q'a'b", id="quote"),
        pytest.param(lambda i, p: i.with_workdir('/d"q'), "workdir", '/d"q', id="dquote"),
        pytest.param(lambda i, p: i.with_workdir("/bs\\x"), "workdir", "/bs\\x", id="bslash"),
        pytest.param(
            lambda i, p: i.with_source_file(p / "f.txt", "/c'q'd/"),
            "source_files",
            "/c'q'd/",
            id="dst-quote",
        ),
        pytest.param(
            lambda i, p: i.with_source_folder(p / "$APP", "/opt"),
            "source_folder",
            "$APP",
            id="folder-name",
        ),
        pytest.param(
            lambda i, p: i.with_source_file(p / "f.txt", "$HOME/"),
            "source_files",
            "$HOME/",
            id="file",
        ),
        pytest.param(
            lambda i, p: i.with_code_bundle("all", dst="/code/$V"),
            "code_bundle",
            "/code/$V",
            id="bundle",
        ),
    ],
)
def test_a_dollar_quote_or_backslash_in_a_workdir_or_destination_is_refused(
    tmp_path: Path, define: Any, layer: str, value: str
) -> None:
    """A Dockerfile expands ``$VAR`` in WORKDIR and COPY from ENV and removes quotes and
    backslashes (BuildKit made ``/q'a'b`` as ``/qab``); the fast path writes paths
    literally: both would differ, so the definition is refused, naming the value."""
    (tmp_path / "f.txt").write_text("x\\n")
    (tmp_path / "$APP").mkdir()
    with pytest.raises(SpecError) as info:
        define(ref_image(), tmp_path)
    assert info.value.layer is not None
    assert info.value.layer.endswith(f" {layer}")
    assert info.value.image == ref_image().name
    special = next(c for c in value if c in "$'\"\\")
    assert f"{value!r} has a {special!r}" in str(info.value)
    assert "imaged takes paths literally" in str(info.value)
