"""End to end: build with the real engine and BuildKit, push, pull back and run the image."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_support import (
    DATA,
    ArgvWatcher,
    ProbeSpec,
    RefusingBuilder,
    docker,
    image_config,
    probe_image,
    pull_fresh,
    run_id,
    saved_blobs,
    set_build_env,
    skopeo_inspect,
    write_tree,
)

from imaged import Image, Secret, build
from imaged.cli.main import main as cli_main
from imaged.definitions.loader import load_definitions
from imaged.digest.image_digest import hash_image
from imaged.errors import BuildError, RegistryAuthError, RegistryUnavailable, SecretError

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

RUN = run_id()
ENV_VARS = {
    "APP_SPACES": "hello big  world",
    "APP_DQUOTE": 'say "hi" twice',
    "APP_SQUOTE": "it's 'quoted'",
    "APP_DOLLAR": "$HOME/x ${PATH} $(id)",
    "APP_BACKSLASH": "C:\\temp\\new\\ end\\",
    "APP_MIXED": 'a \'b\' "c" $d \\e \\"f',
}
SRC = "/srv/appsrc"
SOURCE_FILES = {
    "run.sh": ("#!/bin/sh\necho run\n", 0o700),
    "tool": ("#!/bin/sh\necho tool\n", 0o775),
    "data.txt": ("data\n", 0o600),
    "group.txt": ("group\n", 0o664),
    "pkg/mod.py": ("X = 1\n", 0o644),
    "pkg/__pycache__/mod.cpython-311.pyc": ("not really bytecode", 0o644),
    "secret-notes.txt": ("ignored by the folder's .dockerignore\n", 0o644),
    "notes.bak": ("ignored by with_dockerignore\n", 0o644),
    ".dockerignore": ("secret-notes.txt\n", 0o644),
}


def locked_version(lockfile: Path, name: str) -> str:
    """The version a uv.lock or poetry.lock pins ``name`` to."""
    data = tomllib.loads(lockfile.read_text())
    return str(next(p["version"] for p in data["package"] if p["name"] == name))


UV_LOCKED = locked_version(DATA / "uvproj" / "uv.lock", "iniconfig")
POETRY_LOCKED = locked_version(DATA / "poetryproj" / "poetry.lock", "six")


@pytest.fixture(scope="module")
def module_env(infra: Any) -> Iterator[None]:
    """The settings every build here needs: local base, host CA bundle, docker CLI."""
    with pytest.MonkeyPatch.context() as mp:
        set_build_env(mp, infra)
        yield


@pytest.fixture(autouse=True)
def _env(module_env: None) -> None:
    """Every test of this module runs with :func:`module_env`."""


def tiny(infra: Any, name: str, *, registry: str | None, marker: str = "tiny") -> Image:
    """A fast image: the base plus one command writing ``/marker``."""
    image = Image.from_base(infra.debian_base).clone(name=f"e2e-{name}-{RUN}")
    if registry is not None:
        image = image.clone(registry=registry)
    return image.with_commands(f"echo {marker} > /marker")


# -- one image with most layer kinds, built once --------------------------------------


@pytest.fixture(scope="module")
def kitchen(infra: Any, module_env: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build apt, pip, requirements, uv (install_project), poetry (deps only), env, workdir,
    commands, source folder and file layers; push, drop the local copy, pull it back."""
    tmp = tmp_path_factory.mktemp("kitchen")
    src = write_tree(tmp / "appsrc", SOURCE_FILES)
    (src / "pkg").chmod(0o700)
    (tmp / "extra.ignore").write_text("appsrc/*.bak\n")  # from its own folder, as Docker
    (tmp / "extra.cfg").write_text("extra=1\n")
    image = (
        Image.from_debian_base(
            python_version=(3, 11), registry=infra.registry, name=f"e2e-kitchen-{RUN}"
        )
        .with_apt_packages("jq")
        .with_pip_packages("tomli==2.0.1")
        .with_requirements(DATA / "requirements.txt")
        .with_uv_project(DATA / "uvproj" / "pyproject.toml", project_install_mode="install_project")
        .with_poetry_project(DATA / "poetryproj" / "pyproject.toml")
        .with_env_vars(ENV_VARS)
        .with_workdir("/srv/work")
        .with_commands(
            [
                "mkdir -p /srv/out",
                "echo ran > /srv/out/marker",
                'printf "%s" "$APP_DOLLAR" > /srv/out/env-at-build',
                "pwd > /srv/out/pwd",
            ]
        )
        .with_dockerignore(tmp / "extra.ignore")
        .with_source_folder(src, "/srv")
        .with_source_file(tmp / "extra.cfg", "/etc/app")
    )
    result = build(image)
    assert (result.status, result.skipped, result.pushed) == ("pushed", False, True)
    pull_fresh(infra.docker_cli, result.uri)
    return result.uri


