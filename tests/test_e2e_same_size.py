"""End to end, issue #7: a same-size edit of any staged file reaches the image under its tag.

BuildKit's incremental context transfer resends a file only when its size, mtime, mode,
owner or link target differ from the copy it holds. Each test edits a staged file without
changing its size, builds into the same staging folder, pulls the new tag back from the
registry and reads, inside a container, the file or what a RUN step or an installer made
of it. tests/data/samesize holds the second lock of each locked project: the same bytes
count as the fixture's lock, pinning another version of one package (uv.lock: iniconfig
2.1.0, written by ``uv lock``; poetry.lock: six 1.17.0, the fixture with that release's
version and file hashes).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    DATA,
    ProbeSpec,
    RefusingBuilder,
    docker,
    probe_image,
    pull_fresh,
    run_id,
    set_build_env,
)

from imaged import Image, build
from imaged.definitions.loader import load_definitions

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

RUN = run_id()
SAME_SIZE = DATA / "samesize"


@pytest.fixture(scope="module")
def module_env(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local base, host CA bundle, docker CLI, and a state folder of this module's own, so
    each image's staging folder (and BuildKit's copy of it) lives from one build to the next."""
    with pytest.MonkeyPatch.context() as mp:
        set_build_env(mp, infra)
        mp.setenv("IMAGED_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(autouse=True)
def _env(module_env: None) -> None:
    """Every test of this module runs with :func:`module_env`."""


def rewrite(path: Path, text: str) -> None:
    """Give ``path`` new content of exactly as many bytes: the edit BuildKit kept the old
    bytes of."""
    before = path.read_bytes()
    path.write_text(text)
    assert path.read_bytes() != before
    assert len(path.read_bytes()) == len(before), f"{path}: not a same-size edit"


def swap(path: Path, replacement: Path) -> None:
    """Replace ``path`` with ``replacement``'s different bytes of the same size."""
    rewrite(path, replacement.read_text())


def pushed(infra: Any, image: Image, *, force: bool = False) -> str:
    """Build and push ``image``, drop the local copy, pull it back; return its URI."""
    result = build(image, force=force)
    assert (result.status, result.pushed) == ("pushed", True)
    pull_fresh(infra.docker_cli, result.uri)
    return result.uri


def texts(infra: Any, uri: str, *paths: str) -> dict[str, str | None]:
    facts = probe_image(infra.docker_cli, uri, ProbeSpec(texts=paths))
    return dict(facts["texts"])


def version(infra: Any, uri: str, dist: str) -> str | None:
    facts = probe_image(infra.docker_cli, uri, ProbeSpec(dists=[dist]))
    return facts["versions"][dist]  # type: ignore[no-any-return]


def plain(infra: Any, name: str) -> Image:
    """The base image, named for this run, pushed to the plain registry."""
    base = Image.from_base(infra.debian_base)
    return base.clone(name=f"samesize-{name}-{RUN}", registry=infra.registry)


def source_tree(root: Path, x: str = "x0\n") -> Path:
    """A folder with the file the tests edit, ``x.txt``, and one they never touch."""
    (root / "sub").mkdir(parents=True)
    (root / "x.txt").write_text(x)
    (root / "sub" / "keep.txt").write_text("keep\n")
    return root


def python_image(infra: Any, name: str) -> Image:
    return Image.from_debian_base(
        python_version=(3, 11), registry=infra.registry, name=f"samesize-{name}-{RUN}"
    )


# -- files copied into the image -------------------------------------------------------


DERIVE = "cat /app/x.txt > /derived.txt"


@pytest.mark.parametrize("derive", [pytest.param(False, id="plain"), pytest.param(True, id="run")])
def test_source_folder(infra: Any, tmp_path: Path, derive: bool) -> None:
    src = source_tree(tmp_path / "src")
    image = plain(infra, f"folder-{int(derive)}").with_source_folder(
        src, "/app", copy_contents_only=True
    )
    if derive:
        image = image.with_commands(DERIVE)
    paths = ("/app/x.txt", "/app/sub/keep.txt", "/derived.txt")
    first = pushed(infra, image)
    want = {"/app/x.txt": "x0\n", "/app/sub/keep.txt": "keep\n", "/derived.txt": None}
    if derive:
        want["/derived.txt"] = "x0\n"
    assert texts(infra, first, *paths) == want
    rewrite(src / "x.txt", "x1\n")
    second = pushed(infra, image)
    assert second != first
    want["/app/x.txt"] = "x1\n"
    if derive:
        want["/derived.txt"] = "x1\n"
    assert texts(infra, second, *paths) == want


def test_source_folder_on_the_remote_builder(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context streams to another engine, whose BuildKit keeps its own copy. COPY only:
    the test infra's remote engine has no network for RUN steps."""
    if infra.remote_docker_host is None:
        pytest.fail("the test infra has no remote engine")
    monkeypatch.setenv("IMAGED_BUILDER", "remote")
    monkeypatch.setenv("IMAGED_DOCKER_HOST", infra.remote_docker_host)
    monkeypatch.setenv("IMAGED_FAST_PATH", "false")  # this is about the remote BuildKit
    src = source_tree(tmp_path / "src")
    image = plain(infra, "remote").with_source_folder(src, "/app", copy_contents_only=True)
    paths = ("/app/x.txt", "/app/sub/keep.txt")
    first = pushed(infra, image)
    assert texts(infra, first, *paths) == {paths[0]: "x0\n", paths[1]: "keep\n"}
    rewrite(src / "x.txt", "x1\n")
    second = pushed(infra, image)
    assert second != first
    assert texts(infra, second, *paths) == {paths[0]: "x1\n", paths[1]: "keep\n"}
    docker(infra.docker_cli, "image", "inspect", second, env=infra.remote_docker_env())


def test_source_files(infra: Any, tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_text("a=0\n")
    (tmp_path / "b.cfg").write_text("b=0\n")
    image = plain(infra, "files").with_source_file(
        [tmp_path / "a.cfg", tmp_path / "b.cfg"], "/etc/app"
    )
    first = pushed(infra, image)
    assert texts(infra, first, "/etc/app/a.cfg", "/etc/app/b.cfg") == {
        "/etc/app/a.cfg": "a=0\n",
        "/etc/app/b.cfg": "b=0\n",
    }
    rewrite(tmp_path / "b.cfg", "b=1\n")
    second = pushed(infra, image)
    assert second != first
    assert texts(infra, second, "/etc/app/a.cfg", "/etc/app/b.cfg") == {
        "/etc/app/a.cfg": "a=0\n",
        "/etc/app/b.cfg": "b=1\n",
    }


BUNDLE_DEFS = """
from imaged import Image
bundle = (
    Image.from_base({base!r}).clone(registry={registry!r}, name={name!r})
    .with_code_bundle("all", "/bundle")
)
"""


def test_code_bundle(infra: Any, tmp_path: Path) -> None:
    project = source_tree(tmp_path / "proj")
    (project / "pyproject.toml").write_text('[project]\nname = "bundled"\nversion = "0"\n')
    defs = project / "defs.py"
    name = f"samesize-bundle-{RUN}"
    defs.write_text(BUNDLE_DEFS.format(base=infra.debian_base, registry=infra.registry, name=name))
    image = load_definitions(str(defs))[name]
    first = pushed(infra, image)
    paths = ("/bundle/x.txt", "/bundle/sub/keep.txt")
    assert texts(infra, first, *paths) == {paths[0]: "x0\n", paths[1]: "keep\n"}
    rewrite(project / "x.txt", "x1\n")
    second = pushed(infra, image)
    assert second != first
    assert texts(infra, second, *paths) == {paths[0]: "x1\n", paths[1]: "keep\n"}


DOCKERFILE = "FROM {base}\nCOPY . /ctx\nRUN cat /ctx/x.txt > /derived.txt && echo {step} > /step\n"


def test_dockerfile_context_file_and_dockerfile(infra: Any, tmp_path: Path) -> None:
    ctx = source_tree(tmp_path / "ctx")
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.format(base=infra.debian_base, step="s0"))
    image = Image.from_dockerfile(
        dockerfile, registry=infra.registry, name=f"samesize-dockerfile-{RUN}"
    )
    paths = ("/ctx/x.txt", "/derived.txt", "/step")
    first = pushed(infra, image)
    assert texts(infra, first, *paths) == {paths[0]: "x0\n", paths[1]: "x0\n", paths[2]: "s0\n"}
    rewrite(ctx / "x.txt", "x1\n")
    second = pushed(infra, image)
    assert texts(infra, second, *paths) == {paths[0]: "x1\n", paths[1]: "x1\n", paths[2]: "s0\n"}
    # The Dockerfile itself, edited to the same size, is sent beside the context.
    rewrite(dockerfile, DOCKERFILE.format(base=infra.debian_base, step="s1"))
    third = pushed(infra, image)
    assert len({first, second, third}) == 3
    assert texts(infra, third, *paths) == {paths[0]: "x1\n", paths[1]: "x1\n", paths[2]: "s1\n"}


# -- metadata and history ----------------------------------------------------------------


# Each step: (x.txt's new same-size text, x.txt's mode, keep.txt's mode), one build each.
MODE_STEPS = [
    ("x1\n", 0o755, 0o644),  # the edited file also turns executable
    ("x2\n", 0o644, 0o644),  # ... and back
    ("x3\n", 0o644, 0o755),  # another file's mode changes in the build of the edit
]


def test_same_size_edit_with_mode_change(infra: Any, tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    image = plain(infra, "mode").with_source_folder(src, "/app", copy_contents_only=True)
    paths = ["/app/x.txt", "/app/sub/keep.txt"]
    uris = [pushed(infra, image)]
    for text, x_mode, keep_mode in MODE_STEPS:
        rewrite(src / "x.txt", text)
        (src / "x.txt").chmod(x_mode)
        (src / "sub" / "keep.txt").chmod(keep_mode)
        uris.append(pushed(infra, image))
        facts = probe_image(infra.docker_cli, uris[-1], ProbeSpec(paths=paths, texts=paths))
        assert facts["texts"] == {paths[0]: text, paths[1]: "keep\n"}
        assert facts["modes"] == {paths[0]: oct(x_mode), paths[1]: oct(keep_mode)}
    assert len(set(uris)) == len(uris)


def test_a_b_a(infra: Any, tmp_path: Path) -> None:
    """The third build's tag is the first's: it is served from the registry, and a forced
    rebuild of it must build A's bytes too, after BuildKit was sent B."""
    src = source_tree(tmp_path / "src", "AAAA\n")
    image = (
        plain(infra, "aba")
        .with_source_folder(src, "/app", copy_contents_only=True)
        .with_commands(DERIVE)
    )
    paths = ("/app/x.txt", "/derived.txt")
    a = pushed(infra, image)
    assert texts(infra, a, *paths) == {paths[0]: "AAAA\n", paths[1]: "AAAA\n"}
    rewrite(src / "x.txt", "BBBB\n")
    b = pushed(infra, image)
    assert b != a
    assert texts(infra, b, *paths) == {paths[0]: "BBBB\n", paths[1]: "BBBB\n"}
    rewrite(src / "x.txt", "AAAA\n")
    again = build(image, builder=RefusingBuilder())
    assert (again.status, again.uri) == ("skipped", a)
    pull_fresh(infra.docker_cli, a)
    assert texts(infra, a, *paths) == {paths[0]: "AAAA\n", paths[1]: "AAAA\n"}
    assert pushed(infra, image, force=True) == a
    assert texts(infra, a, *paths) == {paths[0]: "AAAA\n", paths[1]: "AAAA\n"}


# -- installers reading a staged file ------------------------------------------------------


def test_requirements_version_bump(infra: Any, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    image = python_image(infra, "req").with_requirements(requirements)
    first = pushed(infra, image)
    assert version(infra, first, "six") == "1.16.0"
    rewrite(requirements, "six==1.17.0\n")
    second = pushed(infra, image)
    assert second != first
    assert version(infra, second, "six") == "1.17.0"


def locked_project(src: Path, dest: Path) -> Path:
    """A copy of a fixture project, whose lock the test swaps; returns its pyproject.toml."""
    shutil.copytree(src, dest)
    return dest / "pyproject.toml"


@pytest.mark.parametrize("mode", ["dependencies_only", "install_project"])
def test_uv_lock(infra: Any, tmp_path: Path, mode: Any) -> None:
    pyproject = locked_project(DATA / "uvproj", tmp_path / "uvproj")
    image = python_image(infra, f"uvlock-{mode}").with_uv_project(
        pyproject, project_install_mode=mode
    )
    first = pushed(infra, image)
    assert version(infra, first, "iniconfig") == "2.0.0"
    swap(pyproject.parent / "uv.lock", SAME_SIZE / "uv.lock")
    second = pushed(infra, image)
    assert second != first
    assert version(infra, second, "iniconfig") == "2.1.0"


def test_poetry_lock(infra: Any, tmp_path: Path) -> None:
    pyproject = locked_project(DATA / "poetryproj", tmp_path / "poetryproj")
    image = python_image(infra, "poetrylock").with_poetry_project(pyproject)
    first = pushed(infra, image)
    assert version(infra, first, "six") == "1.16.0"
    swap(pyproject.parent / "poetry.lock", SAME_SIZE / "poetry.lock")
    second = pushed(infra, image)
    assert second != first
    assert version(infra, second, "six") == "1.17.0"


SCRIPT = """# /// script
# requires-python = ">=3.11"
# dependencies = ["six=={six}"]
# ///
print("{body}")
"""


def test_uv_script_pin_and_body(infra: Any, tmp_path: Path) -> None:
    """The pin reaches the image; the body does not (the script is not copied), so a body
    edit keeps the tag and needs no build."""
    script = tmp_path / "tool.py"
    script.write_text(SCRIPT.format(six="1.16.0", body="b0"))
    image = Image.from_uv_script(script, name=f"samesize-script-{RUN}", registry=infra.registry)
    first = pushed(infra, image)
    assert version(infra, first, "six") == "1.16.0"
    rewrite(script, SCRIPT.format(six="1.17.0", body="b0"))
    second = pushed(infra, image)
    assert second != first
    assert version(infra, second, "six") == "1.17.0"
    rewrite(script, SCRIPT.format(six="1.17.0", body="b1"))
    kept = build(image, builder=RefusingBuilder())
    assert (kept.status, kept.uri) == ("skipped", second)
