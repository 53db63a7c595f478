"""A Flyte 2 image module ports by changing its import line (issue 10).

``tests/data/flyte_port/images_flyte.py`` is written for flyte 2.12; each test copies the
project, swaps ``from flyte import ...`` for imaged's, and loads it as ``imaged`` would.
The end-to-end test builds the secret, ``.dockerignore`` and uv-group images and checks
them in the running container.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_support import DATA, ProbeSpec, docker, probe_image, run_id

from imaged import build
from imaged.cli.main import main as cli_main
from imaged.definitions.loader import load_definitions
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.render.dockerfile import render_dockerfile
from imaged.spec.image import Image, override_registry

FLYTE_IMPORT = "from flyte import Image, Secret, TaskEnvironment\n"
OUR_IMPORT = "from imaged import Image, Secret; from port_env import TaskEnvironment\n"
NAMES = {
    "port-private",
    "port-api",
    "port-implicit",
    "port-uv",
    "port-poetry",
    "port-script",
    "port-vendor",
    "port-custom",
    "prebuilt",
    "port-bundle",
    "port-pinned",
    "port-env",
    "variants-0",
    "variants-1",
}


def port(tmp_path: Path) -> Path:
    """A copy of the Flyte project whose module differs from Flyte's by the import line."""
    root = tmp_path / "project"
    shutil.copytree(DATA / "flyte_port", root)
    original = (root / "images_flyte.py").read_text()
    assert original.count(FLYTE_IMPORT) == 1
    (root / "images.py").write_text(original.replace(FLYTE_IMPORT, OUR_IMPORT))
    (root / "images_flyte.py").unlink()
    return root


@pytest.fixture
def ported(tmp_path: Path, isolated_settings: Path) -> dict[str, Image]:
    return load_definitions(str(port(tmp_path) / "images.py"))


def dockerfile(images: dict[str, Image], name: str) -> str:
    return render_dockerfile(images[name]).dockerfile


def test_every_image_defines_hashes_and_renders(ported: dict[str, Image]) -> None:
    assert set(ported) == NAMES  # the unnamed shared base is a stage, not an image
    for name, image in ported.items():
        digest = hash_image(image, DigestCache())
        assert digest.tag, name
        assert f"LABEL dev.imaged.digest={digest.digest}" in dockerfile(ported, name) or (
            name == "port-custom"
        )


def test_a_plain_string_secret_is_its_variable_in_the_step(ported: dict[str, Image]) -> None:
    text = dockerfile(ported, "port-private")
    assert "--mount=type=secret,id=GITHUB_PAT,target=/run/secrets/GITHUB_PAT" in text
    assert 'export GITHUB_PAT="$(cat /run/secrets/GITHUB_PAT)"' in text
    assert 'export HF_TOKEN="$(cat /run/secrets/hf-token)"' in dockerfile(ported, "port-script")


def test_root_dockerignore_keeps_files_out_of_a_source_folder(ported: dict[str, Image]) -> None:
    listing = render_dockerfile(ported["port-api"]).listing()
    copied = {path.rsplit("/", 1)[-1] for path in listing}
    assert "app.py" in copied
    assert {"data.bin", ".env"}.isdisjoint(copied)


def test_the_projects_dockerignore_applies_without_with_dockerignore(
    ported: dict[str, Image],
) -> None:
    listing = render_dockerfile(ported["port-implicit"]).listing()
    copied = {path.rsplit("/", 1)[-1] for path in listing}
    assert "app.py" in copied
    assert {"data.bin", ".env"}.isdisjoint(copied)


IMPLICIT_DEFS = """
from imaged import Image
from pathlib import Path
ROOT = Path(__file__).parent.parent  # the project; this file is in its deploy/ folder
base = Image.from_base("127.0.0.1:5000/py:3")
inside = base.clone(name="inside").with_source_folder(ROOT / "src")
outside = base.clone(name="outside").with_source_folder(ROOT.parent / "shared")
explicit = inside.clone(name="explicit").with_dockerignore(ROOT / "other.ignore")
"""


