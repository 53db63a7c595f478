"""The layer kinds an Image is made of: small frozen dataclasses, each with a stable kind name.

Each kind is declared once, here: its fields, its family, the files and folders it reads
(:meth:`Layer.inputs`, with the ignore rules of each folder) and the values its digest
encodes (:meth:`Layer.digest_fields`). The hasher, the daemon's tracker and the validator
read these declarations; the Dockerfile renderer keeps one function per kind, reached by an
exhaustive match over :data:`RecipeLayer` and :data:`FileLayer`, so mypy names a kind it
forgets. A new kind: its class here (and in its family), its renderer, its tests.

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
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from imaged.errors import SpecError
from imaged.spec.pins import POETRY_VERSION, UV_VERSION

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
    :attr:`env_name`), else the file ``<secrets_dir>/<group>/<key>`` (``IMAGED_SECRETS_DIR``);
    so the key and the group are each one file name (no ``/``, ``\\``, NUL, ``.`` or ``..``).
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
        _check_file_name(self, "key", self.key)
        if self.group is not None:
            _check_file_name(self, "group", self.group)
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


def _check_file_name(secret: Secret, field_name: str, value: object) -> None:
    """A key or group names one file or folder under ``secrets_dir``: never a path that could
    leave it (``/etc/hostname``, ``../x``, ``a/b``), never empty, never NUL."""
    if not isinstance(value, str):
        raise SpecError(f"Secret {field_name} must be a string, got {value!r}")
    if value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise SpecError(
            f"Secret {secret.key!r} (group {secret.group!r}): {field_name} {value!r} must be "
            "one file name under secrets_dir: not empty, '.' or '..', without '/', '\\' or "
            "NUL; write Secret('token', group='github') for <secrets_dir>/github/token"
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


# -- what a layer reads -----------------------------------------------------------------

FileRead = Literal["content", "requirements", "mode", "script_header"]
IfMissing = Literal["error", "absent", "floating"]


@dataclass(frozen=True)
class FileInput:
    """A single file a layer reads.

    ``read`` is what of it enters the digest: its ``content``; ``requirements`` (the content
    of a requirements file, which must not name other files); ``mode`` (the content and the
    executable bit, copied into the image); ``script_header`` (only a script's PEP 723
    header, whose dependencies the build installs). ``if_missing``: ``error`` refuses a
    missing file; ``absent`` hashes it as absent (validation before a build still refuses
    it); ``floating`` hashes it as absent, records nothing for the build, and validation
    accepts it (a default ``uv.lock``: resolved at build time).
    """

    path: Path
    read: FileRead = "content"
    if_missing: IfMissing = "error"


@dataclass(frozen=True)
class TreeInput:
    """A folder a layer copies, filtered by its ``.dockerignore`` and the image's extra
    ignore files (:func:`tree_ignores`); ``gitignore``: git's ignore files as well;
    ``modules_only``: its Python files only (a code bundle's ``loaded_modules``);
    ``project_ignore``: the defining project's ``.dockerignore`` (present or not), which
    applies when the image has no ``with_dockerignore``, as Flyte reads its root's."""

    root: Path
    gitignore: bool = False
    modules_only: bool = False
    project_ignore: Path | None = None


@dataclass(frozen=True)
class LayerInputs:
    """Everything on the host one layer reads: the hasher reads exactly these, the tracker
    watches exactly these, the validator checks exactly these."""

    files: tuple[FileInput, ...] = ()
    trees: tuple[TreeInput, ...] = ()

    def paths(self) -> tuple[Path, ...]:
        """Absolute host paths the layer reads (files, then folders)."""
        return (*(f.path for f in self.files), *(t.root for t in self.trees))


@dataclass(frozen=True)
class InputDigests:
    """What the hasher read of a layer's declared inputs, for :meth:`Layer.digest_fields`:
    content sha256 per file (``"absent"`` for a missing optional one), the executable bit
    of ``mode`` files, the header text of ``script_header`` files, the digest per tree."""

    files: Mapping[Path, str]
    trees: Mapping[TreeInput, str]
    executable: Mapping[Path, bool]
    headers: Mapping[Path, str]


def _pip_fields(opts: PipOptions) -> list[object]:
    return [opts.index_url, opts.extra_index_urls, opts.pre, opts.extra_args]


def _secret_fields(secrets: tuple[Secret, ...]) -> list[object]:
    return [[s.key, s.group, s.mount, s.as_env_var] for s in secrets]


LAYER_KINDS: dict[str, type[Layer]] = {}


@dataclass(frozen=True)
class Layer(ABC):
    """Base of all layer kinds; a subclass with a ``kind`` registers in :data:`LAYER_KINDS`."""

    kind: ClassVar[str] = ""
    category: ClassVar[Category] = "recipe"
    in_image_digest: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            LAYER_KINDS[cls.kind] = cls

    def describe(self) -> str:
        """A short human label, e.g. ``source_folder src/``."""
        return self.kind

    def inputs(self) -> LayerInputs:
        """The host files and folders this layer reads (none by default)."""
        return LayerInputs()

    @abstractmethod
    def digest_fields(self, read: InputDigests) -> list[object]:
        """The values this layer's digest encodes, in order: ``encode([kind, fields])``."""

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

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [self.packages, _secret_fields(self.secret_mounts)]


@dataclass(frozen=True)
class PipPackages(Layer):
    kind: ClassVar[str] = "pip_packages"
    packages: tuple[str, ...] = ()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"pip_packages {' '.join(self.packages)}"

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [
            UV_VERSION,
            self.packages,
            _pip_fields(self.pip),
            _secret_fields(self.secret_mounts),
        ]


@dataclass(frozen=True)
class Requirements(Layer):
    kind: ClassVar[str] = "requirements"
    file: Path = Path()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"requirements {self.file.name}"

    def inputs(self) -> LayerInputs:
        return LayerInputs(files=(FileInput(self.file, "requirements"),))

    def digest_fields(self, read: InputDigests) -> list[object]:
        pip, secrets = _pip_fields(self.pip), _secret_fields(self.secret_mounts)
        return [UV_VERSION, read.files[self.file], pip, secrets]


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

    def inputs(self) -> LayerInputs:
        lock = FileInput(self.uvlock, if_missing="error" if self.lock_required else "floating")
        return _project_inputs(self.pyproject, lock, self.mode)

    def digest_fields(self, read: InputDigests) -> list[object]:
        head = _project_fields(self, read, f"uv=={UV_VERSION}", self.uvlock)
        return [*head, _pip_fields(self.pip), _secret_fields(self.secret_mounts)]


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

    def inputs(self) -> LayerInputs:
        return _project_inputs(self.pyproject, FileInput(self.poetry_lock), self.mode)

    def digest_fields(self, read: InputDigests) -> list[object]:
        head = _project_fields(self, read, f"poetry=={POETRY_VERSION}", self.poetry_lock)
        return [*head, self.extra_args, _secret_fields(self.secret_mounts)]


@dataclass(frozen=True)
class UvScript(Layer):
    """The dependencies declared in a PEP 723 script header (not the script body)."""

    kind: ClassVar[str] = "uv_script"
    script: Path = Path()
    pip: PipOptions = field(default_factory=PipOptions)
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        return f"uv_script {self.script.name}"

    def inputs(self) -> LayerInputs:
        return LayerInputs(files=(FileInput(self.script, "script_header"),))

    def digest_fields(self, read: InputDigests) -> list[object]:
        pip, secrets = _pip_fields(self.pip), _secret_fields(self.secret_mounts)
        return [UV_VERSION, read.headers[self.script], pip, secrets]


@dataclass(frozen=True)
class Commands(Layer):
    kind: ClassVar[str] = "commands"
    commands: tuple[str, ...] = ()
    secret_mounts: tuple[Secret, ...] = ()

    def describe(self) -> str:
        first = self.commands[0] if self.commands else ""
        more = f" (+{len(self.commands) - 1})" if len(self.commands) > 1 else ""
        return f"commands {first[:40]}{more}"

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [self.commands, _secret_fields(self.secret_mounts)]


@dataclass(frozen=True)
class EnvVars(Layer):
    kind: ClassVar[str] = "env_vars"
    category: ClassVar[Category] = "files"
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"env_vars {' '.join(k for k, _ in self.env)}"

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [list(self.env)]


@dataclass(frozen=True)
class Workdir(Layer):
    kind: ClassVar[str] = "workdir"
    category: ClassVar[Category] = "files"
    path: str = "/"

    def describe(self) -> str:
        return f"workdir {self.path}"

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [self.path]


@dataclass(frozen=True)
class SourceFolder(Layer):
    kind: ClassVar[str] = "source_folder"
    category: ClassVar[Category] = "files"
    src: Path = Path()
    dst: str = "."
    copy_contents_only: bool = False
    project_ignore: Path | None = None  # the defining project's .dockerignore (TreeInput)

    def describe(self) -> str:
        return f"source_folder {self.src.name}/"

    @property
    def target(self) -> str:
        """The folder inside the image that receives the files."""
        if self.copy_contents_only:
            return self.dst
        return str(PurePosixPath(self.dst) / self.src.name)

    def inputs(self) -> LayerInputs:
        return LayerInputs(trees=(self._tree(),))

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [self.target, read.trees[self._tree()]]

    def _tree(self) -> TreeInput:
        return TreeInput(self.src, project_ignore=self.project_ignore)


@dataclass(frozen=True)
class SourceFiles(Layer):
    kind: ClassVar[str] = "source_files"
    category: ClassVar[Category] = "files"
    files: tuple[Path, ...] = ()
    dst: str = "."

    def describe(self) -> str:
        return f"source_files {' '.join(f.name for f in self.files)}"

    def inputs(self) -> LayerInputs:
        return LayerInputs(files=tuple(FileInput(p, "mode") for p in self.files))

    def digest_fields(self, read: InputDigests) -> list[object]:
        rows = [[p.name, read.executable[p], read.files[p]] for p in self.files]
        return [self.dst, rows]


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

    def inputs(self) -> LayerInputs:
        return LayerInputs(trees=(self._tree(),))

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [self.dst, self.copy_style, read.trees[self._tree()]]

    def _tree(self) -> TreeInput:
        return TreeInput(self.root, gitignore=True, modules_only=self.copy_style != "all")


@dataclass(frozen=True)
class Dockerignore(Layer):
    """Extra ``.dockerignore`` rules applied to every copied folder of the image."""

    kind: ClassVar[str] = "dockerignore"
    category: ClassVar[Category] = "files"
    path: Path = Path()

    def describe(self) -> str:
        return f"dockerignore {self.path.name}"

    # The rules act through the file lists of the folder layers; on their own they change
    # nothing in the image, so this layer stays out of the image digest.
    in_image_digest: ClassVar[bool] = False

    def inputs(self) -> LayerInputs:
        return LayerInputs(files=(FileInput(self.path, if_missing="absent"),))

    def digest_fields(self, read: InputDigests) -> list[object]:
        return [read.files[self.path]]


# Every kind, as one type per family: a consumer that must treat each kind its own way (the
# renderer) matches on them exhaustively, so mypy names a kind it forgets. Add a new kind
# to its family here too (tests/test_layer_kinds.py checks both against LAYER_KINDS).
RecipeLayer = (
    AptPackages | PipPackages | Requirements | UvProject | PoetryProject | UvScript | Commands
)
FileLayer = EnvVars | Workdir | SourceFolder | SourceFiles | CodeBundle | Dockerignore
KnownLayer = RecipeLayer | FileLayer


def extra_ignores(layers: Iterable[Layer]) -> tuple[Path, ...]:
    """The ``with_dockerignore`` files of an image: their rules apply to every folder it copies."""
    return tuple(layer.path for layer in layers if isinstance(layer, Dockerignore))


def tree_ignores(tree: TreeInput, extras: tuple[Path, ...]) -> tuple[Path, ...]:
    """The ignore files, beside the folder's own ``.dockerignore``, that filter ``tree``:
    the image's ``with_dockerignore`` files, else the defining project's ``.dockerignore``
    (Flyte falls back to ``<root_dir>/.dockerignore`` the same way) for a folder inside
    that project. The hasher and the tracker both read this, so what is hashed is watched."""
    if extras or tree.project_ignore is None:
        return extras
    if tree.project_ignore.parent not in tree.root.parents:
        return ()  # the project root's own .dockerignore (read already), or outside it
    return (tree.project_ignore,)


def _project_inputs(pyproject: Path, lock: FileInput, mode: InstallMode) -> LayerInputs:
    """A uv or poetry project: its pyproject and lock, and with ``install_project`` the
    project folder itself (git's ignore files apply, as for a code bundle)."""
    files = (FileInput(pyproject), lock)
    if mode == "install_project":
        return LayerInputs(files, (TreeInput(pyproject.parent, gitignore=True),))
    return LayerInputs(files)


def _project_fields(
    layer: UvProject | PoetryProject, read: InputDigests, tool: str, lock: Path
) -> list[object]:
    fields: list[object] = [tool, layer.mode, read.files[layer.pyproject], read.files[lock]]
    if layer.mode == "install_project":
        fields.append(read.trees[TreeInput(layer.pyproject.parent, gitignore=True)])
    return fields


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
    if annotation == "Path | None":
        return None if value is None else Path(value)
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
