"""Tests for the registry client: fakes through httpx.MockTransport, and real registries (docker)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from imaged.config import Settings
from imaged.errors import (
    ImagedError,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from imaged.registry.auth import Credentials
from imaged.registry.client import (
    MANIFEST_MEDIA_TYPES,
    Existence,
    ImageRef,
    RegistryClient,
    check_exists,
    create_registry_client,
    image_exists,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
DIGEST = "sha256:" + "ab" * 32
REG = "registry.example.com"
MANIFEST_URL = f"https://{REG}/v2/team/app/manifests/v1"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """asyncio only: the trio on this machine is too old for anyio 4's thread API."""
    return "asyncio"


def client_for(handler: Handler, **options: Any) -> RegistryClient:
    return RegistryClient(transport=httpx.MockTransport(handler), **options)


def write_auths(config_dir: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return config_dir


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- ImageRef -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param(
            "python:3.11", ("docker.io", "library/python", "3.11", None), id="hub-official"
        ),
        pytest.param("python", ("docker.io", "library/python", None, None), id="hub-no-tag"),
        pytest.param("user/app:1", ("docker.io", "user/app", "1", None), id="hub-user"),
        pytest.param(
            "docker.io/python", ("docker.io", "library/python", None, None), id="hub-explicit"
        ),
        pytest.param(
            "index.docker.io/library/python:3",
            ("docker.io", "library/python", "3", None),
            id="hub-index-alias",
        ),
        pytest.param(
            "localhost:5000/app:tag", ("localhost:5000", "app", "tag", None), id="localhost-port"
        ),
        pytest.param("localhost/app", ("localhost", "app", None, None), id="localhost-no-port"),
        pytest.param("127.0.0.1:5000/a/b:t", ("127.0.0.1:5000", "a/b", "t", None), id="ip-nested"),
        pytest.param("[::1]:5000/app:x", ("[::1]:5000", "app", "x", None), id="ipv6"),
        pytest.param(f"app@{DIGEST}", ("docker.io", "library/app", None, DIGEST), id="hub-digest"),
        pytest.param("ghcr.io/org/app:v1", ("ghcr.io", "org/app", "v1", None), id="ghcr"),
        pytest.param(
            f"reg.example.com:443/a/b/c:tag@{DIGEST}",
            ("reg.example.com:443", "a/b/c", "tag", DIGEST),
            id="tag-and-digest",
        ),
        pytest.param(
            "my-reg.io/my_app/sub--name:1.0-rc.1",
            ("my-reg.io", "my_app/sub--name", "1.0-rc.1", None),
            id="separators",
        ),
        pytest.param("Foo/app", ("Foo", "app", None, None), id="uppercase-first-is-domain"),
    ],
)
def test_parse_image_ref(uri: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = ImageRef.parse(uri)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("", id="empty"),
        pytest.param("App:1", id="uppercase-repo"),
        pytest.param("localhost:5000/App", id="uppercase-repo-with-registry"),
        pytest.param("app:", id="empty-tag"),
        pytest.param("app:-bad", id="tag-starts-with-dash"),
        pytest.param("app:" + "x" * 129, id="tag-too-long"),
        pytest.param("app@sha256:abc", id="short-digest"),
        pytest.param("app@", id="empty-digest"),
        pytest.param("a//b", id="empty-component"),
        pytest.param("https://reg.io/app", id="scheme"),
    ],
)
def test_parse_rejects_invalid_refs(uri: str) -> None:
    with pytest.raises(SpecError, match="invalid image reference"):
        ImageRef.parse(uri)


@pytest.mark.parametrize(
    ("uri", "text", "reference"),
    [
        pytest.param("python:3.11", "docker.io/library/python:3.11", "3.11", id="tag"),
        pytest.param("python", "docker.io/library/python", "latest", id="default-latest"),
        pytest.param(f"r.io/a:t@{DIGEST}", f"r.io/a:t@{DIGEST}", DIGEST, id="digest-wins"),
    ],
)
def test_image_ref_str_and_reference(uri: str, text: str, reference: str) -> None:
    ref = ImageRef.parse(uri)
    assert (str(ref), ref.reference, ImageRef.parse(str(ref))) == (text, reference, ref)


