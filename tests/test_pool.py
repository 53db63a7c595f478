"""The pool builder's logic with fake engines: placement (affinity, family, load, labels),
capacity, failover, probes with backoff, every engine down; the pool settings and their errors."""

from __future__ import annotations

import stat
import sys
import types
from pathlib import Path
from typing import Any

import anyio
import pytest

from imaged.builders.base import BuildOutcome, BuildRequest, get_builder
from imaged.builders.pool import PROBE_MAX, Engine, PoolBuilder, engines_from_settings
from imaged.config import PoolEntry, Settings, load_settings
from imaged.daemon.metrics import Metrics
from imaged.daemon.views import DaemonView
from imaged.errors import BuildError, ConfigError, EngineError, is_transient
from imaged.events import Building, Pushed


@pytest.fixture(autouse=True)
def clean_env(isolated_settings: Path) -> Path:
    return isolated_settings


class FakeEngine:
    """A builder whose builds and checks a test scripts."""

    name = "fake"

    def __init__(self, label: str) -> None:
        self.label = label
        self.built: list[str] = []
        self.fail: BaseException | None = None
        self.answers = True
        self.hangs = False  # check() never returns: alive, not answering
        self.gate: anyio.Event | None = None
        self.running = 0
        self.most_running = 0

    async def check(self) -> dict[str, str]:
        if self.hangs:
            await anyio.sleep_forever()
        if not self.answers:
            raise EngineError(f"Docker engine at {self.label} is unreachable: connection refused")
        return {"engine": self.label}

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        self.built.append(request.image_name)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
        finally:
            self.running -= 1
        return BuildOutcome("sha256:id", "sha256:m", 0.1, 0.0, ("fake", self.label))

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ("fake", self.label)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_pool(
    tmp_path: Path, *specs: tuple[str, int, tuple[str, ...]], clock: Clock | None = None
) -> tuple[PoolBuilder, dict[str, FakeEngine]]:
    fakes = {name: FakeEngine(name) for name, _, _ in specs}
    engines = [Engine(name, fakes[name], cap, labels) for name, cap, labels in specs]
    pool = PoolBuilder(
        Settings(), engines=engines, clock=clock or Clock(), state_file=tmp_path / "pool.json"
    )
    return pool, fakes


def request(
    name: str, *, platforms: tuple[str, ...] = (), family: str | None = None
) -> BuildRequest:
    return BuildRequest(
        image_name=name,
        context_dir=Path("/nonexistent"),
        dockerfile=Path("/nonexistent/Dockerfile"),
        tags=(f"r/{name}:t",),
        platforms=platforms,
        family=family or name,
    )


def build(
    pool: PoolBuilder, req: BuildRequest, events: list[dict[str, Any]] | None = None
) -> BuildOutcome:
    async def main() -> BuildOutcome:
        return await pool.build(req, on_event=None if events is None else events.append)

    return anyio.run(main)


# -- placement ---------------------------------------------------------------------------


def test_an_image_goes_back_to_the_engine_that_built_it_last(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    first = build(pool, request("api"))
    assert (first.engine, first.placement) == ("e1", "least loaded (0/1)")

    async def both() -> None:
        # worker is placed while api holds e1: it lands on e2, and stays there after.
        fakes["e1"].gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.build, request("api"))
            await anyio.sleep(0.05)
            outcome = await pool.build(request("worker"))
            assert outcome.engine == "e2"
            fakes["e1"].gate.set()

    anyio.run(both)
    again = build(pool, request("worker"))
    assert (again.engine, again.placement) == ("e2", "last built here")
    assert fakes["e2"].built == ["worker", "worker"]


