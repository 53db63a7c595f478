"""Fast path or full build, and why: an image split into its stem and its tail.

The *stem* is the base and every layer up to and including the last recipe layer (plus the
image's ``with_dockerignore`` rules, which filter every copied folder); BuildKit builds it
and it is pushed under its own content tag. The *tail* is the file layers after it (source
folders and files, code bundles, env vars, workdir), which :mod:`imaged.pipeline.fastpath`
appends in the registry without a build. Pure: reads no file, asks no registry.

A folder, file or bundle copied *before* a recipe layer takes the full build: a RUN must
see the files it follows, so an edit there moves the stem anyway. Env vars and a workdir
before a recipe layer are simply part of the stem (they copy no file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imaged.config import Settings
from imaged.spec.image import DockerfileBase, Image
from imaged.spec.layers import (
    CodeBundle,
    Dockerignore,
    EnvVars,
    Layer,
    SourceFiles,
    SourceFolder,
    Workdir,
)

Path_ = Literal["fast", "full"]
TailLayer = EnvVars | Workdir | SourceFolder | SourceFiles | CodeBundle
_COPIES = (SourceFolder, SourceFiles, CodeBundle)


@dataclass(frozen=True)
class Route:
    """Which path an image takes, and why.

    ``stem`` and ``tail`` are set on the fast path only: ``tail`` holds (index in the
    image's layers, layer) pairs; ``forcing`` is the index of the file layer that a recipe
    layer follows, when that is why the build is full.
    """

    path: Path_
    reason: str
    stem: Image | None = None
    tail: tuple[tuple[int, TailLayer], ...] = ()
    forcing: int | None = None


def describe_layer(image: Image, index: int) -> str:
    """``layer 3 (source_folder src/)``: 1-based, as ``imaged plan`` lists layers."""
    return f"layer {index + 1} ({image.layers[index].describe()})"


def _is_recipe(layer: Layer) -> bool:
    return layer.category == "recipe"


def _last_recipe(image: Image) -> int:
    return max((i for i, la in enumerate(image.layers) if _is_recipe(la)), default=-1)


def _forcing(image: Image, last: int) -> tuple[int, int] | None:
    """The first copy layer a recipe layer follows, and that recipe layer."""
    for index, layer in enumerate(image.layers[: max(last, 0)]):
        if isinstance(layer, _COPIES):
            after = next(j for j in range(index + 1, last + 1) if _is_recipe(image.layers[j]))
            return index, after
    return None


def stem_of(image: Image) -> Image:
    """The stem: the same name and registry, the base, the layers through the last recipe
    layer, and every dockerignore layer (they filter the stem's copied folders too)."""
    last = _last_recipe(image)
    layers = tuple(
        la for i, la in enumerate(image.layers) if i <= last or isinstance(la, Dockerignore)
    )
    return image._evolve(layers=layers)


def tail_of(image: Image) -> tuple[tuple[int, TailLayer], ...]:
    """The file layers after the last recipe layer (dockerignore rules are not layers)."""
    last = _last_recipe(image)
    return tuple(
        (i, la)
        for i, la in enumerate(image.layers)
        if i > last and isinstance(la, EnvVars | Workdir | SourceFolder | SourceFiles | CodeBundle)
    )


def route(image: Image, settings: Settings) -> Route:
    """Route ``image`` (with its registry override applied).

    >>> # route(Image.from_base("debian:12").with_workdir("/app"), settings).path
    """
    if not settings.fast_path:
        return Route("full", "the fast path is off (fast_path = false)")
    if not image.registry:
        return Route("full", "the image has no registry: there is no stem to append to")
    if isinstance(image.base, DockerfileBase):
        return Route("full", "its own Dockerfile builds it: imaged appends no layer to it")
    last = _last_recipe(image)
    forced = _forcing(image, last)
    if forced is not None:
        index, after = forced
        return Route(
            "full",
            f"{describe_layer(image, index)} is followed by a recipe layer "
            f"({describe_layer(image, after)}): a RUN must see the files it follows",
            forcing=index,
        )
    tail = tail_of(image)
    if not tail:
        return Route("full", "no file layer follows the last recipe layer: nothing to append")
    stem = stem_of(image)
    what = f"{len(tail)} file layer{'s' if len(tail) > 1 else ''}"
    base = "the base" if last < 0 else describe_layer(image, last)
    return Route(
        "fast", f"{what} appended to the stem (built through {base})", stem=stem, tail=tail
    )
