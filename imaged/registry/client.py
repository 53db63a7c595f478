"""The one registry client: manifest and blob reads (and, for the fast path, writes) over the
Distribution API, with Docker's auth flows and credentials from the one resolver.

:func:`create_registry_client` is the one place a client is made from the settings.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
import hashlib
import ipaddress
import json
import os
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread

if "httpx" not in sys.modules:
    # httpx imports its command line (rich, pygments) when click and rich are installed:
    # ~70 ms of a CLI start. A None entry makes that import fail, which httpx expects
    # (its `main` is then a stub); nothing here uses httpx's command line.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx

from imaged.config import Settings
from imaged.errors import (
    ImagedError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
)
from imaged.failures import status_is_transient
from imaged.registry.auth import DOCKER_CONFIG_ORIGIN, CredentialResolver, Credentials
from imaged.registry.ref import ImageRef, api_host

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "BlobSource",
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
_UNKNOWN_EXISTS = "whether the image exists is unknown (never assume it exists)"
_MIN_TOKEN_LIFETIME = 60.0  # the token spec: "if expires_in is less than 60, assume 60"
_TOKEN_MARGIN = 5.0

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


BlobSource = bytes | Callable[[], AsyncIterator[bytes]]
"""A blob's bytes, or a function that streams them afresh on each call (a retry re-reads)."""
Content = BlobSource


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
            transport=self._transport,
            timeout=self._timeout,
            follow_redirects=True,
            verify=default_ssl_context(),
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

    async def get_manifest(
        self, ref: ImageRef | str, *, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> tuple[str, bytes, str]:
        """`(media type, body, digest)` of `ref`'s manifest, its digest checked against what was
        asked for (``@digest``) or what the registry said (`Docker-Content-Digest`).

        Raises RegistryNotFound when it is not there, RegistryError when its media type is
        none of `accept` or its bytes do not match its digest.
        """
        ref = _as_ref(ref)
        response = await self.request(
            "GET", self.manifest_url(ref), registry=ref.registry, scope=_pull(ref), accept=accept
        )
        if response.status_code != 200:
            raise await self._fail(ref, response, f"manifest {ref.reference}")
        body = response.content
        digest = _sha256(body)
        claimed = ref.digest or response.headers.get("docker-content-digest") or digest
        if claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(
                f"registry {ref.registry} sent manifest {ref} whose bytes have digest {digest}, "
                f"not {claimed}"
            )
        media_type = _media_type(response, body)
        if media_type not in accept:
            raise RegistryError(
                f"registry {ref.registry} sent manifest {ref} of media type {media_type!r}, "
                f"none of those imaged reads ({', '.join(accept)})"
            )
        return media_type, body, digest

    async def get_blob(self, ref: ImageRef | str, digest: str) -> bytes:
        """The blob `digest` of `ref`'s repository, read whole (a config) and checked."""
        ref = _as_ref(ref)
        url = self.blob_url(ref, digest)
        response = await self.request("GET", url, registry=ref.registry, scope=_pull(ref))
        if response.status_code != 200:
            raise await self._fail(ref, response, f"blob {digest}")
        if digest.startswith("sha256:") and _sha256(response.content) != digest:
            raise RegistryError(
                f"registry {ref.registry} sent blob {digest} of {ref.repository} whose bytes "
                f"have digest {_sha256(response.content)}"
            )
        return response.content

    def stream_blob(self, ref: ImageRef | str, digest: str) -> Callable[[], AsyncIterator[bytes]]:
        """A :data:`BlobSource` streaming blob `digest` of `ref`'s repository (a copy into
        another repository without holding it in memory); its digest is checked at the end."""
        ref = _as_ref(ref)

        async def stream() -> AsyncIterator[bytes]:
            hasher = hashlib.sha256()
            async for chunk in self._blob_chunks(ref, digest):
                hasher.update(chunk)
                yield chunk
            if digest.startswith("sha256:") and "sha256:" + hasher.hexdigest() != digest:
                raise RegistryError(
                    f"registry {ref.registry} sent blob {digest} of {ref.repository} whose "
                    f"bytes have digest sha256:{hasher.hexdigest()}"
                )

        return stream

    async def _blob_chunks(self, ref: ImageRef, digest: str) -> AsyncIterator[bytes]:
        if await self.blob_exists(ref, digest) is Existence.MISSING:  # authorises too
            raise RegistryNotFound(
                f"registry {ref.registry}: blob {digest} in {ref.repository} not found"
            )
        auth = self._cached_auth(ref.registry, _pull(ref))
        http = self._root._http
        assert http is not None, "blob_exists checked the client is open"
        headers = {"Authorization": auth} if auth else {}
        try:
            async with http.stream("GET", self.blob_url(ref, digest), headers=headers) as response:
                if response.status_code != 200:
                    raise await self._fail(ref, response, f"blob {digest}")
                async for chunk in response.aiter_bytes(1 << 20):
                    yield chunk
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"registry {ref.registry} broke off sending blob {digest} of {ref.repository}: "
                f"{type(exc).__name__}"
            ) from exc

    async def mount_blob(self, ref: ImageRef | str, digest: str, from_repo: str) -> bool:
        """Mount blob `digest` from repository `from_repo` of the same registry into `ref`'s.

        True when mounted (201). False when the registry opened an upload instead (202: it
        refuses mounts, or the source lacks the blob; that upload is cancelled) or answers
        that it does not mount (404, 405, 501, or 400 UNSUPPORTED): the caller copies.
        """
        ref = _as_ref(ref)
        response = await self.request(
            "POST",
            self.upload_url(ref),
            registry=ref.registry,
            scope=f"{_push(ref)} repository:{from_repo}:pull",
            params={"mount": digest, "from": from_repo},
            unknown=f"whether blob {digest} was mounted into {ref.repository} is unknown",
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            await self._cancel_upload(ref, response)
            return False
        if response.status_code in (404, 405, 501) or (
            response.status_code == 400 and "UNSUPPORTED" in _error_codes(response)
        ):
            return False
        raise await self._fail(ref, response, f"a mount of blob {digest} from {from_repo}")

    async def upload_blob(
        self,
        ref: ImageRef | str,
        digest: str,
        data: BlobSource,
        size: int,
        *,
        chunk_size: int = 8 << 20,
    ) -> str:
        """Upload blob `digest` (`size` bytes) into `ref`'s repository; returns how: "monolithic"
        (POST then one PUT), or "chunked" (PATCHes then PUT) when the registry refuses the
        monolithic PUT (HTTP 400, 405, 411, 413 or 416 that is not a digest or size error)."""
        ref = _as_ref(ref)
        location = await self._start_upload(ref, digest)
        response = await self._upload_put(ref, location, digest, data, size)
        if response.status_code == 201:
            return self._uploaded(ref, digest, response, "monolithic")
        if not _refuses_monolithic(response):
            raise await self._fail(ref, response, f"the upload of blob {digest}")
        await self._cancel_upload(ref, response, location)
        location = await self._start_upload(ref, digest)
        location = await self._upload_chunks(ref, location, digest, data, chunk_size)
        response = await self._upload_put(ref, location, digest, b"", 0)
        if response.status_code != 201:
            raise await self._fail(ref, response, f"the chunked upload of blob {digest}")
        return self._uploaded(ref, digest, response, "chunked")

    async def put_manifest(self, ref: ImageRef | str, media_type: str, body: bytes) -> str:
        """PUT `body` as `ref`'s manifest (under its tag, or its digest); returns the digest.

        A registry that refuses the media type (HTTP 415, or 400 MANIFEST_INVALID or
        UNSUPPORTED) is a RegistryError naming it and the layers' media types.
        """
        ref = _as_ref(ref)
        digest = _sha256(body)
        response = await self.request(
            "PUT",
            self.manifest_url(ref),
            registry=ref.registry,
            scope=_push(ref),
            headers={"Content-Type": media_type},
            content=body,
            unknown=f"whether manifest {digest} was stored as {ref} is unknown",
        )
        if response.status_code not in (200, 201):
            raise await self._manifest_refused(ref, media_type, body, response)
        stored = response.headers.get("docker-content-digest") or digest
        if stored != digest:
            raise RegistryError(
                f"registry {ref.registry} stored manifest {ref} as {stored}, but its bytes have "
                f"digest {digest}"
            )
        return digest

    def upload_url(self, ref: ImageRef) -> str:
        """The `/v2/<name>/blobs/uploads/` URL that starts an upload into `ref`'s repository."""
        return f"{self.base_url(ref.registry)}/v2/{ref.repository}/blobs/uploads/"

    async def _start_upload(self, ref: ImageRef, digest: str) -> str:
        response = await self.request(
            "POST",
            self.upload_url(ref),
            registry=ref.registry,
            scope=_push(ref),
            unknown=f"blob {digest} was not uploaded to {ref.repository}",
        )
        if response.status_code != 202 or "location" not in response.headers:
            raise await self._fail(ref, response, f"the start of an upload of blob {digest}")
        return _location(response)

    async def _upload_put(
        self, ref: ImageRef, location: str, digest: str, data: BlobSource, size: int
    ) -> httpx.Response:
        return await self.request(
            "PUT",
            location,
            registry=ref.registry,
            scope=_push(ref),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=data,
            params={"digest": digest},
            unknown=f"the upload of blob {digest} to {ref.repository} did not complete",
        )

    async def _upload_chunks(
        self, ref: ImageRef, location: str, digest: str, data: BlobSource, chunk_size: int
    ) -> str:
        start = 0
        async for chunk in _chunks(data, chunk_size):
            end = start + len(chunk) - 1
            response = await self.request(
                "PATCH",
                location,
                registry=ref.registry,
                scope=_push(ref),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{end}",
                    "Content-Length": str(len(chunk)),
                },
                content=chunk,
                unknown=f"the upload of blob {digest} to {ref.repository} did not complete",
            )
            if response.status_code != 202 or "location" not in response.headers:
                raise await self._fail(ref, response, f"bytes {start}-{end} of blob {digest}")
            _check_range(ref, digest, response, end)
            location, start = _location(response), end + 1
        return location

    def _uploaded(self, ref: ImageRef, digest: str, response: httpx.Response, how: str) -> str:
        stored = response.headers.get("docker-content-digest") or digest
        if stored != digest:
            raise RegistryError(
                f"registry {ref.registry} stored blob {digest} of {ref.repository} as {stored}"
            )
        return how

    async def _cancel_upload(
        self, ref: ImageRef, response: httpx.Response, location: str | None = None
    ) -> None:
        """Best effort: DELETE an upload session the registry opened; it expires anyway."""
        if location is None and "location" not in response.headers:
            return
        url = location or _location(response)
        with contextlib.suppress(RegistryError):
            await self.request("DELETE", url, registry=ref.registry, scope=_push(ref))

    async def _manifest_refused(
        self, ref: ImageRef, media_type: str, body: bytes, response: httpx.Response
    ) -> RegistryError:
        codes = _error_codes(response)
        if response.status_code == 415 or (
            response.status_code == 400 and {"MANIFEST_INVALID", "UNSUPPORTED"} & set(codes)
        ):
            layers = ", ".join(sorted(_layer_media_types(body))) or "none"
            return RegistryError(
                f"registry {ref.registry} refused manifest media type {media_type} for {ref} "
                f"(HTTP {response.status_code}{_error_text(response)}); its layers' media "
                f"types: {layers}"
            )
        return await self._fail(ref, response, f"manifest {ref.reference}")

    async def _fail(self, ref: ImageRef, response: httpx.Response, what: str) -> RegistryError:
        """The error for an unexpected answer about `what` in `ref`'s repository."""
        code, detail = response.status_code, _error_text(response)
        where = f"{what} in {ref.repository}"
        if code == 404:
            return RegistryNotFound(
                f"registry {ref.registry}: {where} not found (HTTP 404{detail})"
            )
        if code in (401, 403):
            return await self._auth_error(ref.registry, f"refused {where} (HTTP {code}{detail})")
        if status_is_transient(code):
            return RegistryUnavailable(
                f"registry {ref.registry} at {self.base_url(ref.registry)} answered HTTP {code}"
                f"{detail} for {where}; a retry may pass"
            )
        return RegistryError(f"registry {ref.registry} refused {where}: HTTP {code}{detail}")

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
        self,
        method: str,
        url: str,
        *,
        registry: str,
        scope: str,
        accept: bool | Sequence[str] = False,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
        params: Mapping[str, str] | None = None,
        unknown: str = _UNKNOWN_EXISTS,
    ) -> httpx.Response:
        """One authorised call on `registry`: sent with a cached token for `scope`, and on a
        401 challenge authorised (Basic or Bearer) and sent again. `scope` may hold several
        scopes separated by spaces (a mount: push on the target, pull on the source); a
        streamed `content` is a function so the second send streams it afresh; `unknown`
        says, when the registry cannot be reached, what is left unknown."""
        if params:  # merged into the URL: a Location may carry a query of its own
            url = str(httpx.URL(url).copy_merge_params(dict(params)))
        send = functools.partial(
            self._send,
            method,
            url,
            registry=registry,
            accept=accept,
            headers=headers,
            content=content,
            unknown=unknown,
        )
        cached = self._cached_auth(registry, scope)
        response = await send(auth=cached)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        auth = await self._authorize(registry, scope, challenge, rejected=cached)
        return await send(auth=auth)

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
        query = httpx.QueryParams({key: v for key, v in form.items() if key != "scope"})
        for one in scope.split():
            query = query.add("scope", one)
        return await self._send("GET", realm, registry=registry, auth=auth, params=query)

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
        accept: bool | Sequence[str] = False,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
        params: httpx.QueryParams | None = None,
        data: dict[str, str] | None = None,
        unknown: str = _UNKNOWN_EXISTS,
    ) -> httpx.Response:
        http = self._root._http
        if http is None:
            raise RuntimeError("use RegistryClient as `async with RegistryClient() as client:`")
        sent = httpx.Headers(_accept_headers(accept))
        sent.update(headers or {})
        if auth is not None:
            sent["Authorization"] = auth
        body = content() if callable(content) else content
        try:
            return await http.request(
                method, url, headers=sent, params=params, data=data, content=body
            )
        except httpx.TimeoutException:
            cause = f"timed out after {self._timeout:g} s"
        except httpx.TransportError as exc:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise RegistryUnavailable(
            f"registry {registry} is unreachable at {_origin(url)}: {cause}; {unknown}"
        )


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """What httpx makes for ``verify=True`` (the CA bundle, SSL_CERT_FILE and SSL_CERT_DIR),
    made once per process: a one-shot CLI makes it while its definitions load. Importing
    httpcore (httpx's transport, imported when the first client is made) goes with it."""
    import httpcore  # noqa: F401

    return httpx.create_ssl_context()


