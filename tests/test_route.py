"""route(): which path each image takes, its stem and tail, and the reason in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaged import Image
from imaged.config import load_settings
from imaged.pipeline.route import route
from imaged.spec.layers import Dockerignore, SourceFolder

BASE = "127.0.0.1:5000/python:3.11-slim"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.py").write_text("A = 1\n")
    (tmp_path / "req.txt").write_text("six\n")
    (tmp_path / ".dockerignore").write_text("*.bak\n")
    return folder


def image() -> Image:
    return Image.from_base(BASE).clone(name="app", registry="127.0.0.1:5000")


def fast_on() -> object:
    return load_settings(overrides={"fast_path": True})


def test_file_layers_after_the_last_recipe_take_the_fast_path(src: Path) -> None:
    img = (
        image()
        .with_env_vars({"A": "1"})  # before a recipe: part of the stem, forces nothing
        .with_pip_packages("six")
        .with_source_folder(src, "/app")
        .with_workdir("/app")
        .with_env_vars({"B": "2"})
    )
    decided = route(img, load_settings(overrides={"fast_path": True}))
    assert decided.path == "fast"
    assert (
        decided.reason
        == "3 file layers appended to the stem (built through layer 2 (pip_packages six))"
    )
    assert decided.stem is not None
    assert [la.kind for la in decided.stem.layers] == ["env_vars", "pip_packages"]
    assert (decided.stem.name, decided.stem.registry) == ("app", "127.0.0.1:5000")
    assert [i for i, _ in decided.tail] == [2, 3, 4]
    assert decided.forcing is None


def test_an_image_without_a_recipe_layer_has_the_base_as_its_stem(src: Path) -> None:
    decided = route(image().with_source_folder(src, "/app"), load_settings())
    assert decided.path == "fast"
    assert decided.reason == "1 file layer appended to the stem (built through the base)"
    assert decided.stem is not None
    assert decided.stem.layers == ()
    assert decided.stem.base == image().base


def test_dockerignore_layers_stay_in_the_stem_wherever_they_are(src: Path) -> None:
    ignore = src.parent / ".dockerignore"
    img = image().with_pip_packages("six").with_source_folder(src, "/app").with_dockerignore(ignore)
    decided = route(img, load_settings())
    assert decided.stem is not None
    assert [la.kind for la in decided.stem.layers] == ["pip_packages", "dockerignore"]
    assert [type(la) for _, la in decided.tail] == [SourceFolder]
    assert not any(isinstance(la, Dockerignore) for _, la in decided.tail)


@pytest.mark.parametrize(
    ("make", "settings", "reason", "forcing"),
    [
        pytest.param(
            lambda s: image().with_source_folder(s, "/app").with_commands(["ls /app"]),
            {},
            "layer 1 (source_folder src/) is followed by a recipe layer "
            "(layer 2 (commands ls /app)): a RUN must see the files it follows",
            0,
            id="copy-then-run",
        ),
        pytest.param(
            lambda s: (
                image()
                .with_pip_packages("six")
                .with_source_file(s / "a.py", "/app")
                .with_requirements(s.parent / "req.txt")
            ),
            {},
            "layer 2 (source_files a.py) is followed by a recipe layer "
            "(layer 3 (requirements req.txt)): a RUN must see the files it follows",
            1,
            id="files-then-requirements",
        ),
        pytest.param(
            lambda s: image().with_source_folder(s, "/app"),
            {"fast_path": False},
            "the fast path is off (fast_path = false)",
            None,
            id="setting-off",
        ),
        pytest.param(
            lambda s: Image.from_base(BASE).clone(name="app").with_source_folder(s, "/app"),
            {},
            "the image has no registry: there is no stem to append to",
            None,
            id="no-registry",
        ),
        pytest.param(
            lambda s: image().with_pip_packages("six"),
            {},
            "no file layer follows the last recipe layer: nothing to append",
            None,
            id="no-tail",
        ),
        pytest.param(
            lambda s: image(),
            {},
            "no file layer follows the last recipe layer: nothing to append",
            None,
            id="bare-base",
        ),
    ],
)
def test_the_full_build_and_why(
    src: Path, make: object, settings: dict[str, object], reason: str, forcing: int | None
) -> None:
    decided = route(make(src), load_settings(overrides=settings))  # type: ignore[operator]
    assert (decided.path, decided.reason, decided.forcing) == ("full", reason, forcing)
    assert decided.stem is None
    assert decided.tail == ()


def test_a_dockerfile_image_takes_the_full_build(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    img = Image.from_dockerfile(dockerfile, registry="127.0.0.1:5000", name="df")
    decided = route(img, load_settings())
    assert decided.path == "full"
    assert decided.reason == "its own Dockerfile builds it: imaged appends no layer to it"


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("module", "name", "path"),
    [
        pytest.param("service", "service-api", "fast", id="service-api"),
        pytest.param("service", "service-worker", "fast", id="service-worker"),
        pytest.param("uvproject", "greeter", "fast", id="greeter"),
        # Recipe layers only: nothing to append, the full build is the only path.
        pytest.param("uvproject", "greeter-deps", "full", id="greeter-deps"),
        pytest.param("script", "report", "full", id="script"),
    ],
)
def test_the_examples_take_the_best_path(module: str, name: str, path: str) -> None:
    from imaged.definitions.loader import load_definitions

    images = load_definitions(str(EXAMPLES / module / "images.py"))
    assert route(images[name], load_settings()).path == path