@pytest.fixture(scope="module")
def kitchen_facts(infra: Any, kitchen: str) -> dict[str, Any]:
    paths = [f"{SRC}/{p}" for p in SOURCE_FILES] + [SRC, f"{SRC}/pkg", f"{SRC}/pkg/__pycache__"]
    spec = ProbeSpec(
        dists=["tomli", "idna", "iniconfig", "uvdemo", "six", "poetrydemo"],
        modules=["tomli", "idna", "iniconfig", "uvdemo", "six", "poetrydemo"],
        paths=[*paths, "/etc/app/extra.cfg"],
        texts=["/srv/out/marker", "/srv/out/env-at-build", "/srv/out/pwd", "/etc/app/extra.cfg"],
        commands=[["jq", "-n", "[1,2] | add"]],
    )
    return probe_image(infra.docker_cli, kitchen, spec)


def test_apt_package_binary_runs(kitchen_facts: dict[str, Any]) -> None:
    assert kitchen_facts["outputs"] == ["3"]


@pytest.mark.parametrize(
    ("dist", "version"),
    [
        pytest.param("tomli", "2.0.1", id="pip-package"),
        pytest.param("idna", "3.7", id="requirements-file"),
        pytest.param("iniconfig", UV_LOCKED, id="uv-project-locked-dependency"),
        pytest.param("uvdemo", "0.1.0", id="uv-project-itself-install_project"),
        pytest.param("six", POETRY_LOCKED, id="poetry-project-locked-dependency"),
    ],
)
def test_python_packages_installed(kitchen_facts: dict[str, Any], dist: str, version: str) -> None:
    assert kitchen_facts["versions"][dist] == version
    assert kitchen_facts["importable"][dist]


def test_poetry_dependencies_only_leaves_project_out(kitchen_facts: dict[str, Any]) -> None:
    assert kitchen_facts["versions"]["poetrydemo"] is None
    assert not kitchen_facts["importable"]["poetrydemo"]


def test_env_vars_exact_in_config_and_process(
    infra: Any, kitchen: str, kitchen_facts: dict[str, Any]
) -> None:
    config_env = dict(e.partition("=")[::2] for e in image_config(infra.docker_cli, kitchen)["Env"])
    for name, value in ENV_VARS.items():
        assert config_env[name] == value, name
        assert kitchen_facts["env"][name] == value, name
    assert kitchen_facts["texts"]["/srv/out/env-at-build"] == ENV_VARS["APP_DOLLAR"]


def test_workdir_and_commands(infra: Any, kitchen: str, kitchen_facts: dict[str, Any]) -> None:
    assert image_config(infra.docker_cli, kitchen)["WorkingDir"] == "/srv/work"
    assert kitchen_facts["cwd"] == "/srv/work"
    assert kitchen_facts["texts"]["/srv/out/marker"] == "ran\n"
    assert kitchen_facts["texts"]["/srv/out/pwd"] == "/srv/work\n"


@pytest.mark.parametrize(
    ("relpath", "mode"),
    [
        pytest.param("run.sh", "0o755", id="exec-0700-to-0755"),
        pytest.param("tool", "0o755", id="exec-0775-to-0755"),
        pytest.param("data.txt", "0o644", id="0600-to-0644"),
        pytest.param("group.txt", "0o644", id="0664-to-0644"),
        pytest.param("pkg/mod.py", "0o644", id="nested-file"),
        pytest.param("pkg", "0o755", id="folder-0700-to-0755"),
        pytest.param("pkg/__pycache__", None, id="pycache-absent"),
        pytest.param("pkg/__pycache__/mod.cpython-311.pyc", None, id="pyc-absent"),
        pytest.param("secret-notes.txt", None, id="folder-dockerignore-absent"),
        pytest.param("notes.bak", None, id="with_dockerignore-absent"),
    ],
)
def test_source_folder_modes_and_ignores(
    kitchen_facts: dict[str, Any], relpath: str, mode: str | None
) -> None:
    assert kitchen_facts["modes"][f"{SRC}/{relpath}"] == mode


