"""Unit tests of the buildx builder's argv, the cache and build-argument flags of every
builder, and the settings that feed them (buildx_builder, build_args, registry_cache)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imaged.builders.base import (
    BuildOutput,
    BuildRequest,
    SecretSource,
    available_builders,
    get_builder,
    repository_of,
)
from imaged.builders.buildx import BuildxBuilder, buildx_argv
from imaged.builders.local import DockerCli, LocalBuilder
from imaged.builders.remote import RemoteBuilder
from imaged.config import BUILD_ARG_BREAKS, Settings, load_settings
from imaged.errors import BuildError, ConfigError, EngineError
from imaged.spec.checks import LINE_BREAKS

SECRET_VALUE = "s3cr3t-buildx-9a7e"
TAG = "127.0.0.1:5000/team/app:0123abcd"
PROXY = (("HTTP_PROXY", "http://proxy.example:3128"), ("NO_PROXY", "localhost,127.0.0.1"))


def _request(**changes: Any) -> BuildRequest:
    values: dict[str, Any] = {
        "image_name": "app",
        "context_dir": Path("/ctx"),
        "dockerfile": Path("/ctx.Dockerfile"),
        "tags": (TAG,),
        "platforms": ("linux/amd64",),
        "secrets": (SecretSource("tok", SECRET_VALUE.encode()),),
    }
    values.update(changes)
    return BuildRequest(**values)


def _flag_values(argv: tuple[str, ...], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def _argv(settings: Settings, request: BuildRequest | None = None) -> tuple[str, ...]:
    builder = BuildxBuilder(settings, builder_name="farm")
    return buildx_argv(
        "docker",
        builder.builder_name,
        request or _request(),
        secret_files={"tok": "/scratch/imaged-build-x/secret-0"},
        metadata_file="/scratch/imaged-build-x/metadata.json",
        extra=builder.build_flags(request or _request()),
    )


def test_argv_builds_on_the_named_builder_and_pushes_from_it() -> None:
    argv = _argv(Settings())
    assert argv[:7] == (
        "docker",
        "buildx",
        "build",
        "--builder",
        "farm",
        "--progress=plain",
        "--push",
    )
    assert _flag_values(argv, "--metadata-file") == ["/scratch/imaged-build-x/metadata.json"]
    assert _flag_values(argv, "-t") == [TAG]
    assert _flag_values(argv, "-f") == ["/ctx.Dockerfile"]
    assert _flag_values(argv, "--platform") == ["linux/amd64"]
    assert argv[-1] == "/ctx"
    assert "--load" not in argv
    assert not any(arg.startswith("--output") for arg in argv)


def test_secrets_reach_buildx_as_files_never_values() -> None:
    argv = _argv(Settings())
    assert _flag_values(argv, "--secret") == ["id=tok,src=/scratch/imaged-build-x/secret-0"]
    assert not any(SECRET_VALUE in arg for arg in argv)
    assert not any(arg.startswith("--secret") and "env=" in arg for arg in argv)


def test_several_platforms_are_one_platform_flag() -> None:
    argv = _argv(Settings(), _request(platforms=("linux/amd64", "linux/arm64")))
    assert _flag_values(argv, "--platform") == ["linux/amd64,linux/arm64"]


def test_a_build_without_a_registry_is_refused_naming_the_image() -> None:
    with pytest.raises(BuildError, match="never loads an image back") as info:
        _argv(Settings(), _request(push=False))
    assert info.value.image == "app"


def test_registry_cache_flags_on_buildx() -> None:
    argv = _argv(Settings(registry_cache=True))
    repo = "127.0.0.1:5000/team/app"
    assert _flag_values(argv, "--cache-to") == [f"type=registry,ref={repo}:imaged-cache,mode=max"]
    assert _flag_values(argv, "--cache-from") == [
        f"type=registry,ref={repo}:imaged-cache",
        f"type=registry,ref={repo}:imaged-latest",
    ]
    assert argv[-1] == "/ctx"


def test_no_cache_flags_unless_asked() -> None:
    argv = _argv(Settings())
    assert "--cache-to" not in argv
    assert "--cache-from" not in argv
    assert not any("BUILDKIT_INLINE_CACHE" in arg for arg in argv)


@pytest.mark.parametrize(
    "builder",
    [
        pytest.param(lambda s: BuildxBuilder(s, builder_name="farm"), id="buildx"),
        pytest.param(LocalBuilder, id="local"),
        pytest.param(
            lambda s: RemoteBuilder(replace(s, docker_host="tcp://h:1")),
            id="remote",
        ),
    ],
)
def test_build_args_reach_every_builder(builder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        LocalBuilder, "cli", lambda self: DockerCli("/usr/bin/docker", "20.10.24", buildx=False)
    )
    made = builder(Settings(build_args=PROXY))
    argv = made.describe_command(_request())
    # Names only: a proxy URL may hold a password, and argv is public (ps, events, dry run).
    # NO_PROXY is a host list, nothing secret: it keeps its value.
    assert _flag_values(argv, "--build-arg") == ["HTTP_PROXY", "NO_PROXY=localhost,127.0.0.1"]
    assert not [arg for arg in argv if "proxy.example" in arg]
    assert made.cli_env()["HTTP_PROXY"] == "http://proxy.example:3128"
    assert argv[-1] == "/ctx"


def test_inline_cache_on_docker_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        LocalBuilder, "cli", lambda self: DockerCli("/usr/bin/docker", "20.10.24", buildx=False)
    )
    builder = LocalBuilder(Settings(registry_cache=True))
    argv = builder.describe_command(_request())
    repo = "127.0.0.1:5000/team/app"
    assert "BUILDKIT_INLINE_CACHE=1" in _flag_values(argv, "--build-arg")
    assert "--pull" in argv  # every engine resolves the base alike, so cache keys match
    assert _flag_values(argv, "--cache-from") == [f"{repo}:imaged-latest", f"{repo}:imaged-cache"]
    assert _flag_values(argv, "-t") == [TAG, f"{repo}:imaged-latest"]
    assert builder.push_refs(_request()) == (TAG, f"{repo}:imaged-latest")
    assert LocalBuilder(Settings()).push_refs(_request()) == (TAG,)


def test_no_inline_cache_for_an_image_that_is_not_pushed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        LocalBuilder, "cli", lambda self: DockerCli("/usr/bin/docker", "20.10.24", buildx=False)
    )
    argv = LocalBuilder(Settings(registry_cache=True)).describe_command(_request(push=False))
    assert "--cache-from" not in argv
    assert _flag_values(argv, "-t") == [TAG]
    assert "--pull" not in argv


@pytest.mark.parametrize(
    ("ref", "repo"),
    [
        pytest.param("127.0.0.1:5000/team/app:abc", "127.0.0.1:5000/team/app", id="port-and-tag"),
        pytest.param("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app", id="no-tag"),
        pytest.param("ghcr.io/o/app@sha256:" + "0" * 64, "ghcr.io/o/app", id="digest"),
        pytest.param("app:1", "app", id="bare"),
    ],
)
def test_repository_of(ref: str, repo: str) -> None:
    assert repository_of(ref) == repo


def test_buildx_is_a_builtin_builder() -> None:
    assert "buildx" in available_builders()
    chosen = get_builder("buildx", Settings(buildx_builder="farm"))
    assert isinstance(chosen, BuildxBuilder)
    assert chosen.builder_name == "farm"


def test_the_builder_name_argument_beats_the_setting() -> None:
    assert BuildxBuilder(Settings(buildx_builder="a"), builder_name="b").builder_name == "b"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param(None, "IMAGED_BUILDX_BUILDER", id="none"),
        pytest.param("--help", "not a buildx builder name", id="option"),
        pytest.param("farm one", "not a buildx builder name", id="space"),
    ],
)
def test_a_bad_builder_name_is_a_config_error(name: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        BuildxBuilder(Settings(buildx_builder=name))
    assert info.value.key == "buildx_builder"


def _failure(lines: list[str]) -> Exception:
    output = BuildOutput()
    for line in lines:
        output.add(line)
    return BuildxBuilder(Settings(), builder_name="farm")._build_failure(
        _request(), "docker", output
    )


def test_a_failing_step_is_a_build_error_naming_it() -> None:
    error = _failure(["#5 [2/2] RUN false", "#5 ERROR: process did not complete successfully"])
    assert isinstance(error, BuildError)
    assert error.instruction == "[2/2] RUN false"
    assert "farm" in str(error)


def test_no_plugin_in_the_build_output_says_how_to_install_it() -> None:
    error = _failure(["docker: 'buildx' is not a docker command."])
    assert isinstance(error, ConfigError)
    assert "cli-plugins" in str(error)


def test_no_builder_in_the_build_output_says_how_to_create_it() -> None:
    error = _failure(['ERROR: no builder "farm" found'])
    assert isinstance(error, ConfigError)
    assert "docker buildx create --name farm" in str(error)


def test_a_dropped_connection_is_an_engine_error() -> None:
    error = _failure(["ERROR: failed to dial gRPC: connection refused"])
    assert isinstance(error, EngineError)
    assert "buildx builder 'farm' is unreachable" in str(error)


def test_a_step_whose_own_download_failed_is_the_images_fault() -> None:
    error = _failure(
        [
            "#5 [2/2] RUN curl x",
            "#5 0.3 curl: (7) connection refused",
            "#5 ERROR: process did not complete successfully: exit code: 7",
        ]
    )
    assert isinstance(error, BuildError)
    assert error.instruction == "[2/2] RUN curl x"
    assert not error.transient


# ---------------------------------------------------------------- settings


def test_the_settings_read_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "IMAGED_BUILDX_BUILDER": "farm",
            "IMAGED_BUILD_ARGS": "HTTP_PROXY=http://p:3128 no_proxy=a,b",
            "IMAGED_REGISTRY_CACHE": "yes",
        }
    )
    assert settings.buildx_builder == "farm"
    assert settings.build_args == (("HTTP_PROXY", "http://p:3128"), ("no_proxy", "a,b"))
    assert settings.registry_cache is True


def test_build_args_from_a_table(isolated_settings: Path) -> None:
    (isolated_settings / "imaged.toml").write_text('[build_args]\nHTTPS_PROXY = "http://p:1"\n')
    assert load_settings(environ={}).build_args == (("HTTPS_PROXY", "http://p:1"),)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param("VERSION=1", "not accepted: only BuildKit's proxy", id="not-a-proxy"),
        pytest.param("BUILDKIT_INLINE_CACHE=1", "not accepted", id="buildkit-internal"),
        pytest.param("1X=2", "not an identifier", id="not-identifier"),
        pytest.param("HTTP-PROXY=2", "not an identifier", id="dash"),
        pytest.param("HTTP_PROXY", "KEY=VALUE", id="no-equals"),
        pytest.param({"HTTP_PROXY": "a\nRUN evil"}, "line break", id="newline"),
        pytest.param({"HTTP_PROXY": "a\x00b"}, "line break or NUL", id="nul"),
        pytest.param({"HTTP_PROXY": 3}, "strings", id="not-a-string"),
        pytest.param(["HTTP_PROXY=x"], "table", id="list"),
    ],
)
def test_bad_build_args_are_config_errors(raw: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(environ={}, overrides={"build_args": raw})
    assert info.value.key == "build_args"


def test_a_bad_registry_cache_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"IMAGED_REGISTRY_CACHE": "sometimes"})
    assert info.value.key == "registry_cache"


def test_build_arg_breaks_are_the_checks_line_breaks() -> None:
    """config comes before spec in the import order, so it keeps its own copy of the set."""
    assert set(BUILD_ARG_BREAKS) == set(LINE_BREAKS)


INSPECT = """Name:          farm
Driver:        docker-container
Last Activity: 2024-05-01 10:00:00 +0000 UTC

