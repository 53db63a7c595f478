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
from imaged.image import Image
from imaged.layers import Secret

if TYPE_CHECKING:
    from imaged.engine import ImageBuild, abuild, build

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
    # The build engine pulls in I/O libraries: import it only when asked for, so a
    # definition module that does `from imaged import Image` stays light.
    if name in ("build", "abuild", "ImageBuild"):
        from imaged import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'imaged' has no attribute {name!r}")
