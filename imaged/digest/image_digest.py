"""The per-layer and whole-image digests: the base, the platforms, the Python version and
each layer's kind and inputs, in order (see ``imaged.digest.encoding`` for the bytes)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.digest.cache import DigestCache, default_cache
from imaged.digest.encoding import ENCODING_VERSION, EXEC_SUFFIX, sha256_hex
from imaged.digest.files import stat_key
from imaged.digest.trees import TreeIndex, TreeProvider, TreeSource, provide_tree, shared_tree
from imaged.errors import MissingPathError, SpecError
from imaged.safe_read import kind_of, os_reason, read_regular, shown_path
from imaged.spec import layers as L
from imaged.spec.image import DebianBase, DockerfileBase, Image, ParentBase, RefBase
from imaged.spec.pins import POETRY_VERSION, RENDER_VERSION, UV_VERSION

TAG_HEX_CHARS = 32


# -- image and layer digests ------------------------------------------------------------


@dataclass(frozen=True)
class LayerDigest:
    """One layer's digest and the file inputs it was computed from."""

    index: int
    kind: str
    label: str
    category: str
    digest: str
    trees: tuple[TreeIndex, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (absolute path, content digest)
    in_image_digest: bool = True
    values: tuple[str, ...] = ()  # inputs the build uses as read for this digest (script deps)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "label": self.label,
            "category": self.category,
            "digest": self.digest,
            "files": {p: d for p, d in self.files},
            "trees": {str(t.root): t.digest for t in self.trees},
        }


@dataclass(frozen=True)
class ImageDigest:
    """The digest of a whole image, its tag, and its per-layer digests."""

    digest: str
    base: str
    layers: tuple[LayerDigest, ...]
    # What the build must use, as it was read for this digest (never read a second time):
    base_ref: str | None = None  # the FROM reference (a parent image's content URI)
    dockerfile_text: str | None = None  # a from_dockerfile image's Dockerfile

    @property
    def tag(self) -> str:
        return self.digest.removeprefix("sha256:")[:TAG_HEX_CHARS]


@dataclass
class _Inputs:
    fields: list[object]
    trees: list[TreeIndex] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


class _Hasher:
    """Computes the inputs of each layer kind. Extra ignore files come from the image."""

    def __init__(self, image: Image, cache: DigestCache, trees: TreeProvider) -> None:
        self.image = image
        self.cache = cache
        self.trees = trees
        self.extra_ignores = tuple(
            layer.path for layer in image.layers if isinstance(layer, L.Dockerignore)
        )

    def file(self, path: Path, *, label: str, follow: bool = True) -> str:
        try:
            st = os.stat(path) if follow else os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise SpecError(
                    f"{shown_path(path)}: cannot read: {kind_of(st.st_mode)}, not a regular file",
                    image=self.image.name,
                    layer=label,
                )
            return self.cache.file_digest(str(path), stat_key(st))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise MissingPathError(
                f"{path} does not exist", image=self.image.name, layer=label
            ) from exc
        except OSError as exc:
            raise SpecError(
                f"{shown_path(path)}: cannot read: {os_reason(exc)}",
                image=self.image.name,
                layer=label,
            ) from exc

    def tree(
        self, root: Path, *, label: str, gitignore: bool = False, modules_only: bool = False
    ) -> TreeIndex:
        if not root.is_dir():
            raise MissingPathError(f"{root} is not a folder", image=self.image.name, layer=label)
        source = TreeSource(root, self.extra_ignores, gitignore, modules_only=modules_only)
        return provide_tree(self.trees, source, self.cache, image=self.image.name, layer=label)

    def inputs(self, layer: L.Layer, label: str) -> _Inputs:
        handler = _HANDLERS[type(layer)]
        return handler(self, layer, label)


def _pip_fields(opts: L.PipOptions) -> list[object]:
    return [opts.index_url, opts.extra_index_urls, opts.pre, opts.extra_args]


def _secret_fields(secrets: tuple[L.Secret, ...]) -> list[object]:
    return [[s.key, s.group, s.mount, s.as_env_var] for s in secrets]


def _apt(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.packages, _secret_fields(layer.secret_mounts)])


def _pip(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs(
        [UV_VERSION, layer.packages, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)]
    )


_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")
_LOCAL_PREFIXES = ("./", "../", "/", "file:", "~")


