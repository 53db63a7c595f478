"""The definition modules a daemon serves: found, each loaded in a child, the last good kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import anyio

from imaged.daemon.views import DaemonView
from imaged.definitions.child import LoadedModule, discover_definition_files, load_module_in_child
from imaged.errors import DefinitionError
from imaged.events import DefinitionErrorEvent, DefinitionsLoaded, Event
from imaged.spec.image import Image, override_registry


class DefinitionModules:
    """Each module's last good load and the files whose edit reloads it; a module that fails
    to load keeps its last good images, and shows its error in the view."""

    def __init__(self, view: DaemonView, emit: Callable[[Event], None]) -> None:
        self.loaded: dict[Path, LoadedModule] = {}
        self.files: dict[Path, set[Path]] = {}  # module -> files whose edit reloads it
        self._view = view
        self._emit = emit

    def paths(self) -> set[Path]:
        """Every file an edit of which reloads a module."""
        return {p for files in self.files.values() for p in files}

    def touched_by(self, paths: set[Path]) -> set[Path]:
        """The modules to reload after ``paths`` changed."""
        return {m for m, files in self.files.items() if files & paths}

    def forget_except(self, modules: Iterable[Path]) -> None:
        """Drop the modules no longer found under the definition paths."""
        for gone in set(self.files) - set(modules):
            self.loaded.pop(gone, None)
            self.files.pop(gone, None)
            self._view.modules.pop(str(gone), None)

    async def load(self, path: Path, *, load_timeout: float) -> None:
        """(Re)load one definition module in a child; keep the last good one on failure."""
        try:
            loaded = await load_module_in_child(path, timeout=load_timeout)
        except DefinitionError as exc:
            self._view.modules[str(path)] = str(exc)
            # Watch the file that broke too (a helper), so fixing it reloads the module.
            self.files.setdefault(path, set()).update({path, Path(exc.file)})
            self._emit(DefinitionErrorEvent(file=exc.file, line=exc.line, error=str(exc)))
            return
        self._view.modules[str(path)] = None
        self.loaded[path] = loaded
        self.files[path] = {path, *loaded.imported_files}
        self._emit(DefinitionsLoaded(file=str(path), images=sorted(loaded.images)))

    async def load_many(self, modules: Iterable[Path], *, load_timeout: float) -> None:
        """Load modules concurrently, each in its own child."""
        async with anyio.create_task_group() as tg:
            for path in modules:
                tg.start_soon(partial(self.load, path, load_timeout=load_timeout))

    def merged_images(self, registry: str | None) -> dict[str, Image]:
        """Every module's images; a name defined twice keeps the first module's, in path
        order, so the outcome never depends on which child finished loading first."""
        images: dict[str, Image] = {}
        owners: dict[str, Path] = {}
        for path in sorted(self.loaded):
            for name, image in self.loaded[path].images.items():
                if name in owners:
                    error = (
                        f"image name {name!r} is defined in both {owners[name]} and {path};"
                        f" the one in {owners[name]} is used"
                    )
                    self._emit(
                        DefinitionErrorEvent(image=name, file=str(path), line=None, error=error)
                    )
                    continue
                images[name] = override_registry(image, registry)
                owners[name] = path
        return images


def find_definition_files(
    targets: Iterable[Path], definitions: Iterable[str], *, recursive: bool
) -> list[Path]:
    """The definition modules under the daemon's targets and the configured paths."""
    roots = [*targets, *(Path(p) for p in definitions)]
    return discover_definition_files(roots, recursive=recursive)