# --- status handling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, b"", Existence.EXISTS, id="200"),
        pytest.param(404, b"", Existence.MISSING, id="404"),
        pytest.param(
            404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', Existence.MISSING, id="404-name-unknown"
        ),
        pytest.param(500, b"", RegistryUnavailable, id="500"),
        pytest.param(503, b"", RegistryUnavailable, id="503"),
        pytest.param(429, b"", RegistryUnavailable, id="429-rate-limited"),
        pytest.param(418, b"", RegistryError, id="unexpected-status"),
        pytest.param(403, b"", RegistryAuthError, id="403"),
    ],
)
async def test_manifest_status(
    status: int, body: bytes, expected: Existence | type[Exception], tmp_path: Path
) -> None:
    client = client_for(
        lambda request: httpx.Response(status, content=body), docker_config_dir=tmp_path
    )
    async with client:
        if isinstance(expected, Existence):
            assert await client.manifest_exists(f"{REG}/team/app:v1") is expected
        else:
            with pytest.raises(expected) as info:
                await client.manifest_exists(f"{REG}/team/app:v1")
            assert REG in str(info.value)
            if expected is RegistryError:
                assert type(info.value) is RegistryError
                assert "418" in str(info.value)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        pytest.param(
            httpx.ConnectError("[Errno 111] Connection refused"), "Connection refused", id="refused"
        ),
        pytest.param(httpx.ReadTimeout("read timed out"), "timed out after 2 s", id="timeout"),
        pytest.param(httpx.RemoteProtocolError("peer closed"), "peer closed", id="reset"),
    ],
)
async def test_transport_failure_is_unavailable(exc: Exception, cause: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client_for(fail, timeout=2) as client:
        with pytest.raises(RegistryUnavailable) as info:
            await client.manifest_exists("127.0.0.1:5999/app:v1")
    message = str(info.value)
    assert "http://127.0.0.1:5999" in message
    assert cause in message
    assert "never assume it exists" in message


async def test_head_sends_every_manifest_media_type() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with client_for(handler) as client:
        await client.manifest_exists(f"{REG}/team/app:v1")
    (request,) = seen
    accepted = {t.strip() for t in request.headers["accept"].split(",")}
    assert accepted == set(MANIFEST_MEDIA_TYPES)
    assert "application/vnd.oci.image.index.v1+json" in accepted
    assert (request.method, str(request.url)) == ("HEAD", MANIFEST_URL)


@pytest.mark.parametrize(
    ("uri", "insecure", "env", "expected_url"),
    [
        pytest.param(
            "localhost:5000/a:t", (), "", "http://localhost:5000/v2/a/manifests/t", id="localhost"
        ),
        pytest.param(
            "127.0.0.1:5000/a:t", (), "", "http://127.0.0.1:5000/v2/a/manifests/t", id="loopback"
        ),
        pytest.param(
            "127.9.8.7:8080/a:t", (), "", "http://127.9.8.7:8080/v2/a/manifests/t", id="loopback-8"
        ),
        pytest.param(
            "[::1]:5000/a:t", (), "", "http://[::1]:5000/v2/a/manifests/t", id="ipv6-loopback"
        ),
        pytest.param(f"{REG}/a:t", (), "", f"https://{REG}/v2/a/manifests/t", id="remote-https"),
        pytest.param(
            "10.0.0.5:5000/a:t", (), "", "https://10.0.0.5:5000/v2/a/manifests/t", id="lan-ip-https"
        ),
        pytest.param(
            "python:3",
            (),
            "",
            "https://registry-1.docker.io/v2/library/python/manifests/3",
            id="hub",
        ),
        pytest.param(
            "reg.lan:5000/a:t",
            ("reg.lan:5000",),
            "",
            "http://reg.lan:5000/v2/a/manifests/t",
            id="insecure-host-port",
        ),
        pytest.param(
            "reg.lan:5000/a:t",
            ("reg.lan",),
            "",
            "http://reg.lan:5000/v2/a/manifests/t",
            id="insecure-hostname",
        ),
        pytest.param(
            "reg.lan/a:t",
            (),
            "other.lan, reg.lan",
            "http://reg.lan/v2/a/manifests/t",
            id="insecure-env",
        ),
    ],
)
async def test_scheme_selection(
    uri: str,
    insecure: tuple[str, ...],
    env: str,
    expected_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGED_INSECURE_REGISTRIES", env)
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200)

    async with client_for(handler, insecure_hosts=insecure) as client:
        await client.manifest_exists(uri)
    assert urls == [expected_url]


# --- auth flows -----------------------------------------------------------------------------


class BearerRegistry:
    """A fake registry plus token service: the token is granted only to the right user."""

    def __init__(self, *, token_key: str = "token", password: str = "pw") -> None:
        self.token_key = token_key
        self.password = password
        self.token_requests: list[httpx.Request] = []
        self.manifest_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return self.token(request)
        self.manifest_requests.append(request)
        if request.headers.get("authorization") == "Bearer tok-1":
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        challenge = f'Bearer realm="https://auth.example.com/token",service="{REG}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        auth = request.headers.get("authorization")
        if auth is not None and auth != basic("alice", self.password):
            return httpx.Response(401)
        return httpx.Response(200, json={self.token_key: "tok-1", "expires_in": 300})


@pytest.mark.parametrize("token_key", ["token", "access_token"])
async def test_bearer_flow_with_credentials(token_key: str, tmp_path: Path) -> None:
    fake = BearerRegistry(token_key=token_key)
    config = write_auths(tmp_path, f"https://{REG}", "alice", "pw")
    async with client_for(fake, docker_config_dir=config) as client:
        assert await client.manifest_exists(f"{REG}/team/app:v1") is Existence.EXISTS
        assert await client.manifest_digest(f"{REG}/team/app:v1") == DIGEST
    (token_request,) = fake.token_requests  # the second lookup reused the cached token
    assert token_request.url.params["scope"] == "repository:team/app:pull"
    assert token_request.url.params["service"] == REG
    assert token_request.headers["authorization"] == basic("alice", "pw")
    assert [r.headers.get("authorization") for r in fake.manifest_requests] == [
        None,
        "Bearer tok-1",
        "Bearer tok-1",
    ]


async def test_bearer_flow_anonymous(tmp_path: Path) -> None:
    fake = BearerRegistry()
    async with client_for(fake, docker_config_dir=tmp_path) as client:
        assert await client.manifest_exists(f"{REG}/team/app:v1") is Existence.EXISTS
    (token_request,) = fake.token_requests
    assert "authorization" not in token_request.headers


async def test_bearer_wrong_credentials(tmp_path: Path) -> None:
    fake = BearerRegistry(password="right")
    config = write_auths(tmp_path, REG, "alice", "wrong-secret")
    async with client_for(fake, docker_config_dir=config) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.manifest_exists(f"{REG}/team/app:v1")
    message = str(info.value)
    assert REG in message
    assert "credentials were found" in message
    assert "wrong-secret" not in message
    assert "auth.example.com" in message


async def test_bearer_token_rejected_by_registry(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json={"token": "useless"})
        challenge = f'Bearer realm="https://auth.example.com/token",service="{REG}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    async with client_for(handler, docker_config_dir=tmp_path) as client:
        with pytest.raises(RegistryAuthError, match="no credentials were found"):
            await client.manifest_exists(f"{REG}/team/app:v1")


def basic_registry(password: str) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("authorization") == basic("alice", password):
            return httpx.Response(404)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'})

    return handler, seen


async def test_basic_challenge(tmp_path: Path) -> None:
    handler, seen = basic_registry("pw")
    config = write_auths(tmp_path, REG, "alice", "pw")
    async with client_for(handler, docker_config_dir=config) as client:
        assert await client.manifest_exists(f"{REG}/team/app:v1") is Existence.MISSING
        assert await client.manifest_exists(f"{REG}/other/app:v2") is Existence.MISSING
    # The Basic header is sent up front once the registry asked for it.
    assert [r.headers.get("authorization") for r in seen] == [None, *[basic("alice", "pw")] * 2]


async def test_logins_view_answers_its_login_and_shares_connections(tmp_path: Path) -> None:
    handler, seen = basic_registry("from-secret")
    write_auths(tmp_path, REG, "alice", "from-config")
    secret = Credentials("alice", "from-secret", origin="registry_secret 'pull' of image 'app'")
    async with client_for(handler, docker_config_dir=tmp_path) as client:
        view = client.with_logins({REG: secret})
        assert client.with_logins({REG: secret}) is view  # one view per set of logins
        assert client.with_logins({}) is client
        assert await view.manifest_exists(f"{REG}/team/app:v1") is Existence.MISSING
        with pytest.raises(RegistryAuthError, match="in the Docker config"):
            await client.manifest_exists(f"{REG}/team/app:v1")  # the plain client: config
    assert [r.headers.get("authorization") for r in seen] == [
        None,
        basic("alice", "from-secret"),
        None,
        basic("alice", "from-config"),
    ]
    with pytest.raises(RuntimeError, match="async with"):
        await view.manifest_exists(f"{REG}/team/app:v1")  # the connections closed with it


async def test_refused_login_names_the_registry_secret(tmp_path: Path) -> None:
    handler, _ = basic_registry("right")
    wrong = Credentials("alice", "wrong-secret", origin="registry_secret 'pull' of image 'app'")
    async with client_for(handler, docker_config_dir=tmp_path) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.with_logins({REG: wrong}).manifest_exists(f"{REG}/team/app:v1")
    message = str(info.value)
    assert f"credentials were found for {REG} in registry_secret 'pull' of image 'app'" in message
    assert "wrong-secret" not in message


async def test_blob_exists_authorises_like_manifests(tmp_path: Path) -> None:
    fake = BearerRegistry()
    config = write_auths(tmp_path, REG, "alice", "pw")
    async with client_for(fake, docker_config_dir=config) as client:
        assert await client.blob_exists(f"{REG}/team/app:v1", DIGEST) is Existence.EXISTS
    assert fake.manifest_requests[-1].url.path == f"/v2/team/app/blobs/{DIGEST}"
    assert fake.manifest_requests[-1].method == "HEAD"


def test_the_client_factory_reads_insecure_hosts_from_settings() -> None:
    client = create_registry_client(Settings(insecure_registries=("reg.lan:5000",)))
    assert client.base_url("reg.lan:5000") == "http://reg.lan:5000"
    assert client.base_url("reg.example.com") == "https://reg.example.com"
    assert client.base_url("index.docker.io") == "https://registry-1.docker.io"


@pytest.mark.parametrize(
    ("config_password", "expected"),
    [
        pytest.param("wrong-secret", "credentials were found", id="wrong"),
        pytest.param(None, "no credentials were found", id="none"),
    ],
)
async def test_basic_challenge_refused(
    config_password: str | None, expected: str, tmp_path: Path
) -> None:
    handler, _ = basic_registry("pw")
    if config_password is not None:
        write_auths(tmp_path, REG, "alice", config_password)
    async with client_for(handler, docker_config_dir=tmp_path) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.manifest_exists(f"{REG}/team/app:v1")
    assert expected in str(info.value)
    assert REG in str(info.value)
    assert "wrong-secret" not in str(info.value)


# --- digest, ping, many, one-shot ------------------------------------------------------------


async def test_manifest_digest_falls_back_to_hashing_the_body() -> None:
    body = b'{"schemaVersion":2}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"" if request.method == "HEAD" else body)

    async with client_for(handler) as client:
        digest = await client.manifest_digest(f"{REG}/team/app:v1")
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()


async def test_manifest_digest_missing_is_none() -> None:
    async with client_for(lambda request: httpx.Response(404)) as client:
        assert await client.manifest_digest(f"{REG}/team/app:v1") is None


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(200, None, id="ok"),
        pytest.param(401, None, id="auth-needed-is-reachable"),
        pytest.param(502, RegistryUnavailable, id="bad-gateway"),
    ],
)
async def test_ping(status: int, error: type[Exception] | None) -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(status)

    async with client_for(handler) as client:
        if error is None:
            await client.ping("localhost:5000")
        else:
            with pytest.raises(error, match="localhost:5000"):
                await client.ping("localhost:5000")
    assert urls == ["http://localhost:5000/v2/"]


