"""abuild's single flight per URI (imaged.pipeline.build._single_flight): concurrent calls for
one image URI share one build (its result or its error); a forced call never joins an
unforced one; a call whose leader was cancelled builds itself."""

from __future__ import annotations

import anyio
import pytest

from imaged.errors import BuildError
from imaged.pipeline.build import ImageBuild, _single_flight


def _result(name: str, uri: str = "r/parent:t1") -> ImageBuild:
    return ImageBuild(name=name, uri=uri, tag="t1", digest="sha256:d", status="")


class Leader:
    """A build that waits for ``gate``, counting its runs."""

    def __init__(self, status: str = "pushed", error: Exception | None = None) -> None:
        self.runs = 0
        self.gate = anyio.Event()
        self.status, self.error = status, error

    async def __call__(self) -> ImageBuild:
        self.runs += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        built = _result("parent")
        built.status = self.status
        return built


def _gather(*calls: tuple[str, bool, Leader]) -> dict[str, ImageBuild | Exception]:
    outcomes: dict[str, ImageBuild | Exception] = {}

    async def one(name: str, force: bool, run: Leader) -> None:
        try:
            outcomes[name] = await _single_flight(_result(name), force, run)
        except BuildError as exc:
            outcomes[name] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(one, *call)
            await anyio.sleep(0.05)
            for _, _, run in calls:
                run.gate.set()

    anyio.run(main)
    return outcomes


def test_concurrent_calls_for_one_uri_build_once_and_share_the_result() -> None:
    run = Leader()
    # The first call leads (forced); unforced calls join a forced flight.
    outcomes = _gather(("parent", True, run), ("child-a", False, run), ("child-b", False, run))
    assert run.runs == 1
    assert {name: r.status for name, r in outcomes.items() if isinstance(r, ImageBuild)} == {
        "parent": "pushed",
        "child-a": "pushed",
        "child-b": "pushed",
    }
    assert {r.name for r in outcomes.values() if isinstance(r, ImageBuild)} == {
        "parent",
        "child-a",
        "child-b",
    }


def test_the_leaders_error_is_every_waiters_error() -> None:
    run = Leader(error=BuildError("RUN make failed", image="parent"))
    outcomes = _gather(("parent", False, run), ("child-a", False, run))
    assert run.runs == 1
    assert all(isinstance(o, BuildError) and "RUN make" in str(o) for o in outcomes.values())


def test_a_forced_call_does_not_join_an_unforced_one() -> None:
    unforced, forced = Leader(status="skipped"), Leader(status="pushed")
    outcomes = _gather(("child", False, unforced), ("parent", True, forced))
    assert (unforced.runs, forced.runs) == (1, 1)
    parent = outcomes["parent"]
    assert isinstance(parent, ImageBuild)
    assert parent.status == "pushed"


def test_a_waiter_whose_leader_is_cancelled_builds_itself() -> None:
    first, second = Leader(), Leader()
    got: list[ImageBuild] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            leader_scope = anyio.CancelScope()
            tg.start_soon(_leader, leader_scope, first)
            await anyio.sleep(0.02)
            tg.start_soon(_waiter, second, got)
            await anyio.sleep(0.02)
            leader_scope.cancel()
            await anyio.sleep(0.02)
            second.gate.set()

    async def _leader(scope: anyio.CancelScope, run: Leader) -> None:
        with scope:
            await _single_flight(_result("child-a"), False, run)

    async def _waiter(run: Leader, into: list[ImageBuild]) -> None:
        into.append(await _single_flight(_result("child-b"), False, run))

    anyio.run(main)
    assert (first.runs, second.runs) == (1, 1)
    assert [r.status for r in got] == ["pushed"]  # its own run()'s result


@pytest.mark.parametrize("uri", [pytest.param("r/a:1", id="a"), pytest.param("r/b:1", id="b")])
def test_calls_for_other_uris_do_not_wait(uri: str) -> None:
    async def main() -> ImageBuild:
        run = Leader()
        run.gate.set()
        return await _single_flight(_result("x", uri), False, run)

    assert anyio.run(main).uri == "r/parent:t1"  # run()'s own result, returned as it is
