"""Check that every file and folder an Image references exists and is of the right kind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imaged.errors import MissingPathError
from imaged.spec import layers as L

if TYPE_CHECKING:
    from imaged.spec.image import Image


def _expect(path: Path, kind: str, *, image: Image, layer: str) -> None:
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if ok:
        return
    what = "does not exist" if not path.exists() else f"is not a {kind}"
    raise MissingPathError(f"{path} {what} (expected a {kind})", image=image.name, layer=layer)


def _layer_paths(layer: L.Layer) -> list[tuple[Path, str]]:
    """The declared inputs, files before folders; a ``floating`` file may be missing."""
    declared = layer.inputs()
    files = [
        (f.path, "file") for f in declared.files if f.if_missing != "floating" or f.path.exists()
    ]
    return files + [(tree.root, "folder") for tree in declared.trees]


def validate_image(image: Image) -> None:
    """Raise MissingPathError naming the absolute path, the image and the layer."""
    from imaged.spec.image import DockerfileBase, ParentBase

    base = image.base
    if isinstance(base, DockerfileBase):
        _expect(base.dockerfile, "file", image=image, layer="from_dockerfile")
    if isinstance(base, ParentBase):
        validate_image(base.image)
    for index, layer in enumerate(image.layers):
        for path, kind in _layer_paths(layer):
            _expect(path, kind, image=image, layer=image.layer_label(index))
