"""Unit tests of the builder layer: secrets, selection, argv, output parsing, the CLI runner."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import socket
import stat
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_events import assert_declared

from imaged.builders import local as builder_local
from imaged.builders.base import (
    BuildOutput,
    BuildRequest,
    SecretSource,
    available_builders,
    get_builder,
    parse_failed_instruction,
)
from imaged.builders.local import (
    DEFAULT_ENGINE,
    DockerCli,
    LocalBuilder,
    PushStop,
    build_argv,
    find_docker_cli,
    open_scratch,
    run_push,
)
from imaged.builders.remote import RemoteBuilder
from imaged.config import Settings
from imaged.errors import BuildError, ConfigError, EngineError, SecretError
from imaged.events import BUILD_EVENTS
from imaged.pipeline.secrets import ca_bundle_secret, resolve_secret, resolve_secrets
from imaged.render.dockerfile import CA_SECRET_ID
from imaged.spec.layers import Secret

SECRET_VALUE = "s3cr3t-VALUE-7f1c"
CLASSIC = DockerCli(path="/usr/bin/docker", version="20.10.24", buildx=False)
BUILDX = DockerCli(path="/usr/local/bin/docker", version="28.2.2", buildx=True)

# ---------------------------------------------------------------- secrets


def _secrets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    (folder / "github").mkdir(parents=True)
    (folder / "github" / "token").write_text("from-group-file")
    (folder / "token").write_text("from-plain-file")
    return folder


@pytest.mark.parametrize(
    ("secret", "environ", "expected"),
    [
        pytest.param(
            Secret("token", group="github"),
            {"IMAGED_SECRET_GITHUB_TOKEN": "prefixed", "GITHUB_TOKEN": "plain"},
            b"prefixed",
            id="imaged-prefixed-env-first",
        ),
        pytest.param(
            Secret("token", group="github"),
            {"GITHUB_TOKEN": "plain"},
            b"from-group-file",
            id="plain-env-is-never-a-source",
        ),
        pytest.param(Secret("token", group="github"), {}, b"from-group-file", id="group-file"),
        pytest.param(Secret("token"), {}, b"from-plain-file", id="file-without-group"),
        pytest.param(
            Secret("token"), {"IMAGED_SECRET_TOKEN": ""}, b"", id="empty-env-value-counts"
        ),
    ],
)
def test_resolve_secret_order(
    tmp_path: Path, secret: Secret, environ: dict[str, str], expected: bytes
) -> None:
    settings = Settings(secrets_dir=_secrets_dir(tmp_path))
    source = resolve_secret(secret, settings, environ=environ)
    assert source == SecretSource(id=secret.id, value=expected)


def test_missing_secret_names_every_place_and_no_value(tmp_path: Path) -> None:
    settings = Settings(secrets_dir=tmp_path)
    environ = {"GITHUB_TOKE": SECRET_VALUE}  # a near miss must not leak into the message
    with pytest.raises(SecretError) as info:
        resolve_secret(Secret("token", group="github"), settings, environ=environ)
    message = str(info.value)
    assert "'github.token'" in message
    assert "IMAGED_SECRET_GITHUB_TOKEN" in message
    assert "variable GITHUB_TOKEN" not in message  # a plain variable is never consulted
    assert str(tmp_path / "github" / "token") in message
    assert SECRET_VALUE not in message


@pytest.mark.parametrize(
    ("link", "secret"),
    [
        pytest.param("token", Secret("token"), id="file-symlink"),
        pytest.param("github", Secret("hostname", group="github"), id="group-symlink"),
    ],
)
def test_a_symlink_out_of_secrets_dir_is_refused(tmp_path: Path, link: str, secret: Secret) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hostname").write_text(SECRET_VALUE)
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / link).symlink_to(outside / "hostname" if link == "token" else outside)
    with pytest.raises(SecretError, match="leads out of secrets_dir") as info:
        resolve_secret(secret, Settings(secrets_dir=folder), environ={})
    assert SECRET_VALUE not in str(info.value)


def test_a_symlink_inside_secrets_dir_is_followed(tmp_path: Path) -> None:
    folder = _secrets_dir(tmp_path)
    (folder / "..data").mkdir()  # as a Kubernetes secret volume lays its files out
    (folder / "..data" / "pat").write_text("from-link")
    (folder / "pat").symlink_to(folder / "..data" / "pat")
    settings = Settings(secrets_dir=tmp_path / "secrets")
    assert resolve_secret(Secret("pat"), settings, environ={}).value == b"from-link"


def test_missing_secret_without_secrets_dir_says_so() -> None:
    with pytest.raises(SecretError, match="IMAGED_SECRETS_DIR"):
        resolve_secret(Secret("tok"), Settings(), environ={})


def test_secret_source_repr_hides_value() -> None:
    assert SECRET_VALUE not in repr(SecretSource("tok", SECRET_VALUE.encode()))


def test_resolve_secrets_dedupes_by_id_keeping_order() -> None:
    environ = {"IMAGED_SECRET_A": "1", "IMAGED_SECRET_B": "2"}
    sources = resolve_secrets([Secret("b"), Secret("a"), Secret("b")], Settings(), environ=environ)
    assert sources == (SecretSource("b", b"2"), SecretSource("a", b"1"))


def test_two_secrets_sharing_one_build_id_are_refused() -> None:
    environ = {"IMAGED_SECRET_A_B": "1"}
    with pytest.raises(SecretError, match=r"share the build id 'a\.b'"):
        resolve_secrets([Secret("a.b"), Secret("b", group="a")], Settings(), environ=environ)


def test_ca_bundle_secret(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert ca_bundle_secret(Settings()) is None
    assert ca_bundle_secret(Settings(build_ca_bundle=bundle)) == SecretSource(
        CA_SECRET_ID, b"-----BEGIN CERTIFICATE-----\n"
    )
    with pytest.raises(ConfigError) as info:
        ca_bundle_secret(Settings(build_ca_bundle=tmp_path / "absent.pem"))
    assert info.value.key == "build_ca_bundle"


# ---------------------------------------------------------------- selection


class FakeBuilder:
    name = "fake"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def check(self) -> dict[str, str]:
        return {}

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> Any:
        raise NotImplementedError

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ()


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: object

    def load(self) -> object:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    points: list[FakeEntryPoint] = []

    def fake(*, group: str) -> list[FakeEntryPoint]:
        assert group == "imaged.builders"
        return points

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return points


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        pytest.param("local", Settings(), LocalBuilder, id="local"),
        pytest.param(None, Settings(), LocalBuilder, id="default-local"),
        pytest.param(
            None,
            Settings(builder="remote", docker_host="tcp://h:2375"),
            RemoteBuilder,
            id="setting-remote",
        ),
        pytest.param("fake", Settings(), FakeBuilder, id="entry-point"),
    ],
)
def test_get_builder(
    entry_points: list[FakeEntryPoint], name: str | None, settings: Settings, expected: type
) -> None:
    entry_points.append(FakeEntryPoint("fake", "tests:FakeBuilder", FakeBuilder))
    builder = get_builder(name, settings)
    assert type(builder) is expected
    assert builder.settings is settings  # type: ignore[attr-defined]


def test_unknown_builder_lists_available(entry_points: list[FakeEntryPoint]) -> None:
    entry_points.append(FakeEntryPoint("fake", "tests:FakeBuilder", FakeBuilder))
    assert available_builders() == ["buildx", "fake", "local", "pool", "remote"]
    with pytest.raises(ConfigError) as info:
        get_builder("nope", Settings())
    assert info.value.key == "builder"
    assert "'nope'" in str(info.value)
    assert "available: buildx, fake, local, pool, remote" in str(info.value)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        pytest.param(ImportError("no module x"), "failed to load: no module x", id="import-fails"),
        pytest.param(lambda settings: object(), "does not implement", id="not-a-builder"),
        pytest.param("a string", "not callable", id="not-callable"),
    ],
)
def test_bad_entry_point_is_config_error(
    entry_points: list[FakeEntryPoint], target: object, match: str
) -> None:
    entry_points.append(FakeEntryPoint("bad", "x:y", target))
    with pytest.raises(ConfigError, match=match) as info:
        get_builder("bad", Settings())
    assert info.value.key == "builder"


def test_remote_builder_needs_an_engine() -> None:
    with pytest.raises(ConfigError) as info:
        get_builder("remote", Settings())
    assert info.value.key == "docker_host"


# ---------------------------------------------------------------- output parsing

CLASSIC_RUN_FAILURE = """\
#1 [internal] load build definition from Dockerfile
#1 sha256:636768b92f46b9573611a9658ba9b7f9600a4a470cc40050e4d9f94d3bea8e68
#1 transferring dockerfile: 131B done
#1 DONE 0.0s

