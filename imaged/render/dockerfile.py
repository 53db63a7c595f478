"""Render an Image to a Dockerfile and a context plan (which hashed inputs go where).

Handed the image's digest, rendering reads no file: everything comes from the digest's
trees and recorded inputs. Without one it hashes the image first (``hash_image``, which
reads every input). No I/O library is imported and nothing is written; the context is
staged by :mod:`imaged.render.context`. The Dockerfile only uses what the BuildKit frontend
built into Docker Engine 20.10 accepts (no ``# syntax=``, no heredocs, no ``COPY --link``,
secrets as file mounts), and names only stable relative context paths, so the build cache
carries across checkouts.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never, cast

from imaged.digest.image_digest import ImageDigest, LayerDigest, hash_image
from imaged.digest.trees import TreeIndex
from imaged.errors import SpecError
from imaged.spec.checks import (
    check_dependencies,
    check_image,
    check_reference,
    layer_label,
    needs_exec_form,
)
from imaged.spec.image import DockerfileBase, Image
from imaged.spec.layers import (
    AptPackages,
    CodeBundle,
    Commands,
    Dockerignore,
    EnvVars,
    FileLayer,
    KnownLayer,
    Layer,
    PipOptions,
    PipPackages,
    PoetryProject,
    RecipeLayer,
    Requirements,
    Secret,
    SourceFiles,
    SourceFolder,
    UvProject,
    UvScript,
    Workdir,
)
from imaged.spec.pins import POETRY_VERSION, UV_VERSION, VENV

CA_SECRET_ID = "imaged_build_ca"
CA_TARGET = f"/run/secrets/{CA_SECRET_ID}"
MOUNT_ROOT = "/tmp/imaged-inputs"  # noqa: S108 - a bind-mount point inside the build
POETRY_HOME = "/opt/poetry"
UV = f"{VENV}/bin/uv"

_CA_PRELUDE = (
    f"if [ -f {CA_TARGET} ]; then export SSL_CERT_FILE={CA_TARGET} PIP_CERT={CA_TARGET} "
    f"REQUESTS_CA_BUNDLE={CA_TARGET}; fi"
)
_APT_PRELUDE = (
    f'APT_CA=""; if [ -f {CA_TARGET} ]; then APT_CA="-o Acquire::https::CAInfo={CA_TARGET}"; fi'
)
_PIP_CACHE = "--mount=type=cache,id=imaged-pip,target=/root/.cache/pip"
_UV_CACHE = "--mount=type=cache,id=imaged-uv,target=/root/.cache/uv"
_CA_MOUNT = f"--mount=type=secret,id={CA_SECRET_ID},target={CA_TARGET}"
_APT_CACHE = (
    "--mount=type=cache,id=imaged-apt-cache,target=/var/cache/apt,sharing=locked "
    "--mount=type=cache,id=imaged-apt-lists,target=/var/lib/apt/lists,sharing=locked"
)


@dataclass(frozen=True)
class ContextItem:
    """One input to stage: a hashed folder (``tree``) or a single file, at ``dest``."""

    dest: str
    tree: TreeIndex | None = None
    file: Path | None = None
    digest: str | None = None


@dataclass
class RenderedImage:
    """A Dockerfile, the context it expects, and the secrets its steps mount."""

    dockerfile: str
    context: list[ContextItem] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    user_dockerfile: Path | None = None

    def listing(self) -> list[str]:
        """Context paths, sorted, for dry runs."""
        out: list[str] = []
        for item in self.context:
            if item.tree is not None:
                out += [f"{item.dest}/{e.relpath}" for e in item.tree.listing()]
            else:
                out.append(item.dest)
        return sorted(out)


def quote_env(value: str) -> str:
    """Double-quote a value for ``ENV``: backslash, quote and ``$`` are escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _pip_args(opts: PipOptions) -> list[str]:
    args: list[str] = []
    if opts.index_url:
        args += ["--index-url", opts.index_url]
    for url in opts.extra_index_urls:
        args += ["--extra-index-url", url]
    if opts.pre:
        args += ["--prerelease", "allow"]
    return args + list(opts.extra_args)


def _secret_mounts(secrets: tuple[Secret, ...]) -> tuple[list[str], list[str]]:
    mounts = [f"--mount=type=secret,id={s.id},target={s.target}" for s in secrets]
    exports = [f'export {s.as_env_var}="$(cat {s.target})"' for s in secrets if s.as_env_var]
    return mounts, exports


