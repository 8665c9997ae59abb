"""`gr2 sid ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="sid")
def group() -> None:
    """sid stage commands."""
