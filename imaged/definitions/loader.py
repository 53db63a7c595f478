"""Load image definitions from a Python module: ``path/to/images.py[:NAME]``.

A definition module exposes images at module level: as variables, inside lists, tuples
and dicts, or as the ``image`` of an object (a Flyte ``TaskEnvironment(name=..., image=...)``).
An image without a name takes one from where it was found: the environment's ``name``, the
dict key, ``<variable>-<index>`` in a list, else the variable (lower case, ``_`` as ``-``).
An image that is only a stage of another found image (the ``base`` of
``api = base.with_pip_packages(...)``) is not an image of its own; two unrelated images
with one name are an error.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from imaged.errors import DefinitionError
from imaged.spec.image import Image


@dataclass(frozen=True)
class Target:
    """A definition file and, optionally, one image name in it."""

    path: Path
    name: str | None = None


def parse_target(text: str) -> Target:
    """``images.py`` or ``images.py:api`` (a colon after the ``.py`` suffix selects)."""
    path, sep, name = text.rpartition(":")
    if sep and path.endswith(".py") and name and "/" not in name:
        return Target(Path(path), name)
    return Target(Path(text), None)


def _user_frame(exc: BaseException, file: Path) -> tuple[str, int | None]:
    """The last traceback frame inside the definition's folder, else the last frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    folder = str(file.parent)
    inside = [f for f in frames if f.filename.startswith(folder)]
    chosen = inside or list(frames)
    if not chosen:
        return str(file), None
    return chosen[-1].filename, chosen[-1].lineno


def import_definition(path: Path) -> ModuleType:
    """Import a definition file as a fresh module; errors name the file and line."""
    file = path.resolve()
    if not file.is_file():
        raise DefinitionError("definition file not found", file=str(file))
    module_name = f"imaged_definition_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise DefinitionError("not a Python module", file=str(file))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise DefinitionError(
            f"syntax error: {exc.msg}", file=exc.filename or str(file), line=exc.lineno
        ) from exc
    except Exception as exc:
        where, line = _user_frame(exc, file)
        raise DefinitionError(f"{type(exc).__name__}: {exc}", file=where, line=line) from exc
    except SystemExit as exc:  # even sys.exit(0): a definition that exits defined nothing
        where, line = _user_frame(exc, file)
        message = (
            f"SystemExit: the module called sys.exit({exc.code!r}); a definition must not exit"
        )
        raise DefinitionError(message, file=where, line=line) from exc
    finally:
        if sys.path and sys.path[0] == str(file.parent):
            sys.path.pop(0)
    return module


def _is_stage_of(candidate: Image, other: Image) -> bool:
    """True when ``other`` extends ``candidate`` (same base, candidate's layers a prefix)."""
    return (
        candidate is not other
        and candidate.base == other.base
        and len(candidate.layers) < len(other.layers)
        and other.layers[: len(candidate.layers)] == candidate.layers
    )


def default_name(text: str) -> str:
    """An image name from a variable, key or environment name: ``ml_train`` -> ``ml-train``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower().replace("_", "-")).strip("-._")
    return name or "image"


def _environment_image(value: Any) -> tuple[Image, str | None] | None:
    """An object's ``image`` (a Flyte environment's), and its ``name`` when it has one."""
    if isinstance(value, type | ModuleType) or callable(value):
        return None
    try:
        image, name = getattr(value, "image", None), getattr(value, "name", None)
    except Exception:  # a property of the user's that fails is not our business
        return None
    if not isinstance(image, Image):
        return None
    return image, name if isinstance(name, str) and name else None


def _found(var: str, value: Any) -> Iterator[tuple[str, Image, str]]:
    """(where, image, default name) for every image ``value`` holds."""
    if isinstance(value, Image):
        yield var, value, default_name(var)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, Image):
                yield f"{var}[{index}]", item, default_name(f"{var}-{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, Image):
                yield f"{var}[{key!r}]", item, default_name(str(key))
    elif (env := _environment_image(value)) is not None:
        yield f"{var}.image", env[0], default_name(env[1] or var)


def _candidates(module: ModuleType) -> list[tuple[str, Image]]:
    """Every image the module holds, unnamed ones named by where they were found; an unnamed
    stage of another found image is dropped (it is built as part of that image)."""
    raw = [
        f
        for var, value in vars(module).items()
        if not var.startswith("_")
        for f in _found(var, value)
    ]
    everything = [image for _, image, _ in raw]
    out: list[tuple[str, Image]] = []
    for where, image, name in raw:
        if image.name:
            out.append((where, image))
        elif not any(_built_within(image, other) for other in everything):
            out.append((where, image.clone(name=name)))
    return out


def _built_within(candidate: Image, other: Image) -> bool:
    """An unnamed ``candidate`` is part of ``other``: a stage of it, or it renamed."""
    return (
        candidate is not other
        and candidate.base == other.base
        and len(candidate.layers) <= len(other.layers)
        and other.layers[: len(candidate.layers)] == candidate.layers
        and (other.name is not None or len(candidate.layers) < len(other.layers))
    )


def collect_images(module: ModuleType, *, file: Path) -> dict[str, Image]:
    """The images a module defines, by image name, in definition order."""
    found: dict[str, list[tuple[str, Image]]] = {}
    for var, value in _candidates(module):
        assert value.name is not None
        found.setdefault(value.name, []).append((var, value))
    images: dict[str, Image] = {}
    for name, entries in found.items():
        unique = {id(img): (var, img) for var, img in entries}
        # The same spec found twice (a variable and an environment) is one image.
        unique = {img: (var, img) for var, img in unique.values()}  # type: ignore[misc]
        finals = [
            (v, img)
            for v, img in unique.values()
            if not any(_is_stage_of(img, other) for _, other in unique.values())
        ]
        if len({i for _, i in finals}) > 1:
            names = ", ".join(v for v, _ in finals)
            raise DefinitionError(
                f"duplicate image name {name!r} (variables {names}); "
                "give each image its own name, e.g. .clone(name=...)",
                file=str(file),
            )
        images[name] = finals[0][1]
    return images


def select_images(
    images: dict[str, Image], target: Target, *, variables: dict[str, str] | None = None
) -> dict[str, Image]:
    """The images ``target`` asks for: all of them, or the one it names (by image name, or
    by the variable that holds it: ``variables`` maps variable names to image names)."""
    file = str(target.path.resolve())
    if target.name is None:
        if not images:
            raise DefinitionError("defines no Image at module level", file=file)
        return images
    name = target.name if target.name in images else (variables or {}).get(target.name)
    if name is None or name not in images:
        known = ", ".join(sorted(images)) or "none"
        raise DefinitionError(f"no image named {target.name!r} (images: {known})", file=file)
    return {name: images[name]}


def image_variables(module: ModuleType, images: dict[str, Image]) -> dict[str, str]:
    """Module-level variable name -> image name, for each variable holding one of ``images``."""
    return {
        var: value.name
        for var, value in vars(module).items()
        if isinstance(value, Image) and value.name in images
    }


def load_definitions(target: Target | str) -> dict[str, Image]:
    """Import a definition file in this process and return its images (one, when the target
    names it). The CLI loads in a child instead: :func:`imaged.definitions.child.load_target`."""
    if isinstance(target, str):
        target = parse_target(target)
    file = target.path.resolve()
    module = import_definition(file)
    images = collect_images(module, file=file)
    return select_images(images, target, variables=image_variables(module, images))