def test_source_file_copied(kitchen_facts: dict[str, Any]) -> None:
    assert kitchen_facts["texts"]["/etc/app/extra.cfg"] == "extra=1\n"
    assert kitchen_facts["modes"]["/etc/app/extra.cfg"] == "0o644"


# -- the other modes of the project layers, on top of a uv script ----------------------


def test_uv_script_uv_dependencies_only_poetry_install_project(infra: Any) -> None:
    image = (
        Image.from_uv_script(
            DATA / "script" / "report.py", name=f"e2e-script-{RUN}", registry=infra.registry
        )
        .with_uv_project(
            DATA / "uvproj" / "pyproject.toml", project_install_mode="dependencies_only"
        )
        .with_poetry_project(
            DATA / "poetryproj" / "pyproject.toml", project_install_mode="install_project"
        )
    )
    result = build(image)
    assert result.status == "pushed"
    pull_fresh(infra.docker_cli, result.uri)
    names = ["attrs", "iniconfig", "uvdemo", "six", "poetrydemo"]
    facts = probe_image(infra.docker_cli, result.uri, ProbeSpec(dists=names, modules=names))
    assert facts["versions"] == {
        "attrs": "23.2.0",
        "iniconfig": UV_LOCKED,
        "uvdemo": None,
        "six": POETRY_LOCKED,
        "poetrydemo": "0.1.0",
    }
    assert facts["importable"] == {n: n != "uvdemo" for n in names}


# -- a user's Dockerfile ---------------------------------------------------------------


def dockerfile_project(infra: Any, dest: Path) -> Path:
    """Copy the Dockerfile fixture, naming the local base; return the Dockerfile."""
    shutil.copytree(DATA / "dockerctx", dest)
    dockerfile = dest / "Dockerfile"
    dockerfile.write_text((dest / "Dockerfile.in").read_text().replace("@BASE@", infra.debian_base))
    return dockerfile


def test_from_dockerfile_builds_its_context(infra: Any, tmp_path: Path) -> None:
    dockerfile = dockerfile_project(infra, tmp_path / "ctx")
    image = Image.from_dockerfile(dockerfile, registry=infra.registry, name=f"e2e-dockerfile-{RUN}")
    result = build(image)
    assert result.status == "pushed"
    pull_fresh(infra.docker_cli, result.uri)
    spec = ProbeSpec(paths=["/ctx/app.py", "/ctx/ignored.txt"], texts=["/ctx/ran.txt"])
    facts = probe_image(infra.docker_cli, result.uri, spec)
    assert facts["texts"]["/ctx/ran.txt"] == "dockerfile-image-ran\n"
    assert facts["modes"] == {"/ctx/app.py": "0o644", "/ctx/ignored.txt": None}


# -- skipping, forcing -------------------------------------------------------------------


def test_unchanged_image_skips_the_engine_and_force_rebuilds(infra: Any) -> None:
    image = tiny(infra, "skip", registry=infra.registry)
    first = build(image)
    assert (first.status, first.skipped) == ("pushed", False)
    refusing = RefusingBuilder()
    second = build(image, builder=refusing)
    assert (second.status, second.skipped, second.uri) == ("skipped", True, first.uri)
    assert refusing.calls == 0
    with pytest.raises(AssertionError, match="the engine was called"):
        build(image, force=True, builder=refusing)
    assert refusing.calls == 1
    forced = build(image, force=True)
    assert (forced.status, forced.skipped, forced.pushed) == ("pushed", False, True)
    assert skopeo_inspect(forced.uri).returncode == 0


# -- secrets -------------------------------------------------------------------------------


def test_secret_is_readable_in_build_and_leaks_nowhere(
    infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    value = f"imaged-secret-{run_id()}{run_id()}"
    monkeypatch.setenv("IMAGED_SECRET_TOK", value)
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"e2e-secret-{RUN}", registry=infra.registry)
        .with_commands(
            [
                'mkdir -p /out && printf %s "$TOK" | sha256sum | cut -d" " -f1 > /out/env.sha256',
                'sha256sum /run/secrets/tok | cut -d" " -f1 > /out/file.sha256',
            ],
            secret_mounts=Secret("tok", as_env_var="TOK"),
        )
    )
    events: list[dict[str, Any]] = []
    # force: BuildKit's cache key ignores secret values, and this step must run with this one.
    with ArgvWatcher(value.encode()) as watcher:
        result = build(image, force=True, on_event=events.append)
    assert watcher.scans > 10
    assert watcher.hits == []
    cli = infra.docker_cli
    pull_fresh(cli, result.uri)
    facts = probe_image(cli, result.uri, ProbeSpec(texts=["/out/env.sha256", "/out/file.sha256"]))
    expected = hashlib.sha256(value.encode()).hexdigest() + "\n"
    assert facts["texts"] == {"/out/env.sha256": expected, "/out/file.sha256": expected}
    blobs = saved_blobs(cli, result.uri, tmp_path)
    assert any(name.endswith("layer.tar") for name in blobs)
    assert [name for name, data in blobs.items() if value.encode() in data] == []
    history = docker(cli, "history", "--no-trunc", result.uri).stdout
    inspect = docker(cli, "image", "inspect", result.uri).stdout
    logs = capfd.readouterr()
    for text in (history, inspect, json.dumps(events, default=str), logs.out, logs.err):
        assert value not in text