def _accept_headers(accept: bool | Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(accept, str):
        accept = [accept]
    types = MANIFEST_MEDIA_TYPES if accept is True else () if accept is False else accept
    return [("Accept", media_type) for media_type in types]


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


def _push(ref: ImageRef) -> str:
    return f"repository:{ref.repository}:pull,push"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _media_type(response: httpx.Response, body: bytes) -> str:
    header = str(response.headers.get("content-type", "")).partition(";")[0].strip()
    if header and header not in ("application/json", "application/octet-stream"):
        return header
    try:
        found: object = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        found = None
    return found if isinstance(found, str) else header


def _location(response: httpx.Response) -> str:
    """The absolute URL of a Location header, which may be relative to the request."""
    return str(response.request.url.join(response.headers["location"]))


def _refuses_monolithic(response: httpx.Response) -> bool:
    if response.status_code not in (400, 405, 411, 413, 416):
        return False
    return not {"DIGEST_INVALID", "SIZE_INVALID"} & set(_error_codes(response))


def _check_range(ref: ImageRef, digest: str, response: httpx.Response, end: int) -> None:
    received = response.headers.get("range")
    if received is not None and received.removeprefix("bytes=") != f"0-{end}":
        raise RegistryError(
            f"registry {ref.registry} holds bytes {received} of blob {digest} for "
            f"{ref.repository} after bytes up to {end} were sent"
        )


async def _chunks(data: BlobSource, size: int) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        for start in range(0, len(data), size):
            yield data[start : start + size]
        return
    buffer = bytearray()
    async for piece in data():
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _errors(response: httpx.Response) -> list[dict[str, object]]:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _error_codes(response: httpx.Response) -> list[str]:
    return [str(e.get("code")) for e in _errors(response)]


def _error_text(response: httpx.Response) -> str:
    """` CODE: message (detail)` of the registry's first error, or nothing."""
    errors = _errors(response)
    if not errors:
        return ""
    first = errors[0]
    message = f": {first['message']}" if first.get("message") else ""
    detail = f" ({first['detail']})" if first.get("detail") else ""
    return f" {first.get('code')}{message}{detail}"


def _layer_media_types(body: bytes) -> set[str]:
    try:
        manifest = json.loads(body)
        entries = manifest.get("layers") or manifest.get("manifests") or []
        return {str(e["mediaType"]) for e in entries if isinstance(e, dict) and "mediaType" in e}
    except (ValueError, AttributeError, KeyError, TypeError):
        return set()


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
