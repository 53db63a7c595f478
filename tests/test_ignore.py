"""Tests for imaged.digest.ignore: .dockerignore parity with moby/patternmatcher, gitignore, pruning."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pathspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imaged.digest.ignore import MAX_IGNORE_FILE_BYTES, STANDARD_IGNORES, IgnoreRules
from imaged.errors import SpecError


def docker(*lines: str) -> IgnoreRules:
    return IgnoreRules.from_lines(lines)


def git(*lines: str, base: str = "") -> IgnoreRules:
    return IgnoreRules.from_lines(lines, syntax="git", base=base)


DOCKER_CASES = [
    pytest.param(["foo"], "foo", True, id="plain-name"),
    pytest.param(["foo"], "foo/bar/baz", True, id="plain-name-parent-dir"),
    pytest.param(["foo"], "a/foo", False, id="plain-name-is-anchored"),
    pytest.param(["foo"], "foobar", False, id="plain-name-not-prefix"),
    pytest.param(["a/b"], "a/b/c", True, id="nested-literal-parent"),
    pytest.param(["a/b"], "x/a/b", False, id="nested-literal-anchored"),
    pytest.param(["*.pyc"], "x.pyc", True, id="star-at-root"),
    pytest.param(["*.pyc"], "pkg/x.pyc", False, id="star-root-only"),
    pytest.param(["*"], "a/b", True, id="star-matches-top-dir"),
    pytest.param(["a*/b"], "a/c/b", False, id="star-does-not-cross-slash"),
    pytest.param(["file?.txt"], "file1.txt", True, id="question-one-char"),
    pytest.param(["file?.txt"], "file.txt", False, id="question-needs-a-char"),
    pytest.param(["a?b"], "a/b", False, id="question-not-slash"),
    pytest.param(["**/*.pyc"], "x.pyc", True, id="dstar-start-zero-dirs"),
    pytest.param(["**/*.pyc"], "a/b/x.pyc", True, id="dstar-start-any-depth"),
    pytest.param(["a/**/z"], "a/z", True, id="dstar-middle-zero-dirs"),
    pytest.param(["a/**/z"], "a/b/c/z", True, id="dstar-middle-many-dirs"),
    pytest.param(["a/**"], "a/b/c", True, id="dstar-end"),
    pytest.param(["a/**"], "a", False, id="dstar-end-not-the-dir"),
    pytest.param(["**.pyc"], "a/x.pyc", True, id="dstar-glued-suffix"),
    pytest.param(["**"], "anything/at/all", True, id="dstar-alone"),
    pytest.param(["*.md", "!README.md"], "README.md", False, id="exception"),
    pytest.param(["*.md", "!README.md"], "CHANGES.md", True, id="exception-other-file"),
    pytest.param(["!README.md", "*.md"], "README.md", True, id="exception-then-reexclude"),
    pytest.param(["*.md", "!*.md", "README.md"], "README.md", True, id="last-match-wins"),
    pytest.param(["dir", "!dir/keep.txt"], "dir/keep.txt", False, id="exception-inside-dir"),
    pytest.param(["dir", "!dir/keep.txt"], "dir/other.txt", True, id="dir-others-excluded"),
    pytest.param(["dir/", "!dir/keep.txt"], "dir/keep.txt", False, id="trailing-slash-dir"),
    pytest.param(["**", "!src", "src/cache"], "src/cache/x", True, id="reexclude-inside-exception"),
    pytest.param(["# foo", "bar"], "foo", False, id="comment"),
    pytest.param([" # foo"], "# foo", True, id="hash-not-in-column-one-is-pattern"),
    pytest.param(["", "   ", "foo"], "foo", True, id="blank-lines"),
    pytest.param(["  foo  "], "foo", True, id="whitespace-trimmed"),
    pytest.param(["/foo"], "foo", True, id="leading-slash"),
    pytest.param(["!/foo"], "foo", False, id="leading-slash-exception"),
    pytest.param(["./foo"], "foo/x", True, id="dot-slash"),
    pytest.param(["a//b"], "a/b", True, id="double-slash"),
    pytest.param(["a/../b"], "b", True, id="dotdot-cleaned"),
    pytest.param(["../b"], "b", False, id="dotdot-outside-never-matches"),
    pytest.param(["[a-c]x"], "bx", True, id="class-range"),
    pytest.param(["[a-c]x"], "dx", False, id="class-range-miss"),
    pytest.param(["[^a-c]x"], "dx", True, id="class-negated"),
    pytest.param(["a\\*b"], "a*b", True, id="escaped-star"),
    pytest.param(["a\\*b"], "axb", False, id="escaped-star-is-literal"),
    pytest.param(["a\\?"], "a?", True, id="escaped-question"),
    pytest.param(["a.b"], "axb", False, id="dot-is-literal"),
    pytest.param(["a+(b)"], "a+(b)", True, id="regex-chars-literal"),
    pytest.param(["Foo"], "foo", False, id="case-sensitive"),
    pytest.param(["foo"], "Foo", False, id="case-sensitive-path"),
    pytest.param(["*.md"], "", False, id="root-never-ignored"),
]


@pytest.mark.parametrize(("lines", "path", "expected"), DOCKER_CASES)
def test_docker_semantics(lines: list[str], path: str, expected: bool) -> None:
    assert IgnoreRules.from_lines(lines).is_ignored(path) is expected


# TestMatches in moby/patternmatcher's patternmatcher_test.go, as MatchesOrParentMatches
# sees it ("exact" and "inexact" both mean a match there).
MOBY_MATCHES = [
    ("**", "file", True),
    ("**", "file/", True),
    ("**/", "file", True),
    ("**", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/dir/file", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True),
    ("a\\*b", "a*b", True),
    # matchTests there, taken from Go's filepath.Match tests:
    ("a*", "ab/c", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[^e-g]", "abc", True),
    ("a?b", "a\u263ab", True),
    ("a???b", "a\u263ab", False),
    ("[\\]a]", "]", True),
    ("[x\\-]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [pytest.param(p, t, e, id=f"{p}|{t}") for p, t, e in MOBY_MATCHES],
)
def test_moby_patternmatcher_table(pattern: str, path: str, expected: bool) -> None:
    assert docker(pattern).is_ignored(path) is expected


def test_moby_multi_pattern_table() -> None:
    # multiPatternTests in moby/patternmatcher's patternmatcher_test.go.
    assert not docker("**", "!util/docker/web").is_ignored("util/docker/web/foo")
    assert docker("**", "!util/docker/web", "util/docker/web/foo").is_ignored("util/docker/web/foo")
    assert not docker("**", "!dist/*.whl").is_ignored("dist/proxy.py-2.4.0-py3-none-any.whl")


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("!", id="bang-alone"),
        pytest.param("!/", id="bang-root-cleans-to-bang"),
        pytest.param("[", id="open-class"),
        pytest.param("a[", id="open-class-late"),
        pytest.param("[^bc", id="unclosed-negated-class"),
        pytest.param("[]a]", id="empty-class"),
        pytest.param("[-x]", id="class-leading-dash"),
        pytest.param("[x-]", id="class-trailing-dash"),
        pytest.param("[a-b-c]", id="class-double-range"),
        pytest.param("foo\\", id="trailing-backslash"),
    ],
)
def test_docker_bad_patterns_raise(pattern: str) -> None:
    # The ErrBadPattern cases of moby/patternmatcher's matchTests and TestSingleExclamationError.
    with pytest.raises(SpecError, match="line 2"):
        docker("ok", pattern)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["./foo/", "a//b", "/x/../y"], ("foo", "a/b", "y"), id="cleaned"),
        pytest.param(["! /abs", "!./rel/"], ("!abs", "!rel"), id="exceptions"),
        pytest.param(["\ufeff*.log", "#c", ""], ("*.log",), id="bom-comment-blank"),
        pytest.param(["!../x", "a/.."], ("!../x", "."), id="dotdot-kept"),
    ],
)
def test_docker_patterns_are_normalized(lines: list[str], expected: tuple[str, ...]) -> None:
    assert IgnoreRules.from_lines(lines).patterns == expected


GIT_CASES = [
    pytest.param(["*.pyc"], "a/b/x.pyc", False, True, id="unanchored-any-depth"),
    pytest.param(["foo"], "a/foo", False, True, id="name-any-depth"),
    pytest.param(["/foo"], "a/foo", False, False, id="leading-slash-anchors"),
    pytest.param(["a/b"], "x/a/b", False, False, id="middle-slash-anchors"),
    pytest.param(["build/"], "build", False, False, id="dir-only-skips-file"),
    pytest.param(["build/"], "build", True, True, id="dir-only-matches-dir"),
    pytest.param(["build/"], "src/build/out.o", False, True, id="dir-only-contents"),
    pytest.param(["*.log", "!keep.log"], "x/keep.log", False, False, id="negation"),
    pytest.param(["a/**/z"], "a/b/c/z", False, True, id="dstar-middle"),
    pytest.param(["# c", "", "x"], "x", False, True, id="comments-blanks"),
    pytest.param(["\\#c"], "#c", False, True, id="escaped-hash"),
    pytest.param(["*.txt", "!dir/"], "dir/a.txt", False, True, id="dir-negation-keeps-file-match"),
]


@pytest.mark.parametrize(("lines", "path", "is_dir", "expected"), GIT_CASES)
def test_git_semantics(lines: list[str], path: str, is_dir: bool, expected: bool) -> None:
    rules = IgnoreRules.from_lines(lines, syntax="git")
    assert rules.is_ignored(path, is_dir=is_dir) is expected


@pytest.mark.parametrize(("lines", "path", "is_dir", "expected"), GIT_CASES)
def test_git_agrees_with_pathspec(
    lines: list[str], path: str, is_dir: bool, expected: bool
) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    query = path + "/" if is_dir else path
    assert git(*lines).is_ignored(path, is_dir=is_dir) is spec.match_file(query)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a/b/x.pyc", True, id="inside-base"),
        pytest.param("a/b/c/d.pyc", True, id="deeper"),
        pytest.param("x.pyc", False, id="outside-base"),
        pytest.param("a/bx/y.pyc", False, id="sibling-with-prefix"),
        pytest.param("a/b/root.txt", True, id="anchored-relative-to-base"),
        pytest.param("a/b/c/root.txt", False, id="anchored-not-deeper"),
    ],
)
def test_nested_gitignore_base(path: str, expected: bool) -> None:
    rules = git("*.pyc", "/root.txt", base="a/b/")
    assert rules.is_ignored(path) is expected


def test_docker_rejects_base() -> None:
    with pytest.raises(SpecError, match="context root"):
        IgnoreRules.from_lines(["x"], base="sub")


@pytest.mark.parametrize(
    ("lines", "path", "expected"),
    [
        pytest.param(["src/data.bin"], "data.bin", True, id="path-from-the-file"),
        pytest.param(["src/data.bin"], "other.bin", False, id="other-file"),
        pytest.param(["data.bin"], "data.bin", False, id="top-level-only"),
        pytest.param(["*.log"], "x.log", False, id="star-is-one-level"),
        pytest.param(["**/*.log"], "deep/x.log", True, id="any-depth"),
        pytest.param(["src"], "a.py", True, id="the-folder-itself"),
        pytest.param(["src/*", "!src/keep"], "keep", False, id="exception"),
        pytest.param(["src/*", "!src/keep"], "drop", True, id="exception-others"),
    ],
)
def test_docker_rules_read_from_the_ignore_files_folder(
    lines: list[str], path: str, expected: bool
) -> None:
    """An ignore file one folder up sees the copied folder as ``src/``, as Docker does."""
    rules = IgnoreRules.from_lines(lines, prefix="src")
    assert rules.is_ignored(path) is expected
    matcher = rules.walker()
    folder, ignored = matcher.folder(""), None
    for depth, name in enumerate(path.split("/"), start=1):
        rel = "/".join(path.split("/")[:depth])
        ignored, best = matcher.child(folder, name, rel, is_dir=rel != path)
        folder = matcher.enter(folder, name, best)
    assert ignored is expected


PRUNE_CASES = [
    pytest.param(["build"], "build", True, id="plain"),
    pytest.param(["**/__pycache__"], "a/b/__pycache__", True, id="nested"),
    pytest.param(["build"], "src", False, id="not-ignored"),
    pytest.param(["build", "!build/keep.txt"], "build", False, id="exception-below"),
    pytest.param(["build", "!build/keep.txt"], "build/other", True, id="exception-elsewhere"),
    pytest.param(["build", "!**/keep.txt"], "build", False, id="dstar-exception"),
    pytest.param(["build", "!*.md"], "build", True, id="root-glob-exception"),
    pytest.param(["*", "!src/*.py"], "src", False, id="glob-exception-below"),
    pytest.param(["*", "!src/*.py"], "docs", True, id="glob-exception-elsewhere"),
    pytest.param(["**", "!src", "src/cache"], "src/cache", True, id="exception-above"),
    pytest.param(["a/**", "!a/b/c"], "a/b", False, id="deep-exception-below"),
]


@pytest.mark.parametrize(("lines", "reldir", "expected"), PRUNE_CASES)
def test_can_prune(lines: list[str], reldir: str, expected: bool) -> None:
    assert IgnoreRules.from_lines(lines).can_prune(reldir) is expected


@pytest.mark.parametrize(
    ("lines", "reldir", "expected"),
    [
        pytest.param(["build/"], "build", True, id="git-dir"),
        pytest.param(["build/", "!keep.txt"], "build", False, id="git-unanchored-negation"),
        pytest.param(["build/", "!/docs/x"], "build", True, id="git-anchored-elsewhere"),
    ],
)
def test_can_prune_git(lines: list[str], reldir: str, expected: bool) -> None:
    assert git(*lines).can_prune(reldir) is expected


def test_add_concatenates_and_later_rules_win() -> None:
    combined = docker("*.md") + docker("!README.md")
    assert combined.patterns == ("*.md", "!README.md")
    assert not combined.is_ignored("README.md")
    assert (docker("!README.md") + docker("*.md")).is_ignored("README.md")


def test_docker_and_git_rules_combine() -> None:
    rules = IgnoreRules.from_lines(STANDARD_IGNORES) + git("*.log", "!keep.log")
    assert rules.is_ignored("pkg/__pycache__/m.cpython-311.pyc")
    assert rules.is_ignored("deep/dir/x.log")
    assert not rules.is_ignored("deep/dir/keep.log")
    assert not rules.is_ignored("pkg/module.py")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(".git/config", True, id="git-dir"),
        pytest.param("a/b/__pycache__/m.pyc", True, id="nested-pycache"),
        pytest.param("a/m.pyc", True, id="nested-pyc"),
        pytest.param(".venv/bin/python", True, id="venv"),
        pytest.param("pkg.egg-info/PKG-INFO", True, id="egg-info"),
        pytest.param("sub/.DS_Store", True, id="ds-store"),
        pytest.param("src/app.py", False, id="source-kept"),
        pytest.param("gitignore.txt", False, id="similar-name-kept"),
    ],
)
def test_standard_ignores(path: str, expected: bool) -> None:
    assert IgnoreRules.from_lines(STANDARD_IGNORES).is_ignored(path) is expected


def test_from_file_missing_is_empty(tmp_path: Path) -> None:
    assert IgnoreRules.from_file(tmp_path / ".dockerignore") == IgnoreRules()


def test_from_file_reads_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / ".dockerignore"
    path.write_bytes(b"\xef\xbb\xbf*.log\r\n# comment\r\n!keep.log\r\n")
    rules = IgnoreRules.from_file(path)
    assert rules.patterns == ("*.log", "!keep.log")
    assert rules.is_ignored("x.log")


def test_from_file_undecodable_names_file(tmp_path: Path) -> None:
    path = tmp_path / ".dockerignore"
    path.write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(SpecError, match=r"\.dockerignore.*UTF-8"):
        IgnoreRules.from_file(path)


def test_from_file_bad_pattern_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / ".gitignore"
    path.write_text("ok\n\n[oops\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"\.gitignore: line 3"):
        IgnoreRules.from_file(path)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _oversized(path: Path) -> None:
    path.write_bytes(b"a" * (MAX_IGNORE_FILE_BYTES + 1))


@pytest.mark.timeout(10)  # a blocking open of the FIFO would hang here
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(_fifo, "a named pipe (FIFO), not a regular file", id="fifo"),
        pytest.param(_link("/dev/zero"), "a character device, not a regular file", id="dev-zero"),
        pytest.param(
            _link(".dockerignore"),
            "too many levels of symbolic links (a symlink loop)",
            id="symlink-loop",
        ),
        pytest.param(_oversized, "larger than the limit of 4 MiB", id="over-the-cap"),
    ],
)
def test_from_file_refuses_what_is_not_a_small_regular_file(
    tmp_path: Path, make: Callable[[Path], None], reason: str
) -> None:
    path = tmp_path / ".dockerignore"
    make(path)
    with pytest.raises(SpecError) as info:
        IgnoreRules.from_file(path)
    assert str(info.value) == f"{path}: cannot read ignore file: {reason}"


def test_from_file_follows_a_link_to_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "shared.ignore").write_text("*.log\n")
    (tmp_path / ".dockerignore").symlink_to("shared.ignore")
    assert IgnoreRules.from_file(tmp_path / ".dockerignore").patterns == ("*.log",)


def test_from_file_keeps_a_lone_cr_as_a_line_break(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_bytes(b"*.log\r*.tmp\r\n")
    assert IgnoreRules.from_file(tmp_path / ".dockerignore").patterns == ("*.log", "*.tmp")


def test_from_file_git_syntax_with_base(tmp_path: Path) -> None:
    path = tmp_path / ".gitignore"
    path.write_text("*.tmp\n", encoding="utf-8")
    rules = IgnoreRules.from_file(path, syntax="git", base="sub")
    assert rules.is_ignored("sub/x/y.tmp")
    assert not rules.is_ignored("y.tmp")
    assert rules.patterns == ("sub: *.tmp",)


_SEGMENT = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=6).filter(
    lambda s: s not in {".", ".."}
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)


@given(path=_PATH, child=_PATH)
def test_literal_path_ignores_itself_and_below(path: str, child: str) -> None:
    rules = docker(path)
    assert rules.is_ignored(path)
    assert rules.is_ignored(f"{path}/{child}")
    assert rules.can_prune(path)


_PIECES = ["a", "b", "*", "?", "**", "a*", "[ab]", "x"]
_PATTERN = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=3).map("/".join)
_LINE = st.tuples(st.booleans(), _PATTERN).map(lambda t: ("!" if t[0] else "") + t[1])
_NAMES = st.lists(st.sampled_from(["a", "b", "x", "ab", "ba"]), min_size=1, max_size=3)


@given(
    lines=st.lists(_LINE, min_size=1, max_size=5),
    reldir=_NAMES.map("/".join),
    below=_NAMES.map("/".join),
    syntax=st.sampled_from(["docker", "git"]),
)
def test_pruned_dirs_hide_only_ignored_paths(
    lines: list[str], reldir: str, below: str, syntax: str
) -> None:
    rules = IgnoreRules.from_lines(lines, syntax="git" if syntax == "git" else "docker")
    if rules.can_prune(reldir):
        assert rules.is_ignored(f"{reldir}/{below}")
        assert rules.is_ignored(f"{reldir}/{below}", is_dir=True)
