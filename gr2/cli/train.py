"""`gr2 train ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="train")
def group() -> None:
    """train stage commands."""
