"""Tests for reading registry credentials from a Docker config and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from imaged.errors import ConfigError, RegistryAuthError, SecretError
from imaged.registry.auth import (
    CredentialResolver,
    Credentials,
    credentials_for,
    docker_config_with,
    load_docker_config,
    parse_login_secret,
)

FAKE_HELPER = """\
#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
server = sys.stdin.read()
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": server}}) + "\\n")
store = json.loads((here / "store.json").read_text())
if server == "broken.example.com":
    print("keychain is locked", file=sys.stderr)
    sys.exit(3)
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps(store[server]))
"""


def write_config(config_dir: Path, config: dict[str, Any]) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps(config))
    return config_dir


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeHelper:
    """`docker-credential-fake` on PATH, serving `store` and logging how it was called."""

    def __init__(self, bindir: Path, store: dict[str, dict[str, str]]) -> None:
        self.bindir = bindir
        bindir.mkdir()
        script = bindir / "docker-credential-fake"
        script.write_text(FAKE_HELPER.format(python=sys.executable))
        script.chmod(0o755)
        (bindir / "store.json").write_text(json.dumps(store))

    def calls(self) -> list[dict[str, Any]]:
        log = self.bindir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHelper:
    store = {
        "reg.example.com": {"Username": "alice", "Secret": "helper-secret"},
        "https://index.docker.io/v1/": {"Username": "hubuser", "Secret": "hub-secret"},
        "token.example.com": {"Username": "<token>", "Secret": "refresh-me"},
    }
    fake = FakeHelper(tmp_path / "bin", store)
    monkeypatch.setenv("PATH", f"{fake.bindir}{os.pathsep}{os.environ['PATH']}")
    return fake


@pytest.mark.parametrize(
    ("key", "host"),
    [
        pytest.param("localhost:5000", "localhost:5000", id="bare"),
        pytest.param("https://localhost:5000", "localhost:5000", id="https"),
        pytest.param("https://localhost:5000/v1/", "localhost:5000", id="https-v1"),
        pytest.param("http://localhost:5000/", "localhost:5000", id="http-slash"),
        pytest.param("https://index.docker.io/v1/", "docker.io", id="hub-key"),
        pytest.param("https://index.docker.io/v1/", "index.docker.io", id="hub-index-host"),
        pytest.param("docker.io", "docker.io", id="hub-bare"),
        pytest.param("REG.Example.com", "https://reg.example.com/v2/", id="case-and-url"),
    ],
)
def test_auths_key_normalisation(key: str, host: str, tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {key: {"auth": b64("bob:p:w")}}})
    assert credentials_for(host, config_dir=tmp_path) == Credentials("bob", "p:w")


def test_auths_entry_for_another_host_does_not_match(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"localhost:5001": {"auth": b64("bob:pw")}}})
    assert credentials_for("localhost:5000", config_dir=tmp_path) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param({"auth": b64("bob:pw")}, Credentials("bob", "pw"), id="auth-base64"),
        pytest.param({"username": "bob", "password": "pw"}, Credentials("bob", "pw"), id="fields"),
        pytest.param(
            {"auth": b64("bob:"), "identitytoken": "idtok"},
            Credentials("bob", identity_token="idtok"),
            id="identitytoken",
        ),
        pytest.param({}, None, id="empty-entry"),
    ],
)
def test_auths_entry_forms(
    entry: dict[str, str], expected: Credentials | None, tmp_path: Path
) -> None:
    write_config(tmp_path, {"auths": {"reg.example.com": entry}})
    assert credentials_for("reg.example.com", config_dir=tmp_path) == expected


def test_bad_base64_names_the_host_not_the_value(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"reg.example.com": {"auth": "not base64 secret!"}}})
    with pytest.raises(RegistryAuthError, match=r"reg\.example\.com") as info:
        credentials_for("reg.example.com", config_dir=tmp_path)
    assert "secret" not in str(info.value)


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "elsewhere", {"auths": {"reg.example.com": {"auth": b64("env:pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    assert credentials_for("reg.example.com") == Credentials("env", "pw")


def test_home_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / ".docker", {"auths": {"reg.example.com": {"auth": b64("home:pw")}}})
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials_for("reg.example.com") == Credentials("home", "pw")


def test_missing_config_is_empty(tmp_path: Path) -> None:
    assert load_docker_config(tmp_path / "nowhere") == {}
    assert credentials_for("reg.example.com", config_dir=tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    "text", [pytest.param("{not json", id="syntax"), pytest.param("[]", id="list")]
)
def test_malformed_config_names_the_file(text: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=r"config\.json"):
        load_docker_config(tmp_path)


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(Credentials("alice", "hunter2"), id="password"),
        pytest.param(Credentials("alice", identity_token="hunter2"), id="token"),
    ],
)
def test_repr_hides_the_secret(credentials: Credentials) -> None:
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)
    assert "alice" in repr(credentials)


def test_cred_helper_gets_server_url_on_stdin(helper: FakeHelper, tmp_path: Path) -> None:
    write_config(tmp_path, {"credHelpers": {"reg.example.com": "fake"}})
    assert credentials_for("reg.example.com", config_dir=tmp_path) == Credentials(
        "alice", "helper-secret"
    )
    assert helper.calls() == [{"argv": ["get"], "stdin": "reg.example.com"}]


def test_cred_helper_for_docker_hub_uses_index_key(helper: FakeHelper, tmp_path: Path) -> None:
    write_config(tmp_path, {"credHelpers": {"docker.io": "fake"}})
    assert credentials_for("docker.io", config_dir=tmp_path) == Credentials("hubuser", "hub-secret")
    assert helper.calls() == [{"argv": ["get"], "stdin": "https://index.docker.io/v1/"}]


def test_cred_helper_token_username_means_identity_token(
    helper: FakeHelper, tmp_path: Path
) -> None:
    write_config(tmp_path, {"credsStore": "fake"})
    found = credentials_for("token.example.com", config_dir=tmp_path)
    assert found == Credentials("", identity_token="refresh-me")


def test_creds_store_is_the_default(helper: FakeHelper, tmp_path: Path) -> None:
    write_config(tmp_path, {"credsStore": "fake", "credHelpers": {"other.example.com": "nope"}})
    assert credentials_for("reg.example.com", config_dir=tmp_path) == Credentials(
        "alice", "helper-secret"
    )
    assert [c["stdin"] for c in helper.calls()] == ["reg.example.com"]


def test_cred_helpers_win_over_creds_store(helper: FakeHelper, tmp_path: Path) -> None:
    write_config(
        tmp_path, {"credsStore": "missing-store", "credHelpers": {"reg.example.com": "fake"}}
    )
    assert credentials_for("reg.example.com", config_dir=tmp_path) == Credentials(
        "alice", "helper-secret"
    )


@pytest.mark.parametrize(
    ("auths", "expected"),
    [
        pytest.param({}, None, id="none"),
        pytest.param(
            {"unknown.example.com": {"auth": b64("bob:pw")}},
            Credentials("bob", "pw"),
            id="auths-fallback",
        ),
    ],
)
def test_helper_credentials_not_found(
    auths: dict[str, Any], expected: Credentials | None, helper: FakeHelper, tmp_path: Path
) -> None:
    write_config(tmp_path, {"credsStore": "fake", "auths": auths})
    assert credentials_for("unknown.example.com", config_dir=tmp_path) == expected
    assert len(helper.calls()) == 1


def test_helper_failure_names_the_helper(helper: FakeHelper, tmp_path: Path) -> None:
    write_config(tmp_path, {"credHelpers": {"broken.example.com": "fake"}})
    with pytest.raises(RegistryAuthError, match="docker-credential-fake") as info:
        credentials_for("broken.example.com", config_dir=tmp_path)
    assert "keychain is locked" in str(info.value)


def test_missing_helper_names_the_helper(tmp_path: Path) -> None:
    write_config(tmp_path, {"credsStore": "imaged-test-nonexistent"})
    with pytest.raises(RegistryAuthError, match="docker-credential-imaged-test-nonexistent"):
        credentials_for("reg.example.com", config_dir=tmp_path)


def test_empty_cred_helper_means_the_auths_entry(helper: FakeHelper, tmp_path: Path) -> None:
    """docker's rule: a credHelpers entry of "" for a host means its plain `auths` entry."""
    write_config(
        tmp_path,
        {
            "credsStore": "fake",
            "credHelpers": {"reg.example.com": ""},
            "auths": {"reg.example.com": {"auth": b64("bob:file-pw")}},
        },
    )
    assert credentials_for("reg.example.com", config_dir=tmp_path) == Credentials("bob", "file-pw")
    assert helper.calls() == []