async def test_ping_unreachable_names_the_address() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    async with client_for(fail) as client:
        with pytest.raises(RegistryUnavailable, match=r"http://127\.0\.0\.1:5999"):
            await client.ping("127.0.0.1:5999")


async def test_check_many_is_bounded_and_isolates_failures() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        if request.url.host == "down.example.com":
            raise httpx.ConnectError("connection refused")
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200 if request.url.path.endswith("/present") else 404)

    refs = [f"{REG}/app:t{i}" for i in range(10)] + [
        f"{REG}/app:present",
        "down.example.com/app:x",
        "Bad:Ref",
    ]
    async with client_for(handler, max_concurrency=3) as client:
        results = await client.check_many(refs)
    assert list(results) == refs
    assert peak == 3
    assert all(results[f"{REG}/app:t{i}"] is Existence.MISSING for i in range(10))
    assert results[f"{REG}/app:present"] is Existence.EXISTS
    assert isinstance(results["down.example.com/app:x"], RegistryUnavailable)
    assert isinstance(results["Bad:Ref"], SpecError)
    assert isinstance(results["Bad:Ref"], ImagedError)


async def test_check_many_shares_one_token_fetch(tmp_path: Path) -> None:
    fake = BearerRegistry()
    refs = [f"{REG}/team/app:t{i}" for i in range(8)]
    async with client_for(fake, docker_config_dir=tmp_path) as client:
        results = await client.check_many(refs)
    assert set(results.values()) == {Existence.EXISTS}
    assert len(fake.token_requests) == 1


