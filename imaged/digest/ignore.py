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
from imaged.safe_read import os_reason, read_regular, shown_path

__all__ = ["STANDARD_IGNORES", "Folder", "IgnoreRules", "Matcher"]

Syntax = Literal["docker", "git"]

MAX_IGNORE_FILE_BYTES = 4 << 20
"""An ignore file larger than this is refused (a mistake, or a link to something endless)."""

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
    """One `.dockerignore` pattern, matched like moby/patternmatcher's `MatchesOrParentMatches`.

    A rule of an ignore file in an ancestor folder has a `prefix`: the copied folder's path
    relative to the ignore file's folder, so the rule matches `prefix/relpath`, as Docker
    matches a context's `.dockerignore` against paths from the context root.
    """

    pattern: str
    negated: bool
    kind: _Kind = field(compare=False)
    regex: re.Pattern[str] | None = field(compare=False, repr=False)
    prefix: str = ""

    @property
    def text(self) -> str:
        line = f"!{self.pattern}" if self.negated else self.pattern
        if self.prefix:
            return "/".join([".."] * (self.prefix.count("/") + 1)) + f": {line}"
        return line

    def match(self, relpath: str, *, is_dir: bool) -> int:
        if self.prefix:
            relpath = f"{self.prefix}/{relpath}" if relpath else self.prefix
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
        if self.prefix:
            reldir = f"{self.prefix}/{reldir}" if reldir else self.prefix
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
    """One `.gitignore` pattern (pathspec's GitIgnoreSpecPattern) scoped to the folder `base`.

    A rule from an ancestor's `.gitignore` has a `prefix`: the context root's path relative to
    that ancestor, so the rule matches `prefix/relpath`, the path git matches it against.
    (The prefix cannot be folded into the regex: "(?:.+/)?" may match part of it.)
    """

    line: str
    base: str
    negated: bool
    regex: re.Pattern[str] = field(compare=False, repr=False)
    prefix: str = ""

    @property
    def text(self) -> str:
        if self.prefix:
            return "/".join([".."] * (self.prefix.count("/") + 1)) + f": {self.line}"
        return f"{self.base}: {self.line}" if self.base else self.line

    def match(self, relpath: str, *, is_dir: bool) -> int:
        if self.base:
            if not relpath.startswith(self.base + "/"):
                return _NO_MATCH
            relpath = relpath[len(self.base) + 1 :]
        if self.prefix:
            relpath = f"{self.prefix}/{relpath}"
        found = self.regex.match(relpath + "/" if is_dir else relpath)
        if found is None:
            return _NO_MATCH
        return _DIR_MATCH if found.groupdict().get("ps_d") else _PATH_MATCH

    def may_match_below(self, reldir: str) -> bool:
        body = self.line.strip().removeprefix("!")
        anchored = "/" in body.rstrip("/")
        literal = _GIT_LITERAL_STOP.split(body.lstrip("/"), maxsplit=1)[0] if anchored else ""
        base, below = self.base + "/" if self.base else "", reldir + "/"
        if below.startswith(base):
            seen = self._prefix_slash + below[len(base) :]  # reldir as this rule's file sees it
        elif base.startswith(below):
            seen = self._prefix_slash  # the whole scope of the rule lies below reldir
        else:
            return False
        return literal.startswith(seen) or seen.startswith(literal)

    @property
    def _prefix_slash(self) -> str:
        return self.prefix + "/" if self.prefix else ""


