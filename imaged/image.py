"""The fluent, immutable Image spec: constructors, ``with_*`` layers, JSON round trip.

Pure: no I/O library is imported. Files are only touched by :meth:`Image.validate` and
when a digest is asked for.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn

from imaged import layers as L
from imaged.checks import check_dependencies, check_image
from imaged.errors import SpecError

if TYPE_CHECKING:
    from imaged.hashing import ImageDigest, LayerDigest

SPEC_VERSION = 1
DEFAULT_PLATFORM: tuple[str, ...] = ("linux/amd64",)
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


# -- bases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianBase:
    """A slim Debian image with a given Python; ``ref`` is resolved from config."""

    ref: str
    python_version: tuple[int, int]


@dataclass(frozen=True)
class RefBase:
    """Any existing image, by reference."""

    ref: str


@dataclass(frozen=True)
class ParentBase:
    """Another Image of the same set; it is built first and its URI is the base."""

    image: Image


@dataclass(frozen=True)
class DockerfileBase:
    """A user-written Dockerfile and the build context folder beside it."""

    dockerfile: Path
    context: Path


Base = DebianBase | RefBase | ParentBase | DockerfileBase


# -- helpers ----------------------------------------------------------------------------


def _caller_dir() -> Path:
    """Folder of the first stack frame outside the imaged package (the definition file)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and not filename.startswith("<"):
            return Path(filename).resolve().parent
        if filename.startswith("<") and not filename.startswith("<frozen"):
            break
        frame = frame.f_back  # type: ignore[assignment]
    return Path.cwd()


def _caller_file() -> str | None:
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and not filename.startswith("<"):
            return str(Path(filename).resolve())
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _resolve(path: str | os.PathLike[str], *, where: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{where}: expected a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(_caller_dir() / p))


def _strings(items: Sequence[object], *, where: str) -> tuple[str, ...]:
    for item in items:
        if isinstance(item, list | tuple | set):
            raise TypeError(
                f"{where}: got a {type(item).__name__} as one argument; "
                "pass items as separate arguments, e.g. f(*items)"
            )
        if not isinstance(item, str) or not item.strip():
            raise TypeError(f"{where}: expected non-empty strings, got {item!r}")
    return tuple(items)  # type: ignore[arg-type]


def _pip_options(
    index_url: str | None, extra_index_urls: Iterable[str], pre: bool, extra_args: Iterable[str]
) -> L.PipOptions:
    extras = (
        tuple(extra_index_urls) if not isinstance(extra_index_urls, str) else (extra_index_urls,)
    )
    args = tuple(extra_args) if not isinstance(extra_args, str) else tuple(extra_args.split())
    return L.PipOptions(
        index_url=index_url, extra_index_urls=extras, pre=bool(pre), extra_args=args
    )


def _python_version(value: object) -> tuple[int, int]:
    if value is None:
        return (sys.version_info.major, sys.version_info.minor)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    raise TypeError(f"python_version must be a (major, minor) tuple of ints, got {value!r}")


