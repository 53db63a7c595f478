"""The one registry client: manifest and blob reads (and, for the fast path, writes) over the
Distribution API, with Docker's auth flows and credentials from the one resolver.

:func:`create_registry_client` is the one place a client is made from the settings.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread
import httpx

from imaged.config import Settings
from imaged.errors import ImagedError, RegistryAuthError, RegistryError, RegistryUnavailable
from imaged.failures import status_is_transient
from imaged.registry.auth import DOCKER_CONFIG_ORIGIN, CredentialResolver, Credentials
from imaged.registry.ref import ImageRef, api_host

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "Existence",
    "ImageRef",
    "RegistryClient",
    "check_exists",
    "create_registry_client",
    "image_exists",
    "is_insecure_registry",
]

INSECURE_REGISTRIES_ENV = "IMAGED_INSECURE_REGISTRIES"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
_MIN_TOKEN_LIFETIME = 60.0  # the token spec: "if expires_in is less than 60, assume 60"
_TOKEN_MARGIN = 5.0

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class Existence(enum.Enum):
    """What a registry said about a manifest; "unknown" is an exception, never a value."""

    EXISTS = "exists"
    MISSING = "missing"


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
    """An async client for one or many registries; enter it with `async with`.

    Every call takes its credentials from :attr:`credentials`; :meth:`with_logins` gives a
    client on the same connections that answers given logins (a ``registry_secret``) first.

    >>> async def main() -> Existence:
    ...     async with RegistryClient() as client:
    ...         return await client.manifest_exists("127.0.0.1:5000/app:abc123")
    """

    def __init__(
        self,
        *,
        docker_config_dir: Path | None = None,
        credentials: CredentialResolver | None = None,
        timeout: float = 10.0,
        insecure_hosts: Iterable[str] = (),
        max_concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials or CredentialResolver(config_dir=docker_config_dir)
        self._timeout = timeout
        self._insecure = frozenset(insecure_hosts) | _env_insecure_hosts()
        self._max_concurrency = max_concurrency
        self._transport = transport
        self._root = self  # the client that owns the connections
        self._http: httpx.AsyncClient | None = None
        self._auth_cache: dict[tuple[str, str], _CachedAuth] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._views: dict[tuple[tuple[str, str, str | None, str | None], ...], RegistryClient] = {}

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

    def with_logins(self, logins: Mapping[str, Credentials]) -> RegistryClient:
        """This client, answering `logins` (by registry host) before the Docker config.

        It shares the connections; its tokens are its own, since its credentials differ.
        """
        if not logins:
            return self
        root = self._root
        key = tuple(
            sorted((h, c.username, c.password, c.identity_token) for h, c in logins.items())
        )
        view = root._views.get(key)
        if view is None:
            view = RegistryClient(
                credentials=root.credentials.with_logins(logins),
                timeout=root._timeout,
                insecure_hosts=root._insecure,
                max_concurrency=root._max_concurrency,
            )
            view._root = root
            root._views[key] = view
        return view

    def base_url(self, registry: str) -> str:
        """`http://` or `https://` plus the API host of `registry` (Docker Hub's is registry-1)."""
        scheme = "http" if is_insecure_registry(registry, self._insecure) else "https"
        return f"{scheme}://{api_host(registry)}"

    def manifest_url(self, ref: ImageRef) -> str:
        """The `/v2/<name>/manifests/<reference>` URL of `ref`."""
        return f"{self.base_url(ref.registry)}/v2/{ref.repository}/manifests/{ref.reference}"

    def blob_url(self, ref: ImageRef, digest: str) -> str:
        """The `/v2/<name>/blobs/<digest>` URL of a blob in `ref`'s repository."""
        return f"{self.base_url(ref.registry)}/v2/{ref.repository}/blobs/{digest}"

    async def manifest_exists(self, ref: ImageRef | str) -> Existence:
        """EXISTS or MISSING; raises RegistryUnavailable or RegistryAuthError when unknown."""
        ref = _as_ref(ref)
        response = await self._request_manifest("HEAD", ref)
        return Existence.EXISTS if await self._found(ref, response) else Existence.MISSING

    async def blob_exists(self, ref: ImageRef | str, digest: str) -> Existence:
        """Whether the blob `digest` is in `ref`'s repository (the fast path's layer check)."""
        ref = _as_ref(ref)
        response = await self.request(
            "HEAD", self.blob_url(ref, digest), registry=ref.registry, scope=_pull(ref)
        )
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

    async def request(
        self, method: str, url: str, *, registry: str, scope: str, accept: bool = False
    ) -> httpx.Response:
        """One authorised call on `registry`: sent with a cached token for `scope`, and on a
        401 challenge authorised (Basic or Bearer) and sent again."""
        cached = self._cached_auth(registry, scope)
        response = await self._send(method, url, registry=registry, auth=cached, accept=accept)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        auth = await self._authorize(registry, scope, challenge, rejected=cached)
        return await self._send(method, url, registry=registry, auth=auth, accept=accept)

    async def _request_manifest(self, method: str, ref: ImageRef) -> httpx.Response:
        url = self.manifest_url(ref)
        return await self.request(method, url, registry=ref.registry, scope=_pull(ref), accept=True)

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
        found = await self._credentials_for(registry)
        if found is not None:
            where = f"credentials were found for {registry} in {found.origin}"
        else:
            where = (
                f"no credentials were found for {registry} in {DOCKER_CONFIG_ORIGIN} "
                f"(docker login {registry}) or a registry_secret"
            )
        return RegistryAuthError(f"registry {registry} {message}; {where}")

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
            return await anyio.to_thread.run_sync(self.credentials.resolve, registry)

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
        http = self._root._http
        if http is None:
            raise RuntimeError("use RegistryClient as `async with RegistryClient() as client:`")
        headers = httpx.Headers([("Accept", t) for t in MANIFEST_MEDIA_TYPES] if accept else [])
        if auth is not None:
            headers["Authorization"] = auth
        try:
            return await http.request(method, url, headers=headers, params=params, data=data)
        except httpx.TimeoutException:
            cause = f"timed out after {self._timeout:g} s"
        except httpx.TransportError as exc:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise RegistryUnavailable(
            f"registry {registry} is unreachable at {_origin(url)}: {cause}; "
            "whether the image exists is unknown (never assume it exists)"
        )


def create_registry_client(
    settings: Settings,
    *,
    docker_config_dir: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RegistryClient:
    """The registry client for these settings (insecure hosts): the one place one is made.

    >>> create_registry_client(Settings(insecure_registries=("reg:5000",))).base_url("reg:5000")
    'http://reg:5000'
    """
    return RegistryClient(
        docker_config_dir=docker_config_dir,
        insecure_hosts=settings.insecure_registries,
        transport=transport,
    )


def _pull(ref: ImageRef) -> str:
    return f"repository:{ref.repository}:pull"


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
