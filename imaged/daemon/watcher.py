"""The file watcher adapter: watchfiles behind a small backend protocol, filtered and restartable."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, aclosing, nullcontext
from pathlib import Path
from typing import Protocol, cast

import anyio
import watchfiles
from watchfiles import Change

from imaged.daemon.tracker import outermost_paths

__all__ = [
    "RawBatch",
    "RestartFlag",
    "Roots",
    "StopSignal",
    "WatchBackend",
    "WatchfilesBackend",
    "existing_roots",
    "watch_paths",
    "watch_plan",
]

STEP_MS = 50
# How long the backend gathers raw OS events into one batch. Not the ``debounce_ms``
# setting: that is the daemon's quiet period before a build, kept by the scheduler.
BATCH_MS = 50
RUST_TIMEOUT_MS = 1_000

RawBatch = set[tuple[Change, str]]
# What to watch: each folder with whether to watch its whole subtree (True) or only its own
# entries (False); a plain set of folders means every one recursively.
Roots = Mapping[Path, bool] | Iterable[Path]


class StopSignal(Protocol):
    """What a backend polls to know when to return (``anyio.Event`` is one)."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class RestartFlag(Protocol):
    """Set it to restart watching with fresh roots. A resettable flag (``threading.Event``)
    is cleared each time watching restarts; a one-shot ``anyio.Event`` counts once."""

    def is_set(self) -> bool: ...


class WatchBackend(Protocol):
    """Yields raw batches of (change, absolute path) until ``stop_event`` is set: from
    everything below ``paths``, and from the direct entries of each ``shallow`` folder."""

    def watch(
        self,
        paths: Sequence[Path],
        *,
        stop_event: StopSignal,
        debounce_ms: int,
        step_ms: int,
        shallow: Sequence[Path] = (),
    ) -> AsyncGenerator[RawBatch, None]: ...


class WatchfilesBackend:
    """The real backend: the OS's notifications (inotify, FSEvents) through watchfiles.

    ``rust_timeout_ms`` bounds how long cancelling the watching task can take: the Rust
    thread only looks at the stop event between waits (watchfiles issue #110).
    """

    def __init__(self, *, rust_timeout_ms: int = RUST_TIMEOUT_MS) -> None:
        self.rust_timeout_ms = rust_timeout_ms

    async def watch(
        self,
        paths: Sequence[Path],
        *,
        stop_event: StopSignal,
        debounce_ms: int,
        step_ms: int,
        shallow: Sequence[Path] = (),
    ) -> AsyncGenerator[RawBatch, None]:
        # One recursive watcher over every root; events below a shallow root's own entries
        # are dropped here. (Two watchers merged through a task group would mean yielding
        # inside a task group, which an async generator cannot do safely: a cancel while the
        # consumer handles a batch would close it from the wrong task.)
        roots = (*paths, *shallow)
        deep = [str(p) for p in paths]
        flat = [str(p) for p in shallow]
        batches = watchfiles.awatch(
            *roots,
            stop_event=cast("anyio.Event", stop_event),
            debounce=debounce_ms,
            step=step_ms,
            recursive=True,
            watch_filter=None,
            rust_timeout=self.rust_timeout_ms,
            yield_on_timeout=False,
        )
        async for batch in batches:
            kept = {(c, p) for c, p in batch if _wanted(p, deep, flat)}
            if kept:
                yield kept


def _wanted(path: str, deep: Sequence[str], shallow: Sequence[str]) -> bool:
    """Below a deep root at any depth, or a direct entry (or the folder) of a shallow one."""
    if any(path == root or path.startswith(root + os.sep) for root in deep):
        return True
    parent = os.path.dirname(path)
    return any(path == root or parent == root for root in shallow)


class _Restart:
    """Restart requests from a resettable or a one-shot flag."""

    def __init__(self, flag: RestartFlag | None) -> None:
        self.flag = flag
        self.spent = False

    def pending(self) -> bool:
        return self.flag is not None and not self.spent and self.flag.is_set()

    def take(self) -> None:
        clear = getattr(self.flag, "clear", None)
        if callable(clear):
            clear()
        elif self.pending():
            self.spent = True