@dataclass(frozen=True)
class IgnoreRules:
    """An ordered list of ignore patterns; the last match wins and `!` re-includes.

    >>> rules = IgnoreRules.from_lines(["build", "!build/keep.txt"])
    >>> rules.is_ignored("build/out.o"), rules.is_ignored("build/keep.txt")
    (True, False)
    """

    rules: tuple[_Rule, ...] = ()
    _matcher: Matcher | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_lines(
        cls, lines: Iterable[str], *, syntax: Syntax = "docker", base: str = "", prefix: str = ""
    ) -> IgnoreRules:
        """Parse ignore-file lines; `base` scopes a nested `.gitignore` to that folder, and
        `prefix` (the context root's path relative to an ancestor's `.gitignore`) makes an
        ancestor's patterns match `prefix/relpath`, as git matches them.

        >>> rules = IgnoreRules.from_lines(["/api/.env"], syntax="git", prefix="services/api")
        >>> rules.is_ignored("api/.env"), rules.patterns
        (False, ('../..: /api/.env',))
        """
        if syntax == "docker":
            if base.strip("/."):
                raise SpecError(f"a .dockerignore applies to the context root, not {base!r}")
            clean_prefix = _clean_base(prefix, what="prefix")
            return cls(tuple(_parse_docker_lines(lines, prefix=clean_prefix)))
        if syntax == "git":
            clean_base, clean_prefix = _clean_base(base), _clean_base(prefix, what="prefix")
            return cls(tuple(_parse_git_lines(lines, base=clean_base, prefix=clean_prefix)))
        raise SpecError(f"unknown ignore syntax {syntax!r}: use 'docker' or 'git'")

    @classmethod
    def from_file(
        cls, path: Path, *, syntax: Syntax = "docker", base: str = "", prefix: str = ""
    ) -> IgnoreRules:
        """Read an ignore file; a missing file gives empty rules. A symlink is followed
        only to a regular file; a FIFO, device, socket or folder, or a file larger than
        ``MAX_IGNORE_FILE_BYTES``, is a SpecError naming the file (never a blocking read).

        >>> IgnoreRules.from_file(Path("/nonexistent/.dockerignore")).patterns
        ()
        """
        try:
            data = read_regular(path, limit=MAX_IGNORE_FILE_BYTES)
            text = data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            reason = os_reason(exc)
            raise SpecError(f"{shown_path(path)}: cannot read ignore file: {reason}") from exc
        try:
            return cls.from_lines(text.split("\n"), syntax=syntax, base=base, prefix=prefix)
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
        return not any(rule.may_match_below(reldir) for rule in self.rules if rule.negated)

    def walker(self) -> Matcher:
        """The walk-time matcher of these rules (built once, then cached on the rules).

        >>> rules = IgnoreRules.from_lines(["build", "!build/keep.txt"])
        >>> m = rules.walker()
        >>> ignored, best = m.child(m.folder(""), "build", "build", is_dir=True)
        >>> ignored, m.child(m.enter(m.folder(""), "build", best), "x", "build/x", is_dir=False)[0]
        (True, True)
        """
        if self._matcher is None:
            object.__setattr__(self, "_matcher", Matcher(self.rules))
        assert self._matcher is not None
        return self._matcher


def _parse_docker_lines(lines: Iterable[str], *, prefix: str = "") -> Iterable[_DockerRule]:
    for number, line in enumerate(lines, start=1):
        pattern = _read_docker_line(line, first=number == 1)
        if pattern is None:
            continue
        try:
            yield _compile_docker(pattern, prefix=prefix)
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


def _compile_docker(line: str, *, prefix: str = "") -> _DockerRule:
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
    return _DockerRule(pattern=pattern, negated=negated, kind=kind, regex=regex, prefix=prefix)


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
                parts.append("(?:.*/)?")
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


def _parse_git_lines(lines: Iterable[str], *, base: str, prefix: str) -> Iterable[_GitRule]:
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
        yield _GitRule(line, base, not compiled.include, compiled.regex, prefix)


def _clean_base(base: str, *, what: str = "base") -> str:
    cleaned = posixpath.normpath(base.strip("/")) if base.strip("/") else ""
    if cleaned == ".":
        return ""
    if cleaned == ".." or cleaned.startswith("../"):
        raise SpecError(f"a .gitignore {what} must be a path down a tree, not {base!r}")
    return cleaned