Nodes:
Name:                  farm0
Endpoint:              unix:///var/run/docker.sock
Status:                running
BuildKit daemon flags: --allow-insecure-entitlement=network.host
BuildKit version:      v0.13.2
Platforms:             linux/amd64, linux/amd64/v2, linux/386
"""


def test_inspect_output_is_read_for_the_first_node() -> None:
    from imaged.builders.buildx import _inspect_fields

    assert _inspect_fields(INSPECT) == {
        "name": "farm",
        "driver": "docker-container",
        "endpoint": "unix:///var/run/docker.sock",
        "status": "running",
        "platforms": "linux/amd64, linux/amd64/v2, linux/386",
    }


def test_a_docker_cli_that_is_not_there_is_a_config_error(tmp_path: Path) -> None:
    builder = BuildxBuilder(Settings(docker_cli=str(tmp_path / "no-docker")), builder_name="farm")
    with pytest.raises(ConfigError, match="not an executable docker CLI") as info:
        builder.cli()
    assert info.value.key == "docker_cli"


@pytest.mark.parametrize(
    ("host", "environ", "exempt"),
    [
        pytest.param("tcp://10.0.0.5:2375", {}, "10.0.0.5", id="tcp-engine"),
        pytest.param("tcp://10.0.0.5:2375", {"no_proxy": "corp"}, "corp,10.0.0.5", id="kept"),
        pytest.param("ssh://me@box", {}, None, id="ssh-no-proxy-in-the-way"),
    ],
)
def test_the_cli_reaches_its_engine_around_the_build_proxy(
    host: str, environ: dict[str, str], exempt: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker 20.10 reaches a tcp:// engine through HTTP_PROXY in its environment (measured),
    # and the build's proxy values are there now: the engine's host joins the CLI's NO_PROXY.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = Settings(docker_host=host, build_args=(("HTTP_PROXY", "http://u:pw@p:3128"),))
    env = RemoteBuilder(settings).cli_env()
    assert env["HTTP_PROXY"] == "http://u:pw@p:3128"
    assert (env.get("NO_PROXY"), env.get("no_proxy")) == (exempt, exempt or environ.get("no_proxy"))