class _GenerationStop:
    """Ends one watch generation: on the caller's stop, a restart request, or our own set()."""

    def __init__(self, stop: StopSignal, restart: _Restart) -> None:
        self._stop = stop
        self._restart = restart
        self._set = False

    def is_set(self) -> bool:
        return self._set or self._restart.pending() or self._stop.is_set()

    def set(self) -> None:
        self._set = True


def _nearest_folder(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def existing_roots(paths: Iterable[Path]) -> set[Path]:
    """Each path, or its nearest existing parent folder; then only the outermost ones."""
    return outermost_paths(_nearest_folder(p) for p in paths)


def _covered(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def watch_plan(roots: Roots) -> dict[Path, bool]:
    """The folders to watch now, each with its recursive flag: the outermost existing
    recursive roots, then each shallow root no recursive one covers. A root that does not
    exist yet is watched through its nearest existing parent folder, with its own flag.

    >>> # watch_plan({Path("/repo/api"): True, Path("/repo"): False})
    >>> # {Path("/repo/api"): True, Path("/repo"): False}
    """
    flags = dict(roots) if isinstance(roots, Mapping) else dict.fromkeys(roots, True)
    deep = existing_roots(path for path, recursive in flags.items() if recursive)
    shallow = {_nearest_folder(path) for path, recursive in flags.items() if not recursive}
    plan = dict.fromkeys(deep, True)
    plan.update((folder, False) for folder in shallow if not _covered(folder, deep))
    return plan


async def _wait_until(signal: StopSignal) -> None:
    # The signal combines flags that other tasks or threads set: there is no one event to await.
    while not signal.is_set():  # noqa: ASYNC110
        await anyio.sleep(STEP_MS / 1000)


async def watch_paths(
    roots: Callable[[], Roots],
    relevant: Callable[[Path], bool],
    *,
    stop_event: StopSignal,
    backend: WatchBackend | None = None,
    debounce_ms: int = BATCH_MS,
    restart: RestartFlag | None = None,
    on_ignored: Callable[[set[Path]], None] | None = None,
    busy: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> AsyncGenerator[set[Path], None]:
    """Yield batches of relevant changed absolute paths until ``stop_event`` is set.

    ``roots()`` maps each folder to whether to watch it recursively (see :func:`watch_plan`;
    a plain set watches every folder recursively). Watching restarts with fresh ``roots()``
    when ``restart`` is set, after any batch that changed the plan (a reload, a root that
    appeared or disappeared): a root that does not exist yet is watched through its nearest
    existing parent folder, and ``relevant`` keeps the noise out; ``on_ignored`` hears about
    each batch that held nothing relevant. ``busy()`` is entered when a batch arrives from
    the backend and left when the caller asks for the next one: a batch is in hand from
    before its filtering until the caller has handled it (the daemon's quiet period leaves
    that time out, so a burst's next batch is never mistaken for quiet).

    >>> # async for paths in watch_paths(tracker.watch_roots, tracker.is_relevant,
    >>> #                                stop_event=stop): tracker.apply_changes(paths)
    """
    backend = backend or WatchfilesBackend()
    requests = _Restart(restart)
    while not stop_event.is_set():
        requests.take()
        watched = watch_plan(roots())
        generation = _GenerationStop(stop_event, requests)
        if not watched:
            await _wait_until(generation)
            continue
        batches = backend.watch(
            sorted(p for p, deep in watched.items() if deep),
            shallow=sorted(p for p, deep in watched.items() if not deep),
            stop_event=generation,
            debounce_ms=debounce_ms,
            step_ms=STEP_MS,
        )
        async with aclosing(batches):
            async for batch in batches:
                # A plain context manager, not a cancel scope: it may stay open over a yield.
                with busy():
                    paths = {Path(path) for _, path in batch}
                    found = {p for p in paths if relevant(p)}
                    if found:
                        yield found
                    elif on_ignored is not None and paths:
                        on_ignored(paths)
                if watch_plan(roots()) != watched:
                    generation.set()  # the backend returns within step_ms; then we restart