# -- the one resolver ---------------------------------------------------------------------------


def test_resolver_answers_logins_first_and_asks_a_helper_once(
    helper: FakeHelper, tmp_path: Path
) -> None:
    write_config(tmp_path, {"credsStore": "fake"})
    resolver = CredentialResolver(config_dir=tmp_path)
    secret = Credentials("ci", "from-secret", origin="registry_secret 'pull'")
    with_secret = resolver.with_logins({"https://reg.example.com": secret})
    assert with_secret.resolve("reg.example.com") is secret
    assert with_secret.resolve("token.example.com") == Credentials("", identity_token="refresh-me")
    assert resolver.resolve("token.example.com") == Credentials("", identity_token="refresh-me")
    assert resolver.resolve("reg.example.com") == Credentials("alice", "helper-secret")
    assert [c["stdin"] for c in helper.calls()] == ["token.example.com", "reg.example.com"]
    assert resolver.with_logins({}) is resolver


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        pytest.param(
            Credentials("ci", "pw"),
            {"username": "ci", "password": "pw", "serveraddress": "reg.example.com"},
            id="password",
        ),
        pytest.param(
            Credentials("", identity_token="tok"),
            {"identitytoken": "tok", "serveraddress": "reg.example.com"},
            id="identity-token",
        ),
        pytest.param(None, {}, id="anonymous"),
    ],
)
def test_resolver_gives_the_engine_push_its_auth_config(
    found: Credentials | None, expected: dict[str, str], tmp_path: Path
) -> None:
    logins = {"reg.example.com": found} if found else {}
    resolver = CredentialResolver(config_dir=tmp_path, logins=logins)
    assert resolver.auth_config("reg.example.com") == expected