# -- walk-time matching -------------------------------------------------------------------
#
# Docker semantics are "the last rule that matches the path or any ancestor decides", so a walk
# carries, per folder, the highest rule matching the folder or an ancestor, and matches each
# child only against itself: one regex alternation of the rules in reverse order, whose first
# full match is the highest matching rule. Rules that depend on the name alone ("**/*.pyc")
# are matched once per distinct name; the others only in folders whose children they can reach.


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder as a walk sees it: ``best`` is 1 + the index of the last docker rule that
    matches it or an ancestor (0 for none); ``paths`` matches the rules its children may hit."""

    rel: str
    prefix: str
    best: int
    paths: re.Pattern[str] | None
    groups: tuple[int, ...]


class Matcher:
    """Walk-time form of an :class:`IgnoreRules`: the same answers as ``is_ignored`` for every
    path of a walk that starts at ``folder(reldir)`` and descends with ``enter``."""

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        self._reference = IgnoreRules(rules)
        self._ignores = (False, *(not rule.negated for rule in rules))
        self._negated = tuple(rule for rule in rules if rule.negated)
        self._names: dict[str, int] = {}
        self._subsets: dict[tuple[int, ...], tuple[re.Pattern[str] | None, tuple[int, ...]]] = {}
        name_rules: list[tuple[int, str]] = []
        self._path_rules: list[tuple[int, _DockerRule, str]] = []
        self._git: list[tuple[int, _GitRule]] = []
        anchored: dict[str, list[tuple[int, str]]] = {}
        for number, rule in enumerate(rules, start=1):
            if isinstance(rule, _DockerRule) and rule.prefix:
                anchored.setdefault(rule.prefix + "/", []).append((number, _docker_source(rule)))
            elif isinstance(rule, _DockerRule):
                source = _docker_source(rule)
                if _depends_on_name_only(rule):
                    name_rules.append((number, source))
                else:
                    self._path_rules.append((number, rule, source))
            elif isinstance(rule, _GitRule):
                self._git.append((number, rule))
        try:
            self._name_re, self._name_groups = _alternation(name_rules)
            _alternation([(n, source) for n, _, source in self._path_rules])
            self._git_filter = _git_prefilter(self._git)
            # Rules of an ignore file above the root: matched against "prefix/rel".
            self._anchored = [(p, *_alternation(sources)) for p, sources in anchored.items()]
            self.exact = True
        except re.error:
            self.exact = False  # a pattern that only compiles on its own: ask is_ignored

    def folder(self, reldir: str) -> Folder:
        """The state of any folder, from scratch (``""`` is the root)."""
        best = 0
        for number, rule in enumerate(self._reference.rules, start=1):
            # At the root only an anchored rule can match: its prefix, or a parent of it.
            anchored = isinstance(rule, _DockerRule) and (reldir or rule.prefix)
            if anchored and rule.match(reldir, is_dir=True):
                best = number
        return self._make_folder(reldir, best)

    def enter(self, folder: Folder, name: str, best: int) -> Folder:
        """The state of the child folder ``name``, given the ``best`` that ``child`` returned."""
        return self._make_folder(folder.prefix + name, best)

    def child(self, folder: Folder, name: str, rel: str, *, is_dir: bool) -> tuple[bool, int]:
        """Whether ``rel`` (``folder.prefix + name``) is ignored, and its ``best`` for ``enter``."""
        if not self.exact:
            return self._reference.is_ignored(rel, is_dir=is_dir), 0
        best = folder.best
        found = self._names.get(name)
        if found is None:
            found = self._match_name(name)
        if found > best:
            best = found
        if folder.paths is not None:
            hit = folder.paths.fullmatch(rel)
            if hit is not None and folder.groups[hit.lastindex or 0] > best:
                best = folder.groups[hit.lastindex or 0]
        for prefix, regex, groups in self._anchored:
            hit = regex.fullmatch(prefix + rel) if regex is not None else None
            if hit is not None and groups[hit.lastindex or 0] > best:
                best = groups[hit.lastindex or 0]
        if self._git:
            return self._decide_with_git(rel, best, is_dir=is_dir), best
        return self._ignores[best], best

    def can_prune(self, reldir: str) -> bool:
        """For an ignored folder: True when no ``!`` pattern could re-include anything below."""
        return not any(rule.may_match_below(reldir) for rule in self._negated)

    def _match_name(self, name: str) -> int:
        hit = self._name_re.fullmatch(name) if self._name_re is not None else None
        found = 0 if hit is None else self._name_groups[hit.lastindex or 0]
        if len(self._names) >= 1 << 16:
            self._names.clear()
        self._names[name] = found
        return found

    def _make_folder(self, rel: str, best: int) -> Folder:
        prefix = rel + "/" if rel else ""
        depth = prefix.count("/")
        subset = tuple(
            number for number, rule, _ in self._path_rules if _may_match_child(rule, prefix, depth)
        )
        compiled = self._subsets.get(subset)
        if compiled is None:
            chosen = [(n, source) for n, _, source in self._path_rules if n in subset]
            compiled = self._subsets[subset] = _alternation(chosen)
        return Folder(rel, prefix, best, compiled[0], compiled[1])

    def _decide_with_git(self, rel: str, best: int, *, is_dir: bool) -> bool:
        """``is_ignored``'s ranking with the docker rules folded into ``best``: the last rule
        that matched at full strength, or a non-negated one through a parent folder, decides;
        after the latter, a later ``!`` that also matched through a parent re-includes."""
        tail = "/" if is_dir else ""
        if self._git_filter is not None and not any(
            rel.startswith(base) and regex.match(f"{prefix}{rel[len(base) :]}{tail}")
            for base, prefix, regex in self._git_filter
        ):
            return self._ignores[best]
        top, strength, weak_negation = best, _PATH_MATCH if best else _NO_MATCH, 0
        for number, rule in self._git:
            found = rule.match(rel, is_dir=is_dir)
            if found == _DIR_MATCH and rule.negated:
                weak_negation = number
            elif found and number > top:
                top, strength = number, found
        if strength == _PATH_MATCH:
            return self._ignores[top]
        return strength == _DIR_MATCH and weak_negation < top


def _docker_source(rule: _DockerRule) -> str:
    """A regex that fully matches exactly the paths ``rule._matches`` accepts."""
    pattern = rule.pattern
    if rule.kind is _Kind.EXACT:
        return re.escape(pattern)
    if rule.kind is _Kind.PREFIX:
        return re.escape(pattern[:-2]) + "(?s:.*)"
    if rule.kind is _Kind.SUFFIX:
        suffix = pattern[2:]
        source = "(?s:.*)" + re.escape(suffix)
        return source + "|" + re.escape(suffix[1:]) if suffix.startswith("/") else source
    assert rule.regex is not None
    return rule.regex.pattern


def _depends_on_name_only(rule: _DockerRule) -> bool:
    """True for "**/NAME"-like rules: a path matches exactly when its last part matches."""
    if rule.kind is _Kind.SUFFIX:
        suffix = rule.pattern[2:]
        return "/" not in (suffix[1:] if suffix.startswith("/") else suffix)
    if rule.kind is not _Kind.REGEXP or not rule.pattern.startswith("**"):
        return False
    rest = rule.pattern[2:].removeprefix("/")
    # "*" and "?" never match "/", but a class can ("[^a]") and "**" does.
    return "**" not in rest and not any(char in rest for char in "/[]\\")


def _may_match_child(rule: _DockerRule, prefix: str, depth: int) -> bool:
    """False when ``rule`` cannot match any ``prefix + name`` (a path with ``depth`` slashes)."""
    pattern = rule.pattern
    if rule.kind is _Kind.EXACT:
        return pattern.count("/") == depth and pattern.startswith(prefix)
    if rule.kind is _Kind.SUFFIX:
        return True
    literal = pattern[:-2] if rule.kind is _Kind.PREFIX else _LITERAL_STOP.split(pattern, 1)[0]
    if not (literal.startswith(prefix) or prefix.startswith(literal)):
        return False
    if rule.kind is _Kind.PREFIX or "**" in pattern or "[" in pattern:
        return True
    return pattern.count("/") == depth


def _alternation(
    sources: list[tuple[int, str]],
) -> tuple[re.Pattern[str] | None, tuple[int, ...]]:
    """One regex trying the rules last-first; group k (1-based) is rule ``numbers[k]``."""
    if not sources:
        return None, (0,)
    ordered = sorted(sources, reverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # see _compile_regex
        regex = re.compile("|".join(f"({source})" for _, source in ordered))
    return regex, (0, *(number for number, _ in ordered))


def _git_prefilter(
    rules: list[tuple[int, _GitRule]],
) -> list[tuple[str, str, re.Pattern[str]]] | None:
    """Per (base folder, prefix), one regex that matches when any of its git rules can."""
    groups: dict[tuple[str, str], list[str]] = {}
    for _, rule in rules:
        plain = re.sub(r"\(\?P<\w+>", "(?:", rule.regex.pattern)
        key = (rule.base + "/" if rule.base else "", rule._prefix_slash)
        groups.setdefault(key, []).append(f"(?:{plain})")
    try:
        return [(b, p, re.compile("|".join(parts))) for (b, p), parts in groups.items()]
    except re.error:
        return None
