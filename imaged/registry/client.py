"""Ask an OCI/Docker registry whether an image manifest exists, with Docker's auth flows."""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread
import httpx

from imaged.errors import (
    ImagedError,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from imaged.failures import status_is_transient
from imaged.registry.auth import Credentials, credentials_for

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "Existence",
    "ImageRef",
    "RegistryClient",
    "check_exists",
    "image_exists",
    "is_insecure_registry",
]

INSECURE_REGISTRIES_ENV = "IMAGED_INSECURE_REGISTRIES"
DOCKER_HUB = "docker.io"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
_DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_API = "registry-1.docker.io"
_MIN_TOKEN_LIFETIME = 60.0  # the token spec: "if expires_in is less than 60, assume 60"
_TOKEN_MARGIN = 5.0

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"\w[\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class Existence(enum.Enum):
    """What a registry said about a manifest; "unknown" is an exception, never a value."""

    EXISTS = "exists"
    MISSING = "missing"


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


def _registry_hostname(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].partition("]")[0]
    return registry.rpartition(":")[0] if ":" in registry else registry


def is_insecure_registry(registry: str, insecure_hosts: Iterable[str] = ()) -> bool:
    """True when Docker would talk plain HTTP to `registry`: loopback or listed as insecure.

    >>> is_insecure_registry("127.0.0.1:5000")
    True
    """
    hostname = _registry_hostname(registry)
    if hostname == "localhost" or registry in insecure_hosts or hostname in insecure_hosts:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _env_insecure_hosts() -> frozenset[str]:
    value = os.environ.get(INSECURE_REGISTRIES_ENV, "")
    return frozenset(h.strip() for h in value.split(",") if h.strip())


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def _basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _origin(url: str | httpx.URL) -> str:
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


@dataclass(frozen=True)
class _CachedAuth:
    header: str
    expires_at: float


