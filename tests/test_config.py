"""Tests for imaged.config: precedence, config file discovery, and errors naming key and file."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from imaged.config import (
    DEFAULT_DEBIAN_BASE,
    ENV_VARS,
    SETTINGS,
    Settings,
    find_config_file,
    load_settings,
)
from imaged.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(isolated_settings: Path) -> Path:
    """No IMAGED_* variable leaks in, and the cwd is an empty folder."""
    return isolated_settings


def test_defaults_with_no_file_and_no_env() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.debian_base == DEFAULT_DEBIAN_BASE
    assert settings.source == "defaults"


def test_every_setting_has_an_imaged_env_var() -> None:
    assert set(ENV_VARS) == {s.key for s in SETTINGS}
    assert all(env == "IMAGED_" + key.upper() for key, env in ENV_VARS.items())


@pytest.mark.parametrize(
    ("file_value", "env_value", "override", "expected"),
    [
        pytest.param("file:1", None, None, "file:1", id="file-only"),
        pytest.param("file:1", "env:1", None, "env:1", id="env-beats-file"),
        pytest.param("file:1", "env:1", "cli:1", "cli:1", id="override-beats-env"),
        pytest.param(None, "env:1", "cli:1", "cli:1", id="override-beats-env-no-file"),
        pytest.param("file:1", None, "cli:1", "cli:1", id="override-beats-file"),
    ],
)
def test_precedence_overrides_env_file(
    clean_env: Path,
    file_value: str | None,
    env_value: str | None,
    override: str | None,
    expected: str,
) -> None:
    if file_value is not None:
        (clean_env / "imaged.toml").write_text(f'registry = "{file_value}"\n')
    environ = {"IMAGED_REGISTRY": env_value} if env_value else {}
    settings = load_settings(environ=environ, overrides={"registry": override})
    assert settings.registry == expected


def test_real_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_PUSH_TIMEOUT", "12.5")
    assert load_settings().push_timeout == 12.5


def test_none_override_does_not_mask_env() -> None:
    settings = load_settings(environ={"IMAGED_BUILDER": "remote"}, overrides={"builder": None})
    assert settings.builder == "remote"


def test_tool_imaged_table_in_pyproject(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.imaged]\ndebian_base = "m/py:{major}.{minor}"\n'
    )
    settings = load_settings(environ={})
    assert settings.debian_base_for(3, 12) == "m/py:3.12"
    assert settings.source == str(clean_env / "pyproject.toml")


def test_pyproject_without_tool_table_is_not_a_config(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config_file(cwd=clean_env) is None
    assert load_settings(environ={}) == Settings()


def test_imaged_toml_beats_pyproject(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text('[tool.imaged]\nregistry = "from-pyproject"\n')
    (clean_env / "imaged.toml").write_text('registry = "from-imaged-toml"\n')
    assert load_settings(environ={}).registry == "from-imaged-toml"


def test_imaged_config_env_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_env: Path
) -> None:
    (clean_env / "imaged.toml").write_text('registry = "cwd"\n')
    chosen = tmp_path / "elsewhere.toml"
    chosen.write_text('registry = "chosen"\n')
    monkeypatch.setenv("IMAGED_CONFIG", str(chosen))
    assert load_settings().registry == "chosen"


def test_explicit_config_file_beats_imaged_config_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text('registry = "env"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('registry = "explicit"\n')
    monkeypatch.setenv("IMAGED_CONFIG", str(env_file))
    assert load_settings(config_file=explicit).registry == "explicit"


def test_unknown_key_names_key_and_file_with_exit_78(clean_env: Path) -> None:
    path = clean_env / "imaged.toml"
    path.write_text('registry = "r"\npush_timout = 3\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={})
    assert info.value.key == "push_timout"
    assert info.value.file == str(path)
    assert "push_timout" in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 78


def test_a_daemon_table_is_refused_naming_the_file(clean_env: Path) -> None:
    path = clean_env / "imaged.toml"
    path.write_text("debounce_ms = 300\n\n[daemon]\ndebounce_ms = 100\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={})
    assert info.value.key == "daemon"
    assert info.value.file == str(path)
    assert "top-level keys" in str(info.value)
    assert str(path) in str(info.value)


def test_an_unknown_table_is_an_unknown_setting(clean_env: Path) -> None:
    (clean_env / "imaged.toml").write_text("[watcher]\ndebounce = 1\n")
    with pytest.raises(ConfigError, match="unknown setting") as info:
        load_settings(environ={})
    assert info.value.key == "watcher"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("push_timeout = -1\n", "push_timeout", id="negative-timeout"),
        pytest.param("push_timeout = 0\n", "push_timeout", id="zero-timeout"),
        pytest.param('push_timeout = "soon"\n', "push_timeout", id="text-timeout"),
        pytest.param("registry = 5\n", "registry", id="int-registry"),
        pytest.param("insecure_registries = [1, 2]\n", "insecure_registries", id="int-list"),
    ],
)
def test_bad_value_in_file_names_key_and_file(clean_env: Path, text: str, key: str) -> None:
    path = clean_env / "imaged.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={})
    assert info.value.key == key
    assert key in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 78


def test_bad_value_in_env_names_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"IMAGED_PUSH_TIMEOUT": "-1"})
    assert info.value.key == "push_timeout"
    assert "environment" in str(info.value)


def test_unreadable_toml_names_file(clean_env: Path) -> None:
    path = clean_env / "imaged.toml"
    path.write_text("registry = \n")
    with pytest.raises(ConfigError, match=r"imaged\.toml"):
        load_settings(environ={})


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("a:5000, b:5000,,", ("a:5000", "b:5000"), id="comma-string"),
        pytest.param(["a", "b"], ("a", "b"), id="list"),
    ],
)
def test_insecure_registries_parsing(raw: object, expected: tuple[str, ...]) -> None:
    settings = load_settings(environ={}, overrides={"insecure_registries": raw})
    assert settings.insecure_registries == expected


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("py:{major}.{minor}.{patch}", id="unknown-field"),
        pytest.param("py:{0}", id="positional"),
        pytest.param("py:{major", id="unbalanced"),
    ],
)
def test_bad_debian_base_template_is_config_error(template: str) -> None:
    settings = load_settings(environ={"IMAGED_DEBIAN_BASE": template})
    with pytest.raises(ConfigError) as info:
        settings.debian_base_for(3, 11)
    assert info.value.key == "debian_base"


def test_debian_base_template_fills_version() -> None:
    settings = load_settings(
        environ={"IMAGED_DEBIAN_BASE": "127.0.0.1:5000/python:{major}.{minor}-slim-bookworm"}
    )
    assert settings.debian_base_for(3, 11) == "127.0.0.1:5000/python:3.11-slim-bookworm"


def test_state_dir_default_uses_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert load_settings(environ={}).resolved_state_dir == tmp_path / "state" / "imaged"
    explicit = load_settings(environ={"IMAGED_STATE_DIR": str(tmp_path / "s")})
    assert explicit.resolved_state_dir == tmp_path / "s"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("api=500, worker=50", (("api", 500), ("worker", 50)), id="env-pairs"),
        pytest.param({"b": 1, "a": 2}, (("a", 2), ("b", 1)), id="table"),
    ],
)
def test_per_image_debounce(raw: object, expected: object) -> None:
    from imaged.config import _per_image_ms

    assert _per_image_ms(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("api", id="no-equals"),
        pytest.param({"a": -1}, id="negative"),
        pytest.param(["a"], id="list"),
        pytest.param({"a": "x"}, id="not-a-number"),
    ],
)
def test_per_image_debounce_rejects(raw: object, tmp_path: Path) -> None:
    from imaged.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="image_debounce_ms"):
        load_settings(overrides={"image_debounce_ms": raw}, environ={}, cwd=tmp_path)


EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "imaged.toml"


def test_the_example_config_gives_every_setting_its_default() -> None:
    settings = load_settings(config_file=EXAMPLE, environ={})
    assert settings.source == str(EXAMPLE)
    assert replace(settings, source="defaults") == Settings()


def test_the_example_config_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    top = text.split("\n[", 1)[0]  # the entries of a table are examples, not settings
    keys = re.findall(r"^(?:# )?([a-z_]+) =", top, flags=re.MULTILINE)
    keys += re.findall(r"^\[([a-z_]+)\]$", text, flags=re.MULTILINE)
    assert sorted(keys) == sorted(s.key for s in SETTINGS)
    assert [s.env for s in SETTINGS if s.env not in text] == []


def test_each_setting_is_one_row_of_settings() -> None:
    """The table is read off the dataclass: every field but ``source`` is a setting."""
    names = [f.name for f in fields(Settings)]
    assert [s.key for s in SETTINGS] == [n for n in names if n != "source"]
    assert all(s.help and callable(s.parse) for s in SETTINGS)
    assert {s.key: s.default for s in SETTINGS} == {
        k: v for k, v in vars(Settings()).items() if k != "source"
    }


def test_a_path_from_the_command_line_is_accepted(tmp_path: Path) -> None:
    from imaged.config import load_settings

    settings = load_settings(overrides={"state_dir": tmp_path / "s"}, environ={}, cwd=tmp_path)
    assert settings.state_dir == tmp_path / "s"