#3 [internal] load metadata for 127.0.0.1:48957/python:3.11-slim-bookworm
#3 DONE 0.0s

#4 [1/2] FROM 127.0.0.1:48957/python:3.11-slim-bookworm
#4 CACHED

#5 [2/2] RUN echo hello && echo oops >&2 && exit 3
#5 sha256:cc02cdb20da141bf4474618bd1a58bbf286234ac85297a0341587fa1f8c501f2
#5 0.203 oops
#5 0.204 hello
#5 ERROR: executor failed running [/bin/sh -c echo hello && echo oops >&2 && exit 3]: exit code: 3
------
 > [2/2] RUN echo hello && echo oops >&2 && exit 3:
------
executor failed running [/bin/sh -c echo hello && echo oops >&2 && exit 3]: exit code: 3
"""

CLASSIC_COPY_FAILURE = """\
#6 [internal] load build context
#6 transferring context: 2B done
#6 DONE 0.0s

#5 [2/2] COPY missing.txt /x
#5 sha256:f2c428fc16c840ecaefc89566da47bff68d5b19e37f854dbcca9b1347dcdcdb2
#5 ERROR: "/missing.txt" not found: not found
------
 > [2/2] COPY missing.txt /x:
------
failed to compute cache key: "/missing.txt" not found: not found
"""

CLASSIC_MISSING_BASE = """\
#3 [internal] load metadata for 127.0.0.1:48957/nope:1
#3 ERROR: 127.0.0.1:48957/nope:1: not found
------
 > [internal] load metadata for 127.0.0.1:48957/nope:1:
------
failed to solve with frontend dockerfile.v0: failed to create LLB definition: 127.0.0.1:48957/nope:1: not found
"""

CLASSIC_PARSE_ERROR = """\
#2 [internal] load .dockerignore
#2 transferring context: 2B done
#2 DONE 0.0s
failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 2: unknown instruction: RUNN
"""

BUILDX_RUN_FAILURE = """\
#0 building with "default" instance using docker driver

#5 [builder 2/3] RUN pip install -r requirements.txt
#5 1.021 ERROR: Could not find a version that satisfies the requirement nosuchpkg
#5 ERROR: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: exit code: 1
------
 > [builder 2/3] RUN pip install -r requirements.txt:
1.021 ERROR: Could not find a version that satisfies the requirement nosuchpkg
------
Dockerfile:4
--------------------
   3 |     COPY requirements.txt .
   4 | >>> RUN pip install -r requirements.txt
--------------------
ERROR: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: exit code: 1
"""

SUMMARY_ONLY = """\
------
 > [3/4] RUN make:
------
ERROR: failed to solve: exit code: 2
"""

FINAL_LINE_ONLY = "ERROR: failed to solve: rpc error: code = Unavailable\n"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(
            CLASSIC_RUN_FAILURE, "[2/2] RUN echo hello && echo oops >&2 && exit 3", id="classic-run"
        ),
        pytest.param(CLASSIC_COPY_FAILURE, "[2/2] COPY missing.txt /x", id="classic-copy"),
        pytest.param(
            CLASSIC_MISSING_BASE,
            "[internal] load metadata for 127.0.0.1:48957/nope:1",
            id="missing-base",
        ),
        pytest.param(
            CLASSIC_PARSE_ERROR, "Dockerfile line 2: unknown instruction: RUNN", id="parse-error"
        ),
        pytest.param(
            BUILDX_RUN_FAILURE, "[builder 2/3] RUN pip install -r requirements.txt", id="buildx-run"
        ),
        pytest.param(SUMMARY_ONLY, "[3/4] RUN make", id="summary-only"),
        pytest.param(FINAL_LINE_ONLY, FINAL_LINE_ONLY.strip(), id="final-error-line"),
        pytest.param("#1 [1/1] FROM x\n#1 DONE 0.1s\n", None, id="no-error"),
    ],
)
def test_parse_failed_instruction(output: str, expected: str | None) -> None:
    assert parse_failed_instruction(output.splitlines()) == expected


def test_build_output_finds_step_whose_header_left_the_tail() -> None:
    output = BuildOutput(tail_lines=5)
    output.add("#6 [stage-1 1/1] RUN seq 1 60 && false")
    for n in range(1, 61):
        output.add(f"#6 0.274 {n}")
    output.add("#6 ERROR: executor failed running [/bin/sh -c seq 1 60 && false]: exit code: 1")
    assert output.instruction == "[stage-1 1/1] RUN seq 1 60 && false"
    assert output.lines == (
        "#6 0.274 57",
        "#6 0.274 58",
        "#6 0.274 59",
        "#6 0.274 60",
        output.lines[-1],
    )


# ---------------------------------------------------------------- argv


def _request(tmp_path: Path, **changes: Any) -> BuildRequest:
    values: dict[str, Any] = {
        "image_name": "app",
        "context_dir": tmp_path,
        "dockerfile": tmp_path / "Dockerfile",
        "tags": ("127.0.0.1:5000/app:abc", "127.0.0.1:5000/app:latest"),
        "platforms": ("linux/amd64",),
        "secrets": (SecretSource("tok", SECRET_VALUE.encode()), SecretSource("b.c", b"other")),
    }
    values.update(changes)
    return BuildRequest(**values)


def test_build_argv_classic(tmp_path: Path) -> None:
    files = {"tok": "/run/x/secret-0", "b.c": "/run/x/secret-1"}
    argv = build_argv(CLASSIC, _request(tmp_path, no_cache=True), secret_files=files)
    assert argv == (
        "/usr/bin/docker", "build", "--progress=plain", "-f", str(tmp_path / "Dockerfile"),
        "-t", "127.0.0.1:5000/app:abc", "-t", "127.0.0.1:5000/app:latest",
        "--platform", "linux/amd64", "--no-cache",
        "--secret", "id=tok,src=/run/x/secret-0", "--secret", "id=b.c,src=/run/x/secret-1",
        str(tmp_path),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("platforms", "push", "expected_tail"),
    [
        pytest.param(("linux/amd64",), True, ("--load",), id="single-loads"),
        pytest.param(
            ("linux/amd64", "linux/arm64"),
            True,
            ("--push", "--metadata-file", "/m.json"),
            id="multi-pushes",
        ),
    ],
)
def test_build_argv_buildx(
    tmp_path: Path, platforms: tuple[str, ...], push: bool, expected_tail: tuple[str, ...]
) -> None:
    request = _request(tmp_path, platforms=platforms, push=push, secrets=())
    argv = build_argv(BUILDX, request, secret_files={}, metadata_file="/m.json")
    assert argv[:3] == ("/usr/local/bin/docker", "buildx", "build")
    assert argv[-1 - len(expected_tail) : -1] == expected_tail
    assert ("--platform", ",".join(platforms)) == argv[argv.index("--platform") :][:2]


@pytest.mark.parametrize(
    ("cli", "changes", "match"),
    [
        pytest.param(
            CLASSIC,
            {"platforms": ("linux/amd64", "linux/arm64")},
            "needs docker buildx",
            id="multi-without-buildx",
        ),
        pytest.param(
            BUILDX,
            {"platforms": ("linux/amd64", "linux/arm64"), "push": False},
            "cannot be loaded",
            id="multi-without-push",
        ),
        pytest.param(
            CLASSIC,
            {"secrets": (SecretSource("a,src=/etc/passwd", b"x"),)},
            "invalid secret id",
            id="secret-id-injection",
        ),
    ],
)
def test_build_argv_refuses(
    tmp_path: Path, cli: DockerCli, changes: dict[str, Any], match: str
) -> None:
    request = _request(tmp_path, **changes)
    files = {s.id: "/f" for s in request.secrets}
    with pytest.raises(BuildError, match=match) as info:
        build_argv(cli, request, secret_files=files)
    assert info.value.image == "app"


@pytest.mark.parametrize(
    ("builder", "prefix"),
    [
        pytest.param(LocalBuilder(Settings()), ("/usr/bin/docker", "build"), id="local"),
        pytest.param(
            RemoteBuilder(Settings(docker_context="buildfarm")),
            ("/usr/bin/docker", "--context", "buildfarm", "build"),
            id="remote-context",
        ),
        pytest.param(
            RemoteBuilder(Settings(docker_host="ssh://me@farm")),
            ("/usr/bin/docker", "build"),
            id="remote-host",
        ),
    ],
)
def test_describe_command_has_no_secret_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: LocalBuilder, prefix: tuple[str, ...]
) -> None:
    monkeypatch.setattr(LocalBuilder, "cli", lambda self: CLASSIC)
    argv = builder.describe_command(_request(tmp_path))
    assert argv[: len(prefix)] == prefix
    assert "id=tok,src=<temp file for secret tok>" in argv
    assert not any(SECRET_VALUE in arg or "other" in arg for arg in argv)


def test_remote_builder_env_points_the_cli_at_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere.sock")
    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    env = RemoteBuilder(Settings(docker_host="tcp://10.1.2.3:2375")).cli_env()
    assert env["DOCKER_HOST"] == "tcp://10.1.2.3:2375"
    assert "DOCKER_CONTEXT" not in env
    assert env["DOCKER_BUILDKIT"] == "1"
    context_env = RemoteBuilder(Settings(docker_context="farm")).cli_env()
    assert "DOCKER_HOST" not in context_env


def test_open_scratch_is_private_and_removed() -> None:
    secrets = (SecretSource("tok", SECRET_VALUE.encode()),)
    with open_scratch(secrets) as scratch:
        path = Path(scratch.secret_paths["tok"])
        assert path.read_bytes() == SECRET_VALUE.encode()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(os.stat(scratch.folder).st_mode) == 0o700
    assert not Path(scratch.folder).exists()
    with pytest.raises(RuntimeError), open_scratch(secrets) as scratch:
        raise RuntimeError
    assert not Path(scratch.folder).exists()


# ---------------------------------------------------------------- a scripted docker CLI


def _fake_cli(folder: Path, name: str, *, version: str, buildx: bool, build: str = "") -> Path:
    """A shell script that answers like a docker CLI; ``build`` is the body for other commands."""
    script = folder / name
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            if [ "$1" = "--version" ]; then echo "Docker version {version}, build abc"; exit 0; fi
            if [ "$1" = "buildx" ] && [ "$2" = "version" ]; then exit {0 if buildx else 1}; fi
            """
        )
        + build
    )
    script.chmod(0o755)
    return script