class RegistryClient:
    """An async client for registry manifest lookups; enter it with `async with`.

    >>> async def main() -> Existence:
    ...     async with RegistryClient() as client:
    ...         return await client.manifest_exists("127.0.0.1:5000/app:abc123")
    """

    def __init__(
        self,
        *,
        docker_config_dir: Path | None = None,
        timeout: float = 10.0,
        insecure_hosts: Iterable[str] = (),
        max_concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config_dir = docker_config_dir
        self._timeout = timeout
        self._insecure = frozenset(insecure_hosts) | _env_insecure_hosts()
        self._max_concurrency = max_concurrency
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._auth_cache: dict[tuple[str, str], _CachedAuth] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(
            transport=self._transport, timeout=self._timeout, follow_redirects=True
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def base_url(self, registry: str) -> str:
        """`http://` or `https://` plus the API host of `registry` (Docker Hub's is registry-1)."""
        host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        scheme = "http" if is_insecure_registry(registry, self._insecure) else "https"
        return f"{scheme}://{host}"

    def manifest_url(self, ref: ImageRef) -> str:
        """The `/v2/<name>/manifests/<reference>` URL of `ref`."""
        return f"{self.base_url(ref.registry)}/v2/{ref.repository}/manifests/{ref.reference}"

    async def manifest_exists(self, ref: ImageRef | str) -> Existence:
        """EXISTS or MISSING; raises RegistryUnavailable or RegistryAuthError when unknown."""
        ref = _as_ref(ref)
        response = await self._request_manifest("HEAD", ref)
        return Existence.EXISTS if await self._found(ref, response) else Existence.MISSING

    async def manifest_digest(self, ref: ImageRef | str) -> str | None:
        """The manifest's `Docker-Content-Digest`, or None when the manifest is missing."""
        ref = _as_ref(ref)
        response = await self._request_manifest("HEAD", ref)
        if not await self._found(ref, response):
            return None
        digest = response.headers.get("docker-content-digest") or ref.digest
        if digest:
            return digest
        response = await self._request_manifest("GET", ref)
        if not await self._found(ref, response):
            return None
        return response.headers.get("docker-content-digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )

    async def check_many(
        self, refs: Sequence[ImageRef | str]
    ) -> dict[str, Existence | ImagedError]:
        """Check `refs` concurrently (bounded); each key maps to its result or its error."""
        keys = [ref if isinstance(ref, str) else str(ref) for ref in refs]
        results: dict[str, Existence | ImagedError] = {}
        limiter = anyio.CapacityLimiter(self._max_concurrency)

        async def check_one(key: str, ref: ImageRef | str) -> None:
            async with limiter:
                try:
                    results[key] = await self.manifest_exists(ref)
                except ImagedError as exc:
                    results[key] = exc

        async with anyio.create_task_group() as group:
            for key, ref in zip(keys, refs, strict=True):
                group.start_soon(check_one, key, ref)
        return {key: results[key] for key in keys}

    async def ping(self, registry: str) -> None:
        """GET `/v2/`; raise RegistryUnavailable naming the address when it does not answer."""
        url = f"{self.base_url(registry)}/v2/"
        response = await self._send("GET", url, registry=registry)
        if response.status_code in (200, 401):
            return
        raise self._status_error(registry, f"{url}", response.status_code)

    async def _request_manifest(self, method: str, ref: ImageRef) -> httpx.Response:
        url = self.manifest_url(ref)
        scope = f"repository:{ref.repository}:pull"
        cached = self._cached_auth(ref.registry, scope)
        response = await self._send(method, url, registry=ref.registry, auth=cached, accept=True)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        auth = await self._authorize(ref.registry, scope, challenge, rejected=cached)
        return await self._send(method, url, registry=ref.registry, auth=auth, accept=True)

    async def _found(self, ref: ImageRef, response: httpx.Response) -> bool:
        code = response.status_code
        if code == 200:
            return True
        if code == 404:
            return False
        if code in (401, 403):
            raise await self._auth_error(ref.registry, f"refused access to {ref} (HTTP {code})")
        raise self._status_error(ref.registry, str(ref), code)

    def _status_error(self, registry: str, what: str, code: int) -> RegistryError:
        if status_is_transient(code):
            return RegistryUnavailable(
                f"registry {registry} at {self.base_url(registry)} answered HTTP {code} for "
                f"{what}: whether it exists is unknown (never assume it exists)"
            )
        return RegistryError(f"registry {registry} answered unexpected HTTP {code} for {what}")

    async def _auth_error(self, registry: str, message: str) -> RegistryAuthError:
        found = await self._credentials_for(registry) is not None
        where = "credentials were found" if found else "no credentials were found"
        return RegistryAuthError(
            f"registry {registry} {message}; {where} for {registry} in the Docker config"
        )

    def _cached_auth(self, registry: str, scope: str) -> str | None:
        now = time.monotonic()
        for key in ((registry, scope), (registry, "")):
            entry = self._auth_cache.get(key)
            if entry is not None and entry.expires_at > now:
                return entry.header
        return None

    async def _authorize(
        self, registry: str, scope: str, challenge: str, *, rejected: str | None
    ) -> str:
        scheme, params = _parse_challenge(challenge)
        async with self._lock(registry, scope):
            cached = self._cached_auth(registry, scope)
            if cached is not None and cached != rejected:
                return cached  # another task authorized while we waited
            if scheme == "basic":
                header, key, lifetime = await self._basic_auth(registry), "", float("inf")
            elif scheme == "bearer":
                header, lifetime = await self._bearer_auth(registry, scope, params)
                key = scope
            else:
                raise await self._auth_error(registry, f"sent an unsupported challenge {scheme!r}")
            self._auth_cache[(registry, key)] = _CachedAuth(header, time.monotonic() + lifetime)
            return header

    async def _basic_auth(self, registry: str) -> str:
        credentials = await self._credentials_for(registry)
        if credentials is None or credentials.password is None:
            raise await self._auth_error(registry, "requires a user name and password")
        return _basic_header(credentials)

    async def _bearer_auth(
        self, registry: str, scope: str, params: dict[str, str]
    ) -> tuple[str, float]:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {registry} sent a Bearer challenge without realm")
        credentials = await self._credentials_for(registry)
        response = await self._request_token(registry, realm, scope, params, credentials)
        if response.status_code in (401, 403):
            raise await self._auth_error(
                registry, f"token service {_origin(realm)} refused (HTTP {response.status_code})"
            )
        if response.status_code != 200:
            raise self._status_error(
                registry, f"a token from {_origin(realm)}", response.status_code
            )
        return _parse_token(registry, response)

    async def _request_token(
        self,
        registry: str,
        realm: str,
        scope: str,
        params: dict[str, str],
        credentials: Credentials | None,
    ) -> httpx.Response:
        form = {"scope": scope} | ({"service": params["service"]} if "service" in params else {})
        if credentials is not None and credentials.identity_token:
            form |= {
                "grant_type": "refresh_token",
                "client_id": "imaged",
                "refresh_token": credentials.identity_token,
            }
            return await self._send("POST", realm, registry=registry, data=form)
        auth = _basic_header(credentials) if credentials is not None else None
        return await self._send("GET", realm, registry=registry, auth=auth, params=form)

    async def _credentials_for(self, registry: str) -> Credentials | None:
        async with self._lock(registry, "credentials"):
            if registry not in self._credentials:
                lookup = functools.partial(credentials_for, registry, config_dir=self._config_dir)
                self._credentials[registry] = await anyio.to_thread.run_sync(lookup)
            return self._credentials[registry]

    def _lock(self, registry: str, name: str) -> anyio.Lock:
        return self._locks.setdefault((registry, name), anyio.Lock())

    async def _send(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        auth: str | None = None,
        accept: bool = False,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        if self._http is None:
            raise RuntimeError("use RegistryClient as `async with RegistryClient() as client:`")
        headers = httpx.Headers([("Accept", t) for t in MANIFEST_MEDIA_TYPES] if accept else [])
        if auth is not None:
            headers["Authorization"] = auth
        try:
            return await self._http.request(method, url, headers=headers, params=params, data=data)
        except httpx.TimeoutException:
            cause = f"timed out after {self._timeout:g} s"
        except httpx.TransportError as exc:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise RegistryUnavailable(
            f"registry {registry} is unreachable at {_origin(url)}: {cause}; "
            "whether the image exists is unknown (never assume it exists)"
        )


def _parse_token(registry: str, response: httpx.Response) -> tuple[str, float]:
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
        lifetime = float(body.get("expires_in") or _MIN_TOKEN_LIFETIME)
    except (ValueError, AttributeError, TypeError):
        token, lifetime = None, 0.0
    if not isinstance(token, str) or not token:
        raise RegistryError(f"the token service of registry {registry} returned no token")
    return f"Bearer {token}", max(lifetime, _MIN_TOKEN_LIFETIME) - _TOKEN_MARGIN


def _as_ref(ref: ImageRef | str) -> ImageRef:
    return ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)


async def check_exists(
    uri: str,
    *,
    docker_config_dir: Path | None = None,
    request_timeout: float = 10.0,
    insecure_hosts: Iterable[str] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> Existence:
    """One-shot `manifest_exists` with a fresh client.

    >>> async def main() -> Existence:
    ...     return await check_exists("127.0.0.1:5000/app:abc123")
    """
    client = RegistryClient(
        docker_config_dir=docker_config_dir,
        timeout=request_timeout,
        insecure_hosts=insecure_hosts,
        transport=transport,
    )
    async with client:
        return await client.manifest_exists(uri)


def image_exists(
    uri: str,
    *,
    docker_config_dir: Path | None = None,
    request_timeout: float = 10.0,
    insecure_hosts: Iterable[str] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> Existence:
    """Blocking `check_exists` for code outside an event loop.

    >>> image_exists("127.0.0.1:5000/app:abc123")  # doctest: +SKIP
    <Existence.MISSING: 'missing'>
    """
    call = functools.partial(
        check_exists,
        uri,
        docker_config_dir=docker_config_dir,
        request_timeout=request_timeout,
        insecure_hosts=insecure_hosts,
        transport=transport,
    )
    return anyio.run(call)
