"""The ``gr2`` command: one group per stage, in the order data flows."""

from __future__ import annotations

import click

from gr2 import __version__
from gr2.cli import ab, data, demo, eval, export, features, samples, serve, sid, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gr2")
def main() -> None:
    """GR2 generative re-ranker: data -> features/SIDs -> samples -> training -> eval -> serving."""


for module in (data, features, sid, samples, train, eval, demo, serve, export, ab):
    main.add_command(module.group)

if __name__ == "__main__":
    main()