@pytest.fixture(autouse=True)
def _fresh_cli_cache() -> None:
    find_docker_cli.cache_clear()


@pytest.mark.parametrize(
    ("clis", "expected"),
    [
        pytest.param(
            [("new", "28.2.2", False), ("old", "20.10.24+dfsg1", False)],
            "old",
            id="classic-beats-new-without-buildx",
        ),
        pytest.param([("old", "20.10.24", False), ("bx", "27.0.1", True)], "bx", id="buildx-first"),
        pytest.param([("new", "28.2.2", False)], "new", id="any-as-last-resort"),
    ],
)
def test_find_docker_cli_prefers_working_buildkit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clis: list[tuple[str, str, bool]],
    expected: str,
) -> None:
    paths = [str(_fake_cli(tmp_path, n, version=v, buildx=b)) for n, v, b in clis]
    monkeypatch.setattr(builder_local, "CLI_CANDIDATES", tuple(paths))
    assert find_docker_cli().path == str(tmp_path / expected)


def test_find_docker_cli_explicit(tmp_path: Path) -> None:
    script = _fake_cli(tmp_path, "docker", version="24.0.7", buildx=True)
    assert find_docker_cli(str(script)) == DockerCli(str(script), "24.0.7", True)
    with pytest.raises(ConfigError) as info:
        find_docker_cli(str(tmp_path / "absent"))
    assert info.value.key == "docker_cli"


