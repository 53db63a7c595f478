"""The bases an Image starts from that are not another Image (that one, ``ParentBase``,
lives with :class:`~imaged.spec.image.Image`). Plain records: nothing here reads a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DebianBase:
    """A slim Debian image with a given Python; ``ref`` is resolved from config."""

    ref: str
    python_version: tuple[int, int]


@dataclass(frozen=True)
class RefBase:
    """Any existing image, by reference."""

    ref: str


@dataclass(frozen=True)
class DockerfileBase:
    """A user-written Dockerfile and the build context folder beside it."""

    dockerfile: Path
    context: Path
