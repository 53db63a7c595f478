"""An image's registry_secret on the one credential path: resolved, parsed, and used by checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import httpx
import pytest

from imaged import Image, Secret
from imaged.config import Settings
from imaged.errors import SecretError, SpecError
from imaged.pipeline.logins import check_images, registry_logins
from imaged.registry.auth import Credentials
from imaged.registry.client import Existence, RegistryClient

REG = "reg.example.com"
OTHER = "nvcr.example.com"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_registry_secret_no_logins() -> None:
    assert (
        registry_logins(Image.from_base("debian:12").clone(name="a", registry=REG), Settings())
        == {}
    )


def test_logins_come_from_the_image_and_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_SECRET_CHILD", "ci:child-pw")
    folder = tmp_path / "registry"
    folder.mkdir()
    parent_value = {"auths": {REG: {"auth": "eDp5"}, OTHER: {"username": "p", "password": "q"}}}
    (folder / "parent").write_text(json.dumps(parent_value))
    parent = Image.from_base(f"{OTHER}/cuda:12").clone(
        name="parent", registry=REG, registry_secret=Secret("parent", group="registry")
    )
    child = Image.from_base(parent).clone(name="child", registry=REG, registry_secret="child")
    logins = registry_logins(child, Settings(secrets_dir=tmp_path))
    assert logins == {REG: Credentials("ci", "child-pw"), OTHER: Credentials("p", "q")}
    assert logins[REG].origin == "registry_secret 'child' of image 'child'"
    assert logins[OTHER].origin == "registry_secret 'registry.parent' of image 'parent'"


def test_an_unset_registry_secret_is_a_secret_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGED_SECRET_NOPE", raising=False)
    image = Image.from_base("debian:12").clone(name="a", registry=REG, registry_secret="nope")
    with pytest.raises(SecretError, match="IMAGED_SECRET_NOPE") as info:
        registry_logins(image, Settings())
    assert str(info.value).startswith("registry_secret of image 'a': secret 'nope' not found")


@pytest.mark.parametrize(
    "name", ["/etc/hostname", "../../etc/hostname", "..", "a/b", "a\\b", "x\0"]
)
def test_a_registry_secret_names_one_file_under_secrets_dir(name: str) -> None:
    with pytest.raises(SpecError, match="must be one file name under secrets_dir"):
        Image.from_base("debian:12").clone(name="a", registry=REG, registry_secret=name)
    with pytest.raises(SpecError, match="must be one file name under secrets_dir"):
        Image.from_base("debian:12").clone(
            name="a", registry=REG, registry_secret=Secret("config.json", group=name)
        )


def test_a_registry_secret_symlinked_out_of_secrets_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {REG: {"auth": "eDp5"}}}))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "docker").symlink_to(tmp_path / "config.json")
    image = Image.from_base("debian:12").clone(name="a", registry=REG, registry_secret="docker")
    with pytest.raises(SecretError, match=r"registry_secret of image 'a'.*leads out of"):
        registry_logins(image, Settings(secrets_dir=tmp_path / "secrets"))


def test_each_check_uses_its_image_logins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_SECRET_PUSH", "ci:from-secret")
    monkeypatch.delenv("IMAGED_SECRET_UNSET", raising=False)
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {REG: {"auth": base64.b64encode(b"ci:from-config").decode()}}})
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == basic("ci", "from-secret"):
            return httpx.Response(200)
        if request.headers.get("authorization") == basic("ci", "from-config"):
            return httpx.Response(404)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    base = Image.from_base("debian:12")
    images = {
        f"{REG}/a:1": base.clone(name="a", registry=REG, registry_secret="push"),
        f"{REG}/b:1": base.clone(name="b", registry=REG),
        f"{REG}/c:1": base.clone(name="c", registry=REG, registry_secret="unset"),
    }

    async def main() -> dict[str, object]:
        transport = httpx.MockTransport(handler)
        async with RegistryClient(docker_config_dir=tmp_path, transport=transport) as client:
            return dict(await check_images(client, images, Settings()))

    found = anyio.run(main)
    assert list(found) == list(images)
    assert found[f"{REG}/a:1"] is Existence.EXISTS
    assert found[f"{REG}/b:1"] is Existence.MISSING
    assert isinstance(found[f"{REG}/c:1"], SecretError)