def _builder_with_script(tmp_path: Path, body: str) -> LocalBuilder:
    script = _fake_cli(tmp_path, "docker", version="20.10.24", buildx=False, build=body)
    return LocalBuilder(Settings(docker_cli=str(script)))


def test_failed_build_raises_build_error_with_instruction_and_tail(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text(CLASSIC_RUN_FAILURE)
    builder = _builder_with_script(tmp_path, f"cat {tmp_path / 'out.txt'} >&2\nexit 1\n")
    events: list[dict[str, object]] = []
    with pytest.raises(BuildError) as info:
        anyio.run(lambda: builder.build(_request(tmp_path), on_event=events.append))
    assert info.value.instruction == "[2/2] RUN echo hello && echo oops >&2 && exit 3"
    assert info.value.output_tail.endswith("exit code: 3")
    assert "#5 0.203 oops" in info.value.output_tail
    lines = [e["line"] for e in events if e["event"] == "build_output"]
    assert lines == CLASSIC_RUN_FAILURE.splitlines()
    assert_declared(events, BUILD_EVENTS)


def test_cli_sees_secret_files_that_vanish_afterwards(tmp_path: Path) -> None:
    # The script copies every --secret src file it is given, then fails.
    body = (
        'for a in "$@"; do case "$a" in id=*) src="${a#*src=}"; '
        f'echo "$src" >> {tmp_path}/srcs; cat "$src" >> {tmp_path}/values; echo >> {tmp_path}/values;; '
        "esac; done\nexit 1\n"
    )
    builder = _builder_with_script(tmp_path, body)
    with pytest.raises(BuildError):
        anyio.run(builder.build, _request(tmp_path))
    assert (tmp_path / "values").read_text().split() == [SECRET_VALUE, "other"]
    srcs = (tmp_path / "srcs").read_text().split()
    assert len(srcs) == 2
    assert not any(Path(src).exists() for src in srcs)


@pytest.mark.parametrize("with_logins", [True, False], ids=["registry-secret", "no-secret"])
def test_cli_reads_a_private_docker_config_only_for_logins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_logins: bool
) -> None:
    user_config = tmp_path / "user-docker"
    for folder in ("contexts/meta", "cli-plugins", "buildx/instances"):
        (user_config / folder).mkdir(parents=True)
    (user_config / "cli-plugins" / "docker-buildx").write_text("#!/bin/sh\n")
    (user_config / "buildx" / "current").write_text('{"Key": "farm"}')
    (user_config / "config.json").write_text('{"auths": {"user.example.com": {}}}')
    monkeypatch.setenv("DOCKER_CONFIG", str(user_config))
    seen = tmp_path / "seen"
    # The script records where DOCKER_CONFIG points, its modes, its config, its entries and
    # what the CLI and buildx would find in them.
    body = (
        f'echo "$DOCKER_CONFIG" > {seen}.dir; stat -c %a "$DOCKER_CONFIG" > {seen}.mode\n'
        f'stat -c %a "$DOCKER_CONFIG/config.json" >> {seen}.mode\n'
        f'cat "$DOCKER_CONFIG/config.json" > {seen}.json; ls "$DOCKER_CONFIG" > {seen}.ls\n'
        f'cat "$DOCKER_CONFIG/buildx/current" > {seen}.builder\n'
        f'ls "$DOCKER_CONFIG/cli-plugins" > {seen}.plugins\n'
        "exit 1\n"
    )
    builder = _builder_with_script(tmp_path, body)
    config = b'{"auths": {"reg.example.com": {"auth": "Y2k6cHc="}}}'
    request = _request(tmp_path, docker_config=config if with_logins else None)
    with pytest.raises(BuildError):
        anyio.run(builder.build, request)
    private = Path((tmp_path / "seen.dir").read_text().strip())
    if not with_logins:
        assert private == user_config  # the user's own config, untouched
        return
    assert private != user_config
    assert not private.exists()  # removed with the build's scratch folder
    assert (tmp_path / "seen.mode").read_text().split() == ["700", "600"]
    assert (tmp_path / "seen.json").read_bytes().strip() == config
    entries = ["buildx", "cli-plugins", "config.json", "contexts"]
    assert (tmp_path / "seen.ls").read_text().split() == entries
    assert (tmp_path / "seen.builder").read_text() == '{"Key": "farm"}'
    assert (tmp_path / "seen.plugins").read_text().split() == ["docker-buildx"]
    assert (user_config / "buildx" / "current").exists()  # the user's own folder stays
    assert "user.example.com" in (user_config / "config.json").read_text()
    assert "Y2k6cHc=" not in repr(request)


