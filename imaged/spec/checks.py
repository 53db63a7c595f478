"""The one place that vets every string imaged writes into a Dockerfile or a tool's argv.

Refused, with a SpecError naming the image, the layer and the value:

* a line break (``\\n \\r \\x0b \\x0c \\x1c-\\x1e \\x85 \\u2028 \\u2029``) or NUL in any field a
  Dockerfile instruction holds: it would end the instruction and start one of the caller's;
* a leading ``-`` in an operand (apt/pip package, PEP 723 dependency, index URL, image
  reference): the tool would read it as an option (``--index-url=...``, ``-oDPkg::...``);
* a base reference, image name or registry with characters no reference has (white space,
  quotes, ``\\``, ``$``...), a platform that is not ``os/arch[/variant]``, a secret mount
  target outside ``/[A-Za-z0-9._@+/-]*`` (it sits in a ``--mount=`` list and a shell line),
  an environment variable name that is not ``[A-Za-z_][A-Za-z0-9_]*``, a workdir ending in
  ``\\`` (it would join the next instruction to WORKDIR);
* a ``$``, quote or ``\\`` in a workdir, a copy destination or a copied folder's name:
  BuildKit expands ``$VAR`` from ENV and removes quotes and backslashes in a WORKDIR or
  COPY path, even in COPY's JSON form (verified on Engine 20.10: ``/q'a'b`` is made as
  ``/qab``), while the fast path writes the path as given: the images would differ.

Fields that are options by design (``extra_args`` of pip/uv/poetry) may start with ``-`` but
not hold a line break. Commands are shell by design: only NUL is refused; one with a line
break renders in the JSON exec form (see :func:`needs_exec_form`).

Not checked, because they reach neither the Dockerfile nor an argv: host paths of
requirements, pyproject and lock files, ignore files and a ``from_dockerfile`` file (bound
or staged under fixed names), the names of copied files (context paths only) and secret
keys and groups (made into ``[A-Za-z0-9_.-]`` BuildKit ids). A secret's key and group do
name a file on the build host, ``<secrets_dir>/<group>/<key>``: :class:`Secret` refuses
one that is not a single file name (empty, ``.``, ``..``, a ``/``, ``\\`` or NUL) and
``pipeline/secrets.py`` a file that resolves outside ``secrets_dir``.

Called when an Image is made (definition time) and again by ``render_dockerfile``. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Protocol

from imaged.errors import SpecError
from imaged.spec.bases import DebianBase, RefBase
from imaged.spec.layers import (
    AptPackages,
    CodeBundle,
    Commands,
    EnvVars,
    Layer,
    PipOptions,
    PipPackages,
    PoetryProject,
    Requirements,
    Secret,
    SourceFiles,
    SourceFolder,
    UvProject,
    UvScript,
    Workdir,
)

LINE_BREAKS = "\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_BREAK = re.compile(f"[{LINE_BREAKS}]")
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
_PLATFORM = re.compile(r"^[A-Za-z0-9_.]+(/[A-Za-z0-9_.-]+){1,2}$")
_MOUNT_TARGET = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_PIP_HINT = "uv would read it as an option; pass options as index_url=, extra_args=..."
_HINTS = {
    "apt package": "apt-get would read it as an option",
    "pip package": _PIP_HINT,
    "script dependency": _PIP_HINT,
}


class CheckedImage(Protocol):
    """What the checks read of an :class:`~imaged.spec.image.Image` (that module imports
    this one, so this one names only the fields)."""

    @property
    def name(self) -> str | None: ...

    @property
    def registry(self) -> str | None: ...

    @property
    def base(self) -> object: ...

    @property
    def platform(self) -> tuple[str, ...]: ...

    @property
    def layers(self) -> tuple[Layer, ...]: ...


class _Where:
    """The image and layer an error names."""

    def __init__(self, image: str | None, layer: str | None) -> None:
        self.image = image
        self.layer = layer

    def fail(self, what: str, value: object, problem: str) -> SpecError:
        return SpecError(f"{what} {value!r} {problem}", image=self.image, layer=self.layer)


def has_line_break(value: str) -> bool:
    """True when ``value`` holds a line break or NUL (see :data:`LINE_BREAKS`)."""
    return _BREAK.search(value) is not None


def needs_exec_form(command: str) -> bool:
    """A shell command that must render as ``RUN ["/bin/sh", "-c", ...]``: it holds a line
    break, or ends in ``\\``, which would join the next instruction to it."""
    return has_line_break(command) or command.endswith("\\")


def _text(where: _Where, what: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}: {value!r}")
    found = _BREAK.search(value)
    if found:
        raise where.fail(
            what,
            value,
            f"holds {found.group()!r}: a Dockerfile instruction cannot hold a line break or NUL",
        )


def _operand(where: _Where, what: str, value: str) -> None:
    _text(where, what, value)
    if value.lstrip().startswith("-"):
        hint = _HINTS.get(what, "it would be read as an option")
        raise where.fail(what, value, f"starts with '-': {hint}")


def _matches(where: _Where, what: str, value: str, pattern: re.Pattern[str], shape: str) -> None:
    _text(where, what, value)
    if value.startswith("-"):
        raise where.fail(what, value, "starts with '-': it would be read as an option")
    if not pattern.match(value):
        raise where.fail(what, value, f"is not {shape}")


def _operands(where: _Where, what: str, values: Iterable[str]) -> None:
    for value in values:
        _operand(where, what, value)


def _options(where: _Where, what: str, values: Iterable[str]) -> None:
    for value in values:
        _text(where, what, value)


def _pip(where: _Where, opts: PipOptions) -> None:
    if opts.index_url is not None:
        _operand(where, "index_url", opts.index_url)
    _operands(where, "extra_index_url", opts.extra_index_urls)
    _options(where, "extra_args item", opts.extra_args)


def _secrets(where: _Where, secrets: tuple[Secret, ...]) -> None:
    for secret in secrets:
        _matches(where, "secret mount target", secret.target, _MOUNT_TARGET, "an absolute path")
        if secret.as_env_var is not None:
            _matches(where, "secret as_env_var", secret.as_env_var, _ENV_NAME, "a variable name")


def _env(where: _Where, env: tuple[tuple[str, str], ...]) -> None:
    for name, value in env:
        _matches(where, "environment variable name", name, _ENV_NAME, "a variable name")
        _text(where, f"env var {name}", value)


def _commands(where: _Where, commands: tuple[str, ...]) -> None:
    for command in commands:
        if "\x00" in command:
            raise where.fail("command", command, "holds NUL, which no shell command can hold")


def _workdir(where: _Where, path: str) -> None:
    _text(where, "workdir", path)
    if path.endswith("\\"):
        raise where.fail("workdir", path, "ends in '\\', which joins the next instruction to it")
    _literal(where, "workdir", path)


_SPECIAL = "$'\"\\"


def _literal(where: _Where, what: str, path: str) -> None:
    """A path BuildKit would read as a variable or quoting (see the module docstring)."""
    special = next((c for c in path if c in _SPECIAL), None)
    if special is not None:
        raise where.fail(
            what,
            path,
            f"has a {special!r}: a Dockerfile reads $ as a variable and quotes and "
            "backslashes as quoting, while imaged takes paths literally; write the path "
            "without it",
        )


def _layer_fields(where: _Where, layer: Layer) -> None:
    """Every string of ``layer`` that reaches the Dockerfile or an installer's argv."""
    _secrets(where, layer.secrets)
    if isinstance(layer, AptPackages):
        _operands(where, "apt package", layer.packages)
    elif isinstance(layer, PipPackages):
        _operands(where, "pip package", layer.packages)
    if isinstance(layer, PipPackages | Requirements | UvProject | UvScript):
        _pip(where, layer.pip)
    if isinstance(layer, PoetryProject):
        _options(where, "extra_args item", layer.extra_args)
    elif isinstance(layer, UvScript):
        _text(where, "script name", layer.script.name)  # rendered in a comment line
    elif isinstance(layer, Commands):
        _commands(where, layer.commands)
    elif isinstance(layer, EnvVars):
        _env(where, layer.env)
    elif isinstance(layer, Workdir):
        _workdir(where, layer.path)
    elif isinstance(layer, SourceFolder):
        _text(where, "copy destination", layer.dst)
        _text(where, "folder name", layer.src.name)  # the destination ends in it
        _literal(where, "copy destination", layer.dst)
        if not layer.copy_contents_only:
            _literal(where, "folder name", layer.src.name)
    elif isinstance(layer, SourceFiles | CodeBundle):
        _text(where, "copy destination", layer.dst)
        _literal(where, "copy destination", layer.dst)


