"""Registry credentials from the user's Docker config: `auths`, `credHelpers` and `credsStore`."""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.config import without_secrets
from imaged.errors import ConfigError, RegistryAuthError

__all__ = ["Credentials", "credentials_for", "load_docker_config", "normalize_registry_host"]

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 30.0
# A helper writes a token rather than a password under this user name (docker/cli convention).
_TOKEN_USERNAME = "<token>"


@dataclass(frozen=True)
class Credentials:
    """A user name with a password, or an identity (refresh) token; `repr` hides the secret.

    >>> Credentials("ci", "s3cret")
    Credentials(username='ci', secret=<hidden>)
    """

    username: str
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kind = "identity_token" if self.identity_token else "secret"
        return f"Credentials(username={self.username!r}, {kind}=<hidden>)"

    __str__ = __repr__


def normalize_registry_host(key: str) -> str:
    """The bare host[:port] of a config key or registry name; Docker Hub's aliases -> `docker.io`.

    >>> normalize_registry_host("https://index.docker.io/v1/")
    'docker.io'
    """
    host = key.strip().removeprefix("https://").removeprefix("http://")
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB_HOSTS else host


def docker_config_path(config_dir: Path | None = None) -> Path:
    """`config.json` in `config_dir`, else in `$DOCKER_CONFIG`, else in `~/.docker`."""
    if config_dir is None:
        env = os.environ.get("DOCKER_CONFIG")
        config_dir = Path(env) if env else Path.home() / ".docker"
    return config_dir / "config.json"


def load_docker_config(config_dir: Path | None = None) -> dict[str, Any]:
    """The parsed Docker client config; an empty dict when the file does not exist."""
    path = docker_config_path(config_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Docker config: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("the Docker config is not a JSON object", file=str(path))
    return data


def credentials_for(registry_host: str, *, config_dir: Path | None = None) -> Credentials | None:
    """Credentials for `registry_host` from the Docker config, or None when it has none.

    A credential helper (`credHelpers` for the host, else `credsStore`) is asked first; when it
    has nothing, a plain `auths` entry is used.

    >>> credentials_for("localhost:5000", config_dir=Path("/nonexistent")) is None
    True
    """
    host = normalize_registry_host(registry_host)
    config = load_docker_config(config_dir)
    helper = _helper_for(config, host)
    if helper:
        found = run_credential_helper(helper, _server_url(host))
        if found is not None:
            return found
    return _from_auths(config.get("auths"), host)


def run_credential_helper(helper: str, server_url: str) -> Credentials | None:
    """Run `docker-credential-<helper> get`, sending `server_url` on stdin (never on argv)."""
    program = f"docker-credential-{helper}"
    try:
        # The program name comes from the user's own Docker config, as with the docker CLI.
        proc = subprocess.run(
            [program, "get"],
            input=server_url,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
            env=without_secrets(os.environ),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryAuthError(f"credential helper {program} could not run: {exc}") from None
    if proc.returncode != 0:
        message = (proc.stdout.strip() or proc.stderr.strip())[:200]
        if "credentials not found" in message.lower():
            return None
        raise RegistryAuthError(
            f"credential helper {program} failed for {server_url} "
            f"(exit {proc.returncode}): {message or 'no output'}"
        )
    return _parse_helper_output(program, proc.stdout)


def _parse_helper_output(program: str, stdout: str) -> Credentials:
    try:
        data = json.loads(stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(
            f"credential helper {program} printed no JSON with Username and Secret"
        ) from None
    if username == _TOKEN_USERNAME:
        return Credentials(username="", identity_token=secret)
    return Credentials(username=username, password=secret)


def _helper_for(config: dict[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if normalize_registry_host(key) == host and name:
                return str(name)
    store = config.get("credsStore")
    return str(store) if store else None


def _server_url(host: str) -> str:
    return DOCKER_HUB_KEY if host == "docker.io" else host


def _from_auths(auths: Any, host: str) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    entries = [v for k, v in auths.items() if normalize_registry_host(k) == host]
    for entry in entries:
        if isinstance(entry, dict) and (found := _parse_auth_entry(entry, host)):
            return found
    return None


def _parse_auth_entry(entry: dict[str, Any], host: str) -> Credentials | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    if entry.get("auth"):
        username, password = _decode_basic(str(entry["auth"]), host)
    token = entry.get("identitytoken") or entry.get("identityToken")
    if token:
        return Credentials(username=username, identity_token=str(token))
    if username or password:
        return Credentials(username=username, password=password)
    return None


def _decode_basic(auth: str, host: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    username, sep, password = decoded.partition(":")
    if not sep:
        raise RegistryAuthError(
            f"the Docker config's auths entry for {host} has an `auth` value that is not "
            "base64 of user:password"
        )
    return username, password
