"""Check that every file and folder an Image references exists and is of the right kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from imaged.errors import MissingPathError
from imaged.spec.layers import Layer


def expect_path(path: Path, kind: str, *, image: str | None, layer: str) -> None:
    """Raise MissingPathError unless ``path`` is a ``kind`` ("file" or "folder")."""
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if ok:
        return
    what = "does not exist" if not path.exists() else f"is not a {kind}"
    raise MissingPathError(f"{path} {what} (expected a {kind})", image=image, layer=layer)


def _layer_paths(layer: Layer) -> list[tuple[Path, str]]:
    """The declared inputs, files before folders; a ``floating`` file may be missing."""
    declared = layer.inputs()
    files = [
        (f.path, "file") for f in declared.files if f.if_missing != "floating" or f.path.exists()
    ]
    return files + [(tree.root, "folder") for tree in declared.trees]


def validate_layers(
    layers: Sequence[Layer], *, image: str | None, label: Callable[[int], str]
) -> None:
    """Every file and folder the layers read exists; ``label(index)`` names a layer.
    :meth:`Image.validate` calls it, after the base (this module does not know Image)."""
    for index, layer in enumerate(layers):
        for path, kind in _layer_paths(layer):
            expect_path(path, kind, image=image, layer=label(index))
