"""The file watcher adapter: watchfiles behind a small backend protocol, filtered and restartable."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, aclosing, nullcontext
from pathlib import Path
from typing import Protocol, cast

import anyio
import watchfiles
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from watchfiles import Change

from imaged.config import DEFAULTS
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

STEP_MS = 50  # how often a watcher with nothing to watch looks for a stop or a restart
# How often the backend looks for new raw OS events (the ``watch_step_ms`` setting): a batch
# ends at the first step that found no new one, or BATCH_STEPS steps after its first event.
# Both small, so that the watcher hears of each raw event within a step or two and the
# daemon's quiet clock stops then (a batch is "in hand" from its arrival): the quiet period
# before a build is measured from the last raw event, not from a batch delivery, and a
# steady stream of events never leaves the clock running for longer than about
# (BATCH_STEPS + 1) steps, well under the scheduler's ``settle_ms``. Not the ``debounce_ms``
# setting: that is a quiet period before a build, kept by the scheduler.
RAW_STEP_MS = DEFAULTS.watch_step_ms
BATCH_STEPS = 2
BATCH_MS = RAW_STEP_MS * BATCH_STEPS
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
    """Ends one watch generation: once ``ended()`` holds (the caller's stop, a restart
    request, the watcher closing), or on our own set(). The backend polls it from its thread."""

    def __init__(self, ended: Callable[[], bool]) -> None:
        self._ended = ended
        self._set = False

    def is_set(self) -> bool:
        return self._set or self._ended()

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


class _Held:
    """``busy()`` entered while any batch received from the backend is not yet handled:
    one span from the first arrival until the caller has handled every batch in hand."""

    def __init__(self, busy: Callable[[], AbstractContextManager[object]]) -> None:
        self._busy = busy
        self._count = 0
        self._span: AbstractContextManager[object] | None = None
        self._closed = False

    def take(self) -> None:
        if self._closed:
            return  # the watcher is closing: what still arrives is never handled
        if self._count == 0:
            # A plain context manager, not a cancel scope: it may be left from another task.
            self._span = self._busy()
            self._span.__enter__()
        self._count += 1

    def release(self, count: int) -> None:
        self._count = max(0, self._count - count)
        if self._count == 0 and self._span is not None:
            span, self._span = self._span, None
            span.__exit__(None, None, None)

    def close(self) -> None:
        self._closed = True
        self.release(self._count)


class _Producer:
    """The watching task: runs the backend generation after generation, and sends each raw
    batch on as it arrives (held until handled), while the caller handles earlier ones."""

    def __init__(
        self,
        roots: Callable[[], Roots],
        backend: WatchBackend,
        *,
        stop_event: StopSignal,
        restart: RestartFlag | None,
        debounce_ms: int,
        step_ms: int,
    ) -> None:
        self._roots = roots
        self._step_ms = step_ms
        self._backend = backend
        self._stop = stop_event
        self._requests = _Restart(restart)
        self._debounce_ms = debounce_ms
        self.closed = False
        self.plan: dict[Path, bool] | None = None
        self._generation = _GenerationStop(self._done)

    def _done(self) -> bool:
        return self.closed or self._stop.is_set()

    def _ended(self) -> bool:
        return self._done() or self._requests.pending()

    def replan_if_moved(self) -> None:
        """After a batch is handled: restart watching when the roots now plan otherwise."""
        if self.plan is not None and watch_plan(self._roots()) != self.plan:
            self._generation.set()  # the backend returns within a step; then we restart

    def close(self) -> None:
        self.closed = True  # the backend's thread sees it at its next step

    async def run(self, send: MemoryObjectSendStream[RawBatch], held: _Held) -> None:
        async with send:
            while not self._done():
                self._requests.take()
                self._generation = _GenerationStop(self._ended)
                self.plan = watch_plan(self._roots())
                if self.plan:
                    await self._watch(self.plan, send, held)
                else:
                    await _wait_until(self._generation)

    async def _watch(
        self, plan: dict[Path, bool], send: MemoryObjectSendStream[RawBatch], held: _Held
    ) -> None:
        batches = self._backend.watch(
            sorted(p for p, deep in plan.items() if deep),
            shallow=sorted(p for p, deep in plan.items() if not deep),
            stop_event=self._generation,
            debounce_ms=self._debounce_ms,
            step_ms=self._step_ms,
        )
        async with aclosing(batches):
            async for batch in batches:
                held.take()
                send.send_nowait(batch)


class _Batches:
    """What the caller iterates: the relevant paths of every raw batch received since it
    last asked, merged into one, filtered in a worker thread (the event loop runs on)."""

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[RawBatch],
        producer: _Producer,
        held: _Held,
        relevant: Callable[[Path], bool],
        on_ignored: Callable[[set[Path]], None] | None,
        stop_event: StopSignal,
    ) -> None:
        self._receive = receive
        self._producer = producer
        self._held = held
        self._relevant = relevant
        self._on_ignored = on_ignored
        self._stop = stop_event
        self._in_hand = 0

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> set[Path]:
        while True:
            self._release()  # the caller has handled the last batch (or it was ignored)
            self._producer.replan_if_moved()
            paths = await self._take()
            found = await anyio.to_thread.run_sync(_keep, self._relevant, paths)
            if found:
                return found
            if self._on_ignored is not None and paths:
                self._on_ignored(paths)

    def _release(self) -> None:
        self._held.release(self._in_hand)
        self._in_hand = 0

    async def _take(self) -> set[Path]:
        """Every raw batch received so far (at least one), as paths."""
        if self._stop.is_set():
            raise StopAsyncIteration
        try:
            batches = [await self._receive.receive()]
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
            while True:
                batches.append(self._receive.receive_nowait())
        self._in_hand = len(batches)
        return {Path(path) for batch in batches for _, path in batch}


def _keep(relevant: Callable[[Path], bool], paths: set[Path]) -> set[Path]:
    return {p for p in paths if relevant(p)}


@contextlib.asynccontextmanager
async def watch_paths(
    roots: Callable[[], Roots],
    relevant: Callable[[Path], bool],
    *,
    stop_event: StopSignal,
    backend: WatchBackend | None = None,
    debounce_ms: int | None = None,
    step_ms: int = RAW_STEP_MS,
    restart: RestartFlag | None = None,
    on_ignored: Callable[[set[Path]], None] | None = None,
    busy: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> AsyncIterator[AsyncIterator[set[Path]]]:
    """Watch; the block iterates batches of relevant changed absolute paths until
    ``stop_event`` is set (or the block ends).

    The backend looks for raw events every ``step_ms``; a batch ends at a step with none
    new, or ``debounce_ms`` (default ``BATCH_STEPS`` steps) after its first event.

    ``roots()`` maps each folder to whether to watch it recursively (see :func:`watch_plan`;
    a plain set watches every folder recursively). Watching restarts with fresh ``roots()``
    when ``restart`` is set, after any batch that changed the plan (a reload, a root that
    appeared or disappeared): a root that does not exist yet is watched through its nearest
    existing parent folder, and ``relevant`` keeps the noise out; ``on_ignored`` hears about
    each batch that held nothing relevant.

    A task in this block's task group keeps receiving from the backend while the caller
    handles a batch; what arrives meanwhile is the next batch, merged. ``busy()`` is entered
    when a raw batch arrives from the backend (within a few ms of its raw events) and left
    once the caller has handled all it received and asks for more: the daemon's quiet
    period leaves that time out, so it counts from a burst's last raw event, and neither the
    backend's batching, nor the filter, nor hashing is mistaken for quiet.

    >>> # async with watch_paths(tracker.watch_roots, tracker.is_relevant,
    >>> #                        stop_event=stop) as batches:
    >>> #     async for paths in batches: tracker.apply_changes(paths)
    """
    producer = _Producer(
        roots,
        backend or WatchfilesBackend(),
        stop_event=stop_event,
        restart=restart,
        debounce_ms=step_ms * BATCH_STEPS if debounce_ms is None else debounce_ms,
        step_ms=step_ms,
    )
    held = _Held(busy)
    send, receive = anyio.create_memory_object_stream[RawBatch](math.inf)
    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(producer.run, send, held)
        try:
            yield _Batches(receive, producer, held, relevant, on_ignored, stop_event)
        finally:
            producer.close()
            held.close()
            tg.cancel_scope.cancel()
