"""The validation gate: stages that learn from data refuse it when its last validation failed."""

from __future__ import annotations

import json
from pathlib import Path

from gr2.data.schema import DataError
from gr2.paths import RunPaths


def last_validation(run_dir: str | Path) -> tuple[bool | None, Path]:
    """(success of the run's last ``gr2 data validate``, or None when it never ran; its Markdown report)."""
    folder = RunPaths.of(run_dir).validation
    report = folder / "validation.json"
    if not report.exists():
        return None, folder / "validation.md"
    return bool(json.loads(report.read_text()).get("success")), folder / "validation.md"


def require_valid_data(run_dir: str | Path, force: bool = False) -> None:
    """Raise :class:`DataError` naming the report when the last validation failed (unless ``force``)."""
    success, report = last_validation(run_dir)
    if success is False and not force:
        raise DataError(f"the run's data failed validation; see {report} (fix the data and rerun "
                        f"`gr2 data validate`, or pass --force to use it anyway)")
