"""Tests for imaged.spec.layers: secrets, env var checks, labels, inputs and the JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imaged.errors import SpecError
from imaged.spec.layers import (
    LAYER_KINDS,
    AptPackages,
    CodeBundle,
    Commands,
    Dockerignore,
    EnvVars,
    InstallMode,
    Layer,
    PipOptions,
    PipPackages,
    PoetryProject,
    Requirements,
    Secret,
    SourceFiles,
    SourceFolder,
    UvProject,
    UvScript,
    Workdir,
    check_env_vars,
    layer_from_json,
    layer_to_json,
    normalize_secrets,
)

P = Path("/abs/proj")
SECRETS = (Secret("token", group="gh", mount="/run/t", as_env_var="GH_TOKEN"), Secret("k"))
PIP = PipOptions(
    index_url="https://i/simple",
    extra_index_urls=("https://e",),
    pre=True,
    extra_args=("--no-deps",),
)

EVERY_LAYER: list[Layer] = [
    AptPackages(packages=("curl", "git"), secret_mounts=SECRETS),
    PipPackages(packages=("rich",), pip=PIP, secret_mounts=SECRETS),
    Requirements(file=P / "requirements.txt", pip=PIP),
    UvProject(
        pyproject=P / "pyproject.toml", uvlock=P / "uv.lock", mode="install_project", pip=PIP
    ),
    PoetryProject(
        pyproject=P / "pyproject.toml", poetry_lock=P / "poetry.lock", extra_args=("--only", "main")
    ),
    UvScript(script=P / "s.py", pip=PIP, secret_mounts=SECRETS),
    Commands(commands=("echo a", "echo b"), secret_mounts=SECRETS),
    EnvVars(env=(("A", "1 2"), ("B", "'\"$x\\"))),
    Workdir(path="/app"),
    SourceFolder(src=P / "src", dst="/app", copy_contents_only=True),
    SourceFiles(files=(P / "a.py", P / "b.py"), dst="/app"),
    CodeBundle(root=P, dst="/code"),
    Dockerignore(path=P / "extra.dockerignore"),
]


def test_every_kind_is_covered() -> None:
    assert {layer.kind for layer in EVERY_LAYER} == set(LAYER_KINDS)


@pytest.mark.parametrize("layer", [pytest.param(x, id=x.kind) for x in EVERY_LAYER])
def test_layer_json_round_trip(layer: Layer) -> None:
    data = layer_to_json(layer)
    text = json.dumps(data, sort_keys=True)
    back = layer_from_json(json.loads(text))
    assert back == layer
    assert type(back) is type(layer)
    assert json.dumps(layer_to_json(back), sort_keys=True) == text


def test_unknown_layer_kind() -> None:
    with pytest.raises(SpecError, match="unknown layer kind 'nope'"):
        layer_from_json({"kind": "nope"})


@pytest.mark.parametrize(
    ("layer", "category"),
    [
        pytest.param(AptPackages(), "recipe", id="apt"),
        pytest.param(Commands(), "recipe", id="commands"),
        pytest.param(UvScript(), "recipe", id="uv_script"),
        pytest.param(EnvVars(), "files", id="env"),
        pytest.param(SourceFolder(), "files", id="source_folder"),
        pytest.param(CodeBundle(), "files", id="code_bundle"),
    ],
)
def test_categories(layer: Layer, category: str) -> None:
    assert layer.category == category


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param("dependencies_only", (P / "pyproject.toml", P / "uv.lock"), id="deps"),
        pytest.param("install_project", (P / "pyproject.toml", P / "uv.lock", P), id="project"),
    ],
)
def test_uv_project_inputs(mode: InstallMode, expected: tuple[Path, ...]) -> None:
    layer = UvProject(pyproject=P / "pyproject.toml", uvlock=P / "uv.lock", mode=mode)
    assert layer.inputs().paths() == expected


@pytest.mark.parametrize(
    ("layer", "label"),
    [
        pytest.param(AptPackages(packages=("a", "b")), "apt_packages a b", id="apt"),
        pytest.param(Commands(commands=("x", "y", "z")), "commands x (+2)", id="commands"),
        pytest.param(SourceFolder(src=P / "src"), "source_folder src/", id="folder"),
        pytest.param(EnvVars(env=(("A", "1"), ("B", "2"))), "env_vars A B", id="env"),
    ],
)
def test_describe(layer: Layer, label: str) -> None:
    assert layer.describe() == label


@pytest.mark.parametrize(
    ("layer", "target"),
    [
        pytest.param(SourceFolder(src=P / "src", dst="/app"), "/app/src", id="into-dst"),
        pytest.param(
            SourceFolder(src=P / "src", dst="/app", copy_contents_only=True),
            "/app",
            id="contents-only",
        ),
        pytest.param(SourceFolder(src=P / "src"), "src", id="relative-dst"),
    ],
)
def test_source_folder_target(layer: SourceFolder, target: str) -> None:
    assert layer.target == target


# -- secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "sid", "env_name", "target"),
    [
        pytest.param(Secret("token"), "token", "TOKEN", "/run/secrets/token", id="plain"),
        pytest.param(
            Secret("token", group="github"),
            "github.token",
            "GITHUB_TOKEN",
            "/run/secrets/github.token",
            id="grouped",
        ),
        pytest.param(Secret("a b:c", mount="/etc/x"), "a_b_c", "A_B_C", "/etc/x", id="odd-key"),
        pytest.param(
            Secret("hf-token"), "hf-token", "HF_TOKEN", "/run/secrets/hf-token", id="dash"
        ),
        pytest.param(
            Secret("GITHUB_PAT", group="ci.v2"),
            "ci.v2.GITHUB_PAT",
            "CI_V2_GITHUB_PAT",
            "/run/secrets/ci.v2.GITHUB_PAT",
            id="dotted-group",
        ),
    ],
)
def test_secret_names(secret: Secret, sid: str, env_name: str, target: str) -> None:
    assert (secret.id, secret.env_name, secret.target) == (sid, env_name, target)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"key": ""}, id="empty-key"),
        pytest.param({"key": "k", "as_env_var": "1BAD"}, id="bad-env-var"),
        pytest.param({"key": "k", "mount": "relative/path"}, id="relative-mount"),
    ],
)
def test_secret_rejects(kwargs: dict[str, str]) -> None:
    with pytest.raises(SpecError):
        Secret(**kwargs)


# Each would read a file outside <secrets_dir> (or the folder itself) on the build host.
HOSTILE_NAMES = [
    pytest.param("/etc/hostname", id="absolute"),
    pytest.param("../../etc/hostname", id="dotdot-path"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\..\\..\\b", id="backslash"),
    pytest.param("tok\0en", id="nul"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_secret_key_must_be_one_file_name(name: str) -> None:
    with pytest.raises(SpecError, match="must be one file name under secrets_dir") as info:
        Secret(name, mount="/run/x")
    assert "group='github'" in str(info.value)  # says what to write instead


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_secret_group_must_be_one_file_name(name: str) -> None:
    with pytest.raises(SpecError, match=r"group .* must be one file name under secrets_dir"):
        Secret("x", group=name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, (), id="none"),
        pytest.param("tok", (Secret("tok"),), id="str"),
        pytest.param(Secret("tok", group="g"), (Secret("tok", group="g"),), id="secret"),
        pytest.param(["a", Secret("b")], (Secret("a"), Secret("b")), id="list"),
        pytest.param(("a",), (Secret("a"),), id="tuple"),
    ],
)
def test_normalize_secrets(value: object, expected: tuple[Secret, ...]) -> None:
    assert normalize_secrets(value, where="t") == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(5, id="int"),
        pytest.param(["ok", 5], id="int-in-list"),
        pytest.param([None], id="none-in-list"),
        pytest.param([["nested"]], id="nested-list"),
        pytest.param({"a": "b"}, id="dict"),
    ],
)
def test_normalize_secrets_rejects(value: object) -> None:
    with pytest.raises(TypeError, match="secret_mounts"):
        normalize_secrets(value, where="t")


# -- env vars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [pytest.param(1, id="int"), pytest.param(None, id="none"), pytest.param(b"x", id="bytes")],
)
def test_env_var_non_str_value(value: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        check_env_vars({"A": value})


def test_env_var_names_and_values_are_left_to_imaged_checks() -> None:
    """Names and line breaks are refused by imaged.spec.checks, which names the image too."""
    assert check_env_vars({"1A": "x\ny"}) == (("1A", "x\ny"),)
    with pytest.raises(TypeError, match="name must be a str"):
        check_env_vars({1: "v"})


def test_env_vars_keep_order_and_values() -> None:
    env = {"_Z": "a b", "A1": "'\"$HOME\\n", "E": ""}
    assert check_env_vars(env) == (("_Z", "a b"), ("A1", "'\"$HOME\\n"), ("E", ""))


def test_env_vars_need_a_dict() -> None:
    with pytest.raises(TypeError, match="dict"):
        check_env_vars([("A", "1")])


def test_secrets_property() -> None:
    assert Commands(commands=("x",), secret_mounts=SECRETS).secrets == SECRETS
    assert EnvVars().secrets == ()
