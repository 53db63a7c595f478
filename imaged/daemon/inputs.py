"""The daemon's inputs: file events and periodic re-stats -> the tracker -> digest changes ->
scheduler requests, and why.

Every change to what an image is made of enters here: a batch of paths from the watcher
(``handle_paths``: definition modules are reloaded, other paths go to the tracker), the
periodic stat sweep (``restat``: the edits no event announced) and a (re)load of every
definition module (``load_all``). Each ends the same way: the images whose digest moved are
shown with their new tag, said to have ``changed`` (naming the layers and files that moved)
and requested from the scheduler; an image with an unreadable input is a ``hash_error``
until the input is readable again.

The tracker is not thread-safe and hashing may take long: every tracker call runs in a worker
thread, one at a time (``_tracker_lock``), with the scheduler's clock paused so that no build
starts on a digest about to move.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from imaged.config import Settings
from imaged.daemon.builds import Builds
from imaged.daemon.clock import QuietClock
from imaged.daemon.metrics import Metrics
from imaged.daemon.modules import DefinitionModules, find_definition_files
from imaged.daemon.tracker import DigestChange, ImageTracker
from imaged.daemon.views import DaemonView
from imaged.digest.cache import DigestCache
from imaged.errors import DefinitionError
from imaged.events import (
    Changed,
    DefinitionErrorEvent,
    Event,
    HashError,
    Ignored,
    NothingToDo,
)
from imaged.spec.image import Image

T = TypeVar("T")


# The names editors give the files of a save under way: a temp file renamed over the
# target (JetBrains' ``___jb_tmp___``, ``.name.tmp``, Chrome's ``.crswap``), a backup of the
# original (vim's and emacs' ``name~``, JetBrains' ``___jb_old___``), swap and lock files
# (vim's ``.name.swp``, vim's write test ``4913``, emacs' ``.#name`` and ``#name#``). The
# patterns of watchfiles' DefaultFilter, and the temp names of atomic writers.
_HALF_DONE = re.compile(
    r"(___jb_(tmp|old)___|~|\.sw[a-p]|\.crswap|\.tmp)$"
    r"|\.tmp[.-]|^\.#|^#.*#$|^4913$"
)


def looks_half_done(path: str) -> bool:
    """True when ``path``'s name is one an editor gives a file only while it saves.

    >>> looks_half_done("src/.app.py.tmp-1f3a"), looks_half_done("src/app.py")
    (True, False)
    """
    return _HALF_DONE.search(path.rpartition("/")[2]) is not None


class BuildRequests(Protocol):
    """What the inputs ask of the scheduler (``Scheduler`` is one)."""

    def request(self, name: str, reason: str, *, half_done: bool = False) -> None: ...

    def forget(self, name: str) -> None: ...


class DaemonInputs:
    """The images the definitions make, their digests, and what to rebuild when files move."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        targets: list[Path],
        view: DaemonView,
        builds: Builds,
        metrics: Metrics,
        emit: Callable[[Event], None],
        clock: QuietClock,
        scheduler: BuildRequests,
    ) -> None:
        self._settings = settings
        self.targets = targets
        self.definitions = DefinitionModules(view, emit)
        self.view = view
        self.builds = builds
        self.metrics = metrics
        self.emit = emit
        self.clock = clock
        self.scheduler = scheduler
        # The daemon's prepare() loads the saved cache into a new one.
        self.tracker = ImageTracker(DigestCache(), hash_timeout=settings().hash_timeout)
        self._tracker_lock = anyio.Lock()
        self.images: dict[str, Image] = {}
        self.roots_changed = threading.Event()  # the watcher restarts on the new roots
        self._reported_errors: dict[str, str] = {}
        self._last_ignored_event = -1.0

    # -- definitions --------------------------------------------------------------------

    def definition_files(self) -> list[Path]:
        s = self._settings()
        return find_definition_files(self.targets, s.definitions, recursive=s.recursive)

    async def load_all(self) -> None:
        """(Re)load every definition module; forget the modules no longer found."""
        try:
            files = self.definition_files()
        except DefinitionError as exc:
            # A definitions folder deleted under a running daemon: keep the last good ones.
            self.emit(DefinitionErrorEvent(file=exc.file, line=exc.line, error=str(exc)))
            return
        roots = self.roots()
        self.definitions.forget_except(files)
        await self.definitions.load_many(files, load_timeout=self._settings().load_timeout)
        await self._refresh_images(roots_before=roots)

    async def _refresh_images(self, *, roots_before: dict[Path, bool] | None = None) -> None:
        images = self.definitions.merged_images(self._settings().registry)
        async with self._tracker_lock:
            roots = self.roots() if roots_before is None else roots_before
            for name in set(self.images) - set(images):
                self.scheduler.forget(name)
                self.view.images.pop(name, None)
            self.images = images
            changes = await self._in_tracker(self.tracker.set_images, images)
            if self.roots() != roots:
                # Restart watching only when needed: events during a restart are lost.
                self.roots_changed.set()
            self._apply_digest_changes(changes, initial=not self.view.ready)

    # -- file events and the stat sweep -------------------------------------------------

    async def handle_paths(self, paths: set[Path]) -> None:
        """One batch of relevant changed paths from the watcher."""
        definitions = self.definitions.paths()
        touched = self.definitions.touched_by(paths)
        if touched:
            roots = self.roots()
            for path in sorted(touched):
                await self.definitions.load(path, load_timeout=self._settings().load_timeout)
            await self._refresh_images(roots_before=roots)
        other = {p for p in paths if p not in definitions}
        if not other:
            return
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.apply_changes, other)
            if not changes:
                self.emit(NothingToDo(paths=sorted(str(p) for p in other)[:10]))
            self._apply_digest_changes(changes)

    async def restat(self) -> None:
        """The stat sweep: catch the edits the watcher missed, re-stat every input."""
        async with self._tracker_lock:
            changes = await self._in_tracker(self.tracker.restat)
            self._apply_digest_changes(changes)

    async def collect_late_walks(self) -> None:
        """A first walk that ran out of time (a hung mount) and has ended since: adopt it, so
        its images recover without waiting for an edit or the stat sweep."""
        async with self._tracker_lock:
            roots = self.roots()
            changes = await self._in_tracker(self.tracker.collect_walks)
            if self.roots() != roots:  # a code bundle's walk found the .gitignore to watch
                self.roots_changed.set()
            self._apply_digest_changes(changes)

    def ignored(self, paths: set[Path]) -> None:
        """Changes no image depends on (ignored by a rule, or unrelated): counted, and said
        once a second at most so a noisy folder cannot flood the event stream."""
        self.metrics.events.inc("ignored", len(paths))
        now = time.monotonic()
        if now - self._last_ignored_event >= 1.0:
            self._last_ignored_event = now
            self.emit(Ignored(paths=sorted(str(p) for p in paths)[:10], count=len(paths)))

    async def current_tags(self) -> tuple[dict[str, Image], dict[str, str]]:
        """The images and each one's content tag as the tracker has it now, taken together
        (for the registry check: a reload after this cannot leave a tag without its image)."""
        async with self._tracker_lock:
            images, digests = self.images, self.tracker.digests()
            return images, {n: digests[n].tag for n in images if n in digests}

    # -- what the watcher watches -------------------------------------------------------

    def roots(self) -> dict[Path, bool]:
        """Each folder to watch and whether recursively (the tracker's flag wins)."""
        roots = dict.fromkeys({p.parent for p in self.definitions.paths()}, False)
        roots.update(self.tracker.watch_roots())
        self.metrics.watched_paths = len(roots)
        return roots

    def is_relevant(self, path: Path) -> bool:
        return path in self.definitions.paths() or self.tracker.is_relevant(path)

    # -- digest changes -> scheduler requests -------------------------------------------

    def _apply_digest_changes(
        self, changes: dict[str, DigestChange], *, initial: bool = False
    ) -> None:
        self._report_hash_errors()
        for change in changes.values():
            if change.image in self.images:
                self._digest_moved(change, initial=initial)

    def _report_hash_errors(self) -> None:
        """An image with an unreadable input shows as failed until the input is back."""
        errors = {name: str(exc) for name, exc in self.tracker.errors.items()}
        for name, error in errors.items():
            if self._reported_errors.get(name) != error:
                self.emit(HashError(image=name, error=error))
        for name in set(self._reported_errors) - set(errors):
            if name in self.images:
                self.view.image(name).error = None
                self.scheduler.request(name, "its inputs are readable again")
        self._reported_errors = errors

    def _digest_moved(self, change: DigestChange, *, initial: bool = False) -> None:
        name = change.image
        tag = change.new_digest.removeprefix("sha256:")[:32]
        image = self.images[name]
        self.view.known_digest(name, tag, image.uri_for(tag) if image.name else None)
        if initial:
            return
        why = "; ".join(str(r) for r in change.reasons) or "digest moved"
        self.builds.changed(name)
        self.emit(Changed(image=name, tag=tag, why=why))
        # A temp or backup file in the change: the save may still be under way, so the
        # build waits the burst's quiet period, not settle_ms (one build per save).
        half_done = any(looks_half_done(f) for r in change.reasons for f in r.files)
        self.scheduler.request(name, why, half_done=half_done)

    async def _in_tracker(self, call: Callable[..., T], *args: Any) -> T:
        """One tracker call in a worker thread, so hashing never blocks the event loop; the
        caller holds ``_tracker_lock``. Builds wait meanwhile (see QuietClock)."""
        with self.clock.paused():
            return await anyio.to_thread.run_sync(call, *args)