def _platforms(value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_PLATFORM
    items = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    for item in items:
        if not isinstance(item, str) or "/" not in item:
            raise TypeError(f"platform must look like 'linux/amd64', got {item!r}")
    return tuple(items)


def _find_project_root(start: Path) -> Path:
    """The nearest folder holding pyproject.toml, not crossing a repository root."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
        if (folder / ".git").exists():
            break
    return start


# -- the Image --------------------------------------------------------------------------


class Image:
    """An immutable container image spec. Build one with a ``from_*`` constructor.

    >>> base = Image.from_debian_base(python_version=(3, 11), registry="localhost:5000", name="app")
    >>> api = base.with_pip_packages("fastapi", "uvicorn")
    >>> api is not base and len(base.layers) == 0
    True
    """

    __slots__ = ("base", "extendable", "layers", "name", "platform", "registry", "source_file")

    name: str | None
    registry: str | None
    base: Base
    platform: tuple[str, ...]
    layers: tuple[L.Layer, ...]
    extendable: bool
    source_file: str | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "Image() cannot be called directly; use a constructor such as "
            "Image.from_debian_base(), Image.from_base(), Image.from_dockerfile() "
            "or Image.from_uv_script()"
        )

    @classmethod
    def _make(cls, **values: Any) -> Image:
        obj = object.__new__(cls)
        for slot in cls.__slots__:
            object.__setattr__(obj, slot, values[slot])
        check_image(obj)  # every string bound for the Dockerfile or an argv, at definition
        return obj

    def _evolve(self, **changes: Any) -> Image:
        values = {slot: getattr(self, slot) for slot in self.__slots__}
        values.update(changes)
        return Image._make(**values)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Image is immutable; use a with_* method instead of setting {name}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Image is immutable")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, slot) for slot in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        kinds = ", ".join(layer.kind for layer in self.layers)
        return f"<Image {self.name or '(unnamed)'} from {self.base_label}: [{kinds}]>"

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def from_debian_base(
        cls,
        python_version: tuple[int, int] | None = None,
        registry: str | None = None,
        name: str | None = None,
        platform: str | Sequence[str] | None = None,
    ) -> Image:
        """A slim Debian image with Python ``python_version`` (default: this interpreter's).

        The reference comes from the ``debian_base`` setting (``IMAGED_DEBIAN_BASE``),
        a template such as ``127.0.0.1:5000/python:{major}.{minor}-slim-bookworm``.
        """
        from imaged.config import load_settings

        version = _python_version(python_version)
        ref = load_settings(cwd=_caller_dir()).debian_base_for(*version)
        return cls._make(
            name=name,
            registry=registry,
            base=DebianBase(ref=ref, python_version=version),
            platform=_platforms(platform),
            layers=(),
            extendable=True,
            source_file=_caller_file(),
        )

    @classmethod
    def from_base(
        cls, image_uri: str | Image, *, platform: str | Sequence[str] | None = None
    ) -> Image:
        """Start from any existing image reference, or from another Image of the same set."""
        if isinstance(image_uri, Image):
            base: Base = ParentBase(image=image_uri)
            plat = image_uri.platform if platform is None else _platforms(platform)
        elif isinstance(image_uri, str) and image_uri.strip():
            base = RefBase(ref=image_uri.strip())
            plat = _platforms(platform)
        else:
            raise TypeError(f"from_base takes an image reference string, got {image_uri!r}")
        return cls._make(
            name=None,
            registry=None,
            base=base,
            platform=plat,
            layers=(),
            extendable=True,
            source_file=_caller_file(),
        )

    @classmethod
    def from_dockerfile(
        cls,
        file: str | os.PathLike[str],
        registry: str | None,
        name: str,
        *,
        platform: str | Sequence[str] | None = None,
    ) -> Image:
        """An image built from a Dockerfile; its context is the folder holding the file.

        Not extendable: imaged does not parse Dockerfiles, edit the Dockerfile instead.
        """
        path = _resolve(file, where="from_dockerfile")
        return cls._make(
            name=name,
            registry=registry,
            base=DockerfileBase(dockerfile=path, context=path.parent),
            platform=_platforms(platform),
            layers=(),
            extendable=False,
            source_file=_caller_file(),
        )

    @classmethod
    def from_uv_script(
        cls,
        script: str | os.PathLike[str],
        *,
        name: str,
        registry: str | None = None,
        python_version: tuple[int, int] | None = None,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        pre: bool = False,
        extra_args: Iterable[str] = (),
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
        platform: str | Sequence[str] | None = None,
    ) -> Image:
        """A Debian Python image holding the dependencies of a PEP 723 script's header."""
        from imaged.config import load_settings
        from imaged.pep723 import read_script_metadata

        path = _resolve(script, where="from_uv_script")
        if path.is_file():  # fail early on a malformed header or an option as a dependency
            deps = read_script_metadata(path).dependencies
            check_dependencies(deps, image=name, layer="#1 uv_script")
        version = _python_version(python_version)
        layer = L.UvScript(
            script=path,
            pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
            secret_mounts=L.normalize_secrets(secret_mounts, where="from_uv_script"),
        )
        return cls._make(
            name=name,
            registry=registry,
            base=DebianBase(
                ref=load_settings(cwd=_caller_dir()).debian_base_for(*version),
                python_version=version,
            ),
            platform=_platforms(platform),
            layers=(layer,),
            extendable=True,
            source_file=_caller_file(),
        )

    # -- layers -------------------------------------------------------------------------

    def _with(self, layer: L.Layer) -> Image:
        if not self.extendable:
            raise ValueError(
                f"image {self.name!r} is not extendable: it is built from a Dockerfile "
                f"({self.base_label}), and imaged does not parse Dockerfiles. Edit the "
                "Dockerfile instead, or start a new image with Image.from_base(...)"
            )
        return self._evolve(layers=(*self.layers, layer))

    def with_apt_packages(
        self, *packages: str, secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = ()
    ) -> Image:
        """Install Debian packages with apt."""
        pkgs = _strings(packages, where="with_apt_packages")
        if not pkgs:
            raise SpecError("with_apt_packages needs at least one package", image=self.name)
        secrets = L.normalize_secrets(secret_mounts, where="with_apt_packages")
        return self._with(L.AptPackages(packages=pkgs, secret_mounts=secrets))

    def with_pip_packages(
        self,
        *packages: str,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        pre: bool = False,
        extra_args: Iterable[str] = (),
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
    ) -> Image:
        """Install Python packages: ``img.with_pip_packages("fastapi", "uvicorn")``."""
        pkgs = _strings(packages, where="with_pip_packages")
        if not pkgs:
            raise SpecError("with_pip_packages needs at least one package", image=self.name)
        return self._with(
            L.PipPackages(
                packages=pkgs,
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=L.normalize_secrets(secret_mounts, where="with_pip_packages"),
            )
        )

    def with_requirements(
        self,
        file: str | os.PathLike[str],
        *,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        pre: bool = False,
        extra_args: Iterable[str] = (),
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
    ) -> Image:
        """Install the packages of a ``requirements.txt`` file."""
        path = _resolve(file, where="with_requirements")
        if path.suffix != ".txt":
            raise SpecError(
                f"{path}: a requirements file must be a .txt file",
                image=self.name,
                layer="requirements",
            )
        return self._with(
            L.Requirements(
                file=path,
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=L.normalize_secrets(secret_mounts, where="with_requirements"),
            )
        )

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Set environment variables in the image."""
        return self._with(L.EnvVars(env=L.check_env_vars(env_vars)))

    def with_commands(
        self,
        commands: str | Sequence[str],
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
    ) -> Image:
        """Run shell commands, each as its own step of one layer."""
        items = (commands,) if isinstance(commands, str) else tuple(commands)
        if not items or not all(isinstance(c, str) and c.strip() for c in items):
            raise SpecError("with_commands needs non-empty command strings", image=self.name)
        return self._with(
            L.Commands(
                commands=items,
                secret_mounts=L.normalize_secrets(secret_mounts, where="with_commands"),
            )
        )

    def with_workdir(self, path: str) -> Image:
        """Set the working directory (an absolute path inside the image)."""
        if not isinstance(path, str) or not PurePosixPath(path).is_absolute():
            raise SpecError(
                f"workdir must be an absolute POSIX path, got {path!r}",
                image=self.name,
                layer="workdir",
            )
        return self._with(L.Workdir(path=path))

    def with_source_folder(
        self, src: str | os.PathLike[str], dst: str = ".", copy_contents_only: bool = False
    ) -> Image:
        """Copy a folder (``dst/<name>``, or its contents into ``dst``)."""
        path = _resolve(src, where="with_source_folder")
        return self._with(
            L.SourceFolder(src=path, dst=_dst(dst), copy_contents_only=copy_contents_only)
        )

    def with_source_file(
        self, src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], dst: str = "."
    ) -> Image:
        """Copy one file, or several, into ``dst``."""
        items = [src] if isinstance(src, str | os.PathLike) else list(src)
        paths = tuple(_resolve(p, where="with_source_file") for p in items)
        names = [p.name for p in paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(
                f"source files collide in {dst!r}: {', '.join(dupes)}",
                image=self.name,
                layer="source_files",
            )
        if not paths:
            raise SpecError("with_source_file needs at least one file", image=self.name)
        return self._with(L.SourceFiles(files=paths, dst=_dst(dst)))

    def with_code_bundle(self, dst: str = ".") -> Image:
        """Copy the project that defines this image (nearest pyproject.toml, else its folder)."""
        root = _find_project_root(_caller_dir())
        return self._with(L.CodeBundle(root=root, dst=_dst(dst)))

    def with_dockerignore(self, path: str | os.PathLike[str]) -> Image:
        """Apply extra ``.dockerignore`` rules to every folder this image copies."""
        return self._with(L.Dockerignore(path=_resolve(path, where="with_dockerignore")))

    def with_uv_project(
        self,
        pyproject_file: str | os.PathLike[str],
        uvlock: str | os.PathLike[str] | None = None,
        project_install_mode: L.InstallMode = "dependencies_only",
        *,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        pre: bool = False,
        extra_args: Iterable[str] = (),
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
    ) -> Image:
        """Install a uv project's locked dependencies (and the project, in install_project)."""
        pyproject = _resolve(pyproject_file, where="with_uv_project")
        lock = _resolve(uvlock, where="with_uv_project") if uvlock else pyproject.parent / "uv.lock"
        return self._with(
            L.UvProject(
                pyproject=pyproject,
                uvlock=lock,
                mode=_mode(project_install_mode),
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=L.normalize_secrets(secret_mounts, where="with_uv_project"),
            )
        )

    def with_poetry_project(
        self,
        pyproject_file: str | os.PathLike[str],
        poetry_lock: str | os.PathLike[str] | None = None,
        extra_args: Iterable[str] = (),
        secret_mounts: L.SecretSpec | Sequence[L.SecretSpec] | None = (),
        project_install_mode: L.InstallMode = "dependencies_only",
    ) -> Image:
        """Install a poetry project's locked dependencies with a pinned poetry."""
        pyproject = _resolve(pyproject_file, where="with_poetry_project")
        lock = (
            _resolve(poetry_lock, where="with_poetry_project")
            if poetry_lock
            else pyproject.parent / "poetry.lock"
        )
        args = tuple(extra_args) if not isinstance(extra_args, str) else tuple(extra_args.split())
        return self._with(
            L.PoetryProject(
                pyproject=pyproject,
                poetry_lock=lock,
                mode=_mode(project_install_mode),
                extra_args=args,
                secret_mounts=L.normalize_secrets(secret_mounts, where="with_poetry_project"),
            )
        )

    def clone(
        self, registry: str | None = None, name: str | None = None, extendable: bool | None = None
    ) -> Image:
        """A copy with a new registry, name or extendability; layers are kept."""
        return self._evolve(
            registry=self.registry if registry is None else registry,
            name=self.name if name is None else name,
            extendable=self.extendable if extendable is None else extendable,
        )

    # -- inspection ---------------------------------------------------------------------

    @property
    def base_label(self) -> str:
        base = self.base
        if isinstance(base, ParentBase):
            return f"image {base.image.name}"
        if isinstance(base, DockerfileBase):
            return f"Dockerfile {base.dockerfile}"
        return base.ref

    @property
    def python_version(self) -> tuple[int, int] | None:
        base = self.base
        if isinstance(base, DebianBase):
            return base.python_version
        if isinstance(base, ParentBase):
            return base.image.python_version
        return None

    def layer_label(self, index: int) -> str:
        """``#2 pip_packages fastapi`` — the layer's position and description."""
        return f"#{index + 1} {self.layers[index].describe()}"

    def validate(self) -> Image:
        """Check that every referenced file and folder exists and is of the right kind."""
        from imaged.validate import validate_image

        validate_image(self)
        return self

    def compute(self) -> ImageDigest:
        """Hash the image now (reads files; uses the process-wide per-file digest cache)."""
        from imaged.hashing import hash_image

        return hash_image(self)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` over the base and every layer's inputs, as they are now."""
        return self.compute().digest

    @property
    def tag(self) -> str:
        """The content tag (hex, 128 bits+)."""
        return self.compute().tag

    @property
    def uri(self) -> str:
        """``registry/name:tag`` (``name:tag`` with no registry)."""
        return self.uri_for(self.tag)

    def uri_for(self, tag: str) -> str:
        if not self.name:
            raise SpecError("image has no name; pass name= or use .clone(name=...)")
        repo = f"{self.registry.rstrip('/')}/{self.name}" if self.registry else self.name
        return f"{repo}:{tag}"

    @property
    def layer_digests(self) -> tuple[LayerDigest, ...]:
        return self.compute().layers

    # -- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_json` gives back an equal Image."""
        return {
            "imaged_spec": SPEC_VERSION,
            "name": self.name,
            "registry": self.registry,
            "base": _base_to_json(self.base),
            "platform": list(self.platform),
            "layers": [L.layer_to_json(layer) for layer in self.layers],
            "extendable": self.extendable,
            "source_file": self.source_file,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        version = data.get("imaged_spec")
        if version != SPEC_VERSION:
            raise SpecError(
                f"unsupported spec version {version!r} (this imaged reads {SPEC_VERSION})"
            )
        return cls._make(
            name=data["name"],
            registry=data["registry"],
            base=_base_from_json(data["base"]),
            platform=tuple(data["platform"]),
            layers=tuple(L.layer_from_json(item) for item in data["layers"]),
            extendable=bool(data["extendable"]),
            source_file=data.get("source_file"),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Image:
        return cls.from_json(json.loads(text))


def override_registry(image: Image, registry: str | None) -> Image:
    """The image (and the parents it is built on) pushed to ``registry`` instead.

    The content digest does not change; only where the image lives.
    """
    if not registry:
        return image
    base = image.base
    if isinstance(base, ParentBase):
        image = image._evolve(base=ParentBase(image=override_registry(base.image, registry)))
    return image if image.registry == registry else image.clone(registry=registry)


def _dst(dst: str) -> str:
    if not isinstance(dst, str) or not dst:
        raise TypeError(f"dst must be a non-empty string, got {dst!r}")
    return dst


def _mode(mode: str) -> L.InstallMode:
    if mode not in L.INSTALL_MODES:
        raise SpecError(f"project_install_mode must be one of {L.INSTALL_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _base_to_json(base: Base) -> dict[str, Any]:
    if isinstance(base, DebianBase):
        return {"kind": "debian", "ref": base.ref, "python_version": list(base.python_version)}
    if isinstance(base, RefBase):
        return {"kind": "ref", "ref": base.ref}
    if isinstance(base, ParentBase):
        return {"kind": "parent", "image": base.image.to_json()}
    return {"kind": "dockerfile", "dockerfile": str(base.dockerfile), "context": str(base.context)}


def _base_from_json(data: dict[str, Any]) -> Base:
    kind = data.get("kind")
    if kind == "debian":
        major, minor = data["python_version"]
        return DebianBase(ref=data["ref"], python_version=(int(major), int(minor)))
    if kind == "ref":
        return RefBase(ref=data["ref"])
    if kind == "parent":
        return ParentBase(image=Image.from_json(data["image"]))
    if kind == "dockerfile":
        return DockerfileBase(dockerfile=Path(data["dockerfile"]), context=Path(data["context"]))
    raise SpecError(f"unknown base kind {kind!r}")
