"""Golden and property tests for Dockerfile rendering and the context plan.

Regenerate the golden files after an intended rendering change with
``IMAGED_UPDATE_GOLDEN=1 python -m pytest tests/test_dockerfile.py``, then review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imaged.digest.image_digest import hash_image
from imaged.errors import SpecError
from imaged.render.context import stage_context
from imaged.render.dockerfile import (
    CA_SECRET_ID,
    CA_TARGET,
    RenderedImage,
    quote_env,
    render_dockerfile,
)
from imaged.spec.image import Image
from imaged.spec.layers import Secret
from imaged.spec.pins import POETRY_VERSION, UV_VERSION

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = Path(__file__).resolve().parent.parent
BASE_TEMPLATE = "registry.invalid/python:{major}.{minor}-slim-bookworm"
SECRET_VALUE = "s3cr3t-value-never-rendered"
INSTRUCTIONS = {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "LABEL"}
CA_MOUNT = f"--mount=type=secret,id={CA_SECRET_ID},target={CA_TARGET}"
SECRET_MOUNT = re.compile(r"^--mount=type=secret,id=[A-Za-z0-9_.-]+,target=/\S+$")
INSTALLERS = ("apt-get", "pip install", "uv sync", "poetry install")
TRICKY_ENV = {
    "SPACES": "two  spaces and a tab\there",
    "DQUOTE": 'say "hi"',
    "SQUOTE": "it's",
    "DOLLAR": "$HOME ${PATH} $$",
    "BACKSLASH": "C:\\new\\table",
    "TRAILING": "ends with \\",
    "EQUALS": "a=b=c",
    "EMPTY": "",
    "HASH": "#not a comment",
    "UNICODE": "grüße",
}

# -- a fixed fixture tree: every byte is constant so the digests in the goldens are stable


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


UV_PYPROJECT = '[project]\nname = "uvdemo"\nversion = "0.1.0"\ndependencies = ["idna==3.7"]\n'
POETRY_PYPROJECT = (
    '[tool.poetry]\nname = "poetrydemo"\nversion = "0.1.0"\ndescription = ""\nauthors = []\n'
)
SCRIPT = '# /// script\n# dependencies = ["attrs==23.2.0", "rich>=13"]\n# ///\nprint("hi")\n'
DEFS = "from imaged import Image\n"


def make_tree(root: Path) -> Path:
    """Write the fixture files under ``root`` and return it."""
    _write(root / "src/pkg/__init__.py", "")
    _write(root / "src/pkg/app.py", "print('app')\n")
    _write(root / "src/run.sh", "#!/bin/sh\necho run\n", 0o755)
    _write(root / "src/.dockerignore", "*.log\n")
    _write(root / "src/debug.log", "ignored\n")
    _write(root / "src/notes.tmp", "ignored by the extra ignore file\n")
    (root / "src/link.py").symlink_to("pkg/app.py")
    _write(root / "requirements.txt", "idna==3.7\n")
    _write(root / "uvproj/pyproject.toml", UV_PYPROJECT)
    _write(root / "uvproj/uv.lock", "version = 1\n")
    _write(root / "uvproj/src/uvdemo/__init__.py", "")
    _write(root / "uvproj/.gitignore", "dist/\n")
    _write(root / "uvproj/dist/old.whl", "ignored\n")
    _write(root / "poetryproj/pyproject.toml", POETRY_PYPROJECT)
    _write(root / "poetryproj/poetry.lock", "# lock\n")
    _write(root / "poetryproj/poetrydemo/__init__.py", "")
    _write(root / "script.py", SCRIPT)
    _write(root / "plain_script.py", 'print("no header")\n')
    _write(root / "files/a.txt", "a\n")
    _write(root / "files/b.cfg", "[b]\n")
    _write(root / "files/tool.sh", "#!/bin/sh\n", 0o755)
    _write(root / "extra.dockerignore", "src/*.tmp\n")  # paths from its own folder
    _write(root / "bundle/pyproject.toml", '[project]\nname = "bundle"\nversion = "1"\n')
    _write(root / "bundle/app/main.py", "print('main')\n")
    _write(root / "bundle/.gitignore", "build/\n")
    _write(root / "bundle/build/artifact.bin", "ignored\n")
    _write(root / "bundle/defs.py", DEFS)
    _write(root / "ctx/Dockerfile", "FROM scratch\nCOPY app.py /app.py\n# user text, verbatim\n")
    _write(root / "ctx/app.py", "print('ctx')\n")
    return root


def debian() -> Image:
    return Image.from_debian_base(python_version=(3, 11), registry="reg.example", name="app")


def code_bundle_image(root: Path, dst: str) -> Image:
    """Call ``with_code_bundle`` from a definition file inside the fixture project."""
    defs = root / "bundle/defs.py"
    namespace: dict[str, Any] = {}
    source = DEFS + f"image = Image.from_base('base:1').with_code_bundle('all', {dst!r})\n"
    exec(compile(source, str(defs), "exec"), namespace)
    image = namespace["image"]
    assert isinstance(image, Image)
    return image


def full_image(root: Path) -> Image:
    return (
        debian()
        .with_apt_packages("curl", "git")
        .with_pip_packages("fastapi==0.110.0", "uvicorn")
        .with_requirements(root / "requirements.txt")
        .with_env_vars({"APP_MODE": "prod", "GREETING": 'say "hi" to $USER'})
        .with_workdir("/app")
        .with_source_folder(root / "src", "/app")
        .with_source_file(root / "files/a.txt", "/etc/app")
        .with_commands("python -c 'import fastapi'")
    )


def parent_image() -> Image:
    return debian().with_pip_packages("idna==3.7")


Build = Callable[[Path], Image]
CASES: list[Any] = [
    pytest.param(lambda r: debian().with_apt_packages("curl", "ca-certificates"), id="apt"),
    pytest.param(
        lambda r: debian().with_apt_packages(
            "git", secret_mounts=[Secret("token", group="apt", as_env_var="APT_TOKEN")]
        ),
        id="apt_secret",
    ),
    pytest.param(
        lambda r: debian().with_pip_packages(
            "requests>=2",
            "flask[async]",
            index_url="https://pypi.internal/simple",
            extra_index_urls=["https://extra.one/simple", "https://extra.two/simple"],
            pre=True,
            extra_args=["--no-build-isolation", "--upgrade"],
            secret_mounts=["pip_token"],
        ),
        id="pip_all_options",
    ),
    pytest.param(lambda r: debian().with_requirements(r / "requirements.txt"), id="requirements"),
    pytest.param(
        lambda r: debian().with_uv_project(r / "uvproj/pyproject.toml"), id="uv_project_deps"
    ),
    pytest.param(
        lambda r: debian().with_uv_project(
            r / "uvproj/pyproject.toml",
            project_install_mode="install_project",
            index_url="https://pypi.internal/simple",
        ),
        id="uv_project_install",
    ),
    pytest.param(
        lambda r: debian().with_poetry_project(r / "poetryproj/pyproject.toml"),
        id="poetry_project_deps",
    ),
    pytest.param(
        lambda r: debian().with_poetry_project(
            r / "poetryproj/pyproject.toml",
            extra_args=["--with", "docs"],
            project_install_mode="install_project",
        ),
        id="poetry_project_install",
    ),
    pytest.param(
        lambda r: Image.from_uv_script(r / "script.py", name="script", python_version=(3, 11)),
        id="uv_script",
    ),
    pytest.param(
        lambda r: Image.from_uv_script(
            r / "plain_script.py", name="script", python_version=(3, 11)
        ),
        id="uv_script_no_deps",
    ),
    pytest.param(
        lambda r: debian().with_commands(["echo one", "mkdir -p /data && touch /data/x"]),
        id="commands",
    ),
    pytest.param(
        lambda r: debian().with_commands(
            "curl -H @/run/secrets/hdr https://example.invalid",
            secret_mounts=[
                Secret("token", group="gh", as_env_var="GITHUB_TOKEN"),
                Secret("hdr", mount="/run/secrets/hdr"),
            ],
        ),
        id="commands_secrets",
    ),
    pytest.param(lambda r: debian().with_env_vars(TRICKY_ENV), id="env_vars"),
    pytest.param(lambda r: debian().with_workdir("/srv/app"), id="workdir"),
    pytest.param(lambda r: debian().with_source_folder(r / "src"), id="source_folder_dot"),
    pytest.param(
        lambda r: debian().with_source_folder(r / "src", copy_contents_only=True),
        id="source_folder_dot_contents",
    ),
    pytest.param(
        lambda r: debian().with_source_folder(r / "src", "/opt/app"), id="source_folder_abs"
    ),
    pytest.param(
        lambda r: debian().with_source_folder(r / "src", "/opt/app", copy_contents_only=True),
        id="source_folder_abs_contents",
    ),
    pytest.param(lambda r: debian().with_source_file(r / "files/a.txt"), id="source_file_one"),
    pytest.param(
        lambda r: debian().with_source_file(
            [r / "files/a.txt", r / "files/b.cfg", r / "files/tool.sh"], "/usr/local/etc"
        ),
        id="source_file_several",
    ),
    pytest.param(lambda r: code_bundle_image(r, "."), id="code_bundle_dot"),
    pytest.param(lambda r: code_bundle_image(r, "/workspace"), id="code_bundle_abs"),
    pytest.param(
        lambda r: (
            debian()
            .with_dockerignore(r / "extra.dockerignore")
            .with_source_folder(r / "src", "/app")
        ),
        id="dockerignore",
    ),
    pytest.param(
        lambda r: Image.from_base(parent_image()).with_workdir("/x"), id="from_base_image"
    ),
    pytest.param(lambda r: Image.from_base("busybox:1.36").with_workdir("/x"), id="from_ref"),
    pytest.param(full_image, id="full"),
]


def case_build(case_id: str) -> Build:
    """The image builder of one CASES entry."""
    build: Build = next(c.values[0] for c in CASES if c.id == case_id)
    return build


# -- a small model of the Dockerfile syntax the BuildKit frontend reads


class DockerfileSyntaxError(AssertionError):
    """The text would not parse the way the frontend parses it."""


def logical_lines(text: str) -> list[str]:
    """Join ``\\``-continued lines, drop comments and blank lines (as the parser does)."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        raise DockerfileSyntaxError(f"dangling continuation: {pending!r}")
    return out