def test_the_last_engine_survives_a_restart_of_the_pool(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool._last.record("api", "e2")
    reborn, _ = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    outcome = build(reborn, request("api"))
    assert (outcome.engine, outcome.placement) == ("e2", "last built here")


def test_a_full_last_engine_sends_the_image_to_the_least_loaded(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("e1", 2, ()), ("e2", 4, ()), ("e3", 2, ()))
    pool._last.record("api", "e1")
    pool.engines[0].running, pool.engines[1].running, pool.engines[2].running = 2, 1, 1
    placed = pool.place(request("api"))
    assert placed is not None
    assert placed.engine.name == "e2"
    assert placed.why == "least loaded (1/4); e1, where it was built last, is full"


def test_a_child_goes_where_its_parent_was_built(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool._last.record("base", "e2")
    outcome = build(pool, request("app", family="base"))
    assert (outcome.engine, outcome.placement) == ("e2", "parent built here")


@pytest.mark.parametrize(
    ("platforms", "engine"),
    [
        pytest.param(("linux/arm64",), "arm", id="arm-only"),
        pytest.param(("linux/amd64",), "any", id="amd-to-the-unlabelled"),
        pytest.param(("linux/amd64", "linux/arm64"), "any", id="both-need-a-superset"),
    ],
)
def test_labels_must_cover_the_platforms(
    tmp_path: Path, platforms: tuple[str, ...], engine: str
) -> None:
    pool, _ = make_pool(tmp_path, ("arm", 1, ("linux/arm64", "fast")), ("any", 1, ()))
    pool.engines[1].running = 1 if engine == "arm" else 0  # labels, not load, decide
    placed = pool.place(request("api", platforms=platforms))
    assert placed is not None
    assert placed.engine.name == engine


def test_no_engine_for_the_platforms_is_a_permanent_error_naming_them(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("arm", 1, ("linux/arm64",)))
    with pytest.raises(BuildError) as caught:
        pool.place(request("api", platforms=("linux/s390x",)))
    assert not is_transient(caught.value)
    assert "image 'api'" in str(caught.value)
    assert "linux/s390x" in str(caught.value)
    assert "arm=linux/arm64" in str(caught.value)


def test_the_only_healthy_engine_says_so(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool.mark_down(pool.engines[0], "gone")
    placed = pool.place(request("api"))
    assert placed is not None
    assert (placed.engine.name, placed.why) == ("e2", "only healthy engine")


# -- capacity ------------------------------------------------------------------------------


def test_an_engine_never_runs_more_than_its_capacity(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 2, ()))
    fakes["e1"].gate = anyio.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(5):
                tg.start_soon(pool.build, request(f"img{index}"))
            await anyio.sleep(0.1)
            assert pool.engines[0].running == 2
            assert len(fakes["e1"].built) == 2  # the other three wait for a slot
            assert fakes["e1"].gate is not None
            fakes["e1"].gate.set()

    anyio.run(main)
    assert fakes["e1"].most_running == 2
    assert sorted(fakes["e1"].built) == [f"img{i}" for i in range(5)]
    assert pool.engines[0].running == 0


# -- failover ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            EngineError("Docker engine at e1 is unreachable: unexpected EOF"), id="engine-error"
        ),
        pytest.param(
            BuildError("buildx failed: failed to dial gRPC: connection refused", transient=True),
            id="transient-engine-kind",
        ),
    ],
)
def test_a_build_whose_engine_dies_moves_to_another(tmp_path: Path, error: Exception) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    fakes["e1"].fail = error
    events: list[dict[str, Any]] = []
    outcome = build(pool, request("api"), events)
    assert outcome.engine == "e2"
    assert outcome.placement is not None
    assert outcome.placement.startswith("only healthy engine; moved from e1 (down: ")
    assert [(e["engine"], e["placement"].split(";")[0]) for e in events] == [
        ("e1", "least loaded (0/1)"),
        ("e2", "only healthy engine"),
    ]
    assert pool.engine_states()[0]["state"] == "down"
    assert pool.engine_states()[0]["running"] == 0
    assert pool.last_built("api") == "e2"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(BuildError("RUN false", instruction="[2/2] RUN false"), id="failing-step"),
        pytest.param(
            BuildError("pull: connection reset by peer", transient=True), id="registry-transient"
        ),
    ],
)
def test_a_failure_that_is_not_the_engines_stays_with_the_image(
    tmp_path: Path, error: Exception
) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    fakes["e1"].fail = error
    with pytest.raises(BuildError):
        build(pool, request("api"))
    assert [e["state"] for e in pool.engine_states()] == ["up", "up"]
    assert fakes["e2"].built == []


