"""A stand-in for flyte.TaskEnvironment: imaged only needs its ``name`` and ``image``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TaskEnvironment:
    name: str
    image: Any = None
