# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "rich==13.9.4",
# ]
# ///
"""Print a short report about the running container: the uv script example of imaged."""

from __future__ import annotations

import os
import platform
import sys

from rich.console import Console
from rich.table import Table


def build_report() -> Table:
    """A table of facts about the interpreter and the environment it runs in."""
    table = Table(title="imaged report")
    table.add_column("fact", style="bold")
    table.add_column("value")
    table.add_row("python", sys.version.split()[0])
    table.add_row("platform", platform.platform())
    table.add_row("executable", sys.executable)
    table.add_row("environment variables", str(len(os.environ)))
    return table


def main() -> None:
    """Render the report on stdout."""
    Console().print(build_report())


if __name__ == "__main__":
    main()
