"""The public surface: a curated __all__, and a light import for definition modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

import imaged

EXPECTED = {
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
}


def test_all_is_curated() -> None:
    assert set(imaged.__all__) == EXPECTED
    assert sorted(imaged.__all__) == list(imaged.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(imaged, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = imaged.nope  # type: ignore[attr-defined]


def test_definition_import_pulls_in_no_io_library() -> None:
    code = (
        "import sys, imaged; from imaged import Image, Secret;"
        "Image.from_base('debian:12').with_env_vars({'A': 'b'});"
        "print(','.join(m for m in ('docker', 'httpx', 'anyio', 'structlog', 'rich', 'click',"
        " 'watchfiles') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
