"""``imaged plan``: exists / missing / unknown per image, and why a missing one would build."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import FIFO_REASON, fifo_ignore_file, hung_folder, hung_reason
from click.testing import CliRunner, Result

from imaged.cli.main import main as cli_main
from imaged.cli.plan import _layer_diff
from imaged.daemon.store import ImageRecord, StateStore
from imaged.definitions.loader import load_definitions
from imaged.digest.image_digest import hash_image
from imaged.safe_read import shown_path
from imaged.spec.image import Image

pytestmark = pytest.mark.timeout(300)

OFFLINE_BASE = "127.0.0.1:1/python:{major}.{minor}-slim-bookworm"
DEAD_REGISTRY = "127.0.0.1:1"

DEFINITIONS = """\
from pathlib import Path

from imaged import Image

HERE = Path(__file__).parent
REGISTRY = {registry!r}

tiny = Image.from_debian_base(name={name!r}, registry=REGISTRY).with_source_file(
    HERE / "app.py", "/app"
)
other = Image.from_debian_base(name={name!r} + "-other", registry=REGISTRY).with_source_file(
    HERE / "other.py", "/app"
)
"""


def write_project(folder: Path, *, registry: str) -> Path:
    """A definition file with two images, each copying one source file; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)  # unique content, so no earlier run pushed these tags
    (folder / "app.py").write_text(f"print('app {token}')\n")
    (folder / "other.py").write_text(f"print('other {token}')\n")
    defs = folder / "images.py"
    defs.write_text(DEFINITIONS.format(registry=registry, name=f"plan-{token}"))
    return defs


@pytest.fixture
def plan_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A private state directory and no stray config; an offline base unless a test overrides."""
    for name in ("IMAGED_CONFIG", "IMAGED_REGISTRY", "IMAGED_INSECURE_REGISTRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    env = {"IMAGED_STATE_DIR": str(tmp_path / "state"), "IMAGED_DEBIAN_BASE": OFFLINE_BASE}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def registry_env(plan_env: dict[str, str], infra: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real test registry and base image, and what imaged.build needs to push there."""
    monkeypatch.setenv("IMAGED_DEBIAN_BASE", infra.debian_base_template)
    monkeypatch.setenv("IMAGED_DOCKER_CLI", infra.docker_cli)
    if infra.ca_bundle:
        monkeypatch.setenv("IMAGED_BUILD_CA_BUNDLE", infra.ca_bundle)
    if infra.docker_host:
        monkeypatch.setenv("DOCKER_HOST", infra.docker_host)
    else:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    return infra


def run_plan(*args: str) -> Result:
    return CliRunner().invoke(cli_main, ["plan", *args])


def load_tiny(defs: Path) -> Image:
    (image,) = load_definitions(f"{defs}:tiny").values()
    assert image.name is not None
    return image


def record_current(image: Image, state_dir: Path) -> None:
    """Save a state record as if the daemon had just pushed ``image`` as it is now."""
    digest = hash_image(image)
    record = ImageRecord(
        name=image.name or "",
        uri=image.uri_for(digest.tag),
        tag=digest.tag,
        layers=[layer.to_json() for layer in digest.layers],
    )
    StateStore(state_dir).save({record.name: record})


