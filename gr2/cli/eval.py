"""`gr2 eval ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="eval")
def group() -> None:
    """eval stage commands."""
