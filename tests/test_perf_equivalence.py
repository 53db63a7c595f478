"""The fast paths of tree hashing give exactly what the reference (slow) definitions give."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imaged.digest.cache import DigestCache, read_digest
from imaged.digest.encoding import encode, encode_dir, sha256_hex
from imaged.digest.files import DIR, FILE, SYMLINK, FileEntry, stat_entry, walk_files
from imaged.digest.ignore import STANDARD_IGNORES, IgnoreRules
from imaged.digest.trees import TreeIndex
from imaged.errors import SpecError

# -- references: the definitions the fast code must agree with --------------------------


def reference_walk(root: Path, rules: IgnoreRules, start: str = "") -> Iterator[FileEntry]:
    """The walk as first written: ``is_ignored`` on every path, ``can_prune`` on folders."""
    base = root / start if start else root
    for name in sorted(os.listdir(base)):
        rel = f"{start}/{name}" if start else name
        entry = stat_entry(root, rel)
        assert entry is not None
        is_dir = entry.type == DIR
        if rules.is_ignored(rel, is_dir=is_dir):
            if is_dir and not rules.can_prune(rel):
                yield from reference_walk(root, rules, rel)
            continue
        yield entry
        if is_dir:
            yield from reference_walk(root, rules, rel)


def reference_digest(root: Path, listing: list[FileEntry]) -> str:
    """The Merkle digest as first written: ``sha256_hex(("dir", rows))`` bottom-up."""
    children: dict[str, list[FileEntry | str]] = {"": []}
    for entry in listing:
        parts = entry.relpath.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder not in children:
                children[folder] = []
                children["/".join(parts[: i - 1])].append(folder)
        children["/".join(parts[:-1])].append(entry)
        if entry.type == DIR:
            children.setdefault(entry.relpath, [])

    def digest(folder: str) -> str:
        rows: list[tuple[str, str, bool, str]] = []
        for item in sorted(children[folder], key=lambda i: i if isinstance(i, str) else i.relpath):
            rel = item if isinstance(item, str) else item.relpath
            name = rel.rpartition("/")[2]
            if isinstance(item, str) or item.type == DIR:
                rows.append((name, DIR, False, digest(rel)))
            elif item.type == SYMLINK:
                rows.append((name, SYMLINK, False, item.target or ""))
            else:
                content = hashlib.sha256((root / rel).read_bytes()).hexdigest()
                rows.append((name, FILE, item.executable, content))
        return sha256_hex(("dir", rows))

    return digest("")


# -- random rules and trees -------------------------------------------------------------

_NAMES = ["a", "b", "ab", "x.py", "y.pyc", "keep", ".git", "__pycache__"]
_PIECES = ["a", "b", "ab", "*", "?", "**", "a*", "*.py", "[ab]", "[!a]", "keep", ".git"]
_PATTERN = st.tuples(
    st.sampled_from(["", "/", "**/"]),
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=3).map("/".join),
    st.sampled_from(["", "", "/"]),
).map("".join)
_LINE = st.tuples(st.booleans(), _PATTERN).map(lambda t: ("!" if t[0] else "") + t[1])
_LINES = st.lists(_LINE, max_size=6)
_TREE = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4).map("/".join),
        st.sampled_from([FILE, FILE, FILE, DIR, SYMLINK, "x"]),
    ),
    min_size=1,
    max_size=14,
)


def make_rules(docker: list[str], git: list[str], order: str) -> IgnoreRules:
    try:
        d = IgnoreRules.from_lines(docker)
        g = IgnoreRules.from_lines(git, syntax="git")
    except SpecError:
        assume(False)
        raise
    if order == "anchored":  # an ignore file one folder up: the root is "x" from there
        return IgnoreRules.from_lines(docker, prefix="x") + g
    if order == "docker+anchored":
        return d + IgnoreRules.from_lines(git, prefix="ab/x")
    return {"docker": d, "git": g, "docker+git": d + g, "git+docker": g + d}[order]


def make_tree(root: Path, paths: list[tuple[str, str]]) -> None:
    """Create what fits: a path under an existing file or link is skipped."""
    for rel, kind in paths:
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == DIR:
                path.mkdir(exist_ok=True)
            elif path.exists() or path.is_symlink():
                continue
            elif kind == SYMLINK:
                path.symlink_to("../target")
            else:
                path.write_text(rel)
                if kind == "x":
                    path.chmod(0o755)
        except OSError:  # under a file or a link
            continue


def relpaths(entries: list[FileEntry]) -> list[tuple[str, str]]:
    return [(e.relpath, e.type) for e in entries]


_RULE_SETS = st.tuples(
    _LINES,
    _LINES,
    st.sampled_from(["docker", "git", "docker+git", "git+docker", "anchored", "docker+anchored"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_set=_RULE_SETS, paths=_TREE, standard=st.booleans())
def test_walk_equals_reference_walk(
    rule_set: tuple[list[str], list[str], str], paths: list[tuple[str, str]], standard: bool
) -> None:
    rules = make_rules(*rule_set)
    if standard:
        rules = IgnoreRules.from_lines(STANDARD_IGNORES) + rules
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tree(root, paths)
        expected = list(reference_walk(root, rules))
        assert relpaths(list(walk_files(root, rules))) == relpaths(expected)
        index = TreeIndex.build(root, rules, DigestCache())
        assert index.digest == reference_digest(root, expected)
        for folder in {p.rsplit("/", 1)[0] for p, _ in paths if "/" in p}:
            if (root / folder).is_dir() and not (root / folder).is_symlink():
                found = relpaths(list(walk_files(root, rules, start=folder)))
                assert found == relpaths(list(reference_walk(root, rules, folder)))


@settings(max_examples=300, deadline=None)
@given(
    rule_set=_RULE_SETS,
    path=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4),
    is_dir=st.booleans(),
)
def test_matcher_equals_is_ignored(
    rule_set: tuple[list[str], list[str], str], path: list[str], is_dir: bool
) -> None:
    rules = make_rules(*rule_set)
    matcher = rules.walker()
    folder = matcher.folder("")
    for depth, name in enumerate(path, start=1):
        last = depth == len(path)
        rel = "/".join(path[:depth])
        ignored, best = matcher.child(folder, name, rel, is_dir=is_dir or not last)
        assert ignored is rules.is_ignored(rel, is_dir=is_dir or not last), rel
        assert matcher.folder(rel).best == best or last
        folder = matcher.enter(folder, name, best)


@pytest.mark.parametrize(
    ("lines", "reldir", "expected"),
    [
        pytest.param(["build"], "build", True, id="no-exceptions"),
        pytest.param(["build", "!build/keep"], "build", False, id="exception-below"),
        pytest.param(["build", "!other/keep"], "build", True, id="exception-elsewhere"),
        pytest.param(["*.py"], "src", False, id="not-ignored"),
    ],
)
def test_can_prune_is_cached_per_rule_set(lines: list[str], reldir: str, expected: bool) -> None:
    rules = IgnoreRules.from_lines(lines)
    assert rules.walker() is rules.walker()
    assert rules.can_prune(reldir) is expected


# -- the flat encoder, the reader and the cache batch -----------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]) | st.sampled_from(["\udcff", "/"]))
_ROW = st.tuples(_TEXT, st.sampled_from([FILE, SYMLINK, DIR]), st.booleans(), _TEXT)


@given(rows=st.lists(_ROW, max_size=8))
def test_encode_dir_equals_generic_encoding(rows: list[tuple[str, str, bool, str]]) -> None:
    assert encode_dir(rows) == encode(("dir", rows))


@pytest.mark.parametrize(
    ("size", "hint"),
    [
        pytest.param(0, 0, id="empty"),
        pytest.param(10, 10, id="small-exact-hint"),
        pytest.param(10, 0, id="no-hint"),
        pytest.param(10, 4, id="file-grew-since-stat"),
        pytest.param(10, 30, id="file-shrank-since-stat"),
        pytest.param((1 << 20) + 3, (1 << 20) + 3, id="above-one-chunk"),
        pytest.param(1 << 20, 1 << 20, id="exactly-one-chunk"),
    ],
)
def test_read_digest_whatever_the_size_hint(tmp_path: Path, size: int, hint: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    (tmp_path / "f").write_bytes(data)
    assert read_digest(str(tmp_path / "f"), hint) == hashlib.sha256(data).hexdigest()


def test_read_many_records_like_file_digest(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).write_text(name * 3)
    old = 1_000_000_000
    for name in "ab":
        os.utime(tmp_path / name, ns=(old, old))
    wanted = [(str(tmp_path / n), stat_key_of(tmp_path / n)) for n in "abc"]
    cache = DigestCache()
    digests = cache.read_many(wanted)
    assert digests == [hashlib.sha256(n.encode() * 3).hexdigest() for n in "abc"]
    assert cache.reads == 3
    # "c" was written just now: the racy-git rule sends it to be read again.
    assert [cache.lookup(p, k) for p, k in wanted] == [*digests[:2], None]


def stat_key_of(path: Path) -> tuple[int, ...]:
    st_ = os.lstat(path)
    return (st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_ino, st_.st_mode)