def test_losing_every_engine_is_transient_and_builds_resume_when_one_answers(
    tmp_path: Path,
) -> None:
    clock = Clock()
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()), clock=clock)
    for fake in fakes.values():
        fake.fail = EngineError("unreachable: connection refused")
        fake.answers = False
    with pytest.raises(EngineError) as caught:
        build(pool, request("api"))
    assert is_transient(caught.value)
    assert str(caught.value).startswith("no engine available (e1: ")
    view = DaemonView(engines=pool.engine_states())
    assert view.engine_status() == "no engine available"
    assert view.status_line(1) == "1 images; no engine available"
    fakes["e2"].fail, fakes["e2"].answers = None, True
    clock.now += 1.0  # the first probe is due
    outcome = build(pool, request("api"))
    assert outcome.engine == "e2"
    assert [e["state"] for e in pool.engine_states()] == ["down", "up"]


def test_a_down_engine_is_probed_with_capped_exponential_backoff(tmp_path: Path) -> None:
    clock = Clock()
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), clock=clock)
    fakes["e1"].answers = False
    engine = pool.engines[0]
    pool.mark_down(engine, "gone")
    delays = []
    for _ in range(7):
        before = engine.next_probe
        clock.now = before - 0.01
        anyio.run(pool.probe_due)
        assert engine.next_probe == before  # not due yet: not probed
        clock.now = before
        anyio.run(pool.probe_due)
        delays.append(round(engine.next_probe - clock.now, 3))
    assert delays == [2.0, 4.0, 8.0, 16.0, PROBE_MAX, PROBE_MAX, PROBE_MAX]
    assert "connection refused" in str(engine.error)
    fakes["e1"].answers = True
    clock.now = engine.next_probe
    anyio.run(pool.probe_due)
    assert (engine.up, engine.error, engine.failures) == (True, None, 0)


def test_check_marks_each_engine(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 3, ()))
    fakes["e1"].answers = False
    info = anyio.run(pool.check)
    assert info["e2"] == "up, capacity 3"
    assert info["e1"].startswith("down: ")
    fakes["e2"].answers = False
    with pytest.raises(EngineError, match="no engine available"):
        anyio.run(pool.check)


# -- the daemon's view of it ------------------------------------------------------------------


def test_the_view_and_metrics_show_each_build_engine_and_each_engine(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, ("tcp://a:1", 2, ()), ("tcp://b:2", 1, ()))
    pool.engines[0].running = 1
    pool.mark_down(pool.engines[1], "connection refused")
    view = DaemonView()
    view.apply(Building(image="api", reason="edit"))
    view.apply(
        Building(image="api", reason="edit", engine="tcp://a:1", placement="last built here")
    )
    assert (view.image("api").engine, view.image("api").placement) == (
        "tcp://a:1",
        "last built here",
    )
    view.apply(
        Pushed(
            image="api", uri="r/api:1", manifest_digest=None, why="edit", seconds=1.0,
            engine="tcp://a:1", placement="last built here",
        )
    )  # fmt: skip
    view.engines = pool.engine_states()
    assert view.to_json()["engine_status"] == "1/2 engines up"
    assert view.to_json()["images"][0]["engine"] == "tcp://a:1"
    metrics = Metrics(engines=pool.engine_states())
    metrics.engine_builds.inc("tcp://a:1")
    text = metrics.render()
    assert 'imaged_engine_up{engine="tcp://a:1"} 1' in text
    assert 'imaged_engine_up{engine="tcp://b:2"} 0' in text
    assert 'imaged_engine_builds_running{engine="tcp://a:1"} 1' in text
    assert 'imaged_engine_capacity{engine="tcp://a:1"} 2' in text
    assert 'imaged_engine_builds_total{engine="tcp://a:1"} 1' in text
    assert "imaged_engine" not in Metrics().render()  # no pool, nothing extra


# -- settings and selection ----------------------------------------------------------------