async def test_check_exists_one_shot() -> None:
    result = await check_exists(
        "localhost:5000/app:v1", transport=httpx.MockTransport(lambda r: httpx.Response(404))
    )
    assert result is Existence.MISSING


def test_image_exists_sync() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    assert image_exists("localhost:5000/app:v1", transport=transport) is Existence.EXISTS


async def test_client_must_be_entered() -> None:
    client = client_for(lambda r: httpx.Response(200))
    with pytest.raises(RuntimeError, match="async with"):
        await client.manifest_exists("localhost:5000/app:v1")


# --- end to end against real registries (scripts/test-infra.sh) ------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.docker
async def test_e2e_existing_and_missing(infra: Any) -> None:
    base = ImageRef.parse(infra.debian_base)
    async with RegistryClient() as client:
        await client.ping(infra.registry)
        assert await client.manifest_exists(base) is Existence.EXISTS
        missing_tag = ImageRef(base.registry, base.repository, "imaged-no-such-tag")
        assert await client.manifest_exists(missing_tag) is Existence.MISSING
        assert await client.manifest_exists(f"{infra.registry}/imaged/no-such-repo:v1") is (
            Existence.MISSING
        )
        digest = await client.manifest_digest(base)
    assert digest is not None
    assert digest.startswith("sha256:")


