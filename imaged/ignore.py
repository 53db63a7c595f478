"""Ignore rules: `.dockerignore` exactly as moby/patternmatcher reads it, and `.gitignore` via pathspec."""

from __future__ import annotations

import enum
import posixpath
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from imaged.errors import SpecError

__all__ = ["STANDARD_IGNORES", "IgnoreRules"]

Syntax = Literal["docker", "git"]

STANDARD_IGNORES: tuple[str, ...] = (
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.pyo",
    "**/.venv",
    "**/.mypy_cache",
    "**/.pytest_cache",
    "**/.ruff_cache",
    "**/.hypothesis",
    "**/.tox",
    "**/.nox",
    "**/*.egg-info",
    "**/.ipynb_checkpoints",
    "**/.DS_Store",
)
"""Docker-syntax patterns that a code bundle always leaves out, at any depth."""

# A match's strength, as pathspec's GitIgnoreSpec ranks them: a pattern that matched only
# because a parent directory matched ("dir/") is weaker than one that matched the path itself.
_NO_MATCH, _DIR_MATCH, _PATH_MATCH = 0, 1, 2

_LITERAL_STOP = re.compile(r"[*?\[\]\\^]")
_GIT_LITERAL_STOP = re.compile(r"[*?\[\\]")


class _Rule(Protocol):
    @property
    def negated(self) -> bool: ...

    @property
    def text(self) -> str: ...

    def match(self, relpath: str, *, is_dir: bool) -> int: ...

    def may_match_below(self, reldir: str) -> bool: ...


class _Kind(enum.Enum):
    """How moby/patternmatcher's `Pattern.compile` decided to match a pattern."""

    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEXP = "regexp"