def test_pool_from_the_environment_and_from_a_file(clean_env: Path) -> None:
    env = {"IMAGED_POOL": "unix:///run/d.sock capacity=3, context:arm labels=linux/arm64+gpu"}
    assert load_settings(environ=env).pool == (
        PoolEntry("unix:///run/d.sock", 3),
        PoolEntry("context:arm", None, ("linux/arm64", "gpu")),
    )
    (clean_env / "imaged.toml").write_text(
        'pool_capacity = 5\n[[pool]]\naddress = "tcp://10.0.0.5:2375"\ncapacity = 4\n'
        '[[pool]]\naddress = "buildx:kube"\nlabels = ["linux/arm64"]\n'
    )
    settings = load_settings(environ={})
    assert settings.pool == (
        PoolEntry("tcp://10.0.0.5:2375", 4),
        PoolEntry("buildx:kube", None, ("linux/arm64",)),
    )
    assert settings.pool_capacity == 5
    assert [e.kind for e in settings.pool] == ["docker", "buildx"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("http://h:80", "pool entry 'http://h:80': wrong scheme 'http'", id="scheme"),
        pytest.param("tcp://h", "pool entry 'tcp://h': needs HOST:PORT", id="tcp-no-port"),
        pytest.param("context:", "pool entry 'context:': needs a name", id="empty-context"),
        pytest.param("unix:///a capacity=0", "capacity '0' is not a whole number", id="cap-0"),
        pytest.param("unix:///a capacity=two", "capacity 'two' is not", id="cap-word"),
        pytest.param("unix:///a, unix:///a/", "'unix:///a/' is listed twice", id="duplicate"),
        pytest.param("unix:///a size=2", "'size=2' is not capacity=N", id="unknown-option"),
        pytest.param([{"address": "unix:///a", "cpus": 2}], "unknown key 'cpus'", id="table-key"),
        pytest.param([{"capacity": 2}], "needs an address", id="table-no-address"),
        pytest.param(
            [{"address": "unix:///a", "labels": "a b"}], "labels ['a b'] must be names", id="labels"
        ),
        pytest.param([3], "neither a string nor a table", id="not-an-entry"),
    ],
)
def test_bad_pool_entries_are_errors_naming_the_entry(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"pool": raw}, environ={})
    assert "pool:" in str(caught.value)
    assert message in str(caught.value)
    assert caught.value.exit_code == 78


def test_a_pool_selects_the_pool_builder(tmp_path: Path) -> None:
    settings = Settings(pool=(PoolEntry("tcp://127.0.0.1:1", 2),), state_dir=tmp_path)
    pool = get_builder(None, settings)
    assert isinstance(pool, PoolBuilder)
    assert get_builder("pool", settings) is pool  # one pool per process and settings
    assert get_builder(None, Settings()).name == "local"  # no pool: as before
    with pytest.raises(ConfigError, match="IMAGED_POOL lists engines, but the builder is 'remote'"):
        get_builder("remote", settings)
    with pytest.raises(ConfigError, match="the pool builder needs engines: set IMAGED_POOL"):
        get_builder("pool", Settings())


def test_an_unknown_docker_context_names_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    settings = Settings(pool=(PoolEntry("context:nowhere"),))
    with pytest.raises(ConfigError) as caught:
        engines_from_settings(settings)
    assert "pool entry 'context:nowhere'" in str(caught.value)
    assert "no docker context 'nowhere'" in str(caught.value)


def test_a_buildx_entry_without_the_buildx_builder_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "imaged.builders.buildx", None)
    with pytest.raises(ConfigError, match=r"pool entry 'buildx:kube': this imaged has no buildx"):
        engines_from_settings(Settings(pool=(PoolEntry("buildx:kube"),)))


def _fake_cli(folder: Path, *, buildx: bool) -> str:
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '  "--version "*) echo "Docker version 27.1.0, build x";;\n'
        f'  "buildx version") exit {0 if buildx else 1};;\n'
        '  "buildx inspect") if [ "$3" = kube ]; then echo "Name: kube"; else\n'
        '     echo "ERROR: no builder \\"$3\\" found" >&2; exit 1; fi;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


