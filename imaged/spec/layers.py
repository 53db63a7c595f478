"""The layer kinds an Image is made of: small frozen dataclasses, each with a stable kind name.

Layers fall in two families that later stages treat differently:

* **recipe** layers (apt, pip, requirements, uv/poetry projects, uv scripts, commands) run a
  program inside the image; only a Docker build can produce them.
* **file** layers (source folders and files, code bundles, env vars, workdir, ignore rules)
  only place files or set config; a future fast path can append them to an image in the
  registry without a Docker build, as ko and ``crane append`` do.

This module is pure: it imports no I/O library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from imaged.errors import SpecError

Category = Literal["recipe", "files"]
InstallMode = Literal["dependencies_only", "install_project"]
INSTALL_MODES: tuple[str, ...] = ("dependencies_only", "install_project")
CopyStyle = Literal["loaded_modules", "all"]
COPY_STYLES: tuple[str, ...] = ("loaded_modules", "all")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Secret:
    """A build secret: its *value* never enters a layer, the digest, a log or an argv.

    The fields are Flyte 2's ``flyte.Secret``. During a build the value comes from the
    build host: the environment variable ``IMAGED_SECRET_<ID>`` (``<ID>`` is
    :attr:`env_name`), else the file ``<secrets_dir>/<group>/<key>`` (``IMAGED_SECRETS_DIR``).
    Inside the RUN step it is a file at ``mount`` (default ``/run/secrets/<id>``) and, as in
    Flyte, the variable ``as_env_var`` for that step only. Without ``mount`` or
    ``as_env_var`` the variable is ``GROUP_KEY`` upper-cased (``Secret("hf-token")`` gives
    ``$HF_TOKEN``); with only ``mount``, there is no variable.

    >>> Secret("token", group="github").as_env_var
    'GITHUB_TOKEN'
    """

    key: str
    group: str | None = None
    mount: str | None = None
    as_env_var: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise SpecError(f"Secret key must be a non-empty string, got {self.key!r}")
        if self.mount is not None and not PurePosixPath(self.mount).is_absolute():
            raise SpecError(f"Secret {self.key!r}: mount {self.mount!r} must be an absolute path")
        if self.as_env_var is None and self.mount is None:
            object.__setattr__(self, "as_env_var", _default_env_name(self))
        elif self.as_env_var is not None and not _ENV_NAME.match(self.as_env_var):
            raise SpecError(
                f"Secret {self.key!r}: as_env_var {self.as_env_var!r} is not a valid name; "
                "use letters, digits and _, not starting with a digit"
            )

    @property
    def id(self) -> str:
        """The BuildKit secret id."""
        raw = f"{self.group}.{self.key}" if self.group else self.key
        return _SECRET_ID_CHARS.sub("_", raw)

    @property
    def env_name(self) -> str:
        """The upper-snake name used to look the value up on the build host."""
        return re.sub(r"[^A-Za-z0-9]", "_", self.id).upper()

    @property
    def target(self) -> str:
        """Where the secret file appears inside the RUN step."""
        return self.mount or f"/run/secrets/{self.id}"


SecretSpec = str | Secret

# Variables a build step relies on: a secret named like one must not replace it unasked.
_RESERVED_ENV = frozenset(
    {"PATH", "HOME", "SHELL", "PWD", "IFS", "USER", "TERM", "LANG", "TMPDIR", "VIRTUAL_ENV"}
)


def _default_env_name(secret: Secret) -> str:
    """Flyte's default variable: ``GROUP_KEY`` upper-cased, other characters as ``_``."""
    raw = f"{secret.group}_{secret.key}" if secret.group else secret.key
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw).upper()
    if not _ENV_NAME.match(name) or name in _RESERVED_ENV or name.startswith("IMAGED_"):
        raise SpecError(
            f"Secret {secret.key!r} would be exported as ${name}, which is not a usable "
            f"variable name for a build step; pass as_env_var='MY_{name.lstrip('0123456789_')}' "
            "(any valid name), or mount='/run/secrets/...' for a file only"
        )
    return name