def test_docker_hub_auth_config_names_the_index(tmp_path: Path) -> None:
    resolver = CredentialResolver(config_dir=tmp_path, logins={"docker.io": Credentials("u", "p")})
    assert resolver.auth_config("index.docker.io")["serveraddress"] == "https://index.docker.io/v1/"


def test_docker_config_for_the_cli_overrides_only_the_login_hosts(tmp_path: Path) -> None:
    user = {
        "auths": {"https://reg.example.com/v1/": {"auth": b64("old:old")}, "o.io": {"auth": "x"}},
        "credHelpers": {"reg.example.com": "gcloud", "other.io": "ecr"},
        "credsStore": "desktop",
        "currentContext": "farm",
    }
    written = json.loads(docker_config_with({"reg.example.com": Credentials("ci", "pw")}, user))
    assert written["auths"] == {"o.io": {"auth": "x"}, "reg.example.com": {"auth": b64("ci:pw")}}
    assert written["credHelpers"] == {"other.io": "ecr", "reg.example.com": ""}
    assert (written["credsStore"], written["currentContext"]) == ("desktop", "farm")
    resolver = CredentialResolver(config_dir=write_config(tmp_path, written))
    assert resolver.resolve("reg.example.com") == Credentials("ci", "pw")
    assert CredentialResolver(config_dir=tmp_path).docker_config() is None


# -- registry_secret values ------------------------------------------------------------------


def test_login_secret_user_password_is_for_the_image_registry() -> None:
    logins = parse_login_secret(b"ci:pa:ss\n", "Reg.Example.com:5000", origin="o")
    assert logins == {"reg.example.com:5000": Credentials("ci", "pa:ss")}
    assert logins["reg.example.com:5000"].origin == "o"


def test_login_secret_docker_config_json_gives_every_listed_host() -> None:
    value = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
            "nvcr.io": {"username": "$oauthtoken", "password": "ngc"},
            "ghcr.io": {"identitytoken": "tok"},
        }
    }
    logins = parse_login_secret(json.dumps(value).encode(), None, origin="o")
    assert logins == {
        "docker.io": Credentials("hub", "hubpw"),
        "nvcr.io": Credentials("$oauthtoken", "ngc"),
        "ghcr.io": Credentials("", identity_token="tok"),
    }


@pytest.mark.parametrize(
    ("value", "registry", "message"),
    [
        pytest.param(b"hunter2", "r.io", "neither a Docker config JSON", id="no-colon"),
        pytest.param(b":hunter2", "r.io", "neither a Docker config JSON", id="no-user"),
        pytest.param(b"ci:hunter2", None, "the image has none", id="no-registry"),
        pytest.param(b'{"auths": hunter2', "r.io", "does not parse", id="bad-json"),
        pytest.param(b'{"hunter2": {}}', "r.io", 'without an "auths"', id="no-auths"),
        pytest.param(
            b'{"auths": {"r.io": {"x": "hunter2"}}}', "r.io", "no credentials", id="empty"
        ),
        pytest.param(b"\xffhunter2", "r.io", "not UTF-8", id="binary"),
        pytest.param(
            b'{"auths": {"r.io": {"auth": "hunter2!"}}}',
            "r.io",
            r"the auths entry for r\.io has an `auth` value that is not base64",
            id="bad-base64-auth",
        ),
        pytest.param(
            b'{"auths": {"r.io": {"auth": "aHVudGVyMg=="}}}',  # base64 of hunter2, no colon
            "r.io",
            "not base64 of user:password",
            id="auth-without-colon",
        ),
    ],
)
def test_bad_login_secret_says_why_and_never_quotes_it(
    value: bytes, registry: str | None, message: str
) -> None:
    with pytest.raises(SecretError, match=message) as info:
        parse_login_secret(value, registry, origin="registry_secret 'pull' of image 'app'")
    assert "hunter2" not in str(info.value)
    assert "registry_secret 'pull' of image 'app'" in str(info.value)