class FakeBuildx:
    def __init__(self, settings: Settings, *, builder_name: str | None = None) -> None:
        self.builder_name = builder_name
        self.name = "buildx"

    async def check(self) -> dict[str, str]:
        return {}

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        raise AssertionError("not built in this test")

    def describe_command(self, request: BuildRequest) -> tuple[str, ...]:
        return ("docker", "buildx", "build", "--builder", str(self.builder_name))


@pytest.mark.parametrize(
    ("name", "buildx", "message"),
    [
        pytest.param("kube", True, None, id="exists"),
        pytest.param("ghost", True, "no buildx builder 'ghost' (docker buildx inspect: ERROR: no builder \"ghost\" found)", id="unknown"),
        pytest.param("kube", False, "has no buildx plugin", id="no-plugin"),
    ],
)  # fmt: skip
def test_a_buildx_entry_is_checked_with_buildx_inspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, buildx: bool, message: str | None
) -> None:
    module = types.ModuleType("imaged.builders.buildx")
    module.BuildxBuilder = FakeBuildx  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imaged.builders.buildx", module)
    folder = tmp_path / ("with" if buildx else "without")
    folder.mkdir()
    settings = Settings(
        docker_cli=_fake_cli(folder, buildx=buildx), pool=(PoolEntry(f"buildx:{name}"),)
    )
    if message is None:
        (engine,) = engines_from_settings(settings)
        assert engine.builder.describe_command(request("api"))[-1] == "kube"
        assert engine.capacity == settings.pool_capacity
        return
    with pytest.raises(ConfigError) as caught:
        engines_from_settings(settings)
    assert f"pool entry 'buildx:{name}'" in str(caught.value)
    assert message in str(caught.value)


def test_docker_entries_become_remote_builders_on_their_engine(tmp_path: Path) -> None:
    settings = Settings(
        pool=(PoolEntry("unix:///run/other.sock", 3), PoolEntry("ssh://me@farm")),
        pool_capacity=4,
    )
    engines = engines_from_settings(settings)
    assert [(e.name, e.capacity) for e in engines] == [
        ("unix:///run/other.sock", 3),
        ("ssh://me@farm", 4),
    ]
    assert [e.builder.engine_address for e in engines] == [  # type: ignore[attr-defined]
        "unix:///run/other.sock",
        "ssh://me@farm",
    ]


# -- the pipeline and the daemon around it ---------------------------------------------------