def normalize_secrets(value: object, *, where: str) -> tuple[Secret, ...]:
    """Accept ``str | Secret | list`` and return a tuple of Secret."""
    if value is None:
        return ()
    items = list(value) if isinstance(value, list | tuple) else [value]
    out: list[Secret] = []
    for item in items:
        if isinstance(item, Secret):
            out.append(item)
        elif isinstance(item, str):
            out.append(Secret(key=item))
        else:
            raise TypeError(f"{where}: secret_mounts items must be str or Secret, got {item!r}")
    return tuple(out)


@dataclass(frozen=True)
class PipOptions:
    """Index and resolver options shared by every layer that installs Python packages."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    pre: bool = False
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layer:
    """Base of all layer kinds."""

    kind: ClassVar[str] = ""
    category: ClassVar[Category] = "recipe"

    def describe(self) -> str:
        """A short human label, e.g. ``source_folder src/``."""
        return self.kind

    def input_paths(self) -> tuple[Path, ...]:
        """Absolute host paths this layer reads (files or folders)."""
        return ()

    @property
    def secrets(self) -> tuple[Secret, ...]:
        return tuple(getattr(self, "secret_mounts", ()))


@dataclass(frozen=True)
class AptPackages(Layer):
    kind: ClassVar[str] = "apt_packages"
    packages: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"apt_packages {' '.join(self.packages)}"


@dataclass(frozen=True)
class PipPackages(Layer):
    kind: ClassVar[str] = "pip_packages"
    packages: tuple[str, ...] = ()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"pip_packages {' '.join(self.packages)}"


@dataclass(frozen=True)
class Requirements(Layer):
    kind: ClassVar[str] = "requirements"
    file: Path = Path()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"requirements {self.file.name}"

    def input_paths(self) -> tuple[Path, ...]:
        return (self.file,)


@dataclass(frozen=True)
class UvProject(Layer):
    kind: ClassVar[str] = "uv_project"
    pyproject: Path = Path()
    uvlock: Path = Path()
    mode: InstallMode = "dependencies_only"
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()
    lock_required: bool = False  # an explicit uvlock= must exist; the default may be absent

    def describe(self) -> str:
        return f"uv_project {self.pyproject.parent.name}/ ({self.mode})"

    def input_paths(self) -> tuple[Path, ...]:
        paths = (self.pyproject, self.uvlock)
        return (*paths, self.pyproject.parent) if self.mode == "install_project" else paths


@dataclass(frozen=True)
class PoetryProject(Layer):
    kind: ClassVar[str] = "poetry_project"
    pyproject: Path = Path()
    poetry_lock: Path = Path()
    mode: InstallMode = "dependencies_only"
    extra_args: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"poetry_project {self.pyproject.parent.name}/ ({self.mode})"

    def input_paths(self) -> tuple[Path, ...]:
        paths = (self.pyproject, self.poetry_lock)
        return (*paths, self.pyproject.parent) if self.mode == "install_project" else paths


@dataclass(frozen=True)
class UvScript(Layer):
    """The dependencies declared in a PEP 723 script header (not the script body)."""

    kind: ClassVar[str] = "uv_script"
    script: Path = Path()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"uv_script {self.script.name}"

    def input_paths(self) -> tuple[Path, ...]:
        return (self.script,)


@dataclass(frozen=True)
class Commands(Layer):
    kind: ClassVar[str] = "commands"
    commands: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        first = self.commands[0] if self.commands else ""
        more = f" (+{len(self.commands) - 1})" if len(self.commands) > 1 else ""
        return f"commands {first[:40]}{more}"


@dataclass(frozen=True)
class EnvVars(Layer):
    kind: ClassVar[str] = "env_vars"
    category: ClassVar[Category] = "files"
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"env_vars {' '.join(k for k, _ in self.env)}"


@dataclass(frozen=True)
class Workdir(Layer):
    kind: ClassVar[str] = "workdir"
    category: ClassVar[Category] = "files"
    path: str = "/"

    def describe(self) -> str:
        return f"workdir {self.path}"


@dataclass(frozen=True)
class SourceFolder(Layer):
    kind: ClassVar[str] = "source_folder"
    category: ClassVar[Category] = "files"
    src: Path = Path()
    dst: str = "."
    copy_contents_only: bool = False

    def describe(self) -> str:
        return f"source_folder {self.src.name}/"

    def input_paths(self) -> tuple[Path, ...]:
        return (self.src,)

    @property
    def target(self) -> str:
        """The folder inside the image that receives the files."""
        if self.copy_contents_only:
            return self.dst
        return str(PurePosixPath(self.dst) / self.src.name)


@dataclass(frozen=True)
class SourceFiles(Layer):
    kind: ClassVar[str] = "source_files"
    category: ClassVar[Category] = "files"
    files: tuple[Path, ...] = ()
    dst: str = "."

    def describe(self) -> str:
        return f"source_files {' '.join(f.name for f in self.files)}"

    def input_paths(self) -> tuple[Path, ...]:
        return self.files


@dataclass(frozen=True)
class CodeBundle(Layer):
    """The project that defines the image, filtered by ignore files and standard ignores."""

    kind: ClassVar[str] = "code_bundle"
    category: ClassVar[Category] = "files"
    root: Path = Path()
    dst: str = "."
    copy_style: CopyStyle = "all"

    def describe(self) -> str:
        return f"code_bundle {self.root.name}/ ({self.copy_style})"

    def input_paths(self) -> tuple[Path, ...]:
        return (self.root,)


@dataclass(frozen=True)
class Dockerignore(Layer):
    """Extra ``.dockerignore`` rules applied to every copied folder of the image."""

    kind: ClassVar[str] = "dockerignore"
    category: ClassVar[Category] = "files"
    path: Path = Path()

    def describe(self) -> str:
        return f"dockerignore {self.path.name}"

    def input_paths(self) -> tuple[Path, ...]:
        return (self.path,)


LAYER_KINDS: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (
        AptPackages,
        PipPackages,
        Requirements,
        UvProject,
        PoetryProject,
        UvScript,
        Commands,
        EnvVars,
        Workdir,
        SourceFolder,
        SourceFiles,
        CodeBundle,
        Dockerignore,
    )
}


def check_env_vars(env: object) -> tuple[tuple[str, str], ...]:
    """Type-check an env var mapping and return it as an ordered tuple of pairs."""
    if not isinstance(env, dict):
        raise TypeError(f"with_env_vars takes a dict of str to str, got {type(env).__name__}")
    pairs: list[tuple[str, str]] = []
    for name, value in env.items():
        if not isinstance(name, str):
            raise TypeError(f"env var name must be a str, got {type(name).__name__}")
        if not isinstance(value, str):
            raise TypeError(f"env var {name!r}: value must be a str, got {type(value).__name__}")
        pairs.append((name, value))
    return tuple(pairs)  # names and values are vetted by imaged.spec.checks with the image


# -- JSON -------------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Secret | PipOptions):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def secret_to_json(secret: Secret | None) -> dict[str, Any] | None:
    return None if secret is None else _to_json(secret)


def secret_from_json(data: dict[str, Any] | None) -> Secret | None:
    return None if data is None else Secret(**data)


def layer_to_json(layer: Layer) -> dict[str, Any]:
    """Serialise a layer to plain JSON types, tagged with its kind."""
    data: dict[str, Any] = {"kind": layer.kind}
    for f in fields(layer):
        data[f.name] = _to_json(getattr(layer, f.name))
    return data


def _from_json(annotation: str, value: Any) -> Any:
    if annotation == "Path":
        return Path(value)
    if annotation == "tuple[Path, ...]":
        return tuple(Path(v) for v in value)
    if annotation == "tuple[Secret, ...]":
        return tuple(Secret(**v) for v in value)
    if annotation == "PipOptions":
        v = dict(value)
        v["extra_index_urls"] = tuple(v.get("extra_index_urls", ()))
        v["extra_args"] = tuple(v.get("extra_args", ()))
        return PipOptions(**v)
    if annotation == "tuple[tuple[str, str], ...]":
        return tuple((str(k), str(v)) for k, v in value)
    if annotation == "tuple[str, ...]":
        return tuple(value)
    return value


def layer_from_json(data: dict[str, Any]) -> Layer:
    """Inverse of :func:`layer_to_json`."""
    kind = data.get("kind")
    cls = LAYER_KINDS.get(str(kind))
    if cls is None:
        raise SpecError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(LAYER_KINDS))}")
    kwargs = {f.name: _from_json(str(f.type), data[f.name]) for f in fields(cls) if f.name in data}
    return cls(**kwargs)
