"""Tests for reading registry credentials from a Docker config and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from imaged.errors import ConfigError, RegistryAuthError
from imaged.registry.auth import Credentials, credentials_for, load_docker_config

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
