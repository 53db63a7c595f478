"""Test doubles for imaged's I/O adapters: file watcher backends, scripted or timed."""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
from watchfiles import Change

from imaged.daemon.watcher import RawBatch, StopSignal

Step = RawBatch | Callable[[], object]


class ScriptedWatchBackend:
    """A WatchBackend that plays a script and records the roots of every watch it starts
    (recursive ones in ``roots``, shallow ones in ``shallow``).

    Each step is a batch to yield or a callable to run (to edit files, or to ask for a
    restart; one that returns an awaitable, such as ``anyio.sleep(0.1)``, is awaited). Steps are shared across watch generations: after a restart the next
    generation goes on with the rest of the script. With the script spent, a generation
    waits for its stop signal like the real backend.

    >>> backend = ScriptedWatchBackend([{(Change.modified, "/src/a.py")}])
    """

    def __init__(self, steps: Iterable[Step] = (), *, poll_s: float = 0.002) -> None:
        self.steps: deque[Step] = deque(steps)
        self.roots: list[tuple[Path, ...]] = []
        self.shallow: list[tuple[Path, ...]] = []
        self.timings: list[tuple[int, int]] = []  # (debounce_ms, step_ms) of each watch
        self.poll_s = poll_s

    async def watch(
        self,
        paths: Sequence[Path],
        *,
        stop_event: StopSignal,
        debounce_ms: int,
        step_ms: int,
        shallow: Sequence[Path] = (),
    ) -> AsyncGenerator[RawBatch, None]:
        self.roots.append(tuple(paths))
        self.shallow.append(tuple(shallow))
        self.timings.append((debounce_ms, step_ms))
        while not stop_event.is_set():
            if not self.steps:
                await anyio.sleep(self.poll_s)
                continue
            step = self.steps.popleft()
            if callable(step):
                done = step()
                if inspect.isawaitable(done):
                    await done
            else:
                yield step
                await anyio.lowlevel.checkpoint()  # a real backend waits between batches


class TimedWatchBackend:
    """A WatchBackend that batches raw events in time as watchfiles' Rust notifier does:
    ``emit()`` is a raw OS event; ``watch()`` looks every ``step_ms`` and delivers what came
    once a look found nothing new, or once ``debounce_ms`` passed since it first saw an event
    (so a steady stream of events is cut into batches). Raw events that come while nobody
    is watching wait for the next look, as the notifier's buffer does."""

    def __init__(self) -> None:
        self.pending: set[tuple[Change, str]] = set()
        self.delivered: list[tuple[float, int]] = []  # (monotonic time, batch size)

    def emit(self, change: Change, path: Path) -> None:
        self.pending.add((change, str(path)))

    async def watch(
        self,
        paths: Sequence[Path],
        *,
        stop_event: StopSignal,
        debounce_ms: int,
        step_ms: int,
        shallow: Sequence[Path] = (),
    ) -> AsyncGenerator[RawBatch, None]:
        while not stop_event.is_set():
            if await self._one_batch(stop_event, debounce_ms / 1000, step_ms / 1000):
                batch, self.pending = self.pending, set()
                self.delivered.append((time.monotonic(), len(batch)))
                yield batch

    async def _one_batch(self, stop_event: StopSignal, debounce: float, step: float) -> bool:
        """Wait like ``RustNotify.watch``: True once a batch is ready, False on a stop."""
        last_size, deadline = 0, None
        while not stop_event.is_set():
            await anyio.sleep(step)
            size = len(self.pending)
            if size == 0:
                continue
            if size == last_size:
                return True
            last_size = size
            if deadline is None:
                deadline = time.monotonic() + debounce
            elif time.monotonic() > deadline:
                return True
        return False
