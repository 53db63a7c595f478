"""Tests for imaged.spec.pep723: the PEP 723 `# /// script` block parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaged.errors import ImagedError, ScriptHeaderError
from imaged.spec.pep723 import ScriptMetadata, parse_script_metadata, read_script_metadata

VALID = """\
#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "rich>=13",
#   "httpx==0.27.0",
# ]
# ///
import rich
"""
VALID_HEADER = (
    'requires-python = ">=3.11"\ndependencies = [\n  "rich>=13",\n  "httpx==0.27.0",\n]\n'
)


def block(*lines: str) -> str:
    """A closed `script` block made of the given content lines."""
    return "\n".join(["# /// script", *lines, "# ///", ""])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID,
            ScriptMetadata(("rich>=13", "httpx==0.27.0"), ">=3.11", VALID_HEADER, 2),
            id="valid",
        ),
        pytest.param(
            "import sys\nprint(sys.argv)\n", ScriptMetadata((), None, "", 0), id="no-block"
        ),
        pytest.param("", ScriptMetadata((), None, "", 0), id="empty-file"),
        pytest.param(
            VALID.replace("\n", "\r\n"),
            ScriptMetadata(("rich>=13", "httpx==0.27.0"), ">=3.11", VALID_HEADER, 2),
            id="crlf",
        ),
        pytest.param(
            block('# dependencies = ["rich"]', "#", "# [tool.uv]", "# exclude-newer = 2024-01-01"),
            ScriptMetadata(
                ("rich",),
                None,
                'dependencies = ["rich"]\n\n[tool.uv]\nexclude-newer = 2024-01-01\n',
                1,
            ),
            id="bare-hash-line-and-tool-table",
        ),
        pytest.param(
            block('# requires-python = ">=3.12"'),
            ScriptMetadata((), ">=3.12", 'requires-python = ">=3.12"\n', 1),
            id="no-dependencies-key",
        ),
        pytest.param(
            block('# dependencies = ["rich"]') + 'print("# /// script")\nX = "# ///"\n',
            ScriptMetadata(("rich",), None, 'dependencies = ["rich"]\n', 1),
            id="opener-in-a-string-after-the-block",
        ),
        pytest.param(
            "# /// pyproject\n# [project]\n# ///\n\n" + block('# dependencies = ["rich"]'),
            ScriptMetadata(("rich",), None, 'dependencies = ["rich"]\n', 5),
            id="other-block-type-ignored",
        ),
        pytest.param(
            "# /// pyproject\n# this is = = not toml\n# ///\n",
            ScriptMetadata((), None, "", 0),
            id="only-other-block-type",
        ),
        pytest.param(
            "## /// script\n## dependencies = ['x']\n## ///\n",
            ScriptMetadata((), None, "", 0),
            id="double-hash-commented-out",
        ),
        pytest.param(
            "#   /// script\n# dependencies = ['x']\n# ///\n",
            ScriptMetadata((), None, "", 0),
            id="extra-spaces-not-an-opener",
        ),
        pytest.param(
            "def f():\n    # /// script\n    # dependencies = ['x']\n    # ///\n    pass\n",
            ScriptMetadata((), None, "", 0),
            id="indented-not-a-block",
        ),
    ],
)
def test_parse_valid(text: str, expected: ScriptMetadata) -> None:
    assert parse_script_metadata(text, file="s.py") == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            block("# dependencies = ['a']") + "\n" + block("# dependencies = ['b']"),
            5,
            "more than one `# /// script` block (the first is at line 1)",
            id="two-blocks",
        ),
        pytest.param(
            "import os\n# /// script\n# dependencies = ['a']\n",
            2,
            "`# /// script` is not closed",
            id="unclosed-at-eof",
        ),
        pytest.param(
            "# /// script\n# dependencies = ['a']\nimport os\n# ///\n",
            1,
            "`# /// script` is not closed",
            id="code-line-inside-block",
        ),
        pytest.param("\n\n# /// script\n# ///\n", 3, "is not closed", id="empty-block"),
        pytest.param(
            "# /// script\n#dependencies = ['a']\n# ///\n",
            1,
            "is not closed",
            id="content-line-without-space",
        ),
        pytest.param(
            "x = 1\n# /// script\n# requires-python = '>=3.11'\n# dependencies = [\n#   'a' 'b',\n# ]\n# ///\n",
            5,
            "invalid TOML in the `script` block: Unclosed array (column 9)",
            id="bad-toml-line-mapped",
        ),
        pytest.param(
            "# /// script\n# dependencies = ['a'\n# ///\n",
            2,
            "invalid TOML in the `script` block",
            id="bad-toml-at-end-of-document",
        ),
        pytest.param(
            "# /// script\n# dependencies = ['a']\n# ///\n# x = 1\n# ///\n",
            3,
            "invalid TOML",
            id="greedy-last-closing-line-wins",
        ),
        pytest.param(
            "# /// pyproject\n# [project]\n# ///\n" + block("# dependencies = ['rich']"),
            4,
            "swallowed by the `# /// pyproject` block of line 1; put a blank line between",
            id="script-block-swallowed-by-adjacent-block",
        ),
        pytest.param(
            "# /// script\n# requires-python = '>=3.11'\n# dependencies = 'rich'\n# ///\n",
            3,
            "`dependencies` must be a list of strings, not 'rich'",
            id="dependencies-not-a-list",
        ),
        pytest.param(
            block("# dependencies = ['rich', 3]"),
            2,
            "`dependencies` must be a list of strings",
            id="dependencies-not-strings",
        ),
        pytest.param(
            block("# dependencies = ['rich', '  ']"),
            2,
            "`dependencies` contains an empty requirement",
            id="dependencies-empty-string",
        ),
        pytest.param(
            block("#", "# requires-python = 3.11"),
            3,
            "`requires-python` must be a version string, not 3.11",
            id="requires-python-not-a-string",
        ),
        pytest.param(
            block('# "requires-python" = ""'),
            2,
            "`requires-python` must be a version string",
            id="requires-python-empty-quoted-key",
        ),
        pytest.param(
            block("# dependencies = []", "# dependency = ['rich']"),
            3,
            "unknown key 'dependency'",
            id="unknown-key-typo",
        ),
        pytest.param(
            block("# dependencies = []", "# [project]", "# name = 'x'"),
            1,
            "unknown key 'project'",
            id="unknown-table-falls-back-to-block-line",
        ),
    ],
)
def test_parse_error(text: str, line: int, message: str) -> None:
    with pytest.raises(ScriptHeaderError) as caught:
        parse_script_metadata(text, file="scripts/s.py")
    assert caught.value.file == "scripts/s.py"
    assert caught.value.line == line
    assert str(caught.value).startswith(f"scripts/s.py:{line}: ")
    assert message in str(caught.value)


def test_header_is_identical_for_lf_and_crlf() -> None:
    lf = parse_script_metadata(VALID, file="a.py")
    crlf = parse_script_metadata(VALID.replace("\n", "\r\n"), file="a.py")
    assert lf.header == crlf.header == VALID_HEADER


def test_read_script_metadata_reads_bytes_with_bom_and_crlf(tmp_path: Path) -> None:
    script = tmp_path / "report.py"
    script.write_bytes(b"\xef\xbb\xbf" + VALID.replace("\n", "\r\n").encode())
    meta = read_script_metadata(script)
    assert meta.dependencies == ("rich>=13", "httpx==0.27.0")
    assert meta.start_line == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot read the script", id="missing"),
        pytest.param(b"# \xff\xfe\n", "not UTF-8", id="not-utf8"),
    ],
)
def test_read_script_metadata_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    script = tmp_path / "s.py"
    if content is not None:
        script.write_bytes(content)
    with pytest.raises(ScriptHeaderError, match=message) as caught:
        read_script_metadata(script)
    assert caught.value.file == str(script)
    assert isinstance(caught.value, ImagedError)


def test_read_script_metadata_names_the_file_in_toml_errors(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("# /// script\n# dependencies = [\n# ///\n", encoding="utf-8")
    with pytest.raises(ScriptHeaderError, match=rf"^{script}:2: invalid TOML"):
        read_script_metadata(script)