def _listed(image: Image) -> list[str]:
    (tree,) = hash_image(image, DigestCache()).layers[0].trees
    return [entry.relpath for entry in tree.listing()]


def test_the_projects_dockerignore_is_read_from_the_project_root(tmp_path: Path) -> None:
    """The defining project (nearest pyproject.toml) holds the implicit ``.dockerignore``:
    absent, it filters nothing; created or edited, it moves the digest; it does not reach
    a folder outside the project, nor an image that names its own ignore file."""
    root = tmp_path / "project"
    for rel in ("src/app.py", "src/data.bin", "other.ignore", "pyproject.toml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{rel}\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/data.bin").write_text("shared\n")
    (root / "deploy").mkdir()
    (root / "deploy/images.py").write_text(IMPLICIT_DEFS)
    images = load_definitions(str(root / "deploy/images.py"))
    assert images["inside"].layers[0].project_ignore == root / ".dockerignore"
    before = hash_image(images["inside"], DigestCache()).digest
    assert _listed(images["inside"]) == ["app.py", "data.bin"]
    (root / ".dockerignore").write_text("src/data.bin\ndata.bin\n")
    assert _listed(images["inside"]) == ["app.py"]
    assert hash_image(images["inside"], DigestCache()).digest != before
    assert _listed(images["outside"]) == ["data.bin"]
    assert _listed(images["explicit"]) == ["app.py", "data.bin"]
    assert Image.loads(images["inside"].dumps()) == images["inside"]


def test_uv_and_poetry_install_the_tools_default_groups(ported: dict[str, Image]) -> None:
    uv = dockerfile(ported, "port-uv")
    assert "uv sync --inexact --no-install-project --no-progress" in uv  # no lock: floating
    assert "--no-dev" not in uv
    assert "rm -f uv.lock" in uv
    poetry = dockerfile(ported, "port-poetry")
    assert "poetry install --no-root --no-ansi --no-interaction" in poetry
    assert "--only main" not in poetry


def test_flyte_only_options_mean_what_they_mean_in_flyte(ported: dict[str, Image]) -> None:
    assert "flyte==2.12.1" in dockerfile(ported, "port-pinned")
    assert "flyte" not in dockerfile(ported, "port-api").replace("flyte_port", "")
    assert ported["port-vendor"].registry_secret is not None
    assert ported["port-vendor"].registry_secret.key == "nvcr-pull"
    assert ported["prebuilt"].base_label == "ghcr.io/acme/prebuilt-tools:1.4"
    assert ported["port-custom"].platform == ("linux/amd64",)
    bundle = render_dockerfile(ported["port-bundle"])
    assert "pyproject.toml" in {p.rsplit("/", 1)[-1] for p in bundle.listing()}
    assert "/root/" in bundle.dockerfile
    assert 'ENV ROLE="env"' in dockerfile(ported, "port-env")


def test_hash_takes_a_folder(tmp_path: Path, isolated_settings: Path) -> None:
    root = port(tmp_path)
    result = CliRunner().invoke(cli_main, ["hash", "--json", str(root)])
    assert result.exit_code == 0, result.output
    assert {row["name"] for row in json.loads(result.output)} == NAMES
    nested = tmp_path / "deploy"
    shutil.move(root, nested / "project")
    flat = CliRunner().invoke(cli_main, ["hash", str(nested)])
    assert flat.exit_code != 0  # no definition file directly in the folder
    deep = CliRunner().invoke(cli_main, ["hash", "--recursive", str(nested)])
    assert deep.exit_code == 0, deep.output
    assert len(deep.output.strip().splitlines()) == len(NAMES)


