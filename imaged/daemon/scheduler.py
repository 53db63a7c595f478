"""Decide when each image builds: settle or debounce, one build per image, a global limit,
cancel-or-queue superseded builds, parents first, and retries for transient failures.

The scheduler knows nothing of Docker: it calls an injected ``build(name, reason)``
coroutine, so tests drive it with fakes and the daemon plugs in the real engine.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from imaged.config import DEFAULTS, Supersede
from imaged.errors import is_transient
from imaged.events import Building, EventSink, Failed, Queued, Retrying, Superseded, send

BuildFunc = Callable[[str, str], Awaitable[Any]]


@dataclass
class SchedulerOptions:
    """Timing and concurrency settings (seconds); the defaults are the settings' defaults.

    ``settle`` is the quiet period of the first request after a quiet spell (a save);
    ``debounce`` that of a request that follows another within ``debounce`` (a burst);
    ``per_image_debounce`` replaces both for one image.
    """

    debounce: float = DEFAULTS.debounce_ms / 1000
    settle: float = DEFAULTS.settle_ms / 1000
    max_wait: float = DEFAULTS.max_wait_ms / 1000
    concurrency: int = DEFAULTS.concurrency
    supersede: Supersede = DEFAULTS.supersede
    retry_initial: float = 1.0
    retry_max: float = 60.0
    per_image_debounce: Mapping[str, float] = field(default_factory=dict)


@dataclass
class ImageSlot:
    """One image in the scheduler: its phase, the pending request, the build in flight."""

    name: str
    phase: str = "idle"  # idle | queued | building | failed | retrying
    reason: str = ""
    first_request: float | None = None
    last_request: float | None = None
    due: float | None = None
    generation: int = 0
    built_generation: int = 0
    scope: anyio.CancelScope | None = None
    building: bool = False
    attempts: int = 0
    last_error: str | None = None


class Scheduler:
    """Queue of image build requests with debounce and supersede semantics."""

    def __init__(
        self,
        build: BuildFunc,
        options: SchedulerOptions | None = None,
        *,
        parents: Callable[[str], tuple[str, ...]] = lambda name: (),
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._limiter = anyio.CapacityLimiter(1)
        self.options = options or SchedulerOptions()
        self._parents = parents
        self._on_event = on_event
        self._clock = clock
        self.slots: dict[str, ImageSlot] = {}
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None

    @property
    def options(self) -> SchedulerOptions:
        return self._options

    @options.setter
    def options(self, options: SchedulerOptions) -> None:
        """New settings (a reload) apply to the next request; the limit to the next build."""
        self._options = options
        self._limiter.total_tokens = max(1, options.concurrency)

    # -- requests

    def request(self, name: str, reason: str, *, half_done: bool = False) -> None:
        """Ask for a build of ``name``; repeated requests within the quiet period merge.

        The first request after a quiet spell waits ``settle`` (an editor's save builds at
        once, nearly); one within ``debounce`` of the last request is part of a burst and
        waits ``debounce`` (a checkout starts one build after it, not one per batch), as
        does a ``half_done`` one (an editor's temp or backup file is in it: the rename that
        ends the save may come later than ``settle``)."""
        slot = self.slots.setdefault(name, ImageSlot(name))
        now = self._clock()
        quiet = self._quiet_period(slot, now, half_done=half_done)
        slot.last_request = now
        if slot.first_request is None:
            slot.first_request = now
        slot.due = min(now + quiet, slot.first_request + self.options.max_wait)
        slot.generation += 1
        slot.reason = reason
        if slot.building and self.options.supersede == "cancel" and slot.scope is not None:
            slot.scope.cancel()
            send(self._on_event, Superseded(image=name, reason=reason))
        if not slot.building and slot.phase != "queued":
            # One event when the image becomes queued; merged requests only move the due time.
            slot.phase = "queued"
            send(self._on_event, Queued(image=name, reason=reason))
        self._wake.set()

    def _quiet_period(self, slot: ImageSlot, now: float, *, half_done: bool) -> float:
        options = self.options
        if slot.name in options.per_image_debounce:
            return options.per_image_debounce[slot.name]
        recent = slot.last_request is not None and now - slot.last_request < options.debounce
        burst = half_done or recent
        return options.debounce if burst else min(options.settle, options.debounce)

    def forget(self, name: str) -> None:
        """Drop an image that no longer exists in the definitions."""
        slot = self.slots.pop(name, None)
        if slot is not None and slot.scope is not None:
            slot.scope.cancel()
        self._wake.set()  # a child waiting for this image may go now

    @property
    def queue_depth(self) -> int:
        return sum(1 for s in self.slots.values() if s.due is not None and not s.building)

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots.values() if s.building)

    def idle(self) -> bool:
        return all(s.due is None and not s.building for s in self.slots.values())

    # -- the loop

    async def run(self) -> None:
        """Dispatch due builds until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            while True:
                self._dispatch_due(tg)
                timeout = self._next_wakeup()
                with anyio.move_on_after(timeout):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def _next_wakeup(self) -> float:
        # A slot waiting for its parent is left out: the parent's end wakes the loop, and
        # counting its past due time here would spin the loop while the parent builds.
        now = self._clock()
        dues = [
            s.due
            for s in self.slots.values()
            if s.due is not None and not s.building and not self._blocked_by_parent(s.name)
        ]
        return max(0.0, min(dues) - now) if dues else math.inf

    def _blocked_by_parent(self, name: str) -> bool:
        for parent in self._parents(name):
            slot = self.slots.get(parent)
            if slot is not None and (slot.building or slot.due is not None):
                return True
        return False

    def _dispatch_due(self, tg: TaskGroup) -> None:
        now = self._clock()
        for slot in list(self.slots.values()):
            if slot.building or slot.due is None or slot.due > now:
                continue
            if self._blocked_by_parent(slot.name):
                continue
            slot.due = None
            slot.first_request = None
            slot.building = True
            # The scope exists before the task runs, so that a supersede or forget() right
            # now, or while the build waits for a concurrency slot, cancels it.
            slot.scope = anyio.CancelScope()
            tg.start_soon(self._run_one, slot, slot.scope, slot.generation)

    async def _run_one(self, slot: ImageSlot, scope: anyio.CancelScope, generation: int) -> None:
        outcome = "cancelled"
        with scope:
            try:
                async with self._limiter:
                    slot.phase = "building"
                    send(self._on_event, Building(image=slot.name, reason=slot.reason))
                    await self._build(slot.name, slot.reason)
                outcome = "ok"
            except Exception as exc:  # one failed build must not stop the others
                slot.last_error = str(exc)
                # An error raised while the build was being cancelled is part of the cancel.
                if not scope.cancel_called:
                    outcome = "transient" if is_transient(exc) else "failed"
            finally:
                slot.building = False
                slot.scope = None
        self._after(slot, generation, outcome)

    def _after(self, slot: ImageSlot, generation: int, outcome: str) -> None:
        if self.slots.get(slot.name) is not slot:
            self._wake.set()  # forgotten while it built: report nothing, keep it gone
            return
        superseded = slot.generation != generation
        if outcome == "ok":
            slot.built_generation = generation
            slot.attempts = 0
            slot.phase = "idle"
            slot.last_error = None
        elif outcome == "transient" and not superseded:
            slot.attempts += 1
            delay = min(
                self.options.retry_max, self.options.retry_initial * 2 ** (slot.attempts - 1)
            )
            slot.due = self._clock() + delay * random.uniform(0.5, 1.0)  # jitter
            slot.phase = "retrying"
            retry = Retrying(image=slot.name, error=slot.last_error, delay=round(delay, 2))
            send(self._on_event, retry)
        elif outcome == "failed":
            slot.attempts = 0
            slot.phase = "failed"
            send(self._on_event, Failed(image=slot.name, error=slot.last_error))
        if superseded:
            # Changed while building: exactly one more build of the newest inputs.
            if slot.due is None:
                slot.due = self._clock()
            slot.phase = "queued"
            send(self._on_event, Queued(image=slot.name, reason=slot.reason))
        self._wake.set()
