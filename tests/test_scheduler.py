"""The scheduler with a fake build: debounce, limits, supersede, parents, retries, forget."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from imaged.daemon.scheduler import Scheduler, SchedulerOptions
from imaged.errors import BuildError, EngineError, RegistryUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

FAST: dict[str, Any] = {"debounce": 0.05, "max_wait": 1.0, "retry_initial": 0.02, "retry_max": 1.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeBuild:
    """A build coroutine that records calls, start and end times, cancellations and overlap.

    ``script`` maps an image to what its successive calls do: a float sleeps that long,
    an exception is raised, ``"hang"`` waits until cancelled, ``"raise-on-cancel"`` waits
    and turns the cancellation into a BuildError. Calls past the script sleep ``duration``.
    """

    duration: float = 0.0
    script: dict[str, list[Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    starts: dict[str, list[float]] = field(default_factory=dict)
    ends: dict[str, list[float]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_total: int = 0
    max_per_image: int = 0

    async def __call__(self, name: str, reason: str) -> None:
        self.calls.append((name, reason))
        self.starts.setdefault(name, []).append(time.monotonic())
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        self.max_per_image = max(self.max_per_image, self.in_flight[name])
        self.max_total = max(self.max_total, sum(self.in_flight.values()))
        try:
            await self._step(name)
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(name)
            raise
        finally:
            self.in_flight[name] -= 1
        self.ends.setdefault(name, []).append(time.monotonic())

    async def _step(self, name: str) -> None:
        steps = self.script.get(name, [])
        step = steps.pop(0) if steps else self.duration
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await anyio.sleep_forever()
        if step == "raise-on-cancel":
            try:
                await anyio.sleep_forever()
            finally:
                self.cancelled.append(name)
                raise BuildError("cleanup failed while cancelled", image=name)
        await anyio.sleep(step)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make_scheduler(
    build: FakeBuild,
    events: list[dict[str, Any]] | None = None,
    *,
    parents: Callable[[str], tuple[str, ...]] = lambda name: (),
    **options: Any,
) -> Scheduler:
    sink = events.append if events is not None else None
    return Scheduler(build, SchedulerOptions(**{**FAST, **options}), parents=parents, on_event=sink)


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        yield scheduler
        tg.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], within: float = 2.0) -> None:
    with anyio.fail_after(within):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


def kinds(events: Iterable[dict[str, Any]], image: str = "a") -> list[str]:
    return [e["event"] for e in events if e["image"] == image]


# -- debounce -------------------------------------------------------------------------------


async def test_requests_within_quiet_period_merge_into_one_build_with_last_reason() -> None:
    build = FakeBuild()
    sched = make_scheduler(build)
    async with running(sched):
        for i in range(10):
            sched.request("a", f"edit {i}")
            await anyio.sleep(0.002)
        await wait_for(lambda: bool(build.ends))
        await anyio.sleep(0.15)
    assert build.calls == [("a", "edit 9")]


@dataclass
class ManualClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("options", "gaps", "image", "quiet"),
    [
        pytest.param({}, [], "a", 0.025, id="a-save-waits-settle"),
        pytest.param({}, [0.01], "a", 0.2, id="a-second-request-soon-after-is-a-burst"),
        pytest.param({}, [0.01, 0.15, 0.19], "a", 0.2, id="a-burst-goes-on-request-by-request"),
        pytest.param({}, [0.3], "a", 0.025, id="after-a-quiet-spell-settle-again"),
        pytest.param({"debounce": 0.0}, [], "a", 0.0, id="no-debounce-no-settle"),
        pytest.param({"settle": 0.5}, [], "a", 0.2, id="settle-never-past-debounce"),
        pytest.param({"half_done": True}, [], "a", 0.2, id="a-half-done-save-waits-debounce"),
        pytest.param({}, [], "slow", 0.3, id="per-image-replaces-settle"),
        pytest.param({}, [0.01], "slow", 0.3, id="per-image-replaces-debounce"),
    ],
)
def test_the_quiet_period_of_a_request(
    options: dict[str, float], gaps: list[float], image: str, quiet: float
) -> None:
    clock = ManualClock()
    options = dict(options)
    half_done = bool(options.pop("half_done", False))
    settings = {"debounce": 0.2, "settle": 0.025, "max_wait": 5.0} | options
    sched = Scheduler(
        FakeBuild(),
        SchedulerOptions(**settings, per_image_debounce={"slow": 0.3}),
        clock=clock,
    )
    sched.request(image, "edit", half_done=half_done)
    for gap in gaps:
        clock.now += gap
        sched.request(image, "edit")
    assert sched.slots[image].due == pytest.approx(clock.now + quiet)


async def test_a_save_builds_after_settle_and_a_burst_waits_for_debounce() -> None:
    build = FakeBuild()
    sched = make_scheduler(build, debounce=30.0, settle=0.01)
    async with running(sched):
        sched.request("a", "save")
        await wait_for(lambda: len(build.calls) == 1)  # long before the 30 s debounce
        sched.request("b", "checkout 1")
        sched.request("b", "checkout 2")
        await anyio.sleep(0.3)
        assert sched.slots["b"].phase == "queued"  # waits the burst's quiet period
    assert build.calls == [("a", "save")]


async def test_endless_stream_of_requests_still_builds_by_max_wait() -> None:
    build = FakeBuild()
    sched = make_scheduler(build, debounce=0.05, max_wait=0.2)
    async with running(sched):
        first = time.monotonic()
        while not build.starts and time.monotonic() - first < 1.0:
            sched.request("a", "edit")
            await anyio.sleep(0.02)
    assert build.starts, "a stream of requests every 20 ms never let the build start"
    assert 0.19 <= build.starts["a"][0] - first <= 0.35


async def test_per_image_debounce_overrides_the_default() -> None:
    build = FakeBuild()
    sched = make_scheduler(build, debounce=0.02, per_image_debounce={"slow": 0.3})
    async with running(sched):
        requested = time.monotonic()
        sched.request("slow", "edit")
        sched.request("fast", "edit")
        await wait_for(lambda: len(build.starts) == 2)
    assert build.starts["fast"][0] - requested < 0.15
    assert build.starts["slow"][0] - requested >= 0.29
    assert build.names() == ["fast", "slow"]


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "supersede", [pytest.param("cancel", id="cancel"), pytest.param("queue", id="queue")]
)
async def test_never_two_builds_of_one_image_at_once(supersede: str) -> None:
    build = FakeBuild(duration=0.04)
    sched = make_scheduler(build, debounce=0.0, supersede=supersede)
    async with running(sched):
        for i in range(15):
            sched.request("a", f"edit {i}")
            await anyio.sleep(0.01)
        await wait_for(sched.idle)
    assert build.max_per_image == 1
    assert len(build.calls) >= 2
    assert build.calls[-1] == ("a", "edit 14")


async def test_global_concurrency_limit_holds_across_images() -> None:
    build = FakeBuild(duration=0.05)
    sched = make_scheduler(build, debounce=0.01, concurrency=2)
    names = [f"img{i}" for i in range(5)]
    async with running(sched):
        for name in names:
            sched.request(name, "edit")
        await wait_for(lambda: sum(len(v) for v in build.ends.values()) == 5)
    assert build.max_total == 2
    assert sorted(build.names()) == names


async def test_new_options_change_the_concurrency_limit() -> None:
    build = FakeBuild(duration=0.08)
    sched = make_scheduler(build, debounce=0.01, concurrency=1)
    sched.options = SchedulerOptions(**{**FAST, "debounce": 0.01, "concurrency": 3})
    async with running(sched):
        for name in ("x", "y", "z"):
            sched.request(name, "edit")
        await wait_for(lambda: len(build.ends) == 3)
    assert build.max_total == 3


# -- supersede ------------------------------------------------------------------------------


async def test_supersede_cancel_cancels_the_stale_build_and_builds_the_newest_once() -> None:
    build = FakeBuild(script={"a": ["hang"]})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, supersede="cancel")
    async with running(sched):
        sched.request("a", "first")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "second")
        sched.request("a", "third")
        await wait_for(lambda: bool(build.ends))
        await anyio.sleep(0.15)
    assert build.cancelled == ["a"]
    assert build.calls == [("a", "first"), ("a", "third")]
    assert len(build.ends["a"]) == 1
    assert sched.slots["a"].phase == "idle"


async def test_supersede_queue_lets_the_build_finish_then_builds_once_more() -> None:
    build = FakeBuild(script={"a": [0.15]})
    sched = make_scheduler(build, supersede="queue")
    async with running(sched):
        sched.request("a", "first")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "second")
        sched.request("a", "third")
        await wait_for(lambda: len(build.ends.get("a", [])) == 2)
        await anyio.sleep(0.15)
    assert build.cancelled == []
    assert build.calls == [("a", "first"), ("a", "third")]
    assert build.starts["a"][1] >= build.ends["a"][0]


async def test_error_raised_while_cancelled_counts_as_superseded_not_failed() -> None:
    build = FakeBuild(script={"a": ["raise-on-cancel"]})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, supersede="cancel")
    async with running(sched):
        sched.request("a", "first")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "second")
        await wait_for(lambda: bool(build.ends))
        await anyio.sleep(0.1)
    assert "failed" not in kinds(events)
    assert build.calls == [("a", "first"), ("a", "second")]
    assert sched.slots["a"].phase == "idle"


async def test_request_while_waiting_for_a_build_slot_cancels_the_waiting_build() -> None:
    build = FakeBuild(script={"x": [0.2]})
    sched = make_scheduler(build, debounce=0.01, concurrency=1, supersede="cancel")
    async with running(sched):
        sched.request("x", "edit")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "first")
        await wait_for(lambda: sched.slots["a"].building)
        sched.request("a", "second")
        await wait_for(lambda: "a" in build.ends)
    assert build.calls == [("x", "edit"), ("a", "second")]


# -- parents --------------------------------------------------------------------------------


async def test_child_starts_only_after_its_parent_finished() -> None:
    build = FakeBuild(duration=0.1)
    clock_calls = 0

    def clock() -> float:
        nonlocal clock_calls
        clock_calls += 1
        return time.monotonic()

    sched = Scheduler(
        build,
        SchedulerOptions(**{**FAST, "debounce": 0.01}),
        parents=lambda name: ("base",) if name == "app" else (),
        clock=clock,
    )
    async with running(sched):
        sched.request("app", "edit")
        sched.request("base", "edit")
        await wait_for(lambda: "app" in build.ends)
    assert build.names() == ["base", "app"]
    assert build.starts["app"][0] >= build.ends["base"][0]
    # The loop sleeps while the child waits; it does not spin on the child's past due time.
    assert clock_calls < 50


async def test_forgetting_a_queued_parent_releases_its_child() -> None:
    build = FakeBuild()
    sched = make_scheduler(
        build,
        debounce=0.01,
        per_image_debounce={"base": 5.0},
        parents=lambda name: ("base",) if name == "app" else (),
    )
    async with running(sched):
        sched.request("base", "edit")
        sched.request("app", "edit")
        await anyio.sleep(0.05)
        assert build.calls == []
        sched.forget("base")
        await wait_for(lambda: "app" in build.ends, within=1.0)
    assert build.names() == ["app"]


# -- failures -------------------------------------------------------------------------------


async def test_transient_errors_retry_with_growing_backoff_then_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jitter: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        jitter.append((low, high))
        return high

    monkeypatch.setattr("imaged.daemon.scheduler.random.uniform", uniform)
    errors = [EngineError("engine down"), RegistryUnavailable("503"), EngineError("down")]
    build = FakeBuild(script={"a": list(errors)})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, debounce=0.0, retry_initial=0.05)
    async with running(sched):
        sched.request("a", "edit")
        await wait_for(lambda: "a" in build.ends)
    delays = [e["delay"] for e in events if e["event"] == "retrying"]
    assert delays == [0.05, 0.1, 0.2]
    assert jitter == [(0.5, 1.0)] * 3
    starts = build.starts["a"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 0.045
    assert gaps[1] >= 0.095
    assert gaps[2] >= 0.195
    assert (sched.slots["a"].attempts, sched.slots["a"].phase) == (0, "idle")
    assert sched.slots["a"].last_error is None


async def test_transient_retry_due_time_is_jittered_within_half_to_full_delay() -> None:
    build = FakeBuild(script={"a": [EngineError("down")] * 2})
    sched = make_scheduler(build, debounce=0.0, retry_initial=10.0, retry_max=15.0)
    windows: list[tuple[float, float, float]] = []
    async with running(sched):
        for attempt in (1, 2):
            before = time.monotonic()
            sched.request("a", "edit")  # a request does not wait for the backoff
            await wait_for(lambda: sched.slots["a"].phase == "retrying")
            due = sched.slots["a"].due
            assert due is not None
            assert sched.slots["a"].attempts == attempt
            windows.append((before, due, time.monotonic()))
    (b1, due1, a1), (b2, due2, a2) = windows
    assert b1 + 0.5 * 10.0 <= due1 <= a1 + 10.0
    # The second failure in a row doubles the delay (20 s), capped at retry_max (15 s).
    assert b2 + 0.5 * 15.0 <= due2 <= a2 + 15.0


async def test_build_error_fails_without_retry_until_a_new_request() -> None:
    build = FakeBuild(script={"a": [BuildError("RUN false failed", image="a")]})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, debounce=0.01, retry_initial=0.01)
    async with running(sched):
        sched.request("a", "edit")
        await wait_for(lambda: sched.slots["a"].phase == "failed")
        await anyio.sleep(0.2)
        assert build.calls == [("a", "edit")]
        assert sched.idle()
        assert "RUN false failed" in (sched.slots["a"].last_error or "")
        sched.request("a", "fixed")
        await wait_for(lambda: "a" in build.ends)
    assert build.calls == [("a", "edit"), ("a", "fixed")]
    assert "retrying" not in kinds(events)
    assert sched.slots["a"].phase == "idle"


# -- forget ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [pytest.param("hang", id="cancels-cleanly"), pytest.param("raise-on-cancel", id="raises")],
)
async def test_forget_cancels_a_running_build_and_the_slot_stays_gone(step: str) -> None:
    build = FakeBuild(script={"a": [step]})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, debounce=0.0)
    async with running(sched):
        sched.request("a", "edit")
        await wait_for(lambda: bool(build.starts))
        seen = len(events)
        sched.forget("a")
        await wait_for(lambda: build.in_flight["a"] == 0)
        await anyio.sleep(0.1)
    assert build.cancelled == ["a"]
    assert "a" not in sched.slots
    assert events[seen:] == []
    assert build.calls == [("a", "edit")]


async def test_forget_while_waiting_for_a_build_slot_never_builds() -> None:
    build = FakeBuild(script={"x": [0.15]})
    sched = make_scheduler(build, debounce=0.0, concurrency=1)
    async with running(sched):
        sched.request("x", "edit")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "edit")
        await wait_for(lambda: sched.slots["a"].building)
        sched.forget("a")
        await wait_for(lambda: "x" in build.ends)
        await anyio.sleep(0.05)
    assert build.names() == ["x"]
    assert "a" not in sched.slots


async def test_forget_right_after_dispatch_never_builds() -> None:
    build = FakeBuild()
    sched = make_scheduler(build, debounce=0.0)
    async with anyio.create_task_group() as tg:
        sched.request("a", "edit")
        sched._dispatch_due(tg)  # the build task exists but has not run yet
        sched.forget("a")
    assert build.calls == []
    assert sched.slots == {}


# -- events and counters --------------------------------------------------------------------


async def test_events_are_emitted_in_order() -> None:
    script: list[Any] = ["hang", EngineError("engine down"), BuildError("RUN false", image="a")]
    build = FakeBuild(script={"a": script})
    events: list[dict[str, Any]] = []
    sched = make_scheduler(build, events, debounce=0.01, retry_initial=0.02)
    async with running(sched):
        sched.request("a", "first")
        await wait_for(lambda: bool(build.starts))
        sched.request("a", "second")
        await wait_for(lambda: sched.slots["a"].phase == "failed")
    assert kinds(events) == [
        "queued",
        "building",
        "superseded",
        "queued",
        "building",
        "retrying",
        "building",
        "failed",
    ]
    assert [e.get("reason") for e in events[:4]] == ["first", "first", "second", "second"]
    assert events[-1]["error"].startswith("image 'a': RUN false")


async def test_queue_depth_and_active_count() -> None:
    build = FakeBuild(script={"a": ["hang"]})
    sched = make_scheduler(build, debounce=0.0, per_image_debounce={"b": 5.0})
    async with running(sched):
        sched.request("a", "edit")
        sched.request("b", "edit")
        await wait_for(lambda: bool(build.starts))
        assert (sched.queue_depth, sched.active, sched.idle()) == (1, 1, False)
        sched.forget("a")
        sched.forget("b")
        assert (sched.queue_depth, sched.active, sched.idle()) == (0, 0, True)
