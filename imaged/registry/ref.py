"""Image references and registry host names, normalised the way Docker does it.

Docker Hub's aliases are listed here and only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imaged.errors import SpecError

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_KEY",
    "ImageRef",
    "api_host",
    "config_key",
    "normalize_registry_host",
]

DOCKER_HUB = "docker.io"
# The key the Docker config (auths, credential helpers) files Docker Hub under.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"\w[\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")


def normalize_registry_host(key: str) -> str:
    """The bare host[:port] of a config key or registry name; Docker Hub's aliases -> `docker.io`.

    >>> normalize_registry_host("https://index.docker.io/v1/")
    'docker.io'
    """
    host = key.strip().removeprefix("https://").removeprefix("http://")
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def api_host(registry: str) -> str:
    """The host that serves the Distribution API of `registry` (Docker Hub's is registry-1).

    >>> api_host("docker.io")
    'registry-1.docker.io'
    """
    return _DOCKER_HUB_API if normalize_registry_host(registry) == DOCKER_HUB else registry


def config_key(registry: str) -> str:
    """The key a Docker config files `registry` under (Docker Hub's is its v1 index URL).

    >>> config_key("index.docker.io")
    'https://index.docker.io/v1/'
    """
    host = normalize_registry_host(registry)
    return DOCKER_HUB_KEY if host == DOCKER_HUB else host


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference, normalised the way Docker does it.

    >>> str(ImageRef.parse("python:3.11"))
    'docker.io/library/python:3.11'
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ImageRef:
        """Parse `[registry/]repository[:tag][@digest]`; raise SpecError when it is invalid."""
        rest, at, digest = uri.strip().partition("@")
        name, tag = _split_tag(rest)
        registry, repository = _split_registry(name)
        _validate(uri, registry, repository, tag, digest if at else None)
        return cls(registry, repository, tag, digest if at else None)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest URL names: the digest, else the tag, else `latest`."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def _split_tag(name: str) -> tuple[str, str | None]:
    head, colon, tail = name.rpartition(":")
    if colon and "/" not in tail:
        return head, tail
    return name, None


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    is_domain = "." in first or ":" in first or first == "localhost" or first != first.lower()
    registry, repository = (first, rest) if slash and is_domain else (DOCKER_HUB, name)
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _validate(uri: str, registry: str, repo: str, tag: str | None, digest: str | None) -> None:
    checks = [
        (_DOMAIN_RE, registry, "registry host"),
        (_REPOSITORY_RE, repo, "repository (lowercase letters, digits and . _ - / only)"),
    ]
    if tag is not None:
        checks.append((_TAG_RE, tag, "tag"))
    if digest is not None:
        checks.append((_DIGEST_RE, digest, "digest (algorithm:hex)"))
    for pattern, value, what in checks:
        if not pattern.fullmatch(value):
            raise SpecError(f"invalid image reference {uri!r}: bad {what} {value!r}")
