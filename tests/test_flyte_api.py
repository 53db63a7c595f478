"""Our Image and Secret take Flyte 2's parameters: names, order and kinds.

The table is written from flyte-sdk's ``src/flyte/_image.py`` and ``_secret.py`` (Flyte
2.x); the ``flyte`` package is not needed. ``P`` is positional-or-keyword, ``*P`` var-positional,
``K`` keyword-only; a trailing ``=`` marks a default. Parameters of ours beyond Flyte's must
come after them, be keyword-only and have a default, so every Flyte call still works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from imaged import Image, Secret

FLYTE: dict[str, tuple[str, ...]] = {
    "from_debian_base": (
        "P python_version=",
        "P flyte_version=",
        "P install_flyte=",
        "P registry=",
        "P registry_secret=",
        "P name=",
        "P platform=",
    ),
    "from_base": ("P image_uri",),
    "from_ref_name": ("P name=",),
    "from_dockerfile": ("P file", "P registry", "P name", "P platform="),
    "from_uv_script": (
        "P script",
        "K name",
        "K registry=",
        "K registry_secret=",
        "K python_version=",
        "K index_url=",
        "K extra_index_urls=",
        "K pre=",
        "K extra_args=",
        "K platform=",
        "K secret_mounts=",
    ),
    "clone": (
        "P registry=",
        "P registry_secret=",
        "P name=",
        "P base_image=",
        "P python_version=",
        "P addl_layer=",
        "P extendable=",
        "P platform=",
    ),
    "with_workdir": ("P workdir",),
    "with_requirements": (
        "P file",
        "P index_url=",
        "P extra_index_urls=",
        "P pre=",
        "P extra_args=",
        "P secret_mounts=",
    ),
    "with_pip_packages": (
        "*P packages",
        "K index_url=",
        "K extra_index_urls=",
        "K pre=",
        "K extra_args=",
        "K secret_mounts=",
    ),
    "with_env_vars": ("P env_vars",),
    "with_source_folder": ("P src", "P dst=", "P copy_contents_only="),
    "with_source_file": ("P src", "P dst="),
    "with_code_bundle": ("P copy_style=", "P dst="),
    "with_dockerignore": ("P path",),
    "with_uv_project": (
        "P pyproject_file",
        "P uvlock=",
        "P index_url=",
        "P extra_index_urls=",
        "P pre=",
        "P extra_args=",
        "P secret_mounts=",
        "P project_install_mode=",
    ),
    "with_poetry_project": (
        "P pyproject_file",
        "P poetry_lock=",
        "P extra_args=",
        "P secret_mounts=",
        "P project_install_mode=",
    ),
    "with_apt_packages": ("*P packages", "K secret_mounts="),
    "with_commands": ("P commands", "P secret_mounts="),
    "with_local_v2": (),
}
FLYTE_SECRET = ("P key", "P group=", "P mount=", "P as_env_var=")

_KINDS = {
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "P",
    inspect.Parameter.VAR_POSITIONAL: "*P",
    inspect.Parameter.KEYWORD_ONLY: "K",
}


def describe(function: Callable[..., Any]) -> tuple[str, ...]:
    params = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    out = []
    for p in params:
        default = "=" if p.default is not inspect.Parameter.empty else ""
        out.append(f"{_KINDS.get(p.kind, str(p.kind))} {p.name}{default}")
    return tuple(out)


@pytest.mark.parametrize("method", sorted(FLYTE), ids=sorted(FLYTE))
def test_image_method_takes_flytes_parameters(method: str) -> None:
    ours = describe(getattr(Image, method))
    flyte = FLYTE[method]
    assert ours[: len(flyte)] == flyte
    assert all(extra.startswith("K ") and extra.endswith("=") for extra in ours[len(flyte) :])


def test_secret_takes_flytes_fields() -> None:
    assert describe(Secret) == FLYTE_SECRET


def test_every_public_constructor_and_with_method_is_in_the_table() -> None:
    public = {
        name for name in dir(Image) if name.startswith(("from_", "with_")) or name == "clone"
    } - {"from_json"}
    assert public == set(FLYTE)


# -- Flyte's meaning, and where we are stricter, with the fix in the message -------------


@pytest.mark.parametrize(
    ("secret", "variable"),
    [
        pytest.param(Secret("GITHUB_PAT"), "GITHUB_PAT", id="plain"),
        pytest.param(Secret("hf-token"), "HF_TOKEN", id="dash"),
        pytest.param(Secret("token", group="github"), "GITHUB_TOKEN", id="group"),
        pytest.param(Secret("k", as_env_var="HF"), "HF", id="explicit"),
        pytest.param(Secret("k", mount="/run/k"), None, id="mount-only"),
    ],
)
def test_secret_variable_defaults_as_in_flyte(secret: Secret, variable: str | None) -> None:
    assert secret.as_env_var == variable


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        pytest.param(lambda: Secret("path"), "as_env_var=", id="secret-shadows-PATH"),
        pytest.param(lambda: Secret("1pass"), "as_env_var=", id="secret-digit"),
        pytest.param(
            lambda: Image.from_base("r:1").with_workdir("app"), "with_workdir('/app')", id="wd"
        ),
        pytest.param(
            lambda: Image.from_debian_base(python_version="3.11"),  # type: ignore[arg-type]
            "python_version=(3, 11)",
            id="python-str",
        ),
        pytest.param(
            lambda: Image.from_base("r:1").with_code_bundle("/code"),  # type: ignore[arg-type]
            "dst='/code'",
            id="bundle-dst",
        ),
        pytest.param(
            lambda: Image.from_base("r:1").with_local_v2(), "flyte_version=", id="local-v2"
        ),
        pytest.param(
            lambda: Image.from_base("r:1").clone(name="x", extendable=False).with_workdir("/a"),
            "clone(extendable=True)",
            id="not-extendable",
        ),
    ],
)
def test_stricter_errors_say_what_to_write(call: Callable[[], object], hint: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert hint in str(info.value)


def test_flyte_is_installed_only_when_asked(isolated_settings: Any) -> None:
    assert Image.from_debian_base(name="a").layers == ()
    pinned = Image.from_debian_base(name="a", flyte_version="2.12.1").layers
    assert [layer.describe() for layer in pinned] == ["pip_packages flyte==2.12.1"]
    latest = Image.from_debian_base(name="a", install_flyte=True).layers
    assert [layer.describe() for layer in latest] == ["pip_packages flyte"]


def test_clone_takes_flytes_options(isolated_settings: Any) -> None:
    base = Image.from_debian_base(python_version=(3, 11), name="base")
    clone = base.clone(
        name="vendor",
        registry="127.0.0.1:5000",
        registry_secret="nvcr-pull",
        python_version=(3, 12),
        platform=("linux/amd64", "linux/arm64"),
        extendable=True,
    )
    assert clone.python_version == (3, 12)
    assert "3.12" in clone.base_label
    assert clone.registry_secret == Secret("nvcr-pull")
    assert clone.platform == ("linux/amd64", "linux/arm64")
    assert Image.loads(clone.dumps()) == clone
    assert clone.clone(base_image="r:2").base_label == "r:2"


def test_from_ref_name_reads_image_refs(isolated_settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("IMAGED_IMAGE_REFS", "prebuilt=127.0.0.1:5000/tools:1.4")
    image = Image.from_ref_name("prebuilt")
    assert (image.name, image.base_label) == ("prebuilt", "127.0.0.1:5000/tools:1.4")
    with pytest.raises(Exception, match=r"\[image_refs\] missing = "):
        Image.from_ref_name("missing")
