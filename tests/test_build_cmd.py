"""`imaged build` asks the registry about every image at once, then builds what is missing."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import imaged.cli.build as cmd_build
from imaged import Image
from imaged.registry.client import Existence


class FakeRegistry:
    """Answers check_many from a table; records every call."""

    def __init__(self, answers: dict[str, Existence]) -> None:
        self.answers = answers
        self.many: list[list[str]] = []
        self.single: list[str] = []

    def __call__(self, *_: Any, **__: Any) -> FakeRegistry:
        return self

    def with_logins(self, logins: dict[str, Any]) -> FakeRegistry:
        assert logins == {}  # no image here has a registry_secret
        return self

    async def __aenter__(self) -> FakeRegistry:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def check_many(self, refs: list[str]) -> dict[str, Existence]:
        self.many.append(list(refs))
        return {ref: self.answers[ref.rpartition(":")[0]] for ref in refs}

    async def manifest_exists(self, ref: str) -> Existence:
        self.single.append(ref)
        return self.answers[ref.rpartition(":")[0]]


def test_every_tag_is_checked_in_one_concurrent_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text("a")
    base = Image.from_base("debian:12").with_source_file(tmp_path / "a.txt", "/a")
    images = {
        "one": base.clone(name="one", registry="reg.example:5000"),
        "two": base.clone(name="two", registry="reg.example:5000").with_workdir("/w"),
    }
    fake = FakeRegistry(
        {"reg.example:5000/one": Existence.EXISTS, "reg.example:5000/two": Existence.EXISTS}
    )
    monkeypatch.setattr(cmd_build, "create_registry_client", fake)
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))

    async def run() -> int:
        return await cmd_build._build_all(
            images, force=False, dry_run=False, as_json=True, overrides={}, config_file=None
        )

    assert anyio.run(run) == 0
    assert len(fake.many) == 1
    assert sorted(fake.many[0]) == sorted(i.uri for i in images.values())
    assert fake.single == []  # abuild used the answers instead of asking again


def test_a_push_that_may_pass_is_transient_but_a_refusal_is_not() -> None:
    from imaged.errors import PushError, is_transient

    assert is_transient(PushError("push of r/x:1 failed: received unexpected HTTP status: 503"))
    assert not is_transient(
        PushError("push of r/x:1 failed: unauthorized: authentication required")
    )
    assert not is_transient(PushError("push of r/x:1 failed: denied: requested access"))


class _NoCredentials:
    def auth_config(self, registry: str | None) -> dict[str, str]:
        return {}

    def docker_config(self) -> bytes | None:
        return None


class BuildingRegistry(FakeRegistry):
    """A FakeRegistry the build can also ask for push credentials (it has none)."""

    credentials = _NoCredentials()


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the image name of every hash_image call, wherever it is made from."""
    import imaged.digest.image_digest as image_digest

    real, seen = image_digest.hash_image, []

    def counting(image: Image, *args: Any, **kwargs: Any) -> Any:
        seen.append(image.name or "")
        return real(image, *args, **kwargs)

    for module in ("digest.image_digest", "digest.bounds", "pipeline.build", "render.dockerfile"):
        monkeypatch.setattr(f"imaged.{module}.hash_image", counting)
    return seen


def test_build_hashes_each_image_once_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded hash is the one the registry check, abuild and staging use: nothing
    outside the time bound reads the inputs again (a mount that hangs later hangs only the
    staging copy, which must read them)."""
    from test_rebuild_trees import RecordingBuilder

    (tmp_path / "a.txt").write_text("a")
    base = Image.from_base("debian:12").with_source_file(tmp_path / "a.txt", "/a")
    images = {
        "one": base.clone(name="one", registry="reg.example:5000"),
        "two": base.clone(name="two", registry="reg.example:5000").with_workdir("/w"),
    }
    fake = BuildingRegistry(
        {"reg.example:5000/one": Existence.EXISTS, "reg.example:5000/two": Existence.MISSING}
    )
    builder = RecordingBuilder()
    monkeypatch.setattr(cmd_build, "create_registry_client", fake)
    monkeypatch.setattr(cmd_build, "get_builder", lambda *_: builder)  # one builder, every image
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMAGED_FAST_PATH", "false")  # the full path: one hash, one build
    seen = _count_hashes(monkeypatch)

    async def run() -> int:
        return await cmd_build._build_all(
            images, force=False, dry_run=False, as_json=True, overrides={}, config_file=None
        )

    assert anyio.run(run) == 0
    assert sorted(seen) == ["one", "two"]
    assert [r.tags for r in builder.requests] == [(images["two"].uri,)]
    assert fake.single == []


def test_file_digests_are_kept_for_the_next_run(tmp_path: Path) -> None:
    from imaged.digest.cache import DigestCache, default_cache
    from imaged.digest.files import stat_key
    from imaged.digest.image_digest import hash_image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    old = time.time() - 10  # past the racy window: the kept digests are trusted
    for path in src.iterdir():
        os.utime(path, (old, old))
    image = Image.from_base("debian:12").with_source_folder(src, "/app")
    hash_image(image, default_cache())
    kept = tmp_path / "state" / cmd_build.CACHE_FILE
    cmd_build._save_digest_cache(kept)

    fresh = DigestCache.from_json(json.loads(kept.read_bytes()))
    for path in sorted(src.iterdir()):
        key = stat_key(path.lstat())
        assert fresh.file_digest(str(path), key) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fresh.reads == 0  # every file answered by its kept digest, none read
    kept.write_text("{not json")
    cmd_build._load_digest_cache(kept)  # a damaged file is ignored (the files are read)