class RecordingBuilder(FakeEngine):
    def __init__(self) -> None:
        super().__init__("rec")
        self.requests: list[BuildRequest] = []

    async def build(self, request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        self.requests.append(request)
        return await super().build(request, on_event=on_event)


def test_the_pipeline_gives_a_family_and_copies_the_engine_into_the_result(
    tmp_path: Path,
) -> None:
    from imaged.pipeline.build import abuild
    from imaged.spec.image import Image

    recording = RecordingBuilder()
    pool = PoolBuilder(
        Settings(), engines=[Engine("e1", recording, 2)], state_file=tmp_path / "pool.json"
    )
    base = Image.from_base("debian:12").with_commands("true").clone(name="fam-base")
    middle = Image.from_base(base).with_env_vars({"A": "1"}).clone(name="fam-middle")
    child = Image.from_base(middle).with_env_vars({"B": "2"}).clone(name="fam-child")
    events: list[dict[str, Any]] = []
    settings = Settings(state_dir=tmp_path / "state")

    async def main() -> Any:
        return await abuild(child, settings=settings, builder=pool, on_event=events.append)

    result = anyio.run(main)
    assert [(r.image_name, r.family) for r in recording.requests] == [
        ("fam-base", "fam-base"),
        ("fam-middle", "fam-base"),
        ("fam-child", "fam-base"),
    ]
    assert (result.engine, result.placement) == ("e1", "parent built here")
    placed = [(e["image"], e["placement"]) for e in events if e["event"] == "building"]
    assert placed[-2:] == [("fam-child", None), ("fam-child", "parent built here")]


def test_the_daemon_says_where_a_build_was_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaged.daemon.builds import Builds
    from imaged.daemon.store import StateStore
    from imaged.digest.cache import DigestCache
    from imaged.pipeline.build import ImageBuild
    from imaged.spec.image import Image

    async def fake_abuild(image: Image, *, on_event: Any, builder: Any, **_: Any) -> ImageBuild:
        assert builder == "the daemon's builder"
        on_event(
            {
                "event": "building",
                "image": image.name,
                "uri": "r/a:1",
                "engine": None,
                "placement": None,
            }
        )
        on_event(
            {
                "event": "building",
                "image": image.name,
                "uri": "r/a:1",
                "engine": "e2",
                "placement": "last built here",
            }
        )
        result = ImageBuild("a", "r/a:1", "1", "d", status="pushed", pushed=True)
        result.engine, result.placement = "e2", "last built here"
        return result

    monkeypatch.setattr("imaged.daemon.builds.abuild", fake_abuild)
    emitted: list[Any] = []
    view, metrics = DaemonView(), Metrics()
    builds = Builds(StateStore(tmp_path), view, metrics, emitted.append)

    async def main() -> None:
        image = Image.from_base("debian:12").clone(name="a")
        await builds.build(
            image,
            "edit",
            settings=Settings(),
            cache=DigestCache(),
            builder="the daemon's builder",  # type: ignore[arg-type]
        )

    anyio.run(main)
    assert [type(e).__name__ for e in emitted] == ["Building", "Pushed"]
    assert (emitted[0].engine, emitted[0].placement) == ("e2", "last built here")
    assert (emitted[1].engine, emitted[1].placement) == ("e2", "last built here")
    assert metrics.engine_builds.values == {"e2": 1.0}


def test_a_daemon_with_a_bad_pool_entry_fails_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaged.daemon.core import Daemon

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "defs.py").write_text("")
    settings = Settings(state_dir=tmp_path / "state", pool=(PoolEntry("context:gone"),))
    daemon = Daemon(settings, [tmp_path / "defs.py"])
    with pytest.raises(ConfigError, match=r"pool entry 'context:gone': .*no docker context"):
        daemon.prepare()