def test_engine_push_sends_the_pipeline_auth_config(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    class Api:
        def push(self, repo: str, **options: Any) -> list[dict[str, Any]]:
            calls.append({"repo": repo, **options})
            return [{"aux": {"Digest": "sha256:" + "1" * 64}}]

    auth = {"username": "ci", "password": "pw", "serveraddress": "reg.example.com"}
    for push_auth, expected in ((auth, auth), ({}, {})):
        request = _request(tmp_path, tags=("reg.example.com/app:t1",), push_auth=push_auth)
        LocalBuilder(Settings())._push_ref(Api(), request, request.tags[0], None, PushStop())
        assert calls[-1]["auth_config"] == expected  # {} is anonymous, never the SDK's lookup
    assert [c["tag"] for c in calls] == ["t1", "t1"]


def test_no_docker_cli_child_sees_a_secret_value_or_the_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The value is in our environment (as IMAGED_SECRET_TOK) and reaches the build as a file.
    monkeypatch.setenv("IMAGED_SECRET_TOK", SECRET_VALUE)
    monkeypatch.setenv("IMAGED_SECRETS_DIR", str(tmp_path / "secrets"))
    dumps = tmp_path / "envs"
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "=== $1" >> {dumps}; env >> {dumps}\n'
        'if [ "$1" = "--version" ]; then echo "Docker version 20.10.24, build abc"; exit 0; fi\n'
        'if [ "$1" = "buildx" ]; then exit 1; fi\n'
        'echo "#5 ERROR: executor failed running [/bin/sh -c false]: exit code: 1"; exit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("IMAGED_DOCKER_CLI", str(script))
    with pytest.raises(BuildError):
        anyio.run(LocalBuilder(Settings()).build, _request(tmp_path))
    text = dumps.read_text()
    assert [line for line in text.splitlines() if line.startswith("===")] == [
        "=== --version",
        "=== buildx",
        "=== build",
    ]
    assert "DOCKER_BUILDKIT=1" in text  # the dump is of the real environment
    assert SECRET_VALUE not in text
    assert "IMAGED_SECRET" not in text


def test_cli_cannot_connect_is_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    body = (
        "echo \"failed to dial gRPC: cannot connect to the Docker daemon. Is 'docker daemon' "
        'running on this host?: dial tcp 127.0.0.1:1: connect: connection refused" >&2\nexit 1\n'
    )
    builder = _builder_with_script(tmp_path, body)
    with pytest.raises(EngineError, match=r"tcp://127\.0\.0\.1:1"):
        anyio.run(builder.build, _request(tmp_path))


def test_cancelled_build_stops_the_cli(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    builder = _builder_with_script(
        tmp_path, f"echo $$ > {pid_file}\necho '#1 [1/1] RUN sleep 60'\nexec sleep 60\n"
    )

    async def main() -> float:
        started = time.monotonic()
        with anyio.move_on_after(1):
            await builder.build(_request(tmp_path))
        return time.monotonic() - started

    assert anyio.run(main) < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def docker_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A context named ``farm`` written the way ``docker context create`` writes it."""
    config = tmp_path / "docker-config"
    meta = config / "contexts" / "meta" / hashlib.sha256(b"farm").hexdigest() / "meta.json"
    meta.parent.mkdir(parents=True)
    endpoint = {"Host": "tcp://10.9.8.7:2375", "SkipTLSVerify": False}
    meta.write_text(json.dumps({"Name": "farm", "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    (config / "config.json").write_text("{}")  # docker-py finds contexts next to it
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    return "farm"


def test_context_endpoint_reaches_the_sdk(
    docker_context: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = RemoteBuilder(Settings(docker_context=docker_context))
    assert remote.client_kwargs()["base_url"] == "tcp://10.9.8.7:2375"
    assert LocalBuilder(Settings()).engine_address == DEFAULT_ENGINE
    monkeypatch.setenv("DOCKER_CONTEXT", docker_context)
    assert LocalBuilder(Settings()).engine_address == "tcp://10.9.8.7:2375"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    assert LocalBuilder(Settings()).engine_address == "tcp://10.0.0.1:2375"


def test_unknown_context_is_config_error(docker_context: str) -> None:
    with pytest.raises(ConfigError) as info:
        RemoteBuilder(Settings(docker_context="nope")).client_kwargs()
    assert info.value.key == "docker_context"


class _HungEngineApi:
    """A Docker API whose push hangs on a real socket until the engine "returns" (the test
    writes to the other end); a push still reading then would move the tag."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[Any]] = {"response": []}
        self.engine_end, self.client_end = socket.socketpair()
        self.reading = threading.Event()
        self.record: dict[str, Any] = {}

    def inspect_image(self, ref: str) -> dict[str, str]:
        return {"Id": "sha256:" + "2" * 64}

    def push(self, repo: str, **options: Any) -> Iterator[dict[str, Any]]:
        response = types.SimpleNamespace(
            raw=types.SimpleNamespace(connection=types.SimpleNamespace(sock=self.client_end)),
            close=lambda: None,
        )
        for hook in self.hooks["response"]:
            hook(response)
        self.reading.set()
        data = self.client_end.recv(100)  # blocks: the engine hangs
        self.record["read"] = data
        if data:
            self.record["tag_moved"] = True
            yield {"aux": {"Digest": "sha256:" + "3" * 64}}

    def close(self) -> None:
        self.record["closed"] = True


def test_a_cancelled_push_is_stopped_and_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = _HungEngineApi()
    builder = LocalBuilder(Settings())
    monkeypatch.setattr(builder, "api", lambda: api)
    request = _request(tmp_path, secrets=(), push=True)
    ended: list[bool] = []

    async def main() -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def push() -> None:
                    await run_push(lambda stop: builder._push_sync(request, None, stop))

                tg.start_soon(push)
                await anyio.to_thread.run_sync(api.reading.wait, 10)
                scope.cancel()  # as the hang watchdog does
        ended.append("closed" in api.record)  # the thread had ended when the cancel returned

    try:
        anyio.run(main)
        # The engine sees its client gone (dockerd then cancels the push) and, back, can
        # no longer send the push on: nothing reads it.
        assert api.engine_end.recv(100) == b""
        with pytest.raises(BrokenPipeError):
            api.engine_end.sendall(b"engine is back")
    finally:
        api.engine_end.close()
        api.client_end.close()
    assert ended == [True]
    assert api.record["read"] == b""  # the read was cut, not left to finish
    assert "tag_moved" not in api.record
