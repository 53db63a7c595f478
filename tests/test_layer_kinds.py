"""Each layer kind is declared once (imaged.spec.layers): the hasher, the tracker, the
validator and the renderer all follow that declaration, and none of them misses a kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, get_args

import pytest

from imaged import Image
from imaged.daemon.tracker import image_deps
from imaged.digest.cache import DigestCache
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeSource
from imaged.errors import MissingPathError
from imaged.render.dockerfile import render_dockerfile
from imaged.spec.layers import (
    LAYER_KINDS,
    AptPackages,
    CodeBundle,
    Commands,
    Dockerignore,
    EnvVars,
    FileLayer,
    KnownLayer,
    Layer,
    PipPackages,
    PoetryProject,
    RecipeLayer,
    Requirements,
    SourceFiles,
    SourceFolder,
    UvProject,
    UvScript,
    Workdir,
)

HEADER = '# /// script\n# dependencies = ["attrs==23.2.0"]\n# ///\nprint("hi")\n'


def _subclasses(cls: type[Layer]) -> set[type[Layer]]:
    out: set[type[Layer]] = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_layer_class_is_a_registered_kind() -> None:
    kinds = {cls for cls in _subclasses(Layer) if cls.__module__ == Layer.__module__}
    assert kinds == set(LAYER_KINDS.values())
    assert all(LAYER_KINDS[cls.kind] is cls for cls in kinds)


def test_the_typed_families_hold_every_kind_once() -> None:
    """The unions the renderer matches on exhaustively (so mypy names a forgotten kind)."""
    recipe, files = get_args(RecipeLayer), get_args(FileLayer)
    assert set(get_args(KnownLayer)) == set(LAYER_KINDS.values())
    assert not set(recipe) & set(files)
    assert {cls.category for cls in recipe} == {"recipe"}
    assert {cls.category for cls in files} == {"files"}


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_the_renderer_renders_every_kind(kind: str, project: Path) -> None:
    layer = next(x for x in _every_kind(project) if x.kind == kind)
    image = _image([layer])
    rendered = render_dockerfile(image, hash_image(image, DigestCache()))
    assert rendered.dockerfile.startswith("FROM debian:12\n")
    if kind != "dockerignore":  # its rules act through the folder layers only
        assert len(rendered.dockerfile.splitlines()) > 2


def test_a_kind_without_digest_fields_cannot_be_made() -> None:
    @dataclass(frozen=True)
    class Forgotten(Layer):
        kind: ClassVar[str] = ""  # not registered: a test-only kind

    maker: Any = Forgotten
    with pytest.raises(TypeError, match="digest_fields"):
        maker()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    files = {
        "pyproject.toml": '[project]\nname = "p"\nversion = "0"\n',
        "uv.lock": "version = 1\n",
        "poetry.lock": "# poetry\n",
        "requirements.txt": "attrs==23.2.0\n",
        "job.py": HEADER,
        "a.py": "A = 1\n",
        "b.sh": "echo b\n",
        "src/app/main.py": "print(1)\n",
        "extra.dockerignore": "*.log\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "b.sh").chmod(0o755)
    return tmp_path


def _every_kind(root: Path) -> list[Layer]:
    return [
        AptPackages(packages=("curl",)),
        PipPackages(packages=("rich",)),
        Requirements(file=root / "requirements.txt"),
        UvProject(pyproject=root / "pyproject.toml", uvlock=root / "uv.lock"),
        UvProject(
            pyproject=root / "pyproject.toml", uvlock=root / "none.lock", mode="install_project"
        ),
        PoetryProject(pyproject=root / "pyproject.toml", poetry_lock=root / "poetry.lock"),
        UvScript(script=root / "job.py"),
        Commands(commands=("true",)),
        EnvVars(env=(("A", "1"),)),
        Workdir(path="/app"),
        SourceFolder(src=root / "src", dst="/app"),
        SourceFiles(files=(root / "a.py", root / "b.sh"), dst="/app"),
        CodeBundle(root=root, copy_style="loaded_modules"),
        Dockerignore(path=root / "extra.dockerignore"),
    ]


def _image(layers: list[Layer]) -> Image:
    image = Image.from_base("debian:12").clone(name="kinds", registry=None)
    for layer in layers:
        image = image._with(layer)
    return image


def test_the_sample_covers_every_kind(project: Path) -> None:
    assert {type(x) for x in _every_kind(project)} == set(LAYER_KINDS.values())


def test_hasher_and_tracker_read_exactly_the_declared_inputs(project: Path) -> None:
    image = _image(_every_kind(project))
    digest = hash_image(image, DigestCache(), trees=lambda s, c: _tree(s, c))
    extras = (project / "extra.dockerignore",)
    deps = {d.index: d for d in image_deps(image)}
    for layer_digest in digest.layers:
        declared = image.layers[layer_digest.index].inputs()
        sources = tuple(TreeSource.of(t, extras) for t in declared.trees)
        assert tuple(t.root for t in layer_digest.trees) == tuple(t.root for t in declared.trees)
        assert deps[layer_digest.index].trees == sources
        declared_files = tuple(str(f.path) for f in declared.files)
        assert deps[layer_digest.index].files == declared_files
        # What the build stages is what was declared (a floating lock that is absent: nothing).
        recorded = tuple(path for path, _ in layer_digest.files)
        present = tuple(
            str(f.path) for f in declared.files if f.if_missing != "floating" or f.path.exists()
        )
        assert recorded == present
    assert image.validate() is image  # every declared input is there


def _tree(source: TreeSource, cache: DigestCache) -> Any:
    from imaged.digest.trees import TreeIndex

    return TreeIndex.build(source.root, source.read_rules(), cache)


@pytest.mark.parametrize(
    ("make", "missing"),
    [
        pytest.param(lambda r: Requirements(file=r / "gone.txt"), "gone.txt", id="requirements"),
        pytest.param(lambda r: SourceFolder(src=r / "gone"), "gone", id="source_folder"),
        pytest.param(lambda r: UvScript(script=r / "gone.py"), "gone.py", id="uv_script"),
        pytest.param(
            lambda r: PoetryProject(pyproject=r / "pyproject.toml", poetry_lock=r / "gone.lock"),
            "gone.lock",
            id="poetry_lock",
        ),
    ],
)
def test_validator_and_hasher_refuse_a_missing_declared_input(
    project: Path, make: Any, missing: str
) -> None:
    image = _image([make(project)])
    with pytest.raises(MissingPathError, match=missing) as validated:
        image.validate()
    assert validated.value.layer == image.layer_label(0)
    with pytest.raises(MissingPathError, match=missing):
        hash_image(image, DigestCache())


def test_a_floating_lock_may_be_missing_but_an_explicit_one_may_not(project: Path) -> None:
    floating = UvProject(pyproject=project / "pyproject.toml", uvlock=project / "none.lock")
    image = _image([floating])
    image.validate()
    recorded = hash_image(image, DigestCache()).layers[0].files
    assert [path for path, _ in recorded] == [str(project / "pyproject.toml")]
    required = UvProject(
        pyproject=project / "pyproject.toml", uvlock=project / "none.lock", lock_required=True
    )
    with pytest.raises(MissingPathError, match=r"none\.lock"):
        _image([required]).validate()