def _run(mounts: list[str], steps: list[str]) -> str:
    head = "RUN " + " ".join(mounts) if mounts else "RUN"
    return head + " \\\n    " + " \\\n    && ".join(steps)


class _Renderer:
    def __init__(self, image: Image, digest: ImageDigest) -> None:
        self.image = image
        self.digest = digest
        self.out = RenderedImage(dockerfile="")
        self.lines: list[str] = []
        self.have_uv = False
        self.have_poetry = False

    def layer_digest(self, index: int) -> LayerDigest:
        return next(d for d in self.digest.layers if d.index == index)

    def python_run(
        self, secrets: tuple[Secret, ...], steps: list[str], extra_mounts: tuple[str, ...] = ()
    ) -> None:
        self.ensure_uv()
        mounts, exports = _secret_mounts(secrets)
        self.out.secrets += secrets
        self.lines.append(
            _run([_UV_CACHE, _CA_MOUNT, *extra_mounts, *mounts], [_CA_PRELUDE, *exports, *steps])
        )

    def ensure_uv(self) -> None:
        if self.have_uv:
            return
        self.have_uv = True
        self.lines.append(
            f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:$PATH UV_LINK_MODE=copy "
            f"UV_PYTHON={VENV}/bin/python UV_PROJECT_ENVIRONMENT={VENV}"
        )
        self.lines.append(
            _run(
                [_PIP_CACHE, _CA_MOUNT],
                [
                    _CA_PRELUDE,
                    f"{{ [ -x {VENV}/bin/python ] || python3 -m venv {VENV}; }}",
                    f"{VENV}/bin/python -m pip install --disable-pip-version-check uv=={UV_VERSION}",
                ],
            )
        )

    def ensure_poetry(self) -> None:
        if self.have_poetry:
            return
        self.have_poetry = True
        self.ensure_uv()
        self.lines.append(
            _run(
                [_UV_CACHE, _CA_MOUNT],
                [
                    _CA_PRELUDE,
                    f"{UV} venv --python {VENV}/bin/python {POETRY_HOME}",
                    f"{UV} pip install --python {POETRY_HOME}/bin/python poetry=={POETRY_VERSION}",
                ],
            )
        )

    def bind(self, index: int, path: Path, name: str, digest: str | None = None) -> str:
        dest = f"inputs/{index}/{name}"
        self.out.context.append(ContextItem(dest=dest, file=path, digest=digest))
        return f"--mount=type=bind,source={dest},target={MOUNT_ROOT}/{index}/{name}"

    def copy_tree(self, index: int, target: str, tree: TreeIndex) -> None:
        dest = f"layers/{index}"
        self.out.context.append(ContextItem(dest=dest, tree=tree, digest=tree.digest))
        self.lines.append(_copy_line(f"{dest}/", target.rstrip("/") + "/"))


def _copy_line(src: str, dst: str) -> str:
    """``COPY src dst``; the JSON form when a path has white space or quotes."""
    if any(c.isspace() or c in "\"'" for c in src + dst):
        return "COPY " + json.dumps([src, dst])
    return f"COPY {src} {dst}"


def _run_exec_form(mounts: list[str], script: str) -> str:
    """A RUN whose shell script keeps its newlines exactly (JSON exec form)."""
    head = "RUN " + " ".join(mounts) + " " if mounts else "RUN "
    return head + json.dumps(["/bin/sh", "-c", script])


def _file_digest(layer_digest: LayerDigest, path: Path) -> str | None:
    return dict(layer_digest.files).get(str(path))


def _apt(r: _Renderer, index: int, layer: AptPackages) -> None:
    mounts, exports = _secret_mounts(layer.secret_mounts)
    r.out.secrets += layer.secret_mounts
    pkgs = " ".join(shlex.quote(p) for p in layer.packages)
    r.lines.append(
        _run(
            [_APT_CACHE, _CA_MOUNT, *mounts],
            [
                _APT_PRELUDE,
                *exports,
                "apt-get $APT_CA update",
                f"DEBIAN_FRONTEND=noninteractive apt-get $APT_CA install -y --no-install-recommends -- {pkgs}",
            ],
        )
    )


def _install_args(opts: PipOptions, packages: tuple[str, ...]) -> str:
    """Options, then ``--``, then the requirements: none can be read as an option."""
    return " ".join(shlex.quote(a) for a in [*_pip_args(opts), "--", *packages])


def _pip(r: _Renderer, index: int, layer: PipPackages) -> None:
    r.python_run(
        layer.secret_mounts, [f"{UV} pip install {_install_args(layer.pip, layer.packages)}"]
    )


