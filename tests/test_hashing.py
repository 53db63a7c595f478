"""Tests for imaged.digest (encoding, cache, trees, image_digest): the canonical encoding, image digests, the digest cache, TreeIndex."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaged import Image
from imaged.digest.cache import DigestCache
from imaged.digest.encoding import encode, sha256_hex
from imaged.digest.files import FILE
from imaged.digest.ignore import IgnoreRules
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeIndex
from imaged.errors import SpecError

Tree = dict[str, tuple[str, bool]]  # relpath -> (content, executable)
Op = Callable[[Path], object]

# -- canonical encoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(["ab"], ["a", "b"], id="split-string"),
        pytest.param("a/b", ["a", "b"], id="path-vs-parts"),
        pytest.param("", None, id="empty-vs-none"),
        pytest.param(1, "1", id="int-vs-str"),
        pytest.param(True, 1, id="true-vs-1"),
        pytest.param(False, 0, id="false-vs-0"),
        pytest.param(False, None, id="false-vs-none"),
        pytest.param(b"x", "x", id="bytes-vs-str"),
        pytest.param(b"", "", id="empty-bytes-vs-str"),
        pytest.param([["a"], "b"], [["a", "b"]], id="nesting"),
        pytest.param([[]], [], id="nested-empty"),
        pytest.param([None], None, id="list-of-none"),
        pytest.param([], "", id="empty-list-vs-str"),
        pytest.param(-1, "-1", id="negative"),
        pytest.param(["a", ["b", "c"]], [["a", "b"], "c"], id="regrouped"),
        pytest.param("a\x00", "a", id="nul"),
        pytest.param("é", "e\u0301", id="unicode-normal-forms"),
    ],
)
def test_encode_no_collision(left: object, right: object) -> None:
    assert encode(left) != encode(right)
    assert sha256_hex(left) != sha256_hex(right)


def test_encode_tuples_are_lists() -> None:
    assert encode(("a", (1, None))) == encode(["a", [1, None]])


def test_encode_no_collision_with_escaped_surrogates() -> None:
    assert encode("é") != encode("\udcc3\udca9")


@pytest.mark.parametrize(
    "value",
    [pytest.param(1.5, id="float"), pytest.param({"a": 1}, id="dict"), pytest.param({1}, id="set")],
)
def test_encode_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        encode(value)


def typed(value: object) -> object:
    """Python equality that tells True from 1 and treats tuples as lists."""
    if isinstance(value, list | tuple):
        return ("list", tuple(typed(v) for v in value))
    return (type(value).__name__, value)


def as_tuples(value: object) -> object:
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    return value


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=3)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(left=values, right=values)
def test_encode_equal_iff_values_equal(left: object, right: object) -> None:
    assert (encode(left) == encode(right)) == (typed(left) == typed(right))


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_encode_same_value_same_bytes(value: object) -> None:
    assert encode(value) == encode(as_tuples(value))


# -- trees on disk ----------------------------------------------------------------------


def write_tree(root: Path, tree: Tree, *, reverse: bool = False) -> None:
    for rel in sorted(tree, reverse=reverse):
        content, executable = tree[rel]
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o755 if executable else 0o644)


def files(**items: str) -> Tree:
    return {rel.replace("__", "/"): (text, False) for rel, text in items.items()}


PROJECT: Tree = {
    "src/app.py": ("print('app')\n", False),
    "src/run.sh": ("#!/bin/sh\n", True),
    "src/pkg/__init__.py": ("", False),
    "src/pkg/mod.py": ("X = 1\n", False),
    "src/notes.tmp": ("scratch\n", False),
    "src/debug.log": ("log\n", False),
    "src/.dockerignore": ("*.log\n", False),
    "src/__pycache__/app.cpython-311.pyc": ("bytecode", False),
    "requirements.txt": ("rich\n", False),
    "pyproject.toml": ('[project]\nname = "p"\nversion = "0"\n', False),
    "uv.lock": ("version = 1\n", False),
    "extra.dockerignore": ("src/*.tmp\n", False),  # anchored at its folder
    "unreferenced.txt": ("nobody reads me\n", False),
}


def project_image(root: Path) -> Image:
    return (
        Image.from_base("127.0.0.1:5000/base:1")
        .clone(name="proj")
        .with_requirements(root / "requirements.txt")
        .with_uv_project(root / "pyproject.toml")
        .with_source_folder(root / "src", "/app")
        .with_dockerignore(root / "extra.dockerignore")
    )


def digest_of(image: Image) -> str:
    return hash_image(image, DigestCache()).digest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write_tree(root, PROJECT)
    return root


def test_same_tree_elsewhere_in_other_order_same_digest(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two" / "nested"
    write_tree(one, PROJECT)
    write_tree(two, PROJECT, reverse=True)
    assert digest_of(project_image(one)) == digest_of(project_image(two))
    assert project_image(one).digest == project_image(two).digest


def edit(rel: str, text: str) -> Op:
    return lambda root: (root / rel).write_text(text)


def rename(old: str, new: str) -> Op:
    return lambda root: (root / old).rename(root / new)


def chmod(rel: str, mode: int) -> Op:
    return lambda root: (root / rel).chmod(mode)


def touch(rel: str) -> Op:
    def run(root: Path) -> None:
        later = time.time() + 100
        os.utime(root / rel, (later, later))

    return run


def unlink(rel: str) -> Op:
    return lambda root: (root / rel).unlink()


def symlink(rel: str, target: str) -> Op:
    return lambda root: (root / rel).symlink_to(target)


MOVES = [
    pytest.param(edit("src/app.py", "print('changed')\n"), id="content-edit"),
    pytest.param(edit("src/app.py", "print('APP')\n"), id="same-size-edit"),
    pytest.param(rename("src/pkg/mod.py", "src/pkg/mod2.py"), id="rename"),
    pytest.param(rename("src/pkg", "src/pkg2"), id="rename-folder"),
    pytest.param(edit("src/pkg/new.py", ""), id="added-empty-file"),
    pytest.param(unlink("src/pkg/mod.py"), id="deleted-file"),
    pytest.param(chmod("src/app.py", 0o755), id="chmod-plus-x"),
    pytest.param(chmod("src/run.sh", 0o644), id="chmod-minus-x"),
    pytest.param(symlink("src/link", "app.py"), id="added-symlink"),
    pytest.param(
        edit("extra.dockerignore", "src/*.tmp\nsrc/app.py\n"), id="ignore-file-drops-file"
    ),
    pytest.param(edit("extra.dockerignore", "# nothing\n"), id="ignore-file-readds-file"),
    pytest.param(edit("src/.dockerignore", "*.tmp\n"), id="folder-dockerignore"),
    pytest.param(edit("uv.lock", "version = 2\n"), id="lock-edit"),
    pytest.param(edit("requirements.txt", "rich==13\n"), id="requirements-edit"),
    pytest.param(edit("pyproject.toml", '[project]\nname = "q"\n'), id="pyproject-edit"),
]


@pytest.mark.parametrize("op", MOVES)
def test_digest_moves(project: Path, op: Op) -> None:
    before = project_image(project).digest
    op(project)
    assert project_image(project).digest != before


STAYS = [
    pytest.param(touch("src/app.py"), id="utime"),
    pytest.param(edit("src/app.py", "print('app')\n"), id="rewrite-same-content"),
    pytest.param(edit("src/notes.tmp", "other\n"), id="edit-ignored-by-extra"),
    pytest.param(edit("src/debug.log", "other\n"), id="edit-ignored-by-folder"),
    pytest.param(edit("src/__pycache__/app.cpython-311.pyc", "x"), id="edit-standard-ignored"),
    pytest.param(edit("src/new.tmp", "x"), id="add-ignored"),
    pytest.param(edit("unreferenced.txt", "changed\n"), id="edit-unreferenced"),
    pytest.param(edit("extra.dockerignore", "src/*.tmp\n# a comment\n"), id="ignore-comment"),
    pytest.param(edit("extra.dockerignore", "src/*.tmp\n*.nomatch\n"), id="ignore-no-effect"),
    pytest.param(chmod("src/app.py", 0o600), id="chmod-644-to-600"),
    pytest.param(chmod("src/run.sh", 0o700), id="chmod-755-to-700"),
]


@pytest.mark.parametrize("op", STAYS)
def test_digest_stays(project: Path, op: Op) -> None:
    before = project_image(project).digest
    op(project)
    assert project_image(project).digest == before


def test_empty_source_tree_hashes(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    img = Image.from_base("r:1").with_source_folder(tmp_path / "src")
    assert img.digest.startswith("sha256:")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda src: (src / "empty").mkdir(), id="empty-folder"),
        pytest.param(
            lambda src: (src / "cache").mkdir() or (src / "cache/x.pyc").write_text("b"),
            id="folder-of-ignored-files",
        ),
    ],
)
def test_folder_with_no_listed_files(tmp_path: Path, make: Callable[[Path], object]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("a")
    before = Image.from_base("r:1").with_source_folder(src).digest
    make(src)
    assert Image.from_base("r:1").with_source_folder(src).digest != before


@pytest.mark.parametrize(
    ("dst", "contents_only"),
    [pytest.param("/elsewhere", False, id="dst"), pytest.param("/app", True, id="contents-only")],
)
def test_source_folder_target_is_in_digest(project: Path, dst: str, contents_only: bool) -> None:
    base = Image.from_base("r:1").clone(name="x")
    default = base.with_source_folder(project / "src", "/app").digest
    other = base.with_source_folder(project / "src", dst, copy_contents_only=contents_only).digest
    assert other != default


def test_name_and_registry_not_in_digest(project: Path) -> None:
    img = project_image(project)
    assert img.clone(name="x", registry="elsewhere:1").digest == img.digest


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(
            lambda i: i.with_pip_packages("a", "b"),
            lambda i: i.with_pip_packages("a").with_pip_packages("b"),
            id="split-layer",
        ),
        pytest.param(
            lambda i: i.with_pip_packages("a", "b"),
            lambda i: i.with_pip_packages("b", "a"),
            id="package-order",
        ),
        pytest.param(
            lambda i: i.with_pip_packages("a"),
            lambda i: i.with_pip_packages("a", pre=True),
            id="pre",
        ),
        pytest.param(
            lambda i: i.with_pip_packages("a"),
            lambda i: i.with_pip_packages("a", index_url="https://x"),
            id="index",
        ),
        pytest.param(
            lambda i: i.with_commands("a"),
            lambda i: i.with_commands("a", secret_mounts="s"),
            id="secret",
        ),
        pytest.param(
            lambda i: i.with_apt_packages("a"), lambda i: i.with_pip_packages("a"), id="kind"
        ),
        pytest.param(
            lambda i: i.with_env_vars({"A": "1"}),
            lambda i: i.with_env_vars({"A": "2"}),
            id="env-value",
        ),
        pytest.param(lambda i: i.with_workdir("/a"), lambda i: i.with_workdir("/b"), id="workdir"),
        pytest.param(
            lambda i: i.with_workdir("/a").with_commands("x"),
            lambda i: i.with_commands("x").with_workdir("/a"),
            id="layer-order",
        ),
    ],
)
def test_spec_differences_move_digest(
    left: Callable[[Image], Image], right: Callable[[Image], Image]
) -> None:
    base = Image.from_base("r:1").clone(name="x")
    assert left(base).digest != right(base).digest


def test_secret_value_is_not_in_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    img = Image.from_base("r:1").with_commands("x", secret_mounts="tok")
    monkeypatch.setenv("IMAGED_SECRET_TOK", "one")
    first = img.digest
    monkeypatch.setenv("IMAGED_SECRET_TOK", "two")
    assert img.digest == first


def test_source_file_exec_bit_and_name(project: Path) -> None:
    app = project / "src" / "app.py"
    base = Image.from_base("r:1").clone(name="x")
    before = base.with_source_file(app).digest
    app.chmod(0o755)
    assert base.with_source_file(app).digest != before
    app.chmod(0o644)
    assert base.with_source_file(app).digest == before
    renamed = project / "src" / "main.py"
    renamed.write_text(app.read_text())
    assert base.with_source_file(renamed).digest != before


def test_code_bundle_ignores_standard_and_gitignore(project: Path) -> None:
    (project / ".gitignore").write_text("secret.env\n")
    (project / "images.py").write_text(
        "from imaged import Image\nimg = Image.from_base('r:1').with_code_bundle('all', '/code')\n"
    )
    spec = importlib.util.spec_from_file_location("imaged_test_bundle", project / "images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bundle: Image = module.img
    assert bundle.layers[0].inputs().paths() == (project,)
    before = bundle.digest
    (project / "secret.env").write_text("x")
    (project / ".venv").mkdir()
    (project / ".venv" / "lib.py").write_text("x")
    (project / "src" / "__pycache__" / "more.pyc").write_text("x")
    assert bundle.digest == before
    (project / "new.py").write_text("x")
    assert bundle.digest != before


# -- Dockerfile and uv script inputs ----------------------------------------------------


@pytest.fixture
def docker_context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    write_tree(
        ctx,
        {
            "Dockerfile": ("FROM scratch\nCOPY . /\n", False),
            "app.py": ("x\n", False),
            ".dockerignore": ("*.log\nbuild\n", False),
            "debug.log": ("log\n", False),
            "build/out.o": ("o", False),
        },
    )
    return ctx


@pytest.mark.parametrize(
    ("op", "moves"),
    [
        pytest.param(edit("Dockerfile", "FROM scratch\n"), True, id="dockerfile"),
        pytest.param(edit("app.py", "y\n"), True, id="context-file"),
        pytest.param(edit("new.txt", "n"), True, id="context-add"),
        pytest.param(edit(".dockerignore", "*.log\n"), True, id="dockerignore-readds"),
        pytest.param(edit("debug.log", "other\n"), False, id="ignored-file"),
        pytest.param(edit("build/more.o", "o"), False, id="ignored-folder"),
        pytest.param(touch("app.py"), False, id="touch"),
    ],
)
def test_dockerfile_digest(docker_context: Path, op: Op, moves: bool) -> None:
    img = Image.from_dockerfile(docker_context / "Dockerfile", "reg", "df")
    before = img.digest
    op(docker_context)
    assert (img.digest != before) is moves


SCRIPT = '#!/usr/bin/env python\n# /// script\n# dependencies = ["rich"]\n# ///\nprint(1)\n'


@pytest.mark.parametrize(
    ("new_text", "moves"),
    [
        pytest.param(SCRIPT.replace("print(1)", "print(2)\nprint(3)"), False, id="body"),
        pytest.param(
            SCRIPT.replace("#!/usr/bin/env python", "#!/bin/python3"), False, id="shebang"
        ),
        pytest.param(SCRIPT.replace('"rich"', '"rich", "httpx"'), True, id="add-dependency"),
        pytest.param(SCRIPT.replace('"rich"', '"rich>=13"'), True, id="pin-dependency"),
    ],
)
def test_uv_script_digest_follows_header_only(tmp_path: Path, new_text: str, moves: bool) -> None:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    img = Image.from_uv_script(script, name="s", python_version=(3, 11))
    before = img.digest
    script.write_text(new_text)
    assert (img.digest != before) is moves


# -- per-file digest cache --------------------------------------------------------------


def age(root: Path, seconds: float = 10) -> None:
    past = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (past, past), follow_symlinks=False)


def test_unchanged_tree_is_not_read_again(project: Path) -> None:
    age(project)
    cache = DigestCache()
    first = hash_image(project_image(project), cache).digest
    reads = cache.reads
    assert reads >= 8
    assert hash_image(project_image(project), cache).digest == first
    assert cache.reads == reads


def test_racy_file_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("old")
    age(tmp_path)
    (tmp_path / "fresh.txt").write_text("fresh")
    cache = DigestCache()
    TreeIndex.build(tmp_path, IgnoreRules(), cache)
    assert cache.reads == 2
    TreeIndex.build(tmp_path, IgnoreRules(), cache)
    assert cache.reads == 3  # only fresh.txt: its mtime is within the racy window


def test_same_size_same_mtime_change_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("aaaa")
    age(tmp_path)
    st = path.stat()
    cache = DigestCache()
    first = TreeIndex.build(tmp_path, IgnoreRules(), cache).digest
    path.write_text("bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = TreeIndex.build(tmp_path, IgnoreRules(), cache).digest
    assert second != first
    assert cache.reads == 2


def test_cache_json_round_trip(project: Path) -> None:
    age(project)
    cache = DigestCache()
    digest = hash_image(project_image(project), cache).digest
    restored = DigestCache.from_json(cache.to_json())
    assert restored.entries == cache.entries
    assert hash_image(project_image(project), restored).digest == digest
    assert restored.reads == 0
    assert DigestCache.from_json({"version": 0, "entries": {"x": 1}}).entries == {}


# -- TreeIndex incremental update -------------------------------------------------------

RULES = IgnoreRules.from_lines(["*.pyc", "node_modules", "build", "!build/keep.txt"])
BASE_TREE: Tree = {
    "a.txt": ("a", False),
    "b.sh": ("#!/bin/sh", True),
    "d/f.txt": ("f", False),
    "d/g/h.txt": ("h", False),
    "node_modules/m.js": ("m", False),
    "x.pyc": ("pyc", False),
}


def rmtree(rel: str) -> Op:
    return lambda root: shutil.rmtree(root / rel)


def new_folder(root: Path) -> None:
    write_tree(root, {"n/x.txt": ("x", False), "n/y/z.txt": ("z", False)})


def file_to_folder(root: Path) -> None:
    (root / "a.txt").unlink()
    write_tree(root, {"a.txt/inner": ("i", False)})


def folder_to_file(root: Path) -> None:
    shutil.rmtree(root / "d")
    (root / "d").write_text("now a file")


def new_build_folder(root: Path) -> None:
    write_tree(root, {"build/keep.txt": ("k", False), "build/out.o": ("o", False)})


def both(*ops: Op) -> Op:
    def run(root: Path) -> None:
        for op in ops:
            op(root)

    return run


UPDATES = [
    pytest.param(edit("a.txt", "A2"), ["a.txt"], {"a.txt"}, id="edit"),
    pytest.param(edit("new.txt", "n"), ["new.txt"], {"new.txt"}, id="add"),
    pytest.param(edit("d/g/new.txt", "n"), ["d/g/new.txt"], {"d/g/new.txt"}, id="add-deep"),
    pytest.param(unlink("a.txt"), ["a.txt"], {"a.txt"}, id="delete"),
    pytest.param(rename("a.txt", "c.txt"), ["a.txt", "c.txt"], {"a.txt", "c.txt"}, id="rename"),
    pytest.param(
        rename("d", "e"),
        ["d", "e"],
        {"d", "d/f.txt", "d/g", "d/g/h.txt", "e", "e/f.txt", "e/g", "e/g/h.txt"},
        id="rename-folder",
    ),
    pytest.param(chmod("a.txt", 0o755), ["a.txt"], {"a.txt"}, id="chmod-plus-x"),
    pytest.param(chmod("b.sh", 0o644), ["b.sh"], {"b.sh"}, id="chmod-minus-x"),
    pytest.param(chmod("a.txt", 0o600), ["a.txt"], set(), id="chmod-no-exec-change"),
    pytest.param(touch("a.txt"), ["a.txt"], set(), id="touch"),
    pytest.param(new_folder, ["n"], {"n", "n/x.txt", "n/y", "n/y/z.txt"}, id="new-folder"),
    pytest.param(rmtree("d"), ["d"], {"d", "d/f.txt", "d/g", "d/g/h.txt"}, id="delete-folder"),
    pytest.param(edit("y.pyc", "p"), ["y.pyc"], set(), id="add-ignored"),
    pytest.param(
        edit("node_modules/n.js", "n"), ["node_modules/n.js"], set(), id="add-in-pruned-folder"
    ),
    pytest.param(symlink("ln", "a.txt"), ["ln"], {"ln"}, id="add-symlink"),
    pytest.param(
        both(unlink("a.txt"), symlink("a.txt", "b.sh")), ["a.txt"], {"a.txt"}, id="file-to-symlink"
    ),
    pytest.param(file_to_folder, ["a.txt"], {"a.txt", "a.txt/inner"}, id="file-to-folder"),
    pytest.param(
        edit("d/f.txt", "f"),
        ["d/f.txt", "d", "nope", "../a.txt"],
        set(),
        id="unchanged-and-missing",
    ),
    pytest.param(
        folder_to_file,
        ["d"],
        {"d", "d/f.txt", "d/g", "d/g/h.txt"},
        id="folder-to-file",
    ),
    pytest.param(
        new_build_folder,
        ["build"],
        {"build/keep.txt"},
        id="new-reincluded-folder",
    ),
    pytest.param(
        lambda root: (root / "empty").mkdir(),
        ["empty"],
        {"empty"},
        id="new-empty-folder",
    ),
]


def fresh(root: Path) -> TreeIndex:
    return TreeIndex.build(root, RULES, DigestCache())


def snapshot(index: TreeIndex) -> list[tuple[str, str, bool, str | None]]:
    return [(e.relpath, e.type, e.executable, e.target) for e in index.listing()]


@pytest.mark.parametrize(("op", "names", "changed"), UPDATES)
def test_update_matches_fresh_build(
    tmp_path: Path, op: Op, names: list[str], changed: set[str]
) -> None:
    write_tree(tmp_path, BASE_TREE)
    index = fresh(tmp_path)
    before = index.digest
    op(tmp_path)
    assert index.update(names) == changed
    rebuilt = fresh(tmp_path)
    assert index.digest == rebuilt.digest
    assert snapshot(index) == snapshot(rebuilt)
    assert index.file_digests() == rebuilt.file_digests()
    assert (index.digest == before) is (not changed)


def test_update_after_digest_without_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path, BASE_TREE)
    index = fresh(tmp_path)
    _ = index.digest
    (tmp_path / "d" / "g" / "h.txt").write_text("H2")

    def no_walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("update of a file must not walk the tree")

    monkeypatch.setattr("imaged.digest.trees.walk_files", no_walk)
    assert index.update(["d/g/h.txt"]) == {"d/g/h.txt"}
    monkeypatch.undo()
    assert index.digest == fresh(tmp_path).digest


def test_file_digests_shapes(tmp_path: Path) -> None:
    write_tree(tmp_path, BASE_TREE)
    (tmp_path / "ln").symlink_to("a.txt")
    found = fresh(tmp_path).file_digests()
    assert found["ln"] == "-> a.txt"
    assert found["d"] == "dir"
    assert found["b.sh"].endswith("+x")
    assert len(found["a.txt"]) == 64
    assert "x.pyc" not in found
    assert "node_modules/m.js" not in found


# -- randomized properties --------------------------------------------------------------

DIRS = ("d", "e")
NAMES = ("a", "b", "c.pyc", "x")
OP_RULES = IgnoreRules.from_lines(["**/*.pyc"])

path_parts = st.lists(st.sampled_from(DIRS), max_size=2)
folder_parts = st.lists(st.sampled_from(DIRS), min_size=1, max_size=2)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"),
            path_parts,
            st.sampled_from(NAMES),
            st.binary(max_size=3),
            st.booleans(),
        ),
        st.tuples(st.just("delete"), path_parts, st.sampled_from(NAMES)),
        st.tuples(st.just("chmod"), path_parts, st.sampled_from(NAMES), st.booleans()),
        st.tuples(st.just("rmtree"), folder_parts),
        st.tuples(st.just("rename"), folder_parts, st.sampled_from(DIRS)),
    ),
    min_size=1,
    max_size=8,
)


def make_dirs(root: Path, parts: list[str]) -> list[str]:
    """Create the folders of ``parts``, each with a 'keep' file; return the new relpaths."""
    created: list[str] = []
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        if not (root / rel).is_dir():
            (root / rel).mkdir()
            (root / rel / "keep").write_text(rel)
            created.append(rel)
    return created


def apply_op(root: Path, op: tuple[object, ...]) -> list[str]:
    """Run one random operation and return the relpaths a watcher would report."""
    kind, parts = op[0], list(op[1])  # type: ignore[call-overload]
    folder = "/".join(parts)
    if kind in ("write", "delete", "chmod"):
        rel = f"{folder}/{op[2]}" if folder else str(op[2])
        path = root / rel
        if kind == "write":
            created = make_dirs(root, parts)
            path.write_bytes(op[3])  # type: ignore[arg-type]
            path.chmod(0o755 if op[4] else 0o644)
            return [*created, rel]
        if path.is_file():
            if kind == "delete":
                path.unlink()
            else:
                path.chmod(0o755 if op[3] else 0o644)
        return [rel]
    if not (root / folder).is_dir():
        return [folder]
    if kind == "rmtree":
        shutil.rmtree(root / folder)
        return [folder]
    target = "/".join([*parts[:-1], str(op[2])])
    if (root / target).exists():
        return [folder]
    (root / folder).rename(root / target)
    return [folder, target]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_random_updates_match_fresh_build(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "top").write_text("top")
        index = TreeIndex.build(root, OP_RULES, DigestCache())
        for op in ops:
            index.update(apply_op(root, op))
            rebuilt = TreeIndex.build(root, OP_RULES, DigestCache())
            assert index.digest == rebuilt.digest, op
            assert index.file_digests() == rebuilt.file_digests()


tree_strategy = st.dictionaries(
    st.lists(st.sampled_from(("d", "e", "F")), max_size=2)
    .map("/".join)
    .flatmap(
        lambda folder: st.sampled_from(("a", "b", "B.txt")).map(
            lambda name: f"{folder}/{name}" if folder else name
        )
    ),
    st.tuples(st.text(max_size=5), st.booleans()),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=tree_strategy)
def test_random_tree_digest_ignores_order_and_location(tree: Tree) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one" / "src", Path(tmp) / "two" / "x" / "src"
        write_tree(one, tree)
        write_tree(two, tree, reverse=True)
        left = hash_image(Image.from_base("r:1").with_source_folder(one), DigestCache())
        right = hash_image(Image.from_base("r:1").with_source_folder(two), DigestCache())
        assert left.digest == right.digest
        listed = {
            e.relpath for e in TreeIndex.build(one, IgnoreRules()).listing() if e.type == FILE
        }
        assert listed == set(tree)


def test_a_file_that_vanishes_between_walk_and_read_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imaged.digest.cache as digest_cache

    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / ".main.py.swp").write_text("editor temp file")
    real = digest_cache.read_digest

    def vanishing(path: str, size_hint: int = 0) -> str:
        if path.endswith(".swp"):
            os.unlink(path)  # the editor deletes its temp file right after the walk saw it
        return real(path, size_hint)

    monkeypatch.setattr(digest_cache, "read_digest", vanishing)
    index = TreeIndex.build(tmp_path, IgnoreRules(), DigestCache())
    monkeypatch.setattr(digest_cache, "read_digest", real)
    assert [e.relpath for e in index.listing()] == ["keep.txt"]
    assert index.digest == TreeIndex.build(tmp_path, IgnoreRules(), DigestCache()).digest


def test_prune_missing_forgets_deleted_files_only(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / "gone.txt").write_text("gone")
    cache = DigestCache()
    TreeIndex.build(tmp_path, IgnoreRules(), cache)
    (tmp_path / "gone.txt").unlink()
    assert cache.prune_missing() == 1
    assert list(cache.entries) == [str(tmp_path / "keep.txt")]


# -- single-file inputs that are not regular files (issue 11) ---------------------------


def _requirements(root: Path) -> tuple[Image, Path, str]:
    fifo = root / "requirements.txt"
    return Image.from_base("debian:12").with_requirements(fifo), fifo, "requirements"


def _uv_lock(root: Path) -> tuple[Image, Path, str]:
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    image = Image.from_base("debian:12").with_uv_project(root / "pyproject.toml")
    return image, root / "uv.lock", "uv_project"


def _pyproject(root: Path) -> tuple[Image, Path, str]:
    (root / "uv.lock").write_text("version = 1\n")
    image = Image.from_base("debian:12").with_uv_project(root / "pyproject.toml")
    return image, root / "pyproject.toml", "uv_project"


def _dockerfile(root: Path) -> tuple[Image, Path, str]:
    return (
        Image.from_dockerfile(root / "Dockerfile", None, "d"),
        root / "Dockerfile",
        "from_dockerfile",
    )


@pytest.mark.timeout(10)  # a blocking open of the FIFO would hang here
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_requirements, id="requirements"),
        pytest.param(_uv_lock, id="uv-lock"),
        pytest.param(_pyproject, id="pyproject"),
        pytest.param(_dockerfile, id="dockerfile"),
    ],
)
def test_a_fifo_where_a_file_is_read_is_a_spec_error(
    tmp_path: Path, make: Callable[[Path], tuple[Image, Path, str]]
) -> None:
    image, fifo, layer = make(tmp_path)
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as info:
        hash_image(image.clone(name="x"), DigestCache())
    assert info.value.image == "x"
    assert layer in str(info.value.layer)
    assert f"{fifo}: cannot read: a named pipe (FIFO), not a regular file" in str(info.value)
