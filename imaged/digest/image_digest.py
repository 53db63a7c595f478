"""The per-layer and whole-image digests: the base, the platforms, the Python version and
each layer's kind and inputs, in order (see ``imaged.digest.encoding`` for the bytes)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaged.digest.cache import DigestCache, default_cache
from imaged.digest.encoding import ENCODING_VERSION, EXEC_SUFFIX, sha256_hex
from imaged.digest.files import stat_key
from imaged.digest.trees import TreeIndex, TreeProvider, TreeSource, provide_tree, shared_tree
from imaged.errors import MissingPathError, SpecError
from imaged.safe_read import kind_of, os_reason, read_regular, shown_path
from imaged.spec.image import DebianBase, DockerfileBase, Image, ParentBase, RefBase
from imaged.spec.layers import FileInput, InputDigests, Layer, TreeInput, extra_ignores
from imaged.spec.pins import RENDER_VERSION

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
    """What the hasher read for one layer: the digest's raw material and the records the
    build stages from (trees, files with the digest they had, values such as script deps)."""

    trees: list[TreeIndex] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    digests: dict[Path, str] = field(default_factory=dict)
    tree_digests: dict[TreeInput, str] = field(default_factory=dict)
    executable: dict[Path, bool] = field(default_factory=dict)
    headers: dict[Path, str] = field(default_factory=dict)

    def read(self) -> InputDigests:
        return InputDigests(self.digests, self.tree_digests, self.executable, self.headers)


class _Hasher:
    """Reads the inputs each layer declares (``Layer.inputs``); extra ignore files come from
    the image."""

    def __init__(self, image: Image, cache: DigestCache, trees: TreeProvider) -> None:
        self.image = image
        self.cache = cache
        self.trees = trees
        self.extra_ignores = extra_ignores(image.layers)

    def inputs(self, layer: Layer, label: str) -> tuple[list[object], _Inputs]:
        declared, got = layer.inputs(), _Inputs()
        for file in declared.files:
            self._read_file(file, label, got)
        for tree_input in declared.trees:
            tree = self.tree(tree_input, label=label)
            got.tree_digests[tree_input] = tree.digest
            got.trees.append(tree)
        return layer.digest_fields(got.read()), got

    def _read_file(self, file: FileInput, label: str, got: _Inputs) -> None:
        path = file.path
        if file.read == "script_header":
            self._read_header(path, label, got)
        elif file.read == "mode" and not path.is_file():
            raise MissingPathError(f"{path} is not a file", image=self.image.name, layer=label)
        elif _is_absent(file):
            got.digests[path] = "absent"
            if file.if_missing == "absent":
                got.files.append((str(path), "absent"))
        else:
            got.files.append((str(path), self._read_content(file, label, got)))

    def _read_content(self, file: FileInput, label: str, got: _Inputs) -> str:
        """The content digest, as recorded for staging (with the exec bit of a mode file)."""
        path = file.path
        digest = got.digests[path] = self.file(path, label=label)
        if file.read == "requirements":
            check_requirements(path, image=self.image.name, label=label)
        if file.read != "mode":
            return digest
        executable = got.executable[path] = bool(os.stat(path).st_mode & 0o111)
        # The exec bit travels with the digest so staging copies the mode that was hashed.
        return digest + EXEC_SUFFIX if executable else digest

    def _read_header(self, script: Path, label: str, got: _Inputs) -> None:
        from imaged.spec.pep723 import read_script_metadata

        if not script.is_file():
            raise MissingPathError(f"{script} does not exist", image=self.image.name, layer=label)
        meta = read_script_metadata(script)
        got.headers[script] = meta.header
        got.files.append((str(script), sha256_hex(meta.header)))
        got.values += meta.dependencies

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

    def tree(self, tree: TreeInput, *, label: str) -> TreeIndex:
        if not tree.root.is_dir():
            raise MissingPathError(
                f"{tree.root} is not a folder", image=self.image.name, layer=label
            )
        source = TreeSource.of(tree, self.extra_ignores)
        return provide_tree(self.trees, source, self.cache, image=self.image.name, layer=label)


def _is_absent(file: FileInput) -> bool:
    """A missing optional file: ``absent`` when it is not a file, ``floating`` when nothing
    is at its path."""
    if file.if_missing == "absent":
        return not file.path.is_file()
    return file.if_missing == "floating" and not os.path.lexists(file.path)


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
        fields, inputs = hasher.inputs(layer, label)
        digest = "sha256:" + sha256_hex([layer.kind, fields])
        layer_digests.append(
            LayerDigest(
                index=index,
                kind=layer.kind,
                label=layer.describe(),
                category=layer.category,
                digest=digest,
                trees=tuple(inputs.trees),
                files=tuple(inputs.files),
                in_image_digest=layer.in_image_digest,
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
