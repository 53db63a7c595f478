"""The truth campaign: seeded random mutations of a small source tree, the filesystem an
image of that tree must hold (computed from the tree and its ignore rules, not from
imaged's file lists), and the filesystem a built image does hold (read back from the
engine). Used by tests/test_truth.py and scripts/truth_campaign.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imaged import Image
from imaged.digest.files import folder_rules

# Names a tree may hold: spaces, non-ASCII, and names that start with dots (``..data`` is
# how a Kubernetes ConfigMap mount lays out its files).
FILE_NAMES = ("a.txt", "b b.txt", "é.py", "日本.md", "..double", "...", "run.sh", "x.log")
FOLDER_NAMES = ("pkg", "..data", "dir with space", "ü", "sub")
IGNORE_TEXTS = (
    "",
    "*.log\n",
    "*.log\nsub\n",
    "*.md\n!日本.md\n",
    "..double\n",
    "dir with space\n",
    "ü/*.txt\n",
)
CONFIG_KEYS = ("Env", "WorkingDir", "Entrypoint", "Cmd", "User")


@dataclass(frozen=True)
class Mutation:
    """One edit of the tree, and the paths a watcher would report for it."""

    kind: str
    detail: str
    paths: tuple[Path, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# -- the tree and its mutations ---------------------------------------------------------


def seed_tree(root: Path) -> None:
    """The starting tree: a few files and folders of every kind the mutations touch."""
    for rel, text in {
        "a.txt": "alpha\n",
        "..double": "double\n",
        "pkg/mod.py": "X = 1\n",
        "..data/key": "value\n",
        "dir with space/é.py": "print('é')\n",
        "x.log": "noise\n",
        ".dockerignore": "*.log\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a.txt")


def _listed(root: Path, kind: str) -> list[Path]:
    """Every path below root of a kind ("f" file, "d" folder, "l" link), sorted."""
    out: list[Path] = []
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder, name)
            if _kind_of(path) == kind:
                out.append(path)
    return sorted(out)


def _kind_of(path: Path) -> str:
    if path.is_symlink():
        return "l"
    return "d" if path.is_dir() else "f" if path.is_file() else "other"


def _pick(rng: random.Random, root: Path, kind: str) -> Path | None:
    found = _listed(root, kind)
    return rng.choice(found) if found else None


def _new_place(rng: random.Random, root: Path, names: tuple[str, ...]) -> Path:
    """A path that does not exist yet, in a random existing folder."""
    folder = rng.choice([root, *_listed(root, "d")])
    for _ in range(20):
        path = folder / rng.choice(names)
        if not os.path.lexists(path):
            return path
        folder = rng.choice([root, *_listed(root, "d")])
    return folder / f"new-{rng.randrange(10**6)}"


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _edit(rng: random.Random, root: Path, *, same_size: bool) -> Mutation:
    path = _pick(rng, root, "f")
    if path is None:
        return _new_file(rng, root)
    if path.name == ".dockerignore":  # kept as text: random bytes there are a SpecError
        return _ignore_edit(rng, root)
    old = path.read_bytes()
    if same_size and old:
        new = bytes((b + rng.randrange(1, 26)) % 256 for b in old)
    else:
        new = old + rng.choice([b"+", b"more\n", "ü".encode()])
    path.write_bytes(new)
    kind = "edit same size" if same_size and old else "edit new size"
    return Mutation(kind, _rel(root, path), (path,))


def _rewrite_same(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, "f")
    if path is None:
        return _new_file(rng, root)
    path.write_bytes(path.read_bytes())
    return Mutation("rewrite same content", _rel(root, path), (path,))


def _touch(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, "f") or root
    when = rng.randrange(10**9, 2 * 10**9)
    os.utime(path, (when, when))
    return Mutation("touch", _rel(root, path) if path != root else ".", (path,))


def _chmod(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, "f")
    if path is None:
        return _new_file(rng, root)
    mode = rng.choice([0o644, 0o755, 0o600, 0o700, 0o664])
    path.chmod(mode)
    return Mutation("chmod", f"{_rel(root, path)} {mode:o}", (path,))


def _rename(rng: random.Random, root: Path, *, folder: bool) -> Mutation:
    source = _pick(rng, root, "d" if folder else rng.choice("fl"))
    if source is None:
        return _new_folder(rng, root) if folder else _new_file(rng, root)
    target = _new_place(rng, root, FOLDER_NAMES if folder else FILE_NAMES)
    if folder and (target == source or source in target.parents):
        return Mutation("move (refused: into itself)", _rel(root, source))
    os.rename(source, target)
    kind = "move folder" if folder else "rename"
    return Mutation(kind, f"{_rel(root, source)} -> {_rel(root, target)}", (source, target))


def _new_file(rng: random.Random, root: Path) -> Mutation:
    path = _new_place(rng, root, FILE_NAMES)
    path.write_bytes(rng.randbytes(rng.randrange(0, 12)))
    if rng.random() < 0.3:
        path.chmod(0o755)
    return Mutation("new file", _rel(root, path), (path,))


def _delete_file(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, rng.choice("fl"))
    if path is None:
        return _new_file(rng, root)
    path.unlink()
    return Mutation("delete file", _rel(root, path), (path,))


def _new_folder(rng: random.Random, root: Path) -> Mutation:
    path = _new_place(rng, root, FOLDER_NAMES)
    path.mkdir()
    created = [path]
    if rng.random() < 0.7:
        inner = path / rng.choice(FILE_NAMES)
        inner.write_text(f"{path.name}\n")
        created.append(inner)
    return Mutation("new folder", _rel(root, path), tuple(created))


def _delete_folder(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, "d")
    if path is None:
        return _new_folder(rng, root)
    shutil.rmtree(path)
    return Mutation("delete folder", _rel(root, path), (path,))


def _ignore_edit(rng: random.Random, root: Path) -> Mutation:
    text = rng.choice(IGNORE_TEXTS)
    path = root / ".dockerignore"
    path.write_text(text)
    return Mutation("ignore-file edit", repr(text), (path,))


def _ignored_file(rng: random.Random, root: Path) -> Mutation:
    folder = rng.choice([root, *_listed(root, "d")])
    name = rng.choice(["__pycache__/m.cpython-311.pyc", "y.log", ".git/HEAD"])
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.randbytes(6))
    return Mutation("ignored file", _rel(root, path), (path.parent, path))


def _symlink_add(rng: random.Random, root: Path) -> Mutation:
    path = _new_place(rng, root, ("link", "ln é", "..link"))
    target = rng.choice([*FILE_NAMES, *FOLDER_NAMES, "../a.txt", "/etc/hostname", "missing"])
    path.symlink_to(target)
    return Mutation("symlink added", f"{_rel(root, path)} -> {target}", (path,))


def _symlink_retarget(rng: random.Random, root: Path) -> Mutation:
    path = _pick(rng, root, "l")
    if path is None:
        return _symlink_add(rng, root)
    target = rng.choice([*FILE_NAMES, "pkg", "nowhere", "../..data"])
    path.unlink()
    path.symlink_to(target)
    return Mutation("symlink retargeted", f"{_rel(root, path)} -> {target}", (path,))


_MUTATIONS: tuple[Callable[[random.Random, Path], Mutation], ...] = (
    lambda rng, root: _edit(rng, root, same_size=True),
    lambda rng, root: _edit(rng, root, same_size=True),
    lambda rng, root: _edit(rng, root, same_size=False),
    _rewrite_same,
    _touch,
    _chmod,
    lambda rng, root: _rename(rng, root, folder=False),
    lambda rng, root: _rename(rng, root, folder=True),
    _new_file,
    _delete_file,
    _new_folder,
    _delete_folder,
    _ignore_edit,
    _ignored_file,
    _symlink_add,
    _symlink_retarget,
)


def mutate(rng: random.Random, root: Path) -> Mutation:
    """Apply one random mutation (same-size edits twice as likely as the others)."""
    return rng.choice(_MUTATIONS)(rng, root)


# -- what an image must hold, and what it holds -----------------------------------------


@dataclass(frozen=True)
class Node:
    """One filesystem entry as an image holds it."""

    type: str  # "f", "l" or "d"
    mode: int
    uid: int = 0
    gid: int = 0
    target: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        what = f"-> {self.target}" if self.type == "l" else (self.sha256 or "")[:12]
        return f"{self.type} {self.mode:o} {self.uid}:{self.gid} {what}".rstrip()


Tree = dict[str, Node]


def expected_tree(root: Path, dst: str) -> Tree:
    """What ``with_source_folder(root, dst=dst, copy_contents_only=True)`` must put in an
    image: every entry the folder's ignore rules keep (a folder also when something below
    it is re-included), owned by root, files 0644 or 0755 by their exec bit, folders 0755."""
    rules = folder_rules(root)
    found: Tree = {dst: Node("d", 0o755)}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            rel = Path(path).relative_to(root).as_posix()
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            if not rules.is_ignored(rel, is_dir=is_dir):
                found[f"{dst}/{rel}"] = _node_of(path)
                for folder_rel in _above(rel):  # an ignored folder holding a kept entry
                    found.setdefault(f"{dst}/{folder_rel}", Node("d", 0o755))
    return found


def _above(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _node_of(path: str) -> Node:
    st = os.lstat(path)
    if os.path.islink(path):
        return Node("l", 0o777, target=os.readlink(path))
    if os.path.isdir(path):
        return Node("d", 0o755)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Node("f", 0o755 if st.st_mode & 0o111 else 0o644, sha256=digest)


def moved_to(tree: Mapping[str, Node], src: str, dst: str) -> Tree:
    """``tree``'s entries below ``src`` as they would be below ``dst`` (``cp -a``)."""
    return {dst + path[len(src) :]: node for path, node in tree.items() if path.startswith(src)}