@dataclass(frozen=True)
class _DockerRule:
    """One `.dockerignore` pattern, matched like moby/patternmatcher's `MatchesOrParentMatches`."""

    pattern: str
    negated: bool
    kind: _Kind = field(compare=False)
    regex: re.Pattern[str] | None = field(compare=False, repr=False)

    @property
    def text(self) -> str:
        return f"!{self.pattern}" if self.negated else self.pattern

    def match(self, relpath: str, *, is_dir: bool) -> int:
        if self._matches(relpath):
            return _PATH_MATCH
        parts = relpath.split("/")[:-1]
        if any(self._matches("/".join(parts[: i + 1])) for i in range(len(parts))):
            return _PATH_MATCH
        return _NO_MATCH

    def _matches(self, path: str) -> bool:
        if self.kind is _Kind.EXACT:
            return path == self.pattern
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.pattern[:-2])
        if self.kind is _Kind.SUFFIX:
            suffix = self.pattern[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    def may_match_below(self, reldir: str) -> bool:
        below = reldir + "/"
        if self.kind is _Kind.SUFFIX:
            return True
        if self.kind is _Kind.EXACT:
            # A literal matching reldir or a parent of it already decided reldir's own result.
            return self.pattern.startswith(below)
        literal = _LITERAL_STOP.split(self.pattern, maxsplit=1)[0]
        if not (literal.startswith(below) or below.startswith(literal)):
            return False
        # Without "**" or a class ("[^a]" matches "/"), a match has as many parts as the pattern.
        deeper = self.pattern.count("/") > reldir.count("/")
        return deeper or "**" in self.pattern or "[" in self.pattern


@dataclass(frozen=True)
class _GitRule:
    """One `.gitignore` pattern (pathspec's GitIgnoreSpecPattern) scoped to the folder `base`."""

    line: str
    base: str
    negated: bool
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @property
    def text(self) -> str:
        return f"{self.base}: {self.line}" if self.base else self.line

    def match(self, relpath: str, *, is_dir: bool) -> int:
        if self.base:
            if not relpath.startswith(self.base + "/"):
                return _NO_MATCH
            relpath = relpath[len(self.base) + 1 :]
        found = self.regex.match(relpath + "/" if is_dir else relpath)
        if found is None:
            return _NO_MATCH
        return _DIR_MATCH if found.groupdict().get("ps_d") else _PATH_MATCH

    def may_match_below(self, reldir: str) -> bool:
        body = self.line.strip().removeprefix("!")
        anchored = "/" in body.rstrip("/")
        literal = _GIT_LITERAL_STOP.split(body.lstrip("/"), maxsplit=1)[0] if anchored else ""
        full = f"{self.base}/{literal}" if self.base else literal
        below = reldir + "/"
        return full.startswith(below) or below.startswith(full)


@dataclass(frozen=True)
class IgnoreRules:
    """An ordered list of ignore patterns; the last match wins and `!` re-includes.

    >>> rules = IgnoreRules.from_lines(["build", "!build/keep.txt"])
    >>> rules.is_ignored("build/out.o"), rules.is_ignored("build/keep.txt")
    (True, False)
    """

    rules: tuple[_Rule, ...] = ()

    @classmethod
    def from_lines(
        cls, lines: Iterable[str], *, syntax: Syntax = "docker", base: str = ""
    ) -> IgnoreRules:
        """Parse ignore-file lines; `base` scopes a nested `.gitignore` to that folder."""
        if syntax == "docker":
            if base.strip("/."):
                raise SpecError(f"a .dockerignore applies to the context root, not {base!r}")
            return cls(tuple(_parse_docker_lines(lines)))
        if syntax == "git":
            return cls(tuple(_parse_git_lines(lines, base=_clean_base(base))))
        raise SpecError(f"unknown ignore syntax {syntax!r}: use 'docker' or 'git'")

    @classmethod
    def from_file(cls, path: Path, *, syntax: Syntax = "docker", base: str = "") -> IgnoreRules:
        """Read an ignore file; a missing file gives empty rules.

        >>> IgnoreRules.from_file(Path("/nonexistent/.dockerignore")).patterns
        ()
        """
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise SpecError(f"{path}: cannot read ignore file: {exc.strerror}") from exc
        try:
            return cls.from_lines(text.split("\n"), syntax=syntax, base=base)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from exc

    def __add__(self, other: IgnoreRules) -> IgnoreRules:
        if not isinstance(other, IgnoreRules):
            return NotImplemented
        return IgnoreRules(self.rules + other.rules)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The normalized patterns in order (`!` marks exceptions; nested git ones show `base: `)."""
        return tuple(rule.text for rule in self.rules)

    def is_ignored(self, relpath: str, *, is_dir: bool = False) -> bool:
        """True when `relpath` (POSIX, relative to the context root) is left out.

        >>> IgnoreRules.from_lines(["*.pyc"]).is_ignored("a/b.pyc")
        False
        """
        if relpath in ("", "."):
            return False  # moby: "Don't let them exclude everything, kind of silly."
        ignored, strength = False, _NO_MATCH
        for rule in self.rules:
            found = rule.match(relpath, is_dir=is_dir)
            # Mirrors pathspec's GitIgnoreSpec ranking; docker rules always match at full
            # strength, so for them this is plain "last match wins".
            if found and ((not rule.negated and found == _DIR_MATCH) or found >= strength):
                ignored, strength = not rule.negated, found
        return ignored

    def can_prune(self, reldir: str) -> bool:
        """True when `reldir` is ignored and no `!` pattern could re-include anything below it.

        >>> IgnoreRules.from_lines(["build", "!build/keep.txt"]).can_prune("build")
        False
        """
        if not self.is_ignored(reldir, is_dir=True):
            return False
        return not any(rule.negated and rule.may_match_below(reldir) for rule in self.rules)


def _parse_docker_lines(lines: Iterable[str]) -> Iterable[_DockerRule]:
    for number, line in enumerate(lines, start=1):
        pattern = _read_docker_line(line, first=number == 1)
        if pattern is None:
            continue
        try:
            yield _compile_docker(pattern)
        except SpecError as exc:
            raise SpecError(f"line {number}: {exc}") from exc


def _read_docker_line(line: str, *, first: bool) -> str | None:
    """One line as moby/patternmatcher's `ignorefile.ReadAll` returns it, or None if skipped."""
    if first:
        line = line.removeprefix("\ufeff")
    if line.startswith("#"):  # only a '#' in column one starts a comment
        return None
    pattern = line.strip()
    if not pattern:
        return None
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:].strip()
    if pattern:
        pattern = _go_clean(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
    return f"!{pattern}" if negated else pattern


def _compile_docker(line: str) -> _DockerRule:
    """A rule from a ReadAll line, as moby/patternmatcher's `New` and `Pattern.compile` build it."""
    # New cleans again with the "!" still on: so "!/" (from ReadAll) becomes the illegal "!".
    pattern = _go_clean(line.strip())
    negated = pattern.startswith("!")
    if negated:
        if pattern == "!":
            raise SpecError('illegal exclusion pattern: "!"')
        pattern = pattern[1:]
    _check_go_match_syntax(pattern)
    kind, regex = _translate_docker(pattern)
    return _DockerRule(pattern=pattern, negated=negated, kind=kind, regex=regex)


def _go_clean(path: str) -> str:
    """Go's `filepath.Clean` on a POSIX path (which, unlike normpath, folds a leading '//')."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _translate_docker(pattern: str) -> tuple[_Kind, re.Pattern[str] | None]:
    """Port of `Pattern.compile`: the match kind, and for REGEXP the regular expression."""
    parts, kind, i, n = ["^"], _Kind.EXACT, 0, len(pattern)
    while i < n:
        first, ch = i == 0, pattern[i]
        i += 1
        if ch == "*" and i < n and pattern[i] == "*":
            i += 1
            if i < n and pattern[i] == "/":
                i += 1  # "**/" is read as "**"
            if i < n:
                parts.append("(.*/)?")
                kind = _Kind.REGEXP
            elif kind is _Kind.EXACT:
                kind = _Kind.PREFIX
            else:
                parts.append(".*")
                kind = _Kind.REGEXP
            kind = _Kind.SUFFIX if first else kind
        elif ch in "*?":
            parts.append("[^/]*" if ch == "*" else "[^/]")
            kind = _Kind.REGEXP
        elif ch in ".+()|{}$":
            parts.append("\\" + ch)
        elif ch == "\\":
            parts.append(_escaped(pattern[i]))  # a trailing '\' was rejected already
            i += 1
            kind = _Kind.REGEXP
        else:
            parts.append(ch)
            kind = _Kind.REGEXP if ch in "[]" else kind
    if kind is not _Kind.REGEXP:
        return kind, None
    return kind, _compile_regex("".join(parts) + r"\Z", pattern)


def _escaped(char: str) -> str:
    if char.isascii() and char.isalnum():
        # Go's regexp would read "\d" or "\w" as a class; a user who wrote it meant a path.
        raise SpecError(f"escape '\\{char}' in an ignore pattern is not supported")
    return re.escape(char)


def _compile_regex(source: str, pattern: str) -> re.Pattern[str]:
    try:
        with warnings.catch_warnings():
            # "[*]" becomes "[[^/]*]", which Python flags as a possible nested set; Go reads
            # it the same way Python does today.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(source)
    except re.error as exc:
        raise SpecError(f"bad ignore pattern {pattern!r}: {exc}") from exc


def _check_go_match_syntax(pattern: str) -> None:
    """Reject what Go's `filepath.Match` calls ErrBadPattern, as moby's `New` does."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            if i + 1 >= n:
                raise SpecError(f"bad ignore pattern {pattern!r}: trailing backslash")
            i += 2
        elif pattern[i] == "[":
            i = _skip_go_class(pattern, i + 1)
        else:
            i += 1


def _skip_go_class(pattern: str, i: int) -> int:
    """Index just after the character class whose body starts at `i`, as Go parses it."""
    bad = SpecError(f"bad ignore pattern {pattern!r}: malformed character class")
    i += pattern.startswith("^", i)
    ranges = 0
    while True:
        if pattern.startswith("]", i) and ranges:
            return i + 1
        i = _skip_go_class_char(pattern, i, bad)
        if pattern[i] == "-":
            i = _skip_go_class_char(pattern, i + 1, bad)
        ranges += 1


def _skip_go_class_char(pattern: str, i: int, bad: SpecError) -> int:
    """Port of Go's `getEsc`: one (possibly escaped) class character, never the last one."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise bad
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise bad
    if i + 1 >= len(pattern):
        raise bad
    return i + 1


def _parse_git_lines(lines: Iterable[str], *, base: str) -> Iterable[_GitRule]:
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if number == 1:
            line = line.removeprefix("\ufeff")
        try:
            compiled = GitIgnoreSpecPattern(line)
        except ValueError as exc:
            raise SpecError(f"line {number}: bad gitignore pattern {line!r}") from exc
        if compiled.include is None or compiled.regex is None:
            continue
        yield _GitRule(line=line, base=base, negated=not compiled.include, regex=compiled.regex)


def _clean_base(base: str) -> str:
    cleaned = posixpath.normpath(base.strip("/")) if base.strip("/") else ""
    if cleaned == ".":
        return ""
    if cleaned == ".." or cleaned.startswith("../"):
        raise SpecError(f"a .gitignore base must lie inside the context, not {base!r}")
    return cleaned
