"""Read the PEP 723 inline metadata (`# /// script` block) of a single-file uv script."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from imaged.errors import ScriptHeaderError
from imaged.safe_read import os_reason, read_regular

# The reference regex of PEP 723, verbatim: https://peps.python.org/pep-0723/#reference-implementation
BLOCK_REGEX = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
SCRIPT_OPENER = "# /// script"
KNOWN_KEYS = ("dependencies", "requires-python", "tool")
_TOML_AT_LINE = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_TOML_AT_END = re.compile(r"^(?P<msg>.*) \(at end of document\)$")


@dataclass(frozen=True)
class ScriptMetadata:
    """The `script` block of a PEP 723 script; empty (``start_line == 0``) when there is none.

    Example:
        >>> parse_script_metadata('# /// script\\n# dependencies = ["rich"]\\n# ///\\n', file="r.py")
        ScriptMetadata(dependencies=('rich',), requires_python=None, header='dependencies = ["rich"]\\n', start_line=1)
    """

    dependencies: tuple[str, ...]
    requires_python: str | None
    header: str
    start_line: int


EMPTY = ScriptMetadata(dependencies=(), requires_python=None, header="", start_line=0)


def read_script_metadata(path: Path) -> ScriptMetadata:
    """Read `path` (UTF-8, optional BOM, LF or CRLF) and parse its `script` block."""
    try:
        text = read_regular(path).decode("utf-8-sig")
    except OSError as exc:
        raise ScriptHeaderError(
            f"cannot read the script: {os_reason(exc)}", file=str(path)
        ) from exc
    except UnicodeDecodeError as exc:
        raise ScriptHeaderError(f"the script is not UTF-8: {exc.reason}", file=str(path)) from exc
    return parse_script_metadata(text, file=str(path))


def parse_script_metadata(text: str, *, file: str) -> ScriptMetadata:
    """Parse the single `# /// script` block of `text`; `file` names it in errors."""
    text = text.replace("\r\n", "\n")
    blocks = list(BLOCK_REGEX.finditer(text))
    _reject_unclosed_openers(text, blocks, file=file)
    scripts = [m for m in blocks if m.group("type") == "script"]
    if len(scripts) > 1:
        second = _line_of(text, scripts[1].start())
        raise ScriptHeaderError(
            f"more than one `{SCRIPT_OPENER}` block (the first is at line "
            f"{_line_of(text, scripts[0].start())})",
            file=file,
            line=second,
        )
    if not scripts:
        return EMPTY
    return _parse_block(scripts[0], text=text, file=file)


def _parse_block(match: re.Match[str], *, text: str, file: str) -> ScriptMetadata:
    start_line = _line_of(text, match.start())
    lines = match.group("content").splitlines(keepends=True)
    header = "".join(line[2:] if line.startswith("# ") else line[1:] for line in lines)
    data = _load_toml(header, start_line=start_line, lines=lines, file=file)
    located = _KeyLocator(lines, start_line=start_line, file=file)
    for key in data:
        if key not in KNOWN_KEYS:
            located.fail(key, f"unknown key {key!r} (allowed: {', '.join(KNOWN_KEYS)})")
    return ScriptMetadata(
        dependencies=_dependencies(data.get("dependencies", []), located),
        requires_python=_requires_python(data.get("requires-python"), located),
        header=header,
        start_line=start_line,
    )


def _load_toml(header: str, *, start_line: int, lines: list[str], file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(header)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if at_line := _TOML_AT_LINE.match(message):
            index = int(at_line["line"])
            prefix = 2 if lines[min(index, len(lines)) - 1].startswith("# ") else 1
            column = int(at_line["col"]) + prefix
            line, detail = start_line + index, f"{at_line['msg']} (column {column})"
        elif at_end := _TOML_AT_END.match(message):
            line, detail = start_line + len(lines), f"{at_end['msg']} (at the end of the block)"
        else:
            line, detail = start_line, message
        raise ScriptHeaderError(
            f"invalid TOML in the `script` block: {detail}", file=file, line=line
        ) from exc


class _KeyLocator:
    """Raises errors that point at the file line where a top-level key is set."""

    def __init__(self, lines: list[str], *, start_line: int, file: str) -> None:
        self._lines = lines
        self._start_line = start_line
        self._file = file

    def fail(self, key: str, message: str) -> NoReturn:
        pattern = re.compile(rf"^#\s*[\"']?{re.escape(key)}[\"']?\s*=")
        line = next(
            (self._start_line + i for i, text in enumerate(self._lines, 1) if pattern.match(text)),
            self._start_line,
        )
        raise ScriptHeaderError(f"`script` block: {message}", file=self._file, line=line)


def _dependencies(value: object, located: _KeyLocator) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(dep, str) for dep in value):
        located.fail("dependencies", f"`dependencies` must be a list of strings, not {value!r}")
    deps = tuple(value)
    for dep in deps:
        if not dep.strip():
            located.fail("dependencies", "`dependencies` contains an empty requirement")
    return deps


def _requires_python(value: object, located: _KeyLocator) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        located.fail(
            "requires-python", f"`requires-python` must be a version string, not {value!r}"
        )
    return value


def _reject_unclosed_openers(text: str, blocks: list[re.Match[str]], *, file: str) -> None:
    for opener in re.finditer(rf"(?m)^{re.escape(SCRIPT_OPENER)}$", text):
        line = _line_of(text, opener.start())
        host = next((m for m in blocks if m.start() <= opener.start() < m.end()), None)
        if host is None:
            raise ScriptHeaderError(
                f"`{SCRIPT_OPENER}` is not closed by a `# ///` line (every line of the block "
                "must be `#` alone or start with `# `, and the block must not be empty)",
                file=file,
                line=line,
            )
        if host.group("type") != "script":
            # The reference regex is greedy: with no non-comment line between two blocks,
            # the first one runs to the last `# ///` and swallows the script block.
            raise ScriptHeaderError(
                f"`{SCRIPT_OPENER}` is swallowed by the `# /// {host.group('type')}` block of "
                f"line {_line_of(text, host.start())}; put a blank line between the two blocks",
                file=file,
                line=line,
            )


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