def _docker(cli: str, *args: str, env: Mapping[str, str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [cli, *args], input=stdin, capture_output=True, env=dict(env), timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass(frozen=True)
class ImageState:
    """The entries below some paths of an image, and the config fields that matter."""

    files: Tree
    config: dict[str, object] = field(default_factory=dict)


def read_image(cli: str, uri: str, paths: tuple[str, ...], env: Mapping[str, str]) -> ImageState:
    """Read ``paths`` of an image back from the engine (a created, never started container;
    ``docker cp`` archives the same entries ``docker export`` would, for those paths)."""
    container = _docker(cli, "create", uri, "true", env=env).decode().strip()
    try:
        files: Tree = {}
        for path in paths:
            archive = _docker(cli, "cp", f"{container}:{path}", "-", env=env)
            files.update(_tar_nodes(archive, os.path.dirname(path)))
    finally:
        _docker(cli, "rm", "-f", container, env=env)
    inspect = json.loads(_docker(cli, "image", "inspect", uri, env=env))[0]["Config"]
    return ImageState(files, {key: inspect.get(key) for key in CONFIG_KEYS})


def _tar_nodes(archive: bytes, parent: str) -> Tree:
    out: Tree = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            name = f"{parent.rstrip('/')}/{member.name.rstrip('/')}"
            out[name] = _member_node(tar, member)
    return out


def _member_node(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Node:
    owner = {"mode": member.mode & 0o7777, "uid": member.uid, "gid": member.gid}
    if member.issym():
        return Node("l", target=member.linkname, **owner)
    if member.isdir():
        return Node("d", **owner)
    if member.isfile():
        handle = tar.extractfile(member)
        data = handle.read() if handle is not None else b""
        return Node("f", sha256=hashlib.sha256(data).hexdigest(), **owner)
    return Node(f"other:{member.type!r}", **owner)


def tree_diff(want: Mapping[str, Node], got: Mapping[str, Node]) -> list[str]:
    """Human lines for every path whose entry differs (missing, extra or changed)."""
    lines = []
    for path in sorted(want.keys() | got.keys()):
        if want.get(path) != got.get(path):
            lines.append(
                f"{path}: want {want.get(path) or 'nothing'}, got {got.get(path) or 'nothing'}"
            )
    return lines


# -- the campaign -----------------------------------------------------------------------


@dataclass
class Figures:
    """What a campaign found. A false hit (the tag stayed while the content the tree
    describes moved) and a stale image (the image under a tag does not hold the tree it
    was built from) are lies; a false miss (the tag moved, the image did not) costs a build."""

    tried: int = 0
    new_tags: int = 0
    false_hits: int = 0
    false_misses: int = 0
    stale: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"mutations tried: {self.tried}, new tags: {self.new_tags}, false hits: "
            f"{self.false_hits}, false misses: {self.false_misses}, stale images: {self.stale}"
        )


@dataclass
class Variant:
    """One image of the tree: what it reads back, and how its expected files follow."""

    image: Image
    paths: tuple[str, ...]
    expect: Callable[[Tree], Tree]
    tag: str | None = None
    expected: Tree = field(default_factory=dict)
    state: ImageState | None = None


def plain_expect(tree: Tree) -> Tree:
    return tree


def derived_expect(tree: Tree) -> Tree:
    return {**tree, **moved_to(tree, "/app", "/derived")}


@dataclass
class Campaign:
    """Mutate, build every variant, and compare tag moves with image contents."""

    root: Path
    variants: list[Variant]
    build: Callable[[Image], tuple[str, str]]  # image -> (tag, uri), building if missing
    read: Callable[[str, tuple[str, ...]], ImageState]
    figures: Figures = field(default_factory=Figures)
    uris: set[str] = field(default_factory=set)

    def check(self, why: str) -> None:
        """Build every variant as the tree is now and count what disagrees."""
        tree = expected_tree(self.root, "/app")
        for variant in self.variants:
            self._check_one(variant, variant.expect(tree), why)

    def _check_one(self, variant: Variant, expected: Tree, why: str) -> None:
        tag, uri = self.build(variant.image)
        self.uris.add(uri)
        name, figures = f"{why} [{' '.join(variant.paths)}]", self.figures
        if tag == variant.tag:
            if expected != variant.expected:
                figures.false_hits += 1
                diff = tree_diff(variant.expected, expected)
                figures.problems.append(f"false hit: {name}: {diff}")
            return
        state = self.read(uri, variant.paths)
        figures.new_tags += 1
        if variant.state is not None and state == variant.state:
            figures.false_misses += 1
            figures.problems.append(f"false miss: {name}")
        if state.files != expected:
            figures.stale += 1
            figures.problems.append(f"stale: {name}: {tree_diff(expected, state.files)}")
        if variant.state is not None and state.config != variant.state.config:
            figures.stale += 1
            figures.problems.append(f"config moved: {name}: {state.config}")
        variant.tag, variant.expected, variant.state = tag, expected, state

    def run(self, rng: random.Random, mutations: int) -> Figures:
        self.check("the seeded tree")
        for _ in range(mutations):
            mutation = mutate(rng, self.root)
            self.figures.tried += 1
            self.check(str(mutation))
        return self.figures
