"""Registry credentials: one resolver for existence checks, pulls and pushes.

Credentials for a registry host come from given logins (an image's ``registry_secret``) first,
else from the user's Docker config: `credHelpers`, `credsStore`, then `auths`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.config import without_secrets
from imaged.errors import ConfigError, RegistryAuthError, SecretError
from imaged.registry.ref import DOCKER_HUB_KEY, config_key, normalize_registry_host

__all__ = [
    "DOCKER_HUB_KEY",
    "CredentialResolver",
    "Credentials",
    "credentials_for",
    "docker_config_with",
    "load_docker_config",
    "normalize_registry_host",
    "parse_login_secret",
]

DOCKER_CONFIG_ORIGIN = "the Docker config"
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
    origin: str = field(default=DOCKER_CONFIG_ORIGIN, compare=False)

    def __repr__(self) -> str:
        kind = "identity_token" if self.identity_token else "secret"
        return f"Credentials(username={self.username!r}, {kind}=<hidden>)"

    __str__ = __repr__

    def auth_config(self, registry: str) -> dict[str, str]:
        """The engine's ``X-Registry-Auth`` body (a docker SDK ``auth_config``) for `registry`."""
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": config_key(registry)}
        return {
            "username": self.username,
            "password": self.password or "",
            "serveraddress": config_key(registry),
        }

    def config_entry(self) -> dict[str, str]:
        """This login as a Docker config `auths` entry."""
        if self.identity_token:
            return {"username": self.username, "identitytoken": self.identity_token}
        raw = f"{self.username}:{self.password or ''}".encode()
        return {"auth": base64.b64encode(raw).decode("ascii")}


class CredentialResolver:
    """The one source of registry credentials: given logins first, then the Docker config.

    Lookups in the Docker config (a credential helper is a process) are made once per host
    and shared by every resolver made with :meth:`with_logins`.

    >>> CredentialResolver(config_dir=Path("/nonexistent")).resolve("localhost:5000") is None
    True
    """

    def __init__(
        self, *, config_dir: Path | None = None, logins: Mapping[str, Credentials] | None = None
    ) -> None:
        self.config_dir = config_dir
        self.logins = {normalize_registry_host(h): c for h, c in (logins or {}).items()}
        self._found: dict[str, Credentials | None] = {}
        self._lock = threading.Lock()

    def with_logins(self, logins: Mapping[str, Credentials]) -> CredentialResolver:
        """A resolver that answers `logins` first and shares this one's Docker config lookups."""
        if not logins:
            return self
        other = CredentialResolver(config_dir=self.config_dir, logins={**self.logins, **logins})
        other._found, other._lock = self._found, self._lock
        return other

    def resolve(self, registry: str) -> Credentials | None:
        """Credentials for `registry` (blocking: may run a credential helper), or None."""
        host = normalize_registry_host(registry)
        if host in self.logins:
            return self.logins[host]
        with self._lock:
            if host not in self._found:
                self._found[host] = credentials_for(host, config_dir=self.config_dir)
            return self._found[host]

    def auth_config(self, registry: str) -> dict[str, str]:
        """What the engine's push sends for `registry`; empty (anonymous) without credentials."""
        found = self.resolve(registry)
        return {} if found is None else found.auth_config(registry)

    def docker_config(self) -> bytes | None:
        """A Docker config JSON for a docker CLI that must use the given logins (the user's
        config with them in `auths`); None when there are none and the user's config serves."""
        if not self.logins:
            return None
        return docker_config_with(self.logins, load_docker_config(self.config_dir))