def block(output: str, name: str) -> list[str]:
    """The header line of image ``name`` and its indented reason lines."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines)
    )
    return lines[start:end]


# -- against the real registry -------------------------------------------------------------


def test_never_pushed_image_is_missing(registry_env: Any, tmp_path: Path) -> None:
    defs = write_project(tmp_path / "proj", registry=registry_env.registry)
    image = load_tiny(defs)
    result = run_plan(str(defs))
    assert result.exit_code == 0, result.output
    assert block(result.output, image.name or "") == [
        f"{image.name}: missing {image.uri_for(hash_image(image).tag)}",
        "    never pushed by this state directory",
        "    fast path: 1 file layer appended to the stem (built through the base)",
    ]


def test_edited_source_file_names_the_layer_and_the_file(
    registry_env: Any, plan_env: dict[str, str], tmp_path: Path
) -> None:
    defs = write_project(tmp_path / "proj", registry=registry_env.registry)
    image = load_tiny(defs)
    record_current(image, Path(plan_env["IMAGED_STATE_DIR"]))
    unchanged = run_plan(str(defs))
    (tmp_path / "proj" / "app.py").write_text("print('edited')\n")
    edited = run_plan(str(defs))
    assert edited.exit_code == 0, edited.output
    tiny = block(edited.output, image.name or "")
    assert tiny[0].startswith(f"{image.name}: missing ")
    assert tiny[1:] == [
        "    layer `source_files app.py` moved: app.py changed",
        "    fast path: 1 file layer appended to the stem (built through the base)",
    ]
    # Before the edit nothing moved, yet the tag is not in the registry: say so.
    assert block(unchanged.output, image.name or "")[1:] == [
        "    no layer moved since the last push, but the tag is gone from the registry",
        "    fast path: 1 file layer appended to the stem (built through the base)",
    ]


def test_pushed_image_exists(registry_env: Any, tmp_path: Path) -> None:
    from imaged import build

    defs = write_project(tmp_path / "proj", registry=registry_env.registry)
    image = load_tiny(defs)
    pushed = build(image)
    assert pushed.status == "pushed"
    result = run_plan(str(defs))
    assert result.exit_code == 0, result.output
    assert block(result.output, image.name or "") == [f"{image.name}: exists {pushed.uri}"]
    assert block(result.output, f"{image.name}-other")[0].startswith(
        f"{image.name}-other: missing "
    )


# -- without a registry --------------------------------------------------------------------


@pytest.mark.usefixtures("plan_env")
def test_dead_registry_is_unknown_exit_1_naming_the_address(tmp_path: Path) -> None:
    defs = write_project(tmp_path / "proj", registry=DEAD_REGISTRY)
    result = run_plan(str(defs))
    assert result.exit_code == 1
    headers = [line for line in result.output.splitlines() if not line.startswith(" ")]
    assert len(headers) == 2
    assert all(": unknown 127.0.0.1:1/plan-" in line for line in headers)
    errors = [line for line in result.output.splitlines() if line.startswith("    error: ")]
    assert len(errors) == 2
    assert all(DEAD_REGISTRY in line and "unknown" in line for line in errors)


@pytest.mark.usefixtures("plan_env")
def test_registry_option_overrides_the_definitions(tmp_path: Path) -> None:
    defs = write_project(tmp_path / "proj", registry="registry.invalid:5000")
    result = run_plan("--registry", DEAD_REGISTRY, str(defs))
    assert result.exit_code == 1
    assert "registry.invalid" not in result.output
    assert ": unknown 127.0.0.1:1/plan-" in result.output


@pytest.mark.usefixtures("plan_env")
def test_json_prints_one_object_per_image(tmp_path: Path) -> None:
    defs = write_project(tmp_path / "proj", registry=DEAD_REGISTRY)
    result = run_plan("--json", str(defs))
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.output.splitlines()]
    images = load_definitions(str(defs))
    assert sorted(row["name"] for row in rows) == sorted(i.name or "" for i in images.values())
    for row in rows:
        assert set(row) == {
            "name",
            "uri",
            "status",
            "reasons",
            "error",
            "path",
            "path_reason",
            "forcing_layer",
        }
        assert row["status"] == "unknown"
        assert row["uri"].startswith(f"{DEAD_REGISTRY}/{row['name']}:")
        assert row["reasons"] == ["never pushed by this state directory"]
        assert DEAD_REGISTRY in row["error"]


@pytest.mark.usefixtures("plan_env")
def test_missing_definition_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_plan(str(tmp_path / "nope.py"))
    assert result.exit_code == 1
    assert "definition file or folder not found" in result.output


LOCAL_DEFS = """\
from pathlib import Path

from imaged import Image