def test_dry_run_of_a_multi_platform_image_needs_no_buildx(
    tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_DEFAULT_PLATFORMS", "linux/amd64,linux/arm64")
    root = port(tmp_path)
    images = load_definitions(str(root / "images.py"))
    assert images["port-api"].platform == ("linux/amd64", "linux/arm64")
    result = CliRunner().invoke(
        cli_main, ["build", "--dry-run", "--json", f"{root / 'images.py'}:port-api"]
    )
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert "--platform" in row["command"]
    assert "linux/amd64,linux/arm64" in row["command"]


# -- end to end -------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_ported_images_build_and_run(
    infra: Any, tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    if infra.ca_bundle:
        monkeypatch.setenv("IMAGED_BUILD_CA_BUNDLE", infra.ca_bundle)
    monkeypatch.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    value = f"pat-{run_id()}{run_id()}"
    monkeypatch.setenv("IMAGED_SECRET_GITHUB_PAT", value)
    images = load_definitions(str(port(tmp_path) / "images.py"))
    cli, built = infra.docker_cli, {}
    for name in ("port-private", "port-api", "port-implicit", "port-uv"):
        image = override_registry(images[name].clone(name=f"{name}-{run_id()}"), infra.registry)
        built[name] = build(image, force=True).uri
    private = probe_image(cli, built["port-private"], ProbeSpec(texts=["/out/pat.sha256"]))
    assert private["texts"]["/out/pat.sha256"] == hashlib.sha256(value.encode()).hexdigest() + "\n"
    history = docker(cli, "history", "--no-trunc", built["port-private"]).stdout
    assert value not in history
    assert value not in docker(cli, "image", "inspect", built["port-private"]).stdout
    paths = ["/app/src/app.py", "/app/src/data.bin", "/app/src/.env"]
    api = probe_image(cli, built["port-api"], ProbeSpec(dists=["iniconfig"], paths=paths))
    assert api["modes"]["/app/src/app.py"] is not None
    assert api["modes"]["/app/src/data.bin"] is None
    assert api["modes"]["/app/src/.env"] is None
    assert api["cwd"] == "/app"
    assert api["versions"]["iniconfig"]
    implicit = probe_image(cli, built["port-implicit"], ProbeSpec(paths=paths))
    assert implicit["modes"]["/app/src/app.py"] is not None
    assert implicit["modes"]["/app/src/data.bin"] is None
    assert implicit["modes"]["/app/src/.env"] is None
    uv = probe_image(cli, built["port-uv"], ProbeSpec(dists=["iniconfig", "six"]))
    assert uv["versions"]["iniconfig"]
    assert uv["versions"]["six"]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        pytest.param("images = {'web': BASE.with_workdir('/w')}\n", {"web"}, id="dict-key"),
        pytest.param(
            "pair = (BASE.with_workdir('/a'), BASE.with_workdir('/b'))\n",
            {"pair-0", "pair-1"},
            id="tuple",
        ),
        pytest.param("ml_base = BASE.with_workdir('/m')\n", {"ml-base"}, id="variable"),
        pytest.param(
            "class Env:\n    image = BASE.with_workdir('/x')\n", {"base"}, id="class-skipped"
        ),
        pytest.param(
            "BASE2 = BASE.with_workdir('/x').clone(name='x')\nalias = BASE2\n",
            {"x"},
            id="same-image-twice",
        ),
    ],
)
def test_discovery_names_unnamed_images_by_where_they_are(
    tmp_path: Path, source: str, names: set[str]
) -> None:
    header = "from imaged import Image\nBASE = Image.from_base('127.0.0.1:5000/py:3')\n"
    (tmp_path / "images.py").write_text(header + source)
    assert set(load_definitions(str(tmp_path / "images.py"))) == names


def test_dry_run_needs_no_registry_secret(tmp_path: Path, isolated_settings: Path) -> None:
    """A dry run asks no registry, so the unset ``nvcr-pull`` secret is not needed (a real
    build resolves it: tests/test_e2e_build.py builds with one)."""
    root = port(tmp_path)
    result = CliRunner().invoke(
        cli_main, ["build", "--dry-run", f"{root / 'images.py'}:port-vendor"]
    )
    assert result.exit_code == 0, result.output
    assert "registry_secret" not in result.stderr
    assert "NVCR_PULL" not in result.output
