"""greeter: a tiny command-line tool that greets people (run `greeter --help`)."""

from __future__ import annotations

import click
import humanize

__version__ = "0.1.0"


@click.command()
@click.argument("names", nargs=-1)
@click.option("--greeting", default="Hello", show_default=True, envvar="GREETER_GREETING")
@click.version_option(__version__)
def main(names: tuple[str, ...], greeting: str) -> None:
    """Greet each of NAMES, or the world when none are given."""
    for name in names or ("world",):
        click.echo(f"{greeting}, {name}!")
    count = humanize.apnumber(len(names) or 1)
    click.echo(f"Greeted {count} {'person' if len(names) <= 1 else 'people'}.")