HERE = Path(__file__).parent
base = Image.from_base("debian:12")
bad = base.clone(name="bad").with_source_folder(HERE / "src", "/app")
good = base.clone(name="good").with_source_folder(HERE / "other", "/app")
"""
BAD_LAYER = "image 'bad', layer #1 source_folder src/"


def local_project(folder: Path, prelude: str = "") -> tuple[Path, Path]:
    """Definitions of ``bad`` (copies ``src``) and ``good`` (copies ``other``), with no
    registry; ``prelude`` runs first in the module. Returns the file and ``src``."""
    for name in ("src", "other"):
        (folder / name).mkdir(parents=True)
        (folder / name / "app.py").write_text("print('hi')\n")
    (folder / "images.py").write_text(prelude + LOCAL_DEFS)
    return folder / "images.py", folder / "src"


@pytest.mark.usefixtures("plan_env")
def test_definitions_load_in_a_child_without_secrets_and_their_output_goes_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_SECRET_TOK", "s3cret-value-of-the-token")
    prelude = 'import os\nprint("tok:", os.environ.get("IMAGED_SECRET_TOK", "<hidden>"))\n'
    defs, _ = local_project(tmp_path / "proj", prelude)
    result = run_plan("--json", str(defs))
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.stdout + result.stderr
    assert result.stderr == "tok: <hidden>\n"
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["name"], row["status"]) for row in rows] == [("bad", "local"), ("good", "local")]


@pytest.mark.usefixtures("plan_env")
def test_a_definition_that_outlives_load_timeout_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, _ = local_project(tmp_path / "proj", "import time\ntime.sleep(10)\n")
    monkeypatch.setenv("IMAGED_LOAD_TIMEOUT", "0.5")
    result = run_plan(str(defs))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"error: {defs}: loading timed out after 0.5 s\n"


@pytest.mark.usefixtures("plan_env")
def test_an_image_with_a_bad_input_fails_alone_and_the_plan_exits_1(tmp_path: Path) -> None:
    defs, src = local_project(tmp_path / "proj")
    fifo = fifo_ignore_file(src)
    result = run_plan(str(defs))
    assert result.exit_code == 1, result.output
    assert block(result.stdout, "bad") == [
        "bad: failed",
        f"    error: {BAD_LAYER}: {shown_path(fifo)}: {FIFO_REASON}",
    ]
    assert block(result.stdout, "good")[0].startswith("good: local good:")
    rows = {
        row["name"]: row
        for row in map(json.loads, run_plan("--json", str(defs)).stdout.splitlines())
    }
    assert rows["bad"] == {
        "name": "bad",
        "uri": None,
        "status": "failed",
        "reasons": [],
        "error": f"{BAD_LAYER}: {shown_path(fifo)}: {FIFO_REASON}",
    }
    assert rows["good"]["status"] == "local"


@pytest.mark.usefixtures("plan_env")
def test_a_hung_folder_fails_its_image_after_hash_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, src = local_project(tmp_path / "proj")
    monkeypatch.setenv("IMAGED_HASH_TIMEOUT", "1")
    with hung_folder(src):
        result = run_plan(str(defs))
    assert result.exit_code == 1, result.output
    assert block(result.stdout, "bad") == [
        "bad: failed",
        f"    error: {BAD_LAYER}: hashing {src} {hung_reason(1)}",
    ]
    assert block(result.stdout, "good")[0].startswith("good: local good:")


@pytest.mark.usefixtures("plan_env")
def test_a_folder_is_searched_below_only_with_recursive(tmp_path: Path) -> None:
    defs, _ = local_project(tmp_path / "deploy" / "jobs")
    shallow = run_plan(str(tmp_path / "deploy"))
    assert shallow.exit_code == 1
    assert "pass --recursive to search the folders below it" in shallow.stderr
    deep = run_plan("--recursive", str(tmp_path / "deploy"))
    assert deep.exit_code == 0, deep.output
    assert [line.split(":")[0] for line in deep.stdout.splitlines() if line[0] != " "] == [
        "bad",
        "good",
    ]
    named = run_plan(f"{defs}:good")
    assert [line.split(":")[0] for line in named.stdout.splitlines() if line[0] != " "] == ["good"]


# -- the layer diff ------------------------------------------------------------------------


def _layer(label: str, digest: str, **files: str) -> dict[str, Any]:
    return {"label": label, "digest": digest, "files": files, "trees": {}}


@pytest.mark.parametrize(
    ("before", "now", "reasons"),
    [
        pytest.param([_layer("pip", "d1")], [_layer("pip", "d1")], [], id="nothing-moved"),
        pytest.param(
            [_layer("src", "d1", **{"/p/a.py": "x"})],
            [_layer("src", "d2", **{"/p/a.py": "y"})],
            ["layer `src` moved: a.py changed"],
            id="file-edited",
        ),
        pytest.param(
            [_layer("src", "d1", **{"/p/a.py": "x", "/p/gone.py": "z"})],
            [_layer("src", "d2", **{"/p/a.py": "x"})],
            ["layer `src` moved: gone.py changed"],
            id="file-removed",
        ),
        pytest.param(
            [_layer("src", "d1")],
            [_layer("src", "d2")],
            ["layer `src` moved: inputs changed"],
            id="no-file-detail",
        ),
        pytest.param(
            [_layer("pip", "d1")],
            [_layer("pip", "d1"), _layer("apt", "d3")],
            ["layer `apt` is new"],
            id="layer-added",
        ),
        pytest.param(
            [_layer("pip", "d1"), _layer("apt", "d3")],
            [_layer("pip", "d1")],
            ["layer `apt` was removed"],
            id="layer-removed",
        ),
    ],
)
def test_layer_diff(
    before: list[dict[str, Any]], now: list[dict[str, Any]], reasons: list[str]
) -> None:
    assert _layer_diff(before, now) == reasons


def test_layer_diff_names_a_moved_tree() -> None:
    before = [{"label": "src", "digest": "d1", "files": {}, "trees": {"/p/pkg": "t1"}}]
    now = [{"label": "src", "digest": "d2", "files": {}, "trees": {"/p/pkg": "t2"}}]
    assert _layer_diff(before, now) == ["layer `src` moved: pkg/ contents changed"]


FORCED = """\
from pathlib import Path

