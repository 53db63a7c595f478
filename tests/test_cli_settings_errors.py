"""Bad engine settings reach the user of ``imaged build`` and ``imaged watch`` as one
``error:`` line naming the setting, with exit 78 (EX_CONFIG), before anything is built: a URL
with a wrong scheme, a Docker context that does not exist, a builder that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fake_buildx import install_fake_buildx

from imaged.builders.local import find_docker_cli
from imaged.cli.main import main as cli_main

DEFS = """
from imaged import Image
app = Image.from_base("debian:12").with_commands("true").clone(
    name="settings-errors", registry="127.0.0.1:1"
)
"""

CASES = [
    pytest.param(
        {"IMAGED_POOL": "http://10.0.0.5:2375"},
        "pool entry 'http://10.0.0.5:2375': wrong scheme 'http'",
        id="pool-wrong-scheme",
    ),
    pytest.param(
        {"IMAGED_BUILDER": "remote", "IMAGED_DOCKER_HOST": "https://10.0.0.5:2376"},
        "docker_host: invalid value 'https://10.0.0.5:2376': wrong scheme 'https'",
        id="docker-host-wrong-scheme",
    ),
    pytest.param(
        {"IMAGED_POOL": "context:no-such-context-x"},
        "pool entry 'context:no-such-context-x': docker_context: no docker context",
        id="pool-unknown-context",
    ),
    pytest.param(
        {"IMAGED_BUILDER": "remote", "IMAGED_DOCKER_CONTEXT": "no-such-context-x"},
        "docker_context: no docker context 'no-such-context-x'",
        id="unknown-context",
    ),
    pytest.param(
        {"IMAGED_BUILDER": "no-such-builder"},
        "builder: unknown builder 'no-such-builder'",
        id="unknown-builder",
    ),
]


@pytest.fixture(autouse=True)
def fresh_cli_probe() -> Iterator[None]:
    """Whether the docker CLI has buildx depends on DOCKER_CONFIG, which these tests point at
    the stand-in plugin: probe the CLI afresh (the probe is cached per path), before and after."""
    find_docker_cli.cache_clear()
    yield
    find_docker_cli.cache_clear()


@pytest.fixture
def defs(isolated_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no contexts
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "defs.py"
    path.write_text(DEFS)
    return path


def _one_error_line(command: str, defs: Path, env: dict[str, str], expected: str) -> None:
    result = CliRunner().invoke(cli_main, [command, str(defs)], env=env)
    assert result.exit_code == 78, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines
    assert "Traceback" not in result.output
    assert "settings-errors" not in result.stdout  # nothing was built or reported as built


@pytest.mark.parametrize("command", ["build", "watch"])
@pytest.mark.parametrize(("env", "expected"), CASES)
def test_a_bad_engine_setting_is_one_line_and_exit_78(
    defs: Path, command: str, env: dict[str, str], expected: str
) -> None:
    _one_error_line(command, defs, env, expected)


@pytest.mark.docker
@pytest.mark.parametrize("command", ["build", "watch"])
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"IMAGED_POOL": "buildx:nosuch"},
            "pool entry 'buildx:nosuch': no buildx builder 'nosuch'",
            id="pool-entry",
        ),
        pytest.param(
            {"IMAGED_BUILDER": "buildx", "IMAGED_BUILDX_BUILDER": "nosuch"},
            "buildx_builder: there is no buildx builder 'nosuch'",
            id="buildx-builder",
        ),
    ],
)
def test_a_buildx_builder_that_does_not_exist_is_one_line_and_exit_78(
    infra: Any,
    defs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    env: dict[str, str],
    expected: str,
) -> None:
    """The docker CLI of the infra, with the stand-in buildx plugin knowing only "farm"."""
    fake = install_fake_buildx(tmp_path / "dc", docker_cli=infra.docker_cli, builders=("farm",))
    monkeypatch.setenv("DOCKER_CONFIG", str(fake.config_dir))
    monkeypatch.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    _one_error_line(command, defs, env, expected)
    assert [call["args"] for call in fake.calls()][-1] == ["inspect", "nosuch"]