def _requirements(r: _Renderer, index: int, layer: Requirements) -> None:
    d = r.layer_digest(index)
    mount = r.bind(index, layer.file, "requirements.txt", _file_digest(d, layer.file))
    args = " ".join(shlex.quote(a) for a in _pip_args(layer.pip))
    req = f"{MOUNT_ROOT}/{index}/requirements.txt"
    r.python_run(
        layer.secret_mounts, [f"{UV} pip install {args} -r {req}".replace("  ", " ")], (mount,)
    )


def _project_mounts(
    r: _Renderer, index: int, layer: UvProject | PoetryProject, lock: Path, lock_name: str
) -> tuple[list[str], str]:
    d = r.layer_digest(index)
    if layer.mode == "install_project":
        tree = d.trees[0]
        dest = f"inputs/{index}/project"
        r.out.context.append(ContextItem(dest=dest, tree=tree, digest=tree.digest))
        if lock != layer.pyproject.parent / lock_name and _file_digest(d, lock) is not None:
            # An explicit lock file elsewhere is the one hashed: it replaces the tree's own.
            r.out.context.append(
                ContextItem(dest=f"{dest}/{lock_name}", file=lock, digest=_file_digest(d, lock))
            )
        workdir = f"{MOUNT_ROOT}/{index}/project"
        # Staged from the hashed tree; rw so a build backend may write, writes are dropped.
        return [f"--mount=type=bind,source={dest},target={workdir},rw"], workdir
    mounts = [r.bind(index, layer.pyproject, "pyproject.toml", _file_digest(d, layer.pyproject))]
    if _file_digest(d, lock) is not None:  # an absent uv.lock was hashed as absent: floating
        mounts.append(r.bind(index, lock, lock_name, _file_digest(d, lock)))
    return mounts, f"{MOUNT_ROOT}/{index}"


def _uv_project(r: _Renderer, index: int, layer: UvProject) -> None:
    mounts, workdir = _project_mounts(r, index, layer, layer.uvlock, "uv.lock")
    args = " ".join(shlex.quote(a) for a in _pip_args(layer.pip))
    locked = _file_digest(r.layer_digest(index), layer.uvlock) is not None
    # uv sync's own defaults (the dev group too), as Flyte runs it; a lock pins the result.
    pin = "--locked " if locked and "--frozen" not in layer.pip.extra_args else ""
    steps = [f"cd {workdir}", f"{UV} sync {pin}--inexact --no-install-project {args}".rstrip()]
    if not locked:
        steps.append("rm -f uv.lock")  # the lock uv wrote stays out of the layer
    if layer.mode == "install_project":
        steps.append(f"{UV} pip install --no-deps {args} .".replace("  ", " "))
    r.python_run(layer.secret_mounts, steps, tuple(mounts))


def _poetry_project(r: _Renderer, index: int, layer: PoetryProject) -> None:
    r.ensure_poetry()
    mounts, workdir = _project_mounts(r, index, layer, layer.poetry_lock, "poetry.lock")
    extra = " ".join(shlex.quote(a) for a in layer.extra_args)
    steps = [
        f"cd {workdir}",
        "export POETRY_VIRTUALENVS_CREATE=false POETRY_NO_INTERACTION=1",
        # poetry install's default: every group that is not optional.
        f"{POETRY_HOME}/bin/poetry install --no-root --no-ansi {extra}".rstrip(),
    ]
    if layer.mode == "install_project":
        steps.append(f"{UV} pip install --no-deps .")
    r.python_run(layer.secret_mounts, steps, tuple(mounts))


def _uv_script(r: _Renderer, index: int, layer: UvScript) -> None:
    deps = r.layer_digest(index).values  # as read when the digest was computed
    if not deps:
        r.lines.append(f"# {layer.script.name} declares no dependencies")
        r.ensure_uv()
        return
    check_dependencies(deps, image=r.image.name, layer=layer_label(index, layer))
    r.python_run(layer.secret_mounts, [f"{UV} pip install {_install_args(layer.pip, deps)}"])


def _commands(r: _Renderer, index: int, layer: Commands) -> None:
    mounts, exports = _secret_mounts(layer.secret_mounts)
    r.out.secrets += layer.secret_mounts
    for command in layer.commands:
        if needs_exec_form(command):
            r.lines.append(_run_exec_form(mounts, "\n".join([*exports, command])))
        elif mounts:
            r.lines.append(_run(mounts, [*exports, command]))
        else:
            r.lines.append(f"RUN {command}")


