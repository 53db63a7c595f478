"""The remote builder: the local builder pointed at another engine (docker_host or a context)."""

from __future__ import annotations

from typing import Any

from imaged.builders.local import LocalBuilder, context_client_kwargs
from imaged.config import ENV_VARS, Settings
from imaged.errors import ConfigError


class RemoteBuilder(LocalBuilder):
    """Builds and pushes through the engine at ``docker_host`` (tcp://, ssh://, unix://)
    or the one a docker ``docker_context`` names; the build context streams to it.

    >>> RemoteBuilder(Settings(docker_host="tcp://10.0.0.5:2375")).engine_address
    'tcp://10.0.0.5:2375'
    """

    name = "remote"

    def __init__(self, settings: Settings) -> None:
        if not settings.docker_host and not settings.docker_context:
            raise ConfigError(
                f"the remote builder needs an engine: set {ENV_VARS['docker_host']} "
                f"(tcp://, ssh://, unix://) or {ENV_VARS['docker_context']}",
                key="docker_host",
            )
        super().__init__(settings)

    @property
    def engine_address(self) -> str:
        if self.settings.docker_host:
            return self.settings.docker_host
        return f"context {self.settings.docker_context}"

    def cli_global_args(self) -> tuple[str, ...]:
        if self.settings.docker_host or not self.settings.docker_context:
            return ()
        return ("--context", self.settings.docker_context)

    def cli_env(self) -> dict[str, str]:
        env = super().cli_env()
        for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(name, None)
        if self.settings.docker_host:
            env["DOCKER_HOST"] = self.settings.docker_host
        return env

    def client_kwargs(self) -> dict[str, Any]:
        host = self.settings.docker_host
        if host:
            return {"base_url": host, "use_ssh_client": host.startswith("ssh://")}
        return context_client_kwargs(self.settings.docker_context or "")