def layer_label(index: int, layer: Layer) -> str:
    """``#2 workdir``: the position and kind, never the (possibly hostile) values."""
    return f"#{index + 1} {layer.kind}"


def check_layers(image: CheckedImage) -> None:
    """Raise SpecError for the first unsafe string in any of ``image``'s layers."""
    for index, layer in enumerate(image.layers):
        _layer_fields(_Where(image.name, layer_label(index, layer)), layer)


def check_reference(value: str, *, what: str, image: str | None, layer: str | None) -> None:
    """An image reference (``FROM`` line, ``-t`` tag part): reference characters only."""
    _matches(_Where(image, layer), what, value, _REFERENCE, "an image reference")


def _header(image: CheckedImage) -> Iterator[tuple[str, str | None, str | None]]:
    yield "image name", image.name, None
    yield "registry", image.registry, None
    if isinstance(image.base, DebianBase | RefBase):
        yield "base reference", image.base.ref, "base"


def check_image(image: CheckedImage) -> None:
    """Every string of ``image`` (not of its parent, checked when it was made) that reaches
    the Dockerfile or the docker argv; raise SpecError naming the image, layer and value."""
    for what, value, layer in _header(image):
        if value:  # an empty name or registry means none
            check_reference(value, what=what, image=image.name, layer=layer)
    for platform in image.platform:
        _matches(_Where(image.name, None), "platform", platform, _PLATFORM, "os/arch[/variant]")
    check_layers(image)


def check_dependencies(deps: Iterable[str], *, image: str | None, layer: str) -> None:
    """PEP 723 ``dependencies``, read from the script when the digest is computed."""
    _operands(_Where(image, layer), "script dependency", deps)