from imaged import Image

HERE = Path(__file__).parent
forced = (
    Image.from_debian_base(name="forced", registry={registry!r})
    .with_source_folder(HERE / "src", "/app")
    .with_commands(["ls /app"])
)
fast = Image.from_debian_base(name="fast", registry={registry!r}).with_pip_packages("six").with_source_folder(HERE / "src", "/app")
"""


@pytest.mark.usefixtures("plan_env")
def test_the_plan_names_each_path_and_the_layer_forcing_a_full_build(tmp_path: Path) -> None:
    (tmp_path / "proj" / "src").mkdir(parents=True)
    (tmp_path / "proj" / "src" / "a.py").write_text("A = 1\n")
    defs = tmp_path / "proj" / "images.py"
    defs.write_text(FORCED.format(registry=DEAD_REGISTRY))
    rows = {
        row["name"]: row
        for row in map(json.loads, run_plan("--json", str(defs)).stdout.splitlines())
    }
    assert rows["forced"]["path"] == "full"
    assert rows["forced"]["forcing_layer"] == "layer 1 (source_folder src/)"
    assert rows["forced"]["path_reason"] == (
        "layer 1 (source_folder src/) is followed by a recipe layer "
        "(layer 2 (commands ls /app)): a RUN must see the files it follows"
    )
    assert (rows["fast"]["path"], rows["fast"]["forcing_layer"]) == ("fast", None)
    text = run_plan(str(defs)).stdout
    assert f"    full path: {rows['forced']['path_reason']}" in block(text, "forced")
    assert (
        "    fast path: 1 file layer appended to the stem (built through layer 1 (pip_packages six))"
        in block(text, "fast")
    )