def _env(r: _Renderer, index: int, layer: EnvVars) -> None:
    pairs = " ".join(f"{k}={quote_env(v)}" for k, v in layer.env)
    r.lines.append(f"ENV {pairs}")


def _workdir(r: _Renderer, index: int, layer: Workdir) -> None:
    r.lines.append(f"WORKDIR {layer.path}")


def _source_folder(r: _Renderer, index: int, layer: SourceFolder) -> None:
    r.copy_tree(index, layer.target, r.layer_digest(index).trees[0])


def _source_files(r: _Renderer, index: int, layer: SourceFiles) -> None:
    d = r.layer_digest(index)
    dest = f"layers/{index}"
    for path in layer.files:
        r.out.context.append(
            ContextItem(dest=f"{dest}/{path.name}", file=path, digest=_file_digest(d, path))
        )
    r.lines.append(_copy_line(f"{dest}/", layer.dst.rstrip("/") + "/"))


def _code_bundle(r: _Renderer, index: int, layer: CodeBundle) -> None:
    r.copy_tree(index, layer.dst, r.layer_digest(index).trees[0])


def _dockerignore(r: _Renderer, index: int, layer: Dockerignore) -> None:
    """Its rules already shaped the file lists of the folder layers."""


def render_layer(r: _Renderer, index: int, layer: Layer) -> None:
    """One layer's Dockerfile lines and context items. The matches below are exhaustive
    over ``KnownLayer`` (which tests/test_layer_kinds.py checks against LAYER_KINDS), so
    mypy names a kind they forget."""
    known = cast(KnownLayer, layer)
    if isinstance(known, RecipeLayer):
        _render_recipe(r, index, known)
    else:
        _render_files(r, index, known)


def _render_recipe(r: _Renderer, index: int, layer: RecipeLayer) -> None:
    match layer:
        case AptPackages():
            _apt(r, index, layer)
        case PipPackages():
            _pip(r, index, layer)
        case Requirements():
            _requirements(r, index, layer)
        case UvProject():
            _uv_project(r, index, layer)
        case PoetryProject():
            _poetry_project(r, index, layer)
        case UvScript():
            _uv_script(r, index, layer)
        case Commands():
            _commands(r, index, layer)
        case _:
            assert_never(layer)


def _render_files(r: _Renderer, index: int, layer: FileLayer) -> None:
    match layer:
        case EnvVars():
            _env(r, index, layer)
        case Workdir():
            _workdir(r, index, layer)
        case SourceFolder():
            _source_folder(r, index, layer)
        case SourceFiles():
            _source_files(r, index, layer)
        case CodeBundle():
            _code_bundle(r, index, layer)
        case Dockerignore():
            _dockerignore(r, index, layer)
        case _:
            assert_never(layer)


def base_reference(image: Image, digest: ImageDigest | None = None) -> str:
    """What the FROM line names: a reference, or the parent image's content URI as it was
    when ``digest`` was computed."""
    if isinstance(image.base, DockerfileBase):
        raise ValueError("a Dockerfile image has no base reference of imaged's")
    digest = digest or hash_image(image)
    if digest.base_ref is None:
        raise SpecError(
            "its base image has no name, so it has no URI to build FROM; "
            "give the parent image a name",
            image=image.name,
        )
    return digest.base_ref


def render_dockerfile(image: Image, digest: ImageDigest | None = None) -> RenderedImage:
    """Render ``image``; pass the digest it was hashed to so the plan uses the same trees.

    >>> # render_dockerfile(Image.from_base("debian:12").with_workdir("/app")).dockerfile
    """
    check_image(image)  # the backstop: an Image made without its constructors is vetted too
    digest = digest or hash_image(image)
    base = image.base
    if isinstance(base, DockerfileBase):
        tree = next(t for d in digest.layers if d.kind == "base" for t in d.trees)
        assert digest.dockerfile_text is not None
        rendered = RenderedImage(dockerfile=digest.dockerfile_text, user_dockerfile=base.dockerfile)
        rendered.context.append(ContextItem(dest=".", tree=tree, digest=tree.digest))
        return rendered
    r = _Renderer(image, digest)
    ref = base_reference(image, digest)
    check_reference(ref, what="base reference", image=image.name, layer="base")
    r.lines.append(f"FROM {ref}")
    for index, layer in enumerate(image.layers):
        render_layer(r, index, layer)
    r.lines.append(f"LABEL dev.imaged.digest={digest.digest}")
    r.out.dockerfile = "\n".join(r.lines) + "\n"
    return r.out