def parse_login_secret(
    value: bytes, registry: str | None, *, origin: str
) -> dict[str, Credentials]:
    """The logins a ``registry_secret`` value holds, by registry host.

    A Docker config JSON (``{"auths": {host: {"auth": ...}}}``, the form of a Kubernetes
    ``dockerconfigjson`` pull secret) gives every host it lists; ``user:password`` is for
    `registry` (the image's own) only. Errors never quote the value.

    >>> sorted(parse_login_secret(b"ci:pw", "ghcr.io", origin="registry_secret 'x'"))
    ['ghcr.io']
    """
    text = _decode_secret(value, origin)
    if text.lstrip().startswith("{"):
        return _logins_from_config(text, origin)
    username, sep, password = text.strip().partition(":")
    if not sep or not username:
        raise SecretError(
            f'{origin} is neither a Docker config JSON ({{"auths": {{...}}}}) nor user:password'
        )
    if not registry:
        raise SecretError(
            f"{origin} is user:password, which is for the image's own registry, and the image "
            "has none; give the image a registry or write the secret as a Docker config JSON"
        )
    return {normalize_registry_host(registry): Credentials(username, password, origin=origin)}


def _decode_secret(value: bytes, origin: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{origin} is not UTF-8 text") from None


def _logins_from_config(text: str, origin: str) -> dict[str, Credentials]:
    try:
        data = json.loads(text)
    except ValueError:
        raise SecretError(f"{origin} starts like JSON but does not parse") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict) or not auths:
        raise SecretError(f'{origin} is JSON without an "auths" object of registries')
    logins: dict[str, Credentials] = {}
    for key, entry in auths.items():
        host = normalize_registry_host(key)
        found = _parse_auth_entry(entry, host, origin=origin) if isinstance(entry, dict) else None
        if found is None:
            raise SecretError(f"{origin}: the auths entry for {host} has no credentials")
        logins[host] = Credentials(
            found.username, found.password, found.identity_token, origin=origin
        )
    return logins


def docker_config_with(logins: Mapping[str, Credentials], base: Mapping[str, Any]) -> bytes:
    """A Docker config JSON: `base` (the user's config) with `logins` in `auths`, and no
    credential helper or store consulted for their hosts."""
    config = dict(base)
    auths = {
        k: v
        for k, v in dict(config.get("auths") or {}).items()
        if normalize_registry_host(k) not in logins
    }
    helpers = {
        k: v
        for k, v in dict(config.get("credHelpers") or {}).items()
        if normalize_registry_host(k) not in logins
    }
    for host, credentials in logins.items():
        auths[config_key(host)] = credentials.config_entry()
        # An empty helper makes the docker CLI read `auths` (its file store) for that key.
        helpers |= {config_key(host): "", host: ""}
    config["auths"], config["credHelpers"] = auths, helpers
    return json.dumps(config).encode()


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
        found = run_credential_helper(helper, config_key(host))
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
            if normalize_registry_host(key) == host:
                return str(name) or None  # "" names the file store (`auths`), as in docker
    store = config.get("credsStore")
    return str(store) if store else None


def _from_auths(auths: Any, host: str) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    entries = [v for k, v in auths.items() if normalize_registry_host(k) == host]
    for entry in entries:
        if isinstance(entry, dict) and (found := _parse_auth_entry(entry, host)):
            return found
    return None


def _parse_auth_entry(
    entry: dict[str, Any], host: str, *, origin: str | None = None
) -> Credentials | None:
    """One `auths` entry, of the Docker config or (`origin`) of a registry_secret."""
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    if entry.get("auth"):
        username, password = _decode_basic(str(entry["auth"]), host, origin)
    token = entry.get("identitytoken") or entry.get("identityToken")
    if token:
        return Credentials(username=username, identity_token=str(token))
    if username or password:
        return Credentials(username=username, password=password)
    return None


def _decode_basic(auth: str, host: str, origin: str | None) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    username, sep, password = decoded.partition(":")
    if sep:
        return username, password
    problem = f"the auths entry for {host} has an `auth` value that is not base64 of user:password"
    if origin is not None:  # the value is never quoted: it is the secret
        raise SecretError(f"{origin}: {problem}")
    raise RegistryAuthError(f"the Docker config's {problem.removeprefix('the ')}")