def check_requirements(path: Path, *, image: str | None, label: str) -> None:
    """Refuse a requirements file that names other files: imaged hashes and mounts only this
    one, so ``-r other.txt`` or ``-e .`` would fail inside the build, or build content the
    digest does not cover."""
    try:
        lines = read_regular(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return  # the hash of the file reports it, with the path
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        word = line.split(maxsplit=1)[0] if line else ""
        if word.startswith(_FILE_OPTIONS) or line.startswith(_LOCAL_PREFIXES) or line == ".":
            raise SpecError(
                f"{path}:{number}: `{line}` refers to another file, which imaged neither hashes "
                "nor sends to the build; list its requirements here, or use with_uv_project",
                image=image,
                layer=label,
            )


def _requirements(h: _Hasher, layer: Any, label: str) -> _Inputs:
    digest = h.file(layer.file, label=label)
    check_requirements(layer.file, image=h.image.name, label=label)
    return _Inputs(
        [UV_VERSION, digest, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)],
        files=[(str(layer.file), digest)],
    )


def _project(
    h: _Hasher, layer: Any, label: str, lock: Path, tool: str, *, lock_optional: bool = False
) -> _Inputs:
    pyproject = h.file(layer.pyproject, label=label)
    files = [(str(layer.pyproject), pyproject)]
    if lock_optional and not os.path.lexists(lock):
        lock_digest = "absent"  # floating: resolved at build time, as unpinned pip packages are
    else:
        lock_digest = h.file(lock, label=label)
        files.append((str(lock), lock_digest))
    fields: list[object] = [tool, layer.mode, pyproject, lock_digest]
    inputs = _Inputs(fields, files=files)
    if layer.mode == "install_project":
        tree = h.tree(layer.pyproject.parent, label=label, gitignore=True)
        fields.append(tree.digest)
        inputs.trees.append(tree)
    return inputs


def _uv_project(h: _Hasher, layer: Any, label: str) -> _Inputs:
    inputs = _project(
        h, layer, label, layer.uvlock, f"uv=={UV_VERSION}", lock_optional=not layer.lock_required
    )
    inputs.fields += [_pip_fields(layer.pip), _secret_fields(layer.secret_mounts)]
    return inputs


def _poetry_project(h: _Hasher, layer: Any, label: str) -> _Inputs:
    inputs = _project(h, layer, label, layer.poetry_lock, f"poetry=={POETRY_VERSION}")
    inputs.fields += [layer.extra_args, _secret_fields(layer.secret_mounts)]
    return inputs


def _uv_script(h: _Hasher, layer: Any, label: str) -> _Inputs:
    from imaged.spec.pep723 import read_script_metadata

    if not layer.script.is_file():
        raise MissingPathError(f"{layer.script} does not exist", image=h.image.name, layer=label)
    meta = read_script_metadata(layer.script)
    return _Inputs(
        [UV_VERSION, meta.header, _pip_fields(layer.pip), _secret_fields(layer.secret_mounts)],
        files=[(str(layer.script), sha256_hex(meta.header))],
        values=list(meta.dependencies),
    )


def _commands(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.commands, _secret_fields(layer.secret_mounts)])