def split_words(rest: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes (BuildKit ``parseWords``)."""
    words: list[str] = []
    word, quote, escaped = "", "", False
    for ch in rest:
        if escaped:
            word, escaped = word + ch, False
        elif ch == "\\" and quote != "'":
            word, escaped = word + ch, True
        elif quote:
            word += ch
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            word, quote = word + ch, ch
        elif ch.isspace():
            words, word = ([*words, word] if word else words), ""
        else:
            word += ch
    if quote:
        raise DockerfileSyntaxError(f"unterminated {quote} in {rest!r}")
    return [*words, word] if word else words


def _double_quoted(word: str, start: int) -> tuple[str, int]:
    out, i = "", start
    while i < len(word):
        ch = word[i]
        if ch == '"':
            return out, i + 1
        if ch == "$":
            raise DockerfileSyntaxError(f"unescaped $ expands in {word!r}")
        if ch == "\\" and i + 1 < len(word) and word[i + 1] in '"$\\':
            out, i = out + word[i + 1], i + 2
            continue
        out, i = out + ch, i + 1
    raise DockerfileSyntaxError(f"unterminated double quote in {word!r}")


def unquote_word(word: str) -> str:
    """One word as the frontend's shell lexer reads it; unescaped ``$`` is an error here."""
    out, i = "", 0
    while i < len(word):
        ch = word[i]
        if ch == "\\":
            out, i = out + word[i + 1 : i + 2], i + 2
        elif ch == "'":
            end = word.find("'", i + 1)
            if end < 0:
                raise DockerfileSyntaxError(f"unterminated single quote in {word!r}")
            out, i = out + word[i + 1 : end], end + 1
        elif ch == '"':
            text, i = _double_quoted(word, i + 1)
            out += text
        elif ch == "$":
            raise DockerfileSyntaxError(f"unescaped $ expands in {word!r}")
        else:
            out, i = out + ch, i + 1
    return out


def parse_env(line: str) -> dict[str, str]:
    """The variables one ``ENV k=v ...`` logical line sets."""
    keyword, _, rest = line.partition(" ")
    assert keyword == "ENV"
    pairs = [word.partition("=") for word in split_words(rest)]
    assert all(sep == "=" for _, sep, _ in pairs), line
    return {name: unquote_word(value) for name, _, value in pairs}


def copy_args(line: str) -> list[str]:
    """Source and destination of a ``COPY`` logical line, as the frontend reads them."""
    rest = line.removeprefix("COPY ").strip()
    if rest.startswith("["):
        args = json.loads(rest)
        assert isinstance(args, list)
        return [str(a) for a in args]
    return [unquote_word(word) for word in rest.split()]


# -- fixtures


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", BASE_TEMPLATE)
    monkeypatch.delenv("IMAGED_CONFIG", raising=False)
    monkeypatch.setenv("IMAGED_SECRET_GH_TOKEN", SECRET_VALUE)
    monkeypatch.setenv("IMAGED_SECRET_TOKEN", SECRET_VALUE)
    monkeypatch.chdir(tmp_path)
    return make_tree(tmp_path / "fx")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.Dockerfile"
    if os.environ.get("IMAGED_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden {path.name}; create it with IMAGED_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def run_lines(rendered: RenderedImage) -> list[str]:
    return [line for line in logical_lines(rendered.dockerfile) if line.startswith("RUN ")]


# -- golden files


@pytest.mark.parametrize("build", CASES)
def test_golden(build: Build, root: Path, request: pytest.FixtureRequest) -> None:
    rendered = render_dockerfile(build(root))
    check_golden(request.node.callspec.id, rendered.dockerfile)


def test_every_golden_file_belongs_to_a_case() -> None:
    assert {p.name for p in GOLDEN.glob("*.Dockerfile")} == {f"{c.id}.Dockerfile" for c in CASES}


@pytest.mark.parametrize("build", CASES)
def test_no_host_path_and_label_is_the_digest(build: Build, root: Path, tmp_path: Path) -> None:
    image = build(root)
    rendered = render_dockerfile(image)
    assert str(tmp_path) not in rendered.dockerfile
    assert str(REPO) not in rendered.dockerfile
    assert rendered.dockerfile.endswith(f"\nLABEL dev.imaged.digest={hash_image(image).digest}\n")


def test_from_base_image_names_the_parents_content_uri(root: Path) -> None:
    parent = parent_image()
    rendered = render_dockerfile(Image.from_base(parent).with_workdir("/x"))
    uri = f"reg.example/app:{hash_image(parent).tag}"
    assert rendered.dockerfile.startswith(f"FROM {uri}\n")


def test_from_dockerfile_is_the_users_text_verbatim(root: Path) -> None:
    dockerfile = root / "ctx/Dockerfile"
    rendered = render_dockerfile(Image.from_dockerfile(dockerfile, "reg.example", "ctx"))
    assert rendered.dockerfile == dockerfile.read_text(encoding="utf-8")
    assert rendered.user_dockerfile == dockerfile
    assert rendered.listing() == ["./Dockerfile", "./app.py"]


# -- properties of every rendered Dockerfile


@pytest.mark.parametrize("build", CASES)
def test_only_what_the_builtin_frontend_accepts(build: Build, root: Path) -> None:
    text = render_dockerfile(build(root)).dockerfile
    assert not any(line.startswith("# syntax=") for line in text.splitlines())
    assert "<<" not in text
    assert "--link" not in text
    assert ",env=" not in text
    for line in logical_lines(text):
        assert line.split(" ", 1)[0] in INSTRUCTIONS, line


@pytest.mark.parametrize("build", CASES)
def test_secret_mounts_are_files_with_known_ids(build: Build, root: Path) -> None:
    rendered = render_dockerfile(build(root))
    declared = {(s.id, s.target) for s in rendered.secrets} | {(CA_SECRET_ID, CA_TARGET)}
    mounted = re.findall(r"--mount=type=secret\S*", rendered.dockerfile)
    for mount in mounted:
        assert SECRET_MOUNT.match(mount), mount
        ident, target = re.findall(r"id=([^,]+),target=(\S+)", mount)[0]
        assert (ident, target) in declared
    assert {(s.id, s.target) for s in rendered.secrets} <= {
        tuple(re.findall(r"id=([^,]+),target=(\S+)", m)[0]) for m in mounted
    }
    assert SECRET_VALUE not in rendered.dockerfile


@pytest.mark.parametrize("build", CASES)
def test_every_installing_run_mounts_the_ca_bundle(build: Build, root: Path) -> None:
    installing = [
        line
        for line in run_lines(render_dockerfile(build(root)))
        if any(w in line for w in INSTALLERS)
    ]
    for line in installing:
        assert CA_MOUNT in line, line


@pytest.mark.parametrize(
    ("case", "pins"),
    [
        pytest.param("pip_all_options", [f"uv=={UV_VERSION}"], id="pip"),
        pytest.param("uv_project_deps", [f"uv=={UV_VERSION}"], id="uv_project"),
        pytest.param(
            "poetry_project_install",
            [f"uv=={UV_VERSION}", f"poetry=={POETRY_VERSION}"],
            id="poetry",
        ),
        pytest.param("uv_script", [f"uv=={UV_VERSION}"], id="uv_script"),
    ],
)
def test_pinned_tool_versions_appear(case: str, pins: list[str], root: Path) -> None:
    text = render_dockerfile(case_build(case)(root)).dockerfile
    for pin in pins:
        assert pin in text
    assert text.count(f"uv=={UV_VERSION}") == 1


def test_render_is_pure_with_respect_to_cwd(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = full_image(root)
    first = render_dockerfile(image)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    second = render_dockerfile(image)
    assert first.dockerfile == second.dockerfile
    assert first.listing() == second.listing()


# -- ENV quoting


def test_env_values_round_trip(root: Path) -> None:
    rendered = render_dockerfile(debian().with_env_vars(TRICKY_ENV))
    env_lines = [line for line in logical_lines(rendered.dockerfile) if line.startswith("ENV ")]
    assert len(env_lines) == 1
    assert parse_env(env_lines[0]) == TRICKY_ENV


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"', id="quote"),
        pytest.param("\\", id="backslash"),
        pytest.param('\\"$', id="all"),
        pytest.param("$", id="dollar"),
        pytest.param("'", id="squote"),
        pytest.param(" lead and trail ", id="spaces"),
    ],
)
def test_quote_env_round_trips(value: str) -> None:
    assert parse_env(f"ENV V={quote_env(value)}") == {"V": value}


def test_env_value_with_newline_is_rejected_or_rendered_as_one_instruction(root: Path) -> None:
    value = "line one\nline two"
    try:
        rendered = render_dockerfile(debian().with_env_vars({"MULTI": value}))
    except SpecError:
        return
    env_lines = [line for line in logical_lines(rendered.dockerfile) if line.startswith("ENV ")]
    assert [parse_env(line) for line in env_lines] == [{"MULTI": value}]
    for line in logical_lines(rendered.dockerfile):
        assert line.split(" ", 1)[0] in INSTRUCTIONS, line


def test_multiline_command_stays_one_instruction(root: Path) -> None:
    rendered = render_dockerfile(debian().with_commands("set -e\necho two"))
    for line in logical_lines(rendered.dockerfile):
        assert line.split(" ", 1)[0] in INSTRUCTIONS, line


# -- COPY destinations


@pytest.mark.parametrize(
    ("dst", "copy_contents_only", "expected"),
    [
        pytest.param(".", False, "src/", id="dot"),
        pytest.param(".", True, "./", id="dot_contents"),
        pytest.param("/opt/app", False, "/opt/app/src/", id="abs"),
        pytest.param("/opt/app/", True, "/opt/app/", id="abs_contents"),
        pytest.param("rel/dir", False, "rel/dir/src/", id="relative"),
    ],
)
def test_source_folder_copy_destination(
    root: Path, dst: str, copy_contents_only: bool, expected: str
) -> None:
    image = debian().with_source_folder(root / "src", dst, copy_contents_only=copy_contents_only)
    copies = [line for line in logical_lines(render_dockerfile(image).dockerfile) if "COPY" in line]
    assert [copy_args(line) for line in copies] == [["layers/0/", expected]]


def test_copy_destination_with_whitespace(root: Path) -> None:
    image = debian().with_source_folder(root / "src", "/opt/a b")
    copies = [line for line in logical_lines(render_dockerfile(image).dockerfile) if "COPY" in line]
    assert [copy_args(line) for line in copies] == [["layers/0/", "/opt/a b/src/"]]


# -- the context plan


def test_listing_of_a_source_folder_is_the_hashed_tree(root: Path) -> None:
    image = debian().with_dockerignore(root / "extra.dockerignore").with_source_folder(root / "src")
    digest = hash_image(image)
    rendered = render_dockerfile(image, digest)
    tree = digest.layers[1].trees[0]
    assert rendered.listing() == [f"layers/1/{e.relpath}" for e in tree.listing()]
    assert rendered.listing() == [
        "layers/1/.dockerignore",
        "layers/1/link.py",
        "layers/1/pkg",
        "layers/1/pkg/__init__.py",
        "layers/1/pkg/app.py",
        "layers/1/run.sh",
    ]


def test_listing_names_bound_inputs_and_files(root: Path) -> None:
    image = (
        debian()
        .with_requirements(root / "requirements.txt")
        .with_uv_project(root / "uvproj/pyproject.toml")
        .with_source_file([root / "files/a.txt", root / "files/b.cfg"], "/etc")
    )
    assert render_dockerfile(image).listing() == [
        "inputs/0/requirements.txt",
        "inputs/1/pyproject.toml",
        "inputs/1/uv.lock",
        "layers/2/a.txt",
        "layers/2/b.cfg",
    ]


def test_install_project_binds_the_gitignore_filtered_project(root: Path) -> None:
    image = debian().with_uv_project(
        root / "uvproj/pyproject.toml", project_install_mode="install_project"
    )
    assert render_dockerfile(image).listing() == [
        "inputs/0/project/.gitignore",
        "inputs/0/project/pyproject.toml",
        "inputs/0/project/src",
        "inputs/0/project/src/uvdemo",
        "inputs/0/project/src/uvdemo/__init__.py",
        "inputs/0/project/uv.lock",
    ]


# -- the engine's built-in BuildKit frontend really accepts what we render


@dataclass(frozen=True)
class DockerInfra:
    docker_cli: str
    debian_base: str


@pytest.fixture
def docker_infra(request: pytest.FixtureRequest) -> DockerInfra:
    try:
        infra = request.getfixturevalue("infra")
        return DockerInfra(docker_cli=infra.docker_cli, debian_base=infra.debian_base)
    except pytest.FixtureLookupError:
        pass
    state = REPO / ".imaged-test-infra.json"
    if not state.is_file():
        if os.environ.get("IMAGED_REQUIRE_DOCKER"):
            pytest.fail(f"IMAGED_REQUIRE_DOCKER is set but {state} is missing")
        pytest.skip("no test infra (scripts/test-infra.sh)")
    data = json.loads(state.read_text(encoding="utf-8"))
    return DockerInfra(docker_cli=data["docker_cli"], debian_base=data["debian_base"])


def docker(infra: DockerInfra, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    proc = subprocess.run(
        [infra.docker_cli, *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr}")
    return proc


@pytest.fixture
def built_tag(docker_infra: DockerInfra) -> Iterator[str]:
    tag = f"imaged-test/dockerfile:{uuid.uuid4().hex[:12]}"
    yield tag
    docker(docker_infra, "rmi", "-f", tag, check=False)


def file_layers_image(root: Path, base: str) -> Image:
    return (
        Image.from_base(base)
        .with_env_vars({"QUOTED": 'say "hi" to $USER \\ it\'s done'})
        .with_workdir("/app")
        .with_source_folder(root / "src", "/app")
        .with_source_file([root / "files/a.txt", root / "files/tool.sh"], "/etc/app")
    )


@pytest.mark.docker
@pytest.mark.timeout(90)
def test_file_layers_build_and_arrive_unchanged(
    docker_infra: DockerInfra, root: Path, tmp_path: Path, built_tag: str
) -> None:
    image = file_layers_image(root, docker_infra.debian_base)
    dockerfile = stage_context(render_dockerfile(image), tmp_path / "ctx")
    docker(
        docker_infra, "build", "-q", "-f", str(dockerfile), "-t", built_tag, str(tmp_path / "ctx")
    )
    script = (
        'cat src/pkg/app.py; stat -c %a /etc/app/tool.sh; readlink src/link.py; printf %s "$QUOTED"'
    )
    out = docker(docker_infra, "run", "--rm", built_tag, "sh", "-c", script).stdout
    assert out == "print('app')\n755\npkg/app.py\n" + 'say "hi" to $USER \\ it\'s done'


FRONTEND_REJECTS = (
    "failed to create LLB definition",
    "dockerfile parse error",
    "unknown instruction",
)
FAILED_AT_A_RUN_STEP = re.compile(r"^ > \[(stage-0 )?\d+/\d+\] RUN ", re.MULTILINE)
WHITESPACE_DST = pytest.param(
    lambda r: debian().with_source_folder(r / "src", "/opt/a b"), id="copy_dst_whitespace"
)


@pytest.mark.docker
@pytest.mark.timeout(120)
@pytest.mark.parametrize("build", [*CASES, WHITESPACE_DST])
def test_frontend_accepts_the_rendered_dockerfile(
    build: Build, docker_infra: DockerInfra, root: Path, tmp_path: Path, built_tag: str
) -> None:
    """Build the rendered text ``FROM scratch``: the frontend parses it and converts every
    instruction to LLB; a RUN step then fails (no shell, no rootfs for mounts) without any
    download. Only the FROM line is replaced."""
    rendered = render_dockerfile(build(root))
    first, _, rest = rendered.dockerfile.partition("\n")
    assert first.startswith("FROM ")
    rendered.dockerfile = "FROM scratch\n" + rest
    dockerfile = stage_context(rendered, tmp_path / "ctx")
    context = str(tmp_path / "ctx")
    proc = docker(
        docker_infra,
        "build",
        "--progress=plain",
        "-f",
        str(dockerfile),
        "-t",
        built_tag,
        context,
        check=False,
    )
    assert not any(s in proc.stderr for s in FRONTEND_REJECTS), proc.stderr
    assert proc.returncode == 0 or FAILED_AT_A_RUN_STEP.search(proc.stderr), proc.stderr