@pytest.mark.docker
async def test_e2e_closed_port_is_unavailable() -> None:
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(RegistryUnavailable, match=rf"http://{address}"):
        await check_exists(f"{address}/app:v1")


@pytest.mark.docker
async def test_e2e_auth_registry_right_credentials(infra: Any, docker_config_dir: Path) -> None:
    async with RegistryClient(docker_config_dir=docker_config_dir) as client:
        await client.ping(infra.auth_registry)
        result = await client.manifest_exists(f"{infra.auth_registry}/imaged/no-such-repo:v1")
    assert result is Existence.MISSING


@pytest.mark.docker
async def test_e2e_auth_registry_wrong_credentials(
    infra: Any, wrong_docker_config_dir: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(RegistryAuthError) as info:
        await check_exists(
            f"{infra.auth_registry}/imaged/app:v1", docker_config_dir=wrong_docker_config_dir
        )
    assert time.monotonic() - started < 5
    assert infra.auth_registry in str(info.value)
    assert "credentials were found" in str(info.value)


@pytest.mark.docker
async def test_e2e_check_many_50(infra: Any) -> None:
    refs = [f"{infra.registry}/imaged/many:t{i}" for i in range(49)] + [infra.debian_base]
    async with RegistryClient() as client:
        results = await client.check_many(refs)
    assert len(results) == 50
    assert results[infra.debian_base] is Existence.EXISTS
    assert {results[ref] for ref in refs[:49]} == {Existence.MISSING}