def _env(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([list(layer.env)])


def _workdir(h: _Hasher, layer: Any, label: str) -> _Inputs:
    return _Inputs([layer.path])


def _source_folder(h: _Hasher, layer: Any, label: str) -> _Inputs:
    tree = h.tree(layer.src, label=label)
    return _Inputs([layer.target, tree.digest], trees=[tree])


def _source_files(h: _Hasher, layer: Any, label: str) -> _Inputs:
    rows: list[object] = []
    files: list[tuple[str, str]] = []
    for path in layer.files:
        if not path.is_file():
            raise MissingPathError(f"{path} is not a file", image=h.image.name, layer=label)
        digest = h.file(path, label=label)
        executable = bool(os.stat(path).st_mode & 0o111)
        rows.append([path.name, executable, digest])
        # The exec bit travels with the digest so staging copies the mode that was hashed.
        files.append((str(path), digest + EXEC_SUFFIX if executable else digest))
    return _Inputs([layer.dst, rows], files=files)


def _code_bundle(h: _Hasher, layer: Any, label: str) -> _Inputs:
    tree = h.tree(layer.root, label=label, gitignore=True, modules_only=layer.copy_style != "all")
    return _Inputs([layer.dst, layer.copy_style, tree.digest], trees=[tree])


def _dockerignore(h: _Hasher, layer: Any, label: str) -> _Inputs:
    # The rules act through the file lists of the folder layers; on their own they change
    # nothing in the image, so this layer stays out of the image digest.
    digest = h.file(layer.path, label=label) if layer.path.is_file() else "absent"
    return _Inputs([digest], files=[(str(layer.path), digest)])


_HANDLERS: dict[type[L.Layer], Callable[[_Hasher, Any, str], _Inputs]] = {
    L.AptPackages: _apt,
    L.PipPackages: _pip,
    L.Requirements: _requirements,
    L.UvProject: _uv_project,
    L.PoetryProject: _poetry_project,
    L.UvScript: _uv_script,
    L.Commands: _commands,
    L.EnvVars: _env,
    L.Workdir: _workdir,
    L.SourceFolder: _source_folder,
    L.SourceFiles: _source_files,
    L.CodeBundle: _code_bundle,
    L.Dockerignore: _dockerignore,
}


@dataclass
class _BaseInputs:
    fields: list[object]
    trees: list[TreeIndex] = field(default_factory=list)
    ref: str | None = None
    dockerfile_text: str | None = None


def _base_inputs(image: Image, cache: DigestCache, trees: TreeProvider) -> _BaseInputs:
    base = image.base
    if isinstance(base, DebianBase):
        return _BaseInputs(["debian", base.ref, list(base.python_version)], ref=base.ref)
    if isinstance(base, RefBase):
        return _BaseInputs(["ref", base.ref], ref=base.ref)
    if isinstance(base, ParentBase):
        parent = hash_image(base.image, cache, trees=trees)
        ref = base.image.uri_for(parent.tag) if base.image.name else None
        return _BaseInputs(["parent", parent.digest], ref=ref)
    assert isinstance(base, DockerfileBase)
    return _dockerfile_inputs(image, base, cache, trees)


def _dockerfile_inputs(
    image: Image, base: DockerfileBase, cache: DigestCache, trees: TreeProvider
) -> _BaseInputs:
    try:
        data = read_regular(base.dockerfile)
        text = data.decode("utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise MissingPathError(
            f"{base.dockerfile} is not a readable file", image=image.name, layer="from_dockerfile"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise SpecError(
            f"{shown_path(base.dockerfile)}: cannot read: {reason}",
            image=image.name,
            layer="from_dockerfile",
        ) from exc
    source = TreeSource(base.context, dockerfile_context=True)
    tree = provide_tree(trees, source, cache, image=image.name, layer="from_dockerfile")
    relname = os.path.relpath(base.dockerfile, base.context).replace(os.sep, "/")
    fields: list[object] = ["dockerfile", relname, hashlib.sha256(data).hexdigest(), tree.digest]
    return _BaseInputs(fields, [tree], dockerfile_text=text)


def hash_image(
    image: Image, cache: DigestCache | None = None, *, trees: TreeProvider | None = None
) -> ImageDigest:
    """Hash an image as its files are now: the base, the platforms, the Python version and
    each layer's kind and inputs, in order. ``trees`` serves each copied folder's index (and
    a parent image's); the default reads the rules and asks :func:`shared_trees`.

    >>> # hash_image(image, DigestCache(), trees=lambda source, cache: my_trees[source])
    """
    cache = cache or default_cache()
    trees = trees or shared_tree
    base_inputs = _base_inputs(image, cache, trees)
    base_fields, base_trees = base_inputs.fields, base_inputs.trees
    base_digest = "sha256:" + sha256_hex(base_fields)
    hasher = _Hasher(image, cache, trees)
    layer_digests: list[LayerDigest] = []
    for index, layer in enumerate(image.layers):
        label = image.layer_label(index)
        inputs = hasher.inputs(layer, label)
        digest = "sha256:" + sha256_hex([layer.kind, inputs.fields])
        layer_digests.append(
            LayerDigest(
                index=index,
                kind=layer.kind,
                label=layer.describe(),
                category=layer.category,
                digest=digest,
                trees=tuple(inputs.trees),
                files=tuple(inputs.files),
                in_image_digest=not isinstance(layer, L.Dockerignore),
                values=tuple(inputs.values),
            )
        )
    top = [
        ENCODING_VERSION,
        RENDER_VERSION,
        base_digest,
        list(image.platform),
        list(image.python_version) if image.python_version else None,
        [[d.kind, d.digest] for d in layer_digests if d.in_image_digest],
    ]
    base_layer = LayerDigest(
        index=-1,
        kind="base",
        label=image.base_label,
        category="recipe",
        digest=base_digest,
        trees=tuple(base_trees),
    )
    return ImageDigest(
        digest="sha256:" + sha256_hex(top),
        base=base_digest,
        layers=(base_layer, *layer_digests) if base_trees else tuple(layer_digests),
        base_ref=base_inputs.ref,
        dockerfile_text=base_inputs.dockerfile_text,
    )
