"""End to end: the fast path's image equals BuildKit's, entry by entry, and edits stay small.

Each image is built twice from the same inputs: once with the fast path (the stem built by
BuildKit, the tail written and appended by imaged) and once with ``fast_path = false`` (one
BuildKit build), pushed under different names so the tags do not collide. Both are pulled,
exported (``docker create`` + ``docker export``) and compared entry by entry: path, type,
mode, uid/gid, link target, content sha256 and a file's mtime. Left out, and why:

- folder mtimes: BuildKit 20.10 stamps a COPY's folders with the build's clock, not
  reproducible from one build to the next (README, "What reaches BuildKit");
- the paths the engine writes into every container it creates (``/.dockerenv``,
  ``/dev/console``, ``/etc/hostname``, ``/etc/hosts``, ``/etc/mtab``, ``/etc/resolv.conf``):
  their mtimes and contents are the container's, not the image's.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from e2e_support import docker, image_config, pull_fresh, run_id, set_build_env

from imaged import Image, build
from imaged.config import load_settings
from imaged.pipeline.build import ImageBuild
from imaged.registry.client import create_registry_client
from imaged.spec.layers import CodeBundle

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

RUN = run_id()
CONTAINER_PATHS = {
    ".dockerenv",
    "dev/console",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
}
OWNED = (
    "mkdir -p /opt/own /existing && chown 1000:1000 /opt/own && chmod 0700 /opt/own "
    "&& mkdir -p /srv/shared && chown 1001:1002 /srv/shared && chmod 2750 /srv/shared"
)
Row = tuple[object, ...]


@pytest.fixture(autouse=True)
def _env(infra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_build_env(monkeypatch, infra)
    monkeypatch.setenv("IMAGED_STATE_DIR", str(tmp_path / "state"))


def write(root: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod((modes or {}).get(rel, 0o644))
    return root


def source_tree(root: Path) -> Path:
    write(
        root,
        {"app.py": "print('app')\n", "run.sh": "#!/bin/sh\necho run\n", "pkg/mod.py": "X = 1\n"},
        {"run.sh": 0o755},
    )
    (root / "pkg" / "link.py").symlink_to("mod.py")
    (root / "emptydir").mkdir()
    return root


def big_tree(root: Path, count: int = 300) -> Path:
    return write(root, {f"d{i % 7}/f{i:04d}.txt": f"{i}\n" * 40 for i in range(count)})


def both_ways(image: Image, **overrides: Any) -> tuple[ImageBuild, ImageBuild]:
    """The image built with the fast path, and again (another name) without it."""
    fast = build(image, settings=load_settings(overrides={"fast_path": True, **overrides}))
    full_image = image.clone(name=f"{image.name}-full")
    full = build(full_image, settings=load_settings(overrides={"fast_path": False, **overrides}))
    assert (fast.path, full.path) == ("fast", "full"), (fast.path_reason, full.path_reason)
    assert fast.status == full.status == "pushed"
    assert fast.digest == full.digest  # the name is not part of the digest
    return fast, full


def exported_rows(cli: str, uri: str) -> dict[str, Row]:
    pull_fresh(cli, uri)
    container = docker(cli, "create", uri, "true").stdout.strip()
    try:
        data = docker_bytes(cli, "export", container)
    finally:
        docker(cli, "rm", "-f", container, check=False)
    return rows_of(data)


def docker_bytes(cli: str, *args: str) -> bytes:
    import subprocess

    return subprocess.run([cli, *args], capture_output=True, check=True, timeout=300).stdout


def rows_of(data: bytes) -> dict[str, Row]:
    out: dict[str, Row] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            path = info.name.rstrip("/").removeprefix("./")
            if path in CONTAINER_PATHS:
                continue
            handle = tar.extractfile(info) if info.isfile() else None
            sha = hashlib.sha256(handle.read()).hexdigest() if handle is not None else ""
            mtime = None if info.isdir() else int(info.mtime)
            out[path] = (info.type, oct(info.mode), info.uid, info.gid, info.linkname, sha, mtime)
    return out


def config_facts(cli: str, uri: str) -> dict[str, Any]:
    config = image_config(cli, uri)
    keys = ("Env", "WorkingDir", "Entrypoint", "Cmd", "Labels", "User")
    return {k: config.get(k) for k in keys}


def assert_equal_images(cli: str, fast: ImageBuild, full: ImageBuild) -> dict[str, Row]:
    mine, theirs = exported_rows(cli, fast.uri), exported_rows(cli, full.uri)
    differ = {
        p: (mine.get(p), theirs.get(p))
        for p in mine.keys() | theirs.keys()
        if mine.get(p) != theirs.get(p)
    }
    assert differ == {}, "\n".join(f"{p}: {a} != {b}" for p, (a, b) in sorted(differ.items()))
    assert config_facts(cli, fast.uri) == config_facts(cli, full.uri)
    return mine


def named(infra: Any, what: str) -> Image:
    return Image.from_base(infra.debian_base).clone(
        name=f"fp-{what}-{RUN}", registry=infra.registry
    )


def test_every_file_layer_kind_equals_the_full_build(infra: Any, tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    other = source_tree(tmp_path / "other")
    tool = write(tmp_path / "files", {"tool": "#!/bin/sh\necho tool\n", "conf.ini": "a=1\n"})
    (tool / "tool").chmod(0o755)
    bundle = write(tmp_path / "proj", {"pyproject.toml": "[project]\nname='b'\n", "b.py": "B=1\n"})
    image = (
        named(infra, "kinds")
        .with_commands([OWNED])
        .with_source_folder(src, "/opt/own/deep")  # parent 0700 1000:1000 made by a RUN
        .with_source_folder(other, "/srv/shared", copy_contents_only=True)  # into an owned dir
        .with_source_file([tool / "tool", tool / "conf.ini"], "/usr/local/etc/app")
        .with_env_vars({"APP_MODE": 'dev $HOME "q"', "PATH": "/x/bin:/usr/bin:/bin"})
        .with_workdir("/existing")
        .with_workdir("/wd/missing")
        .with_workdir("/wd/missing/rel")
        .with_source_folder(src, ".", copy_contents_only=True)  # relative to the workdir
    )
    image = image._with(CodeBundle(root=bundle, dst="/bundle", copy_style="all"))
    fast, full = both_ways(image)
    assert fast.stem_uri
    assert fast.stem_uri != fast.uri
    rows = assert_equal_images(infra.docker_cli, fast, full)
    assert rows["opt/own"][1:4] == (oct(0o40700), 1000, 1000)
    assert rows["srv/shared"][1:4] == (oct(0o42750), 1001, 1002)
    assert rows["opt/own/deep/src/pkg/link.py"][4] == "mod.py"
    assert rows["usr/local/etc/app/tool"][1] == oct(0o100755)
    out = docker(
        infra.docker_cli,
        "run",
        "--rm",
        fast.uri,
        "sh",
        "-c",
        "pwd; cat app.py /bundle/b.py; echo $APP_MODE; /usr/local/etc/app/tool",
    ).stdout
    assert out.splitlines() == ["/wd/missing/rel", "print('app')", "B=1", 'dev $HOME "q"', "tool"]


def test_a_split_folder_equals_the_full_build(infra: Any, tmp_path: Path) -> None:
    tree = big_tree(tmp_path / "big")
    image = named(infra, "split").with_source_folder(tree, "/data")
    fast, full = both_ways(image, fastpath_split_bytes=64 << 10)
    layers = manifest_layers(fast.uri)
    assert len(layers) - len(manifest_layers(fast.stem_uri or "")) > 2  # split in parts
    assert_equal_images(infra.docker_cli, fast, full)


def test_a_split_folder_into_folders_the_stem_owns_equals_the_full_build(
    infra: Any, tmp_path: Path
) -> None:
    """Each part re-adds the folders above its entries: those the stem has (made 0700
    1000:1000 and 2750 1001:1002 by a RUN) keep their mode and owner in every part."""
    image = (
        named(infra, "splitown")
        .with_commands([OWNED])
        .with_source_folder(big_tree(tmp_path / "big"), "/srv/shared", copy_contents_only=True)
        .with_source_folder(big_tree(tmp_path / "other", 200), "/opt/own/deep")
    )
    fast, full = both_ways(image, fastpath_split_bytes=64 << 10)
    assert len(manifest_layers(fast.uri)) - len(manifest_layers(fast.stem_uri or "")) > 4
    rows = assert_equal_images(infra.docker_cli, fast, full)
    assert rows["srv/shared"][1:4] == (oct(0o42750), 1001, 1002)
    assert rows["opt/own"][1:4] == (oct(0o40700), 1000, 1000)


def user_base(infra: Any, tmp_path: Path, user: str) -> str:
    """A base image (built by BuildKit from a Dockerfile, pushed) whose config has ``USER``."""
    dockerfile = write(
        tmp_path / f"userbase-{abs(hash(user))}",
        {
            "Dockerfile": f"FROM {infra.debian_base}\n"
            "RUN groupadd -g 777 grp && useradd -u 1234 -g 777 app\n"
            f"RUN mkdir -p /home/app/own && chown 1234:777 /home/app/own\nUSER {user}\n"
        },
    )
    base = Image.from_dockerfile(dockerfile / "Dockerfile", infra.registry, f"fp-ub-{RUN}")
    built = build(base, settings=load_settings(overrides={"fast_path": False}))
    assert built.status in ("pushed", "exists"), built.status
    return built.uri


@pytest.mark.parametrize(
    ("user", "owner"),
    [
        pytest.param("app", (1234, 777), id="name"),
        pytest.param("4321:grp", (4321, 777), id="id-and-group-name"),
    ],
)
def test_a_workdir_under_a_base_with_a_user_equals_the_full_build(
    infra: Any, tmp_path: Path, user: str, owner: tuple[int, int]
) -> None:
    """BuildKit makes a missing WORKDIR's folders as the config's User (resolved in the
    image's /etc/passwd and /etc/group); a COPY's missing parents and files stay 0:0."""
    src = source_tree(tmp_path / "src")
    image = (
        Image.from_base(user_base(infra, tmp_path, user))
        .clone(name=f"fp-user-{RUN}", registry=infra.registry)
        .with_workdir("/wd/missing")
        .with_source_folder(src, "rel")
        .with_source_folder(src, "/new/parents/here")
        .with_workdir("/home/app/own/deeper")  # under folders the stem has
    )
    fast, full = both_ways(image)
    rows = assert_equal_images(infra.docker_cli, fast, full)
    assert rows["wd"][2:4] == rows["wd/missing"][2:4] == owner
    assert rows["home/app/own/deeper"][2:4] == owner
    assert rows["home/app/own"][2:4] == (1234, 777)
    assert rows["new/parents"][2:4] == (0, 0)
    assert rows["wd/missing/rel/src/app.py"][2:4] == (0, 0)


def manifest_layers(uri: str) -> list[dict[str, Any]]:
    import anyio

    async def get() -> list[dict[str, Any]]:
        async with create_registry_client(load_settings()) as client:
            _, body, _ = await client.get_manifest(uri)
            layers: list[dict[str, Any]] = json.loads(body)["layers"]
            return layers

    return anyio.run(get)


def test_a_tail_edit_uploads_only_its_part_and_a_recipe_edit_rebuilds_the_stem(
    infra: Any, tmp_path: Path
) -> None:
    tree = big_tree(tmp_path / "big", 600)
    image = named(infra, "edit").with_commands(["echo one"]).with_source_folder(tree, "/data")
    settings = load_settings(overrides={"fastpath_split_bytes": 64 << 10})
    first = build(image, settings=settings)
    assert first.path == "fast"
    assert first.status == "pushed"
    total = sum(la["size"] for la in manifest_layers(first.uri)[-10:])
    (tree / "d3" / "f0003.txt").write_text("edited\n")
    events: list[dict[str, Any]] = []
    second = build(image, settings=settings, on_event=events.append)
    assert second.tag != first.tag
    assert second.stem_uri == first.stem_uri
    assert stem_builds(events) == []  # no BuildKit build: the stem was there
    assert 0 < second.uploaded_bytes < total / 4, (second.uploaded_bytes, total)
    assert {"stem", "tail_tar", "upload", "manifest"} <= second.timings.keys()
    edited = image.clone(name=image.name)
    recipe = replace_commands(edited, "echo two")
    events.clear()
    third = build(recipe, settings=settings, on_event=events.append)
    assert third.stem_uri != first.stem_uri
    assert third.path == "fast"
    assert stem_builds(events) == [third.stem_uri]
    out = docker(infra.docker_cli, "run", "--rm", third.uri, "cat", "/data/big/d3/f0003.txt")
    assert out.stdout == "edited\n"


def stem_builds(events: list[dict[str, Any]]) -> list[str]:
    """The stems BuildKit built and pushed (their events reach the image as ``parent_*``)."""
    return [e["uri"] for e in events if e.get("event") == "parent_pushed"]


def replace_commands(image: Image, command: str) -> Image:
    from imaged.spec.layers import Commands

    layers = tuple(
        replace(la, commands=(command,)) if isinstance(la, Commands) else la for la in image.layers
    )
    return image._evolve(layers=layers)


def test_a_stem_tag_that_vanished_rebuilds_the_stem(infra: Any, tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    image = named(infra, "vanish").with_commands(["echo stem"]).with_source_folder(src, "/app")
    first = build(image)
    assert first.path == "fast"
    assert first.stem_uri
    delete_manifest(first.stem_uri)
    (src / "app.py").write_text("print('again')\n")
    events: list[dict[str, Any]] = []
    second = build(image, on_event=events.append)
    assert second.path == "fast"
    assert stem_builds(events) == [first.stem_uri]
    assert manifest_layers(second.stem_uri or "")
    out = docker(infra.docker_cli, "run", "--rm", second.uri, "cat", "/app/src/app.py")
    assert out.stdout == "print('again')\n"


def delete_manifest(uri: str) -> None:
    import anyio

    async def delete() -> None:
        async with create_registry_client(load_settings()) as client:
            digest = await client.manifest_digest(uri)
            assert digest is not None
            ref = client_ref(uri, digest)
            response = await client.request(
                "DELETE",
                client.manifest_url(ref),
                registry=ref.registry,
                scope=f"repository:{ref.repository}:*",
            )
            assert response.status_code == 202, response.text
            assert await client.manifest_digest(uri) is None

    anyio.run(delete)


def client_ref(uri: str, digest: str) -> Any:
    from imaged.registry.ref import ImageRef

    return replace(ImageRef.parse(uri), tag=None, digest=digest)


def test_a_parent_that_is_a_symlink_in_the_stem_takes_the_full_build(
    infra: Any, tmp_path: Path
) -> None:
    src = source_tree(tmp_path / "src")
    image = (
        named(infra, "symlinked")
        .with_commands(["mkdir -p /real && ln -s /real /linked"])
        .with_source_folder(src, "/linked/app")
    )
    result = build(image)
    assert result.path == "full"
    assert result.path_reason == (
        "layer 2 (source_folder src/) writes into /linked, which is a symlink to /real in the "
        "stem: the full build follows it as BuildKit does"
    )
    assert result.status == "pushed"
    out = docker(infra.docker_cli, "run", "--rm", result.uri, "cat", "/real/app/src/app.py")
    assert out.stdout == "print('app')\n"


def test_force_rebuilds_the_stem_and_pushes_the_tail_again(infra: Any, tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    image = named(infra, "force").with_commands(["echo forced"]).with_source_folder(src, "/app")
    first = build(image)
    events: list[dict[str, Any]] = []
    again = build(image, force=True, on_event=events.append)
    assert (again.path, again.status, again.uri) == ("fast", "pushed", first.uri)
    assert stem_builds(events) == [first.stem_uri]
    assert any("--no-cache" in e.get("argv", ()) for e in events)


def test_a_known_layer_missing_from_the_repository_is_written_and_uploaded(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaged.pipeline import fastpath
    from imaged.render.layertar import MemberCache

    tree = big_tree(tmp_path / "big", 200)
    settings = load_settings(overrides={"fastpath_split_bytes": 32 << 10})
    first = build(named(infra, "known-a").with_source_folder(tree, "/data"), settings=settings)
    monkeypatch.setattr(fastpath, "MEMBERS", MemberCache())  # as a new process would
    other = named(infra, "known-b").with_source_folder(tree, "/data")
    second = build(other, settings=settings)
    assert second.path == "fast"
    tail = manifest_layers(second.uri)[len(manifest_layers(second.stem_uri or "")) :]
    assert second.uploaded_bytes >= sum(la["size"] for la in tail)  # every part, written anew
    assert [la["digest"] for la in tail] == [
        la["digest"] for la in manifest_layers(first.uri)[-len(tail) :]
    ]
    out = docker(infra.docker_cli, "run", "--rm", second.uri, "cat", "/data/big/d3/f0003.txt")
    assert out.stdout == "3\n" * 40


def test_a_checkout_moving_stem_and_tail_during_the_tail_pushes_the_new_stem(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail file and a recipe input change together (a git checkout) after the stem was
    looked up: the re-hash sees the stem move too, so the image is appended to the new
    stem, not tagged with the new digest on the old one."""
    from imaged.errors import ContextChangedError
    from imaged.pipeline import build as build_module

    requirements = write(tmp_path / "recipe", {"requirements.txt": "six==1.16.0\n"})
    src = source_tree(tmp_path / "src")
    image = (
        named(infra, "checkout")
        .with_requirements(requirements / "requirements.txt")
        .with_source_folder(src, "/app")
    )
    real = build_module.write_tail
    calls = []

    def checkout_then_write(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            (requirements / "requirements.txt").write_text("six==1.17.0\n")
            (src / "app.py").write_text("print('checked out')\n")
            raise ContextChangedError(f"{src / 'app.py'} changed after it was hashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "write_tail", checkout_then_write)
    events: list[dict[str, Any]] = []
    raced = build(image, on_event=events.append)
    assert (raced.path, raced.status) == ("fast", "pushed"), raced.path_reason
    assert [e["event"] for e in events].count("rehashed") == 1
    monkeypatch.setattr(build_module, "write_tail", real)
    fresh = build(image.clone(name=f"{image.name}-fresh"))  # the new inputs, built afresh
    assert fresh.digest == raced.digest
    assert (raced.stem_uri or "").rpartition(":")[2] == (fresh.stem_uri or "").rpartition(":")[2]
    built = stem_builds(events)  # the old stem, then the new one
    assert len(built) == 2, built
    assert built[-1] == raced.stem_uri
    stem_layers = manifest_layers(fresh.stem_uri or "")
    assert manifest_layers(raced.uri)[: len(stem_layers)] == stem_layers
    cli = infra.docker_cli
    script = "import six; print(six.__version__); print(open('/app/src/app.py').read())"
    out = docker(cli, "run", "--rm", raced.uri, "python", "-c", script)
    assert out.stdout == "1.17.0\nprint('checked out')\n\n"


def test_a_stale_layer_index_entry_is_dropped_and_the_layer_written_afresh(
    infra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every entry of the on-disk layer index names other bytes (a damaged file, or one
    written by another compressor): the build drops them, writes the tail afresh, and the
    manifest names the bytes written; the index is corrected."""
    from imaged.pipeline import fastpath
    from imaged.render.layertar import MemberCache

    tree = big_tree(tmp_path / "big", 200)
    settings = load_settings(overrides={"fastpath_split_bytes": 32 << 10})
    first = build(named(infra, "stale-a").with_source_folder(tree, "/data"), settings=settings)
    assert first.path == "fast"
    path = fastpath._index_path(settings.resolved_state_dir)
    data = json.loads(path.read_text())
    rows = [k for k in data if k != "present"]
    assert len(rows) > 3
    for n, key in enumerate(rows):
        diff_id, _, size = data[key]
        data[key] = [diff_id, "sha256:" + hashlib.sha256(f"stale {n}".encode()).hexdigest(), size]
    path.write_text(json.dumps(data))
    # a new process: no members, the index read back from the damaged file
    monkeypatch.setattr(fastpath, "MEMBERS", MemberCache())
    monkeypatch.setattr(fastpath, "_INDEXES", {})
    second = build(named(infra, "stale-b").with_source_folder(tree, "/data"), settings=settings)
    assert (second.path, second.status) == ("fast", "pushed"), second.path_reason
    tail = manifest_layers(second.uri)[len(manifest_layers(second.stem_uri or "")) :]
    truth = [la["digest"] for la in manifest_layers(first.uri)[-len(tail) :]]
    assert [la["digest"] for la in tail] == truth
    kept = json.loads(path.read_text())
    assert set(truth) <= {row[1] for k, row in kept.items() if k != "present"}
    out = docker(infra.docker_cli, "run", "--rm", second.uri, "cat", "/data/big/d3/f0003.txt")
    assert out.stdout == "3\n" * 40
