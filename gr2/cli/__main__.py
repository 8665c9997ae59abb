"""``python -m gr2.cli``: the ``gr2`` command (what torchrun launches in a TrainJob)."""

from gr2.cli import main

main()
