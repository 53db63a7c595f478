"""The real engines and registries scripts/test-infra.sh starts, as the tests see them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
STATE_ENV = "IMAGED_TEST_INFRA"
REQUIRE_ENV = "IMAGED_REQUIRE_DOCKER"
SETUP_HINT = "run `bash scripts/test-infra.sh` (as root on CI) to start it"


class InfraUnavailable(Exception):
    """The state file is missing or broken, or a service it lists does not answer."""


@dataclass(frozen=True)
class Infra:
    """What the docker-marked tests may use: engines, registries, base image, CA bundle.

    Example::

        def test_push(infra: Infra) -> None:
            subprocess.run([infra.docker_cli, "pull", infra.debian_base], env=infra.docker_env())
    """

    registry: str
    auth_registry: str
    auth_user: str
    auth_password: str
    docker_cli: str
    debian_base_template: str
    debian_base: str
    docker_buildx: bool = False
    docker_host: str | None = None
    remote_docker_host: str | None = None
    remote_build_network: str | None = None
    ca_bundle: str | None = None
    pids: Mapping[str, int | None] = field(default_factory=dict)
    logs: Mapping[str, str | None] = field(default_factory=dict)
    state_file: Path = REPO / ".imaged-test-infra.json"

    def docker_env(self, **extra: str) -> dict[str, str]:
        """The environment for the local engine: DOCKER_HOST unset unless the infra names one."""
        env = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        env.update(extra)
        return env

    def remote_docker_env(self, **extra: str) -> dict[str, str]:
        """The environment for the remote engine; raises when the infra has none."""
        if not self.remote_docker_host:
            raise InfraUnavailable(f"the test infra has no remote engine; {SETUP_HINT}")
        return {**os.environ, "DOCKER_HOST": self.remote_docker_host, **extra}

    def debian_base_for(self, *, major: int, minor: int) -> str:
        """The mirrored Debian Python base for one Python version."""
        return self.debian_base_template.format(major=major, minor=minor)


def docker_required() -> bool:
    """Whether a missing or broken infra fails the tests instead of skipping them."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def state_path() -> Path:
    """Where test-infra.sh writes its state: ``$IMAGED_TEST_INFRA`` or the repo default."""
    return Path(os.environ.get(STATE_ENV) or REPO / ".imaged-test-infra.json")


def load_infra(path: Path | None = None) -> Infra:
    """Read the state file; raise InfraUnavailable when it is absent or malformed."""
    path = path or state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise InfraUnavailable(f"no test infra state at {path}; {SETUP_HINT}") from None
    except (OSError, ValueError) as exc:
        raise InfraUnavailable(f"unreadable test infra state {path}: {exc}") from None
    known = Infra.__dataclass_fields__.keys() - {"state_file"}
    try:
        return Infra(**{k: v for k, v in state.items() if k in known}, state_file=path)
    except TypeError as exc:
        raise InfraUnavailable(f"incomplete test infra state {path}: {exc}; {SETUP_HINT}") from None


def _registry_status(address: str, *, auth: tuple[str, str] | None = None) -> int | str:
    try:
        return httpx.get(f"http://{address}/v2/", auth=auth, timeout=5, trust_env=False).status_code
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def _engine_problem(infra: Infra, env: Mapping[str, str], name: str) -> str | None:
    try:
        done = subprocess.run(
            [infra.docker_cli, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{name}: {exc}"
    if done.returncode != 0:
        return f"{name} does not answer: {done.stderr.strip()[-300:]}"
    return None


def find_problems(infra: Infra) -> list[str]:
    """Everything about the infra that does not answer as the state file says it should."""
    problems = []
    plain = _registry_status(infra.registry)
    if plain != 200:
        problems.append(f"registry {infra.registry}/v2/ answered {plain}, not 200")
    anonymous = _registry_status(infra.auth_registry)
    if anonymous != 401:
        problems.append(f"auth registry {infra.auth_registry}/v2/ answered {anonymous}, not 401")
    engine = _engine_problem(infra, infra.docker_env(), "local engine")
    if engine:
        problems.append(engine)
    if infra.remote_docker_host:
        remote = _engine_problem(infra, infra.remote_docker_env(), "remote engine")
        if remote:
            problems.append(remote)
    return problems


def check_infra(infra: Infra) -> None:
    """Raise InfraUnavailable naming every service that does not answer, and the logs."""
    problems = find_problems(infra)
    if problems:
        logs = ", ".join(f"{k}: {v}" for k, v in infra.logs.items() if v)
        raise InfraUnavailable(
            f"test infra from {infra.state_file} is not healthy: {'; '.join(problems)}. "
            f"{SETUP_HINT}. Logs: {logs}"
        )


def write_docker_config(folder: Path, *, registry: str, user: str, password: str) -> Path:
    """Write ``folder/config.json`` with basic auth for one registry; return ``folder``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    folder.mkdir(parents=True, exist_ok=True)
    config = {"auths": {registry: {"auth": token}}}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