# -- registries -------------------------------------------------------------------------------


def test_auth_registry_push_with_docker_config(
    infra: Any, monkeypatch: pytest.MonkeyPatch, docker_config_dir: Path
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config_dir))
    image = tiny(infra, "auth", registry=infra.auth_registry)
    result = build(image)
    assert result.status == "pushed"
    creds = f"{infra.auth_user}:{infra.auth_password}"
    assert skopeo_inspect(result.uri, creds=creds).returncode == 0
    assert build(image, builder=RefusingBuilder()).status == "skipped"


def test_auth_registry_wrong_credentials_fail_fast(
    infra: Any, monkeypatch: pytest.MonkeyPatch, wrong_docker_config_dir: Path
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(wrong_docker_config_dir))
    image = tiny(infra, "auth-wrong", registry=infra.auth_registry)
    started = time.monotonic()
    with pytest.raises(RegistryAuthError) as caught:
        build(image)
    assert time.monotonic() - started < 15
    assert infra.auth_registry in str(caught.value)


def _no_docker_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty DOCKER_CONFIG: neither imaged nor the docker CLI has a login to fall back on."""
    empty = tmp_path / "no-docker-login"
    empty.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    return empty


def test_registry_secret_pulls_the_base_and_pushes_without_docker_login(
    infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _no_docker_login(monkeypatch, tmp_path)
    login = f"{infra.auth_user}:{infra.auth_password}"
    # A Kubernetes-style dockerconfigjson, in the secrets folder as <group>/<key>.
    folder = tmp_path / "secrets" / "registry"
    folder.mkdir(parents=True)
    auth = base64.b64encode(login.encode()).decode()
    (folder / "pull").write_text(json.dumps({"auths": {infra.auth_registry: {"auth": auth}}}))
    monkeypatch.setenv("IMAGED_SECRETS_DIR", str(tmp_path / "secrets"))
    secret = Secret("pull", group="registry")
    stem = tiny(infra, "regsecret-stem", registry=infra.auth_registry).clone(registry_secret=secret)
    events: list[dict[str, Any]] = []
    with ArgvWatcher(infra.auth_password.encode()) as watcher:
        pushed = build(stem, on_event=events.append)
        assert pushed.status == "pushed"
        docker(infra.docker_cli, "rmi", pushed.uri)  # the child must pull it from the registry
        child = (
            Image.from_base(pushed.uri)
            .clone(name=f"e2e-regsecret-child-{RUN}", registry=infra.auth_registry)
            .clone(registry_secret=secret)
            .with_commands("cat /marker > /child")
        )
        result = build(child, on_event=events.append)
    assert result.status == "pushed"
    assert watcher.scans > 5
    assert watcher.hits == []
    assert skopeo_inspect(result.uri, creds=login).returncode == 0
    assert skopeo_inspect(result.uri).returncode != 0  # the registry does check
    assert build(child, builder=RefusingBuilder()).status == "skipped"  # checked with the secret
    logs = capfd.readouterr()
    for text in (json.dumps(events, default=str), json.dumps(result.to_json()), logs.out, logs.err):
        assert infra.auth_password not in text
        assert auth not in text


@pytest.mark.parametrize("wrong_form", ["user-password", "dockerconfigjson"])
def test_registry_secret_with_a_wrong_password_is_an_auth_error(
    infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wrong_form: str
) -> None:
    _no_docker_login(monkeypatch, tmp_path)
    password = f"bad{run_id()}"
    wrong = f"{infra.auth_user}:{password}"
    if wrong_form == "dockerconfigjson":
        auth = base64.b64encode(wrong.encode()).decode()
        wrong = json.dumps({"auths": {f"https://{infra.auth_registry}": {"auth": auth}}})
    monkeypatch.setenv("IMAGED_SECRET_AUTH_PUSH", wrong)
    image = tiny(infra, "regsecret-wrong", registry=infra.auth_registry)
    image = image.clone(registry_secret="auth-push")
    with pytest.raises(RegistryAuthError) as caught:
        build(image)
    message = str(caught.value)
    assert infra.auth_registry in message
    assert f"registry_secret 'auth-push' of image '{image.name}'" in message
    assert password not in message


def test_registry_secret_that_is_not_set_names_where_it_looked(
    infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_docker_login(monkeypatch, tmp_path)
    monkeypatch.delenv("IMAGED_SECRET_AUTH_PUSH", raising=False)
    monkeypatch.delenv("IMAGED_SECRETS_DIR", raising=False)
    image = tiny(infra, "regsecret-unset", registry=infra.auth_registry)
    with pytest.raises(SecretError, match="IMAGED_SECRET_AUTH_PUSH"):
        build(image.clone(registry_secret="auth-push"), builder=RefusingBuilder())


def test_unreachable_registry_is_an_error_naming_it(infra: Any) -> None:
    image = tiny(infra, "unreachable", registry="127.0.0.1:1")
    with pytest.raises(RegistryUnavailable, match=r"127\.0\.0\.1:1"):
        build(image, builder=RefusingBuilder())


# -- failures, dry runs, local-only builds ------------------------------------------------------


def test_failing_step_surfaces_instruction_and_output(infra: Any) -> None:
    image = (
        Image.from_base(infra.debian_base)
        .clone(name=f"e2e-fail-{RUN}", registry=infra.registry)
        .with_commands(["echo step-one", "sh -c 'echo imaged-boom-$((6*7)) >&2; exit 3'"])
    )
    with pytest.raises(BuildError) as caught:
        build(image)
    assert caught.value.instruction is not None
    assert "RUN" in caught.value.instruction
    assert "exit 3" in caught.value.instruction
    assert "imaged-boom-42" in caught.value.output_tail
    assert skopeo_inspect(image.uri).returncode != 0


DRY_RUN_DEFS = """
from imaged import Image
plain = (
    Image.from_debian_base(python_version=(3, 11), registry={registry!r}, name="e2e-dry-{run}")
    .with_pip_packages("tomli==2.0.1")
    .with_source_file({extra!r}, "/etc/app")
)
custom = Image.from_dockerfile({dockerfile!r}, registry={registry!r}, name="e2e-drydf-{run}")
"""


def test_dry_run_prints_plan_and_builds_nothing(infra: Any, tmp_path: Path) -> None:
    dockerfile = dockerfile_project(infra, tmp_path / "ctx")
    (tmp_path / "extra.cfg").write_text("x\n")
    defs = tmp_path / "defs.py"
    defs.write_text(
        DRY_RUN_DEFS.format(
            registry=infra.registry,
            run=RUN,
            extra=str(tmp_path / "extra.cfg"),
            dockerfile=str(dockerfile),
        )
    )
    result = CliRunner().invoke(cli_main, ["build", str(defs), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"FROM {infra.debian_base}" in out
    assert "uv pip install" in out
    assert "tomli==2.0.1" in out
    assert "COPY . /ctx" in out
    assert "#   layers/1/extra.cfg" in out
    assert re.search(r"^#   (\./)?app\.py$", out, re.MULTILINE)
    assert "ignored.txt" not in out
    assert out.count("# command: ") == 2
    assert "build" in out
    for image in load_definitions(str(defs)).values():
        uri = image.uri_for(hash_image(image).tag)
        assert uri in out
        assert skopeo_inspect(uri).returncode != 0
        assert docker(infra.docker_cli, "image", "inspect", uri, check=False).returncode != 0


def test_image_without_registry_is_built_locally(infra: Any) -> None:
    image = tiny(infra, "local", registry=None, marker="local-only")
    result = build(image)
    assert (result.status, result.pushed, result.skipped) == ("built", False, False)
    assert result.uri == f"{image.name}:{result.tag}"
    assert (
        image_config(infra.docker_cli, result.uri)["Labels"]["dev.imaged.digest"] == result.digest
    )
    facts = probe_image(infra.docker_cli, result.uri, ProbeSpec(texts=["/marker"]))
    assert facts["texts"]["/marker"] == "local-only\n"
