"""Test doubles for imaged's I/O adapters: a scripted file watcher backend."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path

import anyio

from imaged.daemon.watcher import RawBatch, StopSignal

Step = RawBatch | Callable[[], object]


class ScriptedWatchBackend:
    """A WatchBackend that plays a script and records the roots of every watch it starts
    (recursive ones in ``roots``, shallow ones in ``shallow``).

    Each step is a batch to yield or a callable to run (to edit files, or to ask for a
    restart). Steps are shared across watch generations: after a restart the next
    generation goes on with the rest of the script. With the script spent, a generation
    waits for its stop signal like the real backend.

    >>> backend = ScriptedWatchBackend([{(Change.modified, "/src/a.py")}])
    """

    def __init__(self, steps: Iterable[Step] = (), *, poll_s: float = 0.002) -> None:
        self.steps: deque[Step] = deque(steps)
        self.roots: list[tuple[Path, ...]] = []
        self.shallow: list[tuple[Path, ...]] = []
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
        while not stop_event.is_set():
            if not self.steps:
                await anyio.sleep(self.poll_s)
                continue
            step = self.steps.popleft()
            if callable(step):
                step()
            else:
                yield step
