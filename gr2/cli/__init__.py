"""The ``gr2`` command: one group per stage, in the order data flows."""

from __future__ import annotations

import os
import sys

import click


def quiet_when_redirected() -> None:
    """Logs written to a file get no progress-bar redraws and no colour codes (a terminal keeps both)."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("NO_COLOR", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


quiet_when_redirected()  # before any module imports tqdm (it reads TQDM_* at import)

from gr2 import __version__  # noqa: E402
from gr2.cli import ab, data, demo, eval, export, features, pipeline, samples, serve, sid, train  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gr2")
def main() -> None:
    """GR2 generative re-ranker: data -> features/SIDs -> samples -> training -> eval -> serving."""


for module in (data, features, sid, samples, train, eval, pipeline, serve, export, ab, demo):
    main.add_command(module.group)

if __name__ == "__main__":
    main()