def test_a_probe_of_an_engine_that_accepts_but_never_answers_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from imaged.builders import pool as pool_module
    from imaged.builders.remote import RemoteBuilder

    monkeypatch.setattr(pool_module, "PROBE_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        remote = RemoteBuilder(Settings(docker_host=address))
        pool = PoolBuilder(Settings(), engines=[Engine(address, remote, 1)], state_file=None)
        engine = pool.engines[0]
        pool.mark_down(engine, "gone")
        engine.next_probe = 0.0

        async def main() -> bool:
            with anyio.fail_after(10):  # the probe gives up long before this
                return await pool.probe(engine)

        assert anyio.run(main) is False
    assert not engine.up
    assert engine.error is not None
    assert "timed out" in engine.error or "no answer within 0.5s" in engine.error, engine.error


def test_probing_every_engine_marks_the_ones_that_do_not_answer(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    fakes["e2"].answers = False
    pool.mark_down(pool.engines[0], "was down")
    anyio.run(pool.probe_all)
    assert [(e["state"], e["error"]) for e in pool.engine_states()] == [
        ("up", None),
        ("down", "Docker engine at e2 is unreachable: connection refused"),
    ]


def test_imaged_build_says_which_engine_built_an_image() -> None:
    from imaged.cli.build import _line
    from imaged.pipeline.build import ImageBuild

    result = ImageBuild("api", "r/api:1", "1", "d", status="pushed", pushed=True)
    assert _line(result).endswith(" in 0.0s")  # no pool: as before
    result.engine, result.placement = "tcp://10.0.0.5:2375", "last built here"
    assert _line(result).endswith(" in 0.0s on tcp://10.0.0.5:2375 (last built here)")


# -- a hung engine -----------------------------------------------------------------------


def test_a_build_on_an_engine_that_stops_answering_is_cancelled_and_moved(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool.hang_probe_seconds, pool.hang_probes = 0.05, 3
    fakes["e1"].gate = anyio.Event()  # never set: the build waits on the engine forever
    fakes["e1"].hangs = True
    events: list[dict[str, Any]] = []
    outcome = build(pool, request("api"), events)
    assert outcome.engine == "e2"
    assert outcome.placement is not None
    assert "moved from e1 (down: engine e1 stopped answering during the build of api" in (
        outcome.placement
    )
    assert (fakes["e1"].built, fakes["e1"].running, fakes["e2"].built) == (["api"], 0, ["api"])
    states = {e["engine"]: e for e in pool.engine_states()}
    assert states["e1"]["state"] == "down"
    assert "3 pings in a row got no answer within 0.05s" in str(states["e1"]["error"])
    assert states["e1"]["running"] == 0


def test_a_long_build_on_an_engine_that_answers_is_never_cut_short(tmp_path: Path) -> None:
    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool.hang_probe_seconds, pool.hang_probes = 0.02, 2
    fakes["e1"].gate = anyio.Event()
    pings: list[int] = []
    real_check = fakes["e1"].check

    async def counted() -> dict[str, str]:
        pings.append(1)
        if len(pings) == 10:  # the build ends after 10 pings (five times the limit)
            assert fakes["e1"].gate is not None
            fakes["e1"].gate.set()
        return await real_check()

    fakes["e1"].check = counted  # type: ignore[method-assign]
    outcome = build(pool, request("api"))
    assert (outcome.engine, outcome.placement) == ("e1", "least loaded (0/1)")
    assert fakes["e2"].built == []
    assert len(pings) >= 10
    assert pool.engine_states()[0]["state"] == "up"


def test_a_ping_never_waits_behind_the_builds_for_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from imaged.builders import pool as pool_module
    from imaged.builders.remote import RemoteBuilder

    pinged: list[str] = []
    monkeypatch.setattr(pool_module, "_ping", lambda builder: pinged.append(builder.name))
    remote = RemoteBuilder(Settings(docker_host="tcp://10.0.0.5:2375"))
    release = threading.Event()

    async def main() -> None:
        shared = anyio.to_thread.current_default_thread_limiter()
        shared.total_tokens = 2
        started = [anyio.Event(), anyio.Event()]

        def push(index: int) -> None:
            anyio.from_thread.run_sync(started[index].set)
            release.wait(30)

        async with anyio.create_task_group() as tg:
            for index in range(2):  # two pushes hold every thread of the shared limiter
                tg.start_soon(anyio.to_thread.run_sync, push, index)
            for event in started:
                await event.wait()
            try:
                with anyio.fail_after(20):  # queued behind the pushes, it would wait 30 s
                    await pool_module._answers(remote)
                assert shared.borrowed_tokens == 2  # the pushes were still running
            finally:
                release.set()

    anyio.run(main)
    assert pinged == ["remote"]


def test_a_hung_push_keeps_its_slot_until_its_thread_has_ended(tmp_path: Path) -> None:
    import socket
    import types

    from imaged.builders.local import PushStop, run_push

    pool, fakes = make_pool(tmp_path, ("e1", 1, ()), ("e2", 1, ()))
    pool.hang_probe_seconds, pool.hang_probes = 0.05, 2
    fakes["e1"].hangs = True
    e1 = pool.engines[0]
    engine_end, client_end = socket.socketpair()
    seen: dict[str, Any] = {}

    def push(stop: PushStop) -> BuildOutcome:
        conn = types.SimpleNamespace(sock=client_end)
        stop.track(types.SimpleNamespace(raw=types.SimpleNamespace(connection=conn)))
        seen["read"] = client_end.recv(100)  # the engine hangs mid-push
        seen["slots_taken_at_end"] = e1.running
        return BuildOutcome("sha256:id", "sha256:late", 0.1, 0.0, ("fake", "e1"))

    async def pushing(request: BuildRequest, *, on_event: Any = None) -> BuildOutcome:
        fakes["e1"].built.append(request.image_name)
        return await run_push(push)

    fakes["e1"].build = pushing  # type: ignore[method-assign]
    try:
        outcome = build(pool, request("api"))
    finally:
        engine_end.close()
        client_end.close()
    assert (outcome.engine, outcome.manifest_digest) == ("e2", "sha256:m")
    assert seen == {"read": b"", "slots_taken_at_end": 1}  # cut, and its slot still held
    assert (e1.running, pool.engines[1].running) == (0, 0)
