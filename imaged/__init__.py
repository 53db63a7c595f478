"""imaged: container images as Python code, tagged by their content digest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imaged.errors import (
    BuildError,
    ConfigError,
    DefinitionError,
    ImagedError,
    MissingPathError,
    RegistryError,
    SpecError,
)
from imaged.spec.image import Image
from imaged.spec.layers import Secret

if TYPE_CHECKING:
    from imaged.pipeline.build import ImageBuild, abuild, build

__all__ = [
    "BuildError",
    "ConfigError",
    "DefinitionError",
    "Image",
    "ImageBuild",
    "ImagedError",
    "MissingPathError",
    "RegistryError",
    "Secret",
    "SpecError",
    "abuild",
    "build",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The build pipeline pulls in I/O libraries: import it only when asked for, so a
    # definition module that does `from imaged import Image` stays light.
    if name in ("build", "abuild", "ImageBuild"):
        from imaged.pipeline import build as pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'imaged' has no attribute {name!r}")
