"""The fluent, immutable Image spec: constructors, ``with_*`` layers, JSON round trip.

No I/O library is imported, so a definition module imports fast and never pulls in docker.
It is not free of I/O, though; it reads, and never writes:

- the config file (``load_settings``), for ``from_debian_base``, ``from_ref_name``,
  ``from_uv_script`` and an image that names no platform;
- the file system at definition time: ``pyproject.toml`` and ``.git`` above a code bundle
  (the project root), and a ``uv_script``'s PEP 723 header (a bad one fails early);
- every referenced path in :meth:`Image.validate`, and every input when a digest is asked
  for (``.uri``, ``.tag``, ``.digest``, ``compute()``: the lazy facade into ``digest/``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn

from imaged.errors import SpecError
from imaged.spec.bases import DebianBase as DebianBase
from imaged.spec.bases import DockerfileBase as DockerfileBase
from imaged.spec.bases import RefBase as RefBase
from imaged.spec.checks import check_dependencies, check_image
from imaged.spec.layers import (
    COPY_STYLES,
    INSTALL_MODES,
    AptPackages,
    CodeBundle,
    Commands,
    CopyStyle,
    Dockerignore,
    EnvVars,
    InstallMode,
    Layer,
    PipOptions,
    PipPackages,
    PoetryProject,
    Requirements,
    Secret,
    SecretSpec,
    SourceFiles,
    SourceFolder,
    UvProject,
    UvScript,
    Workdir,
    check_env_vars,
    layer_from_json,
    layer_to_json,
    normalize_secrets,
    secret_from_json,
    secret_to_json,
)

if TYPE_CHECKING:
    from imaged.digest.image_digest import ImageDigest, LayerDigest

SPEC_VERSION = 1
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


# -- bases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParentBase:
    """Another Image of the same set; it is built first and its URI is the base."""

    image: Image


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
    index_url: str | None,
    extra_index_urls: str | Iterable[str] | None,
    pre: bool,
    extra_args: str | Iterable[str] | None,
) -> PipOptions:
    extras = (extra_index_urls,) if isinstance(extra_index_urls, str) else extra_index_urls
    return PipOptions(
        index_url=index_url,
        extra_index_urls=tuple(extras or ()),
        pre=bool(pre),
        extra_args=_args(extra_args),
    )


def _args(extra_args: str | Iterable[str] | None) -> tuple[str, ...]:
    """Flyte passes ``extra_args`` as one string; a sequence of words works too."""
    if isinstance(extra_args, str):
        return tuple(extra_args.split())
    return tuple(extra_args or ())


def _python_version(value: object) -> tuple[int, int]:
    if value is None:
        return (sys.version_info.major, sys.version_info.minor)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    hint = ""
    if isinstance(value, str | float) and str(value).count(".") == 1:
        major, _, minor = str(value).partition(".")
        if major.isdigit() and minor.isdigit():
            hint = f"; write python_version=({int(major)}, {int(minor)})"
    raise TypeError(f"python_version must be a (major, minor) tuple of ints, got {value!r}{hint}")


def _platforms(value: object) -> tuple[str, ...]:
    if value is None:
        from imaged.config import load_settings

        return load_settings(cwd=_caller_dir()).default_platforms
    items = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    for item in items:
        if not isinstance(item, str) or "/" not in item:
            raise TypeError(f"platform must look like 'linux/amd64', got {item!r}")
    return tuple(items)


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding pyproject.toml, not crossing a
    repository root (a folder holding ``.git``); None when there is none."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
        if (folder / ".git").exists():
            return None
    return None


# -- the Image --------------------------------------------------------------------------


class Image:
    """An immutable container image spec. Build one with a ``from_*`` constructor.

    >>> base = Image.from_debian_base(python_version=(3, 11), registry="localhost:5000", name="app")
    >>> api = base.with_pip_packages("fastapi", "uvicorn")
    >>> api is not base and len(base.layers) == 0
    True
    """

    __slots__ = (
        "base",
        "extendable",
        "layers",
        "name",
        "platform",
        "registry",
        "registry_secret",
        "source_file",
    )

    name: str | None
    registry: str | None
    base: Base
    platform: tuple[str, ...]
    layers: tuple[Layer, ...]
    extendable: bool
    source_file: str | None
    registry_secret: Secret | None

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
    # Parameter names, order and kinds are Flyte 2's ``flyte.Image`` (tests/test_flyte_api.py).

    @classmethod
    def from_debian_base(
        cls,
        python_version: tuple[int, int] | None = None,
        flyte_version: str | None = None,
        install_flyte: bool | None = None,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        name: str | None = None,
        platform: str | Sequence[str] | None = None,
    ) -> Image:
        """A slim Debian image with Python ``python_version`` (default: this interpreter's).

        The reference comes from the ``debian_base`` setting (``IMAGED_DEBIAN_BASE``),
        a template such as ``127.0.0.1:5000/python:{major}.{minor}-slim-bookworm``.
        Unlike Flyte, the ``flyte`` package is not installed unless ``install_flyte=True``
        or a ``flyte_version`` is given (imaged is not Flyte's runtime).
        """
        from imaged.config import load_settings

        version = _python_version(python_version)
        ref = load_settings(cwd=_caller_dir()).debian_base_for(*version)
        image = cls._make(
            name=name,
            registry=registry,
            base=DebianBase(ref=ref, python_version=version),
            platform=_platforms(platform),
            layers=(),
            extendable=True,
            source_file=_caller_file(),
            registry_secret=_registry_secret(registry_secret),
        )
        return _with_flyte(image, install_flyte, flyte_version)

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
            registry_secret=None,
        )

    @classmethod
    def from_ref_name(cls, name: str = "default") -> Image:
        """The image the config's ``image_refs`` table names ``name`` (Flyte's image refs).

        >>> # imaged.toml:  [image_refs]  prebuilt = "127.0.0.1:5000/tools:1.4"
        >>> # Image.from_ref_name("prebuilt").with_pip_packages("rich")
        """
        from imaged.config import load_settings

        ref = load_settings(cwd=_caller_dir()).image_ref(name)
        return cls._make(
            name=name,
            registry=None,
            base=RefBase(ref=ref),
            platform=_platforms(None),
            layers=(),
            extendable=True,
            source_file=_caller_file(),
            registry_secret=None,
        )

    @classmethod
    def from_dockerfile(
        cls,
        file: str | os.PathLike[str],
        registry: str | None,
        name: str,
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
            registry_secret=None,
        )

    @classmethod
    def from_uv_script(
        cls,
        script: str | os.PathLike[str],
        *,
        name: str,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        python_version: tuple[int, int] | None = None,
        index_url: str | None = None,
        extra_index_urls: str | Iterable[str] | None = None,
        pre: bool = False,
        extra_args: str | Iterable[str] | None = None,
        platform: str | Sequence[str] | None = None,
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
    ) -> Image:
        """A Debian Python image holding the dependencies of a PEP 723 script's header."""
        from imaged.config import load_settings
        from imaged.spec.pep723 import read_script_metadata

        path = _resolve(script, where="from_uv_script")
        if path.is_file():  # fail early on a malformed header or an option as a dependency
            deps = read_script_metadata(path).dependencies
            check_dependencies(deps, image=name, layer="#1 uv_script")
        version = _python_version(python_version)
        layer = UvScript(
            script=path,
            pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
            secret_mounts=normalize_secrets(secret_mounts, where="from_uv_script"),
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
            registry_secret=_registry_secret(registry_secret),
        )

    # -- layers -------------------------------------------------------------------------

    def _with(self, layer: Layer) -> Image:
        if isinstance(self.base, DockerfileBase):
            raise ValueError(
                f"image {self.name!r} is not extendable: it is built from a Dockerfile "
                f"({self.base_label}), and imaged does not parse Dockerfiles. Edit the "
                "Dockerfile instead, or start a new image with Image.from_base(...)"
            )
        if not self.extendable:
            raise ValueError(
                f"image {self.name!r} is not extendable: it was cloned with "
                "extendable=False. Use .clone(extendable=True) to add layers to it"
            )
        return self._evolve(layers=(*self.layers, layer))

    def with_apt_packages(
        self, *packages: str, secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None
    ) -> Image:
        """Install Debian packages with apt."""
        pkgs = _strings(packages, where="with_apt_packages")
        if not pkgs:
            raise SpecError("with_apt_packages needs at least one package", image=self.name)
        secrets = normalize_secrets(secret_mounts, where="with_apt_packages")
        return self._with(AptPackages(packages=pkgs, secret_mounts=secrets))

    def with_pip_packages(
        self,
        *packages: str,
        index_url: str | None = None,
        extra_index_urls: str | Iterable[str] | None = None,
        pre: bool = False,
        extra_args: str | Iterable[str] | None = None,
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
    ) -> Image:
        """Install Python packages: ``img.with_pip_packages("fastapi", "uvicorn")``."""
        pkgs = _strings(packages, where="with_pip_packages")
        if not pkgs:
            raise SpecError("with_pip_packages needs at least one package", image=self.name)
        return self._with(
            PipPackages(
                packages=pkgs,
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=normalize_secrets(secret_mounts, where="with_pip_packages"),
            )
        )

    def with_requirements(
        self,
        file: str | os.PathLike[str],
        index_url: str | None = None,
        extra_index_urls: str | Iterable[str] | None = None,
        pre: bool = False,
        extra_args: str | Iterable[str] | None = None,
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
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
            Requirements(
                file=path,
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=normalize_secrets(secret_mounts, where="with_requirements"),
            )
        )

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Set environment variables in the image."""
        return self._with(EnvVars(env=check_env_vars(env_vars)))

    def with_commands(
        self,
        commands: str | Sequence[str],
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
    ) -> Image:
        """Run shell commands, each as its own step of one layer."""
        items = (commands,) if isinstance(commands, str) else tuple(commands)
        if not items or not all(isinstance(c, str) and c.strip() for c in items):
            raise SpecError("with_commands needs non-empty command strings", image=self.name)
        return self._with(
            Commands(
                commands=items,
                secret_mounts=normalize_secrets(secret_mounts, where="with_commands"),
            )
        )

    def with_workdir(self, workdir: str) -> Image:
        """Set the working directory (an absolute path inside the image)."""
        if not isinstance(workdir, str) or not PurePosixPath(workdir).is_absolute():
            hint = (
                f"; write with_workdir({'/' + workdir.lstrip('./')!r})"
                if isinstance(workdir, str) and workdir.strip("./")
                else ""
            )
            raise SpecError(
                f"workdir must be an absolute POSIX path, got {workdir!r}{hint}",
                image=self.name,
                layer="workdir",
            )
        return self._with(Workdir(path=workdir))

    def with_source_folder(
        self, src: str | os.PathLike[str], dst: str = ".", copy_contents_only: bool = False
    ) -> Image:
        """Copy a folder (``dst/<name>``, or its contents into ``dst``), filtered by its
        ``.dockerignore`` and the image's ``with_dockerignore`` files; without those, by the
        defining project's ``.dockerignore`` (nearest pyproject.toml, else the definition's
        folder), as Flyte reads its root's."""
        path = _resolve(src, where="with_source_folder")
        caller = _caller_dir()
        project_ignore = (find_project_root(caller) or caller) / ".dockerignore"
        return self._with(
            SourceFolder(
                src=path,
                dst=_dst(dst),
                copy_contents_only=copy_contents_only,
                project_ignore=project_ignore,
            )
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
        return self._with(SourceFiles(files=paths, dst=_dst(dst)))

    def with_code_bundle(self, copy_style: CopyStyle = "loaded_modules", dst: str = ".") -> Image:
        """Bake the project that defines this image (nearest pyproject.toml, else its folder)
        into it: ``"all"`` its files, ``"loaded_modules"`` (Flyte's default) its Python
        modules only. Both are filtered by the ignore files."""
        if copy_style not in COPY_STYLES:
            hint = (
                f"; to copy into {copy_style!r}, write dst={copy_style!r}"
                if (isinstance(copy_style, str) and copy_style.startswith(("/", ".")))
                else ""
            )
            raise SpecError(
                f"copy_style must be one of {COPY_STYLES}, got {copy_style!r}{hint}",
                image=self.name,
                layer="code_bundle",
            )
        caller = _caller_dir()
        root = find_project_root(caller) or caller
        return self._with(CodeBundle(root=root, dst=_dst(dst), copy_style=copy_style))

    def with_dockerignore(self, path: str | os.PathLike[str]) -> Image:
        """Apply a ``.dockerignore`` to every folder this image copies, its patterns read
        relative to the ignore file's own folder (Docker's build-context rule)."""
        return self._with(Dockerignore(path=_resolve(path, where="with_dockerignore")))

    def with_uv_project(
        self,
        pyproject_file: str | os.PathLike[str],
        uvlock: str | os.PathLike[str] | None = None,
        index_url: str | None = None,
        extra_index_urls: str | Iterable[str] | None = None,
        pre: bool = False,
        extra_args: str | Iterable[str] | None = None,
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
        project_install_mode: InstallMode = "dependencies_only",
    ) -> Image:
        """Install a uv project's dependencies as ``uv sync`` does by default (the ``dev``
        group included), from ``uv.lock`` when there is one; ``extra_args`` reach uv sync."""
        pyproject = _resolve(pyproject_file, where="with_uv_project")
        lock = _resolve(uvlock, where="with_uv_project") if uvlock else pyproject.parent / "uv.lock"
        return self._with(
            UvProject(
                pyproject=pyproject,
                uvlock=lock,
                mode=_mode(project_install_mode),
                pip=_pip_options(index_url, extra_index_urls, pre, extra_args),
                secret_mounts=normalize_secrets(secret_mounts, where="with_uv_project"),
                lock_required=uvlock is not None,
            )
        )

    def with_poetry_project(
        self,
        pyproject_file: str | os.PathLike[str],
        poetry_lock: str | os.PathLike[str] | None = None,
        extra_args: str | Iterable[str] | None = None,
        secret_mounts: SecretSpec | Sequence[SecretSpec] | None = None,
        project_install_mode: InstallMode = "dependencies_only",
    ) -> Image:
        """Install a poetry project's locked dependencies as ``poetry install`` does by
        default (every non-optional group) with a pinned poetry."""
        pyproject = _resolve(pyproject_file, where="with_poetry_project")
        lock = (
            _resolve(poetry_lock, where="with_poetry_project")
            if poetry_lock
            else pyproject.parent / "poetry.lock"
        )
        return self._with(
            PoetryProject(
                pyproject=pyproject,
                poetry_lock=lock,
                mode=_mode(project_install_mode),
                extra_args=_args(extra_args),
                secret_mounts=normalize_secrets(secret_mounts, where="with_poetry_project"),
            )
        )

    def with_local_v2(self) -> Image:
        """Flyte's own development hook (install the flyte wheel built from its checkout):
        refused, since imaged has no flyte checkout to build from."""
        raise SpecError(
            "with_local_v2() installs a flyte wheel built from Flyte's own source tree; "
            "imaged does not build flyte. Use Image.from_debian_base(flyte_version='2.x.y') "
            "or .with_pip_packages('flyte==2.x.y') instead",
            image=self.name,
        )

    def clone(
        self,
        registry: str | None = None,
        registry_secret: str | Secret | None = None,
        name: str | None = None,
        base_image: str | None = None,
        python_version: tuple[int, int] | None = None,
        addl_layer: Layer | None = None,
        extendable: bool | None = None,
        platform: str | Sequence[str] | None = None,
    ) -> Image:
        """A copy with a new registry, name, base, Python, platform or extendability;
        layers are kept, and ``addl_layer`` (an ``imaged.spec.layers`` layer) is appended."""
        image = self._evolve(
            registry=self.registry if registry is None else registry,
            name=self.name if name is None else name,
            registry_secret=self.registry_secret
            if registry_secret is None
            else _registry_secret(registry_secret),
            base=self._cloned_base(base_image, python_version),
            platform=self.platform if platform is None else _platforms(platform),
        )
        if addl_layer is not None:
            if not isinstance(addl_layer, Layer):
                raise TypeError(
                    f"clone(addl_layer=...) takes an imaged layer, got {addl_layer!r}; "
                    "use the with_* methods instead"
                )
            image = image._with(addl_layer)
        return image if extendable is None else image._evolve(extendable=bool(extendable))

    def _cloned_base(self, base_image: str | None, python_version: object) -> Base:
        base = self.base
        if isinstance(base, DockerfileBase) and (base_image or python_version):
            raise SpecError(
                "a from_dockerfile image takes its base and Python from its Dockerfile; "
                "edit the Dockerfile instead",
                image=self.name,
            )
        if python_version is not None:
            if not isinstance(base, DebianBase):
                raise SpecError(
                    f"clone(python_version=...) changes the Python of a from_debian_base "
                    f"image; this one is built on {self.base_label}, whose Python is its own. "
                    "Start from Image.from_debian_base(python_version=...) instead",
                    image=self.name,
                )
            from imaged.config import load_settings

            version = _python_version(python_version)
            ref = load_settings(cwd=_caller_dir()).debian_base_for(*version)
            base = DebianBase(ref=ref, python_version=version)
        if base_image is not None:
            if not isinstance(base_image, str) or not base_image.strip():
                raise TypeError(f"base_image must be an image reference, got {base_image!r}")
            if isinstance(base, DebianBase):
                return DebianBase(ref=base_image.strip(), python_version=base.python_version)
            return RefBase(ref=base_image.strip())
        return base

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
        """Check that every referenced file and folder exists and is of the right kind
        (its parent's too); raise MissingPathError naming the path, the image and the layer."""
        from imaged.spec.validate import expect_path, validate_layers

        if isinstance(self.base, DockerfileBase):
            expect_path(self.base.dockerfile, "file", image=self.name, layer="from_dockerfile")
        if isinstance(self.base, ParentBase):
            self.base.image.validate()
        validate_layers(self.layers, image=self.name, label=self.layer_label)
        return self

    def compute(self) -> ImageDigest:
        """Hash the image now (reads files; uses the process-wide per-file digest cache)."""
        from imaged.digest.image_digest import hash_image

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
            "layers": [layer_to_json(layer) for layer in self.layers],
            "extendable": self.extendable,
            "source_file": self.source_file,
            "registry_secret": secret_to_json(self.registry_secret),
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
            layers=tuple(layer_from_json(item) for item in data["layers"]),
            extendable=bool(data["extendable"]),
            source_file=data.get("source_file"),
            registry_secret=secret_from_json(data.get("registry_secret")),
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


def _registry_secret(value: object) -> Secret | None:
    """Flyte's ``registry_secret``: a secret name or a Secret holding registry credentials."""
    if value is None or isinstance(value, Secret):
        return value
    if isinstance(value, str) and value.strip():
        return Secret(key=value.strip())
    raise TypeError(f"registry_secret must be a secret name or a Secret, got {value!r}")


def _with_flyte(image: Image, install: bool | None, version: str | None) -> Image:
    """The ``flyte`` package from the package index, when asked for (off by default)."""
    if install is False or (install is None and version is None):
        return image
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise TypeError(f"flyte_version must be a version string, got {version!r}")
    package = f"flyte=={version.strip()}" if version else "flyte"
    return image._with(PipPackages(packages=(package,)))


def _dst(dst: str) -> str:
    if not isinstance(dst, str) or not dst:
        raise TypeError(f"dst must be a non-empty string, got {dst!r}")
    return dst


def _mode(mode: str) -> InstallMode:
    if mode not in INSTALL_MODES:
        raise SpecError(f"project_install_mode must be one of {INSTALL_MODES}, got {mode!r}")
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
