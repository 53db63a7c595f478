"""Shared fixtures: the real engines, registries and base image from scripts/test-infra.sh."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from infra import (
    REQUIRE_ENV,
    Infra,
    InfraUnavailable,
    check_infra,
    docker_required,
    load_infra,
    write_docker_config,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the infra as docker, so `-m "not docker"` leaves it out."""
    for item in items:
        if "infra" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def infra() -> Infra:
    """The checked test infra; fails under IMAGED_REQUIRE_DOCKER=1, else skips, when absent."""
    try:
        loaded = load_infra()
        check_infra(loaded)
    except InfraUnavailable as exc:
        if docker_required():
            pytest.fail(f"{REQUIRE_ENV} is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    return loaded


@pytest.fixture(scope="session")
def debian_base_env(infra: Infra) -> str:
    """The value for IMAGED_DEBIAN_BASE: the loopback mirror's ``{major}.{minor}`` template."""
    return infra.debian_base_template


@pytest.fixture
def docker_config_dir(infra: Infra, tmp_path: Path) -> Path:
    """A DOCKER_CONFIG folder whose config.json logs in to the auth registry."""
    return write_docker_config(
        tmp_path / "docker-config",
        registry=infra.auth_registry,
        user=infra.auth_user,
        password=infra.auth_password,
    )


@pytest.fixture
def wrong_docker_config_dir(infra: Infra, tmp_path: Path) -> Path:
    """A DOCKER_CONFIG folder with a wrong password for the auth registry."""
    return write_docker_config(
        tmp_path / "wrong-docker-config",
        registry=infra.auth_registry,
        user=infra.auth_user,
        password="wrong-" + secrets.token_hex(8),
    )


@pytest.fixture(autouse=True)
def _no_exported_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config` exports IMAGED_CONFIG for definition modules (imaged.config.export_config_file);
    in-process CLI tests must not leak it into the tests that follow. An empty value means
    unset, and monkeypatch restores the variable's absence afterwards."""
    if not os.environ.get("IMAGED_CONFIG"):
        monkeypatch.setenv("IMAGED_CONFIG", "")


@pytest.fixture
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No IMAGED_* setting leaks in from the environment, and the cwd is an empty folder
    with no config file; returns that folder."""
    from imaged.config import SETTINGS

    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv("IMAGED_CONFIG", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd
