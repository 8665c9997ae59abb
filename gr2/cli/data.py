"""`gr2 data ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="data")
def group() -> None:
    """data stage commands."""
