"""Logs redirected to a file are plain text (no colour codes, no progress redraws); unknown SIDs exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_run

pytestmark = pytest.mark.slow
GR2 = str(Path(sys.executable).parent / "gr2")


def _run(*args: str, log: Path) -> int:
    with log.open("w") as out:  # a file, as in `gr2 ... > log 2>&1`
        return subprocess.run([GR2, *args], stdout=out, stderr=subprocess.STDOUT, check=False, timeout=600).returncode


def test_redirected_logs_are_plain_and_unknown_sid_items_fail(synthetic_run, tmp_path) -> None:
    cfg = copy_run(synthetic_run, tmp_path / "run")
    run = ["--profile", "smoke", "--run-dir", cfg.run_dir]
    log = tmp_path / "log.txt"
    for command in (["features", "apply"], ["features", "materialize"], ["samples", "build"],
                    ["sid", "train", "--no-feature-store"]):
        assert _run(*command, *run, log=log) == 0, log.read_text()
        text = log.read_text()
        assert "\x1b[" not in text, (command, text[:300])  # Feast colours its output on terminals only
        assert "\r" not in text, (command, text[:300])  # tqdm bars redraw with \r on terminals only
    assert _run("sid", "show", "--item", "1", "--item", "987654", *run, log=log) == 1
    assert "not in the SID map" in log.read_text() and "987654" in log.read_text()
