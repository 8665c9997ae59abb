"""Metrics JSON that carries what is needed to rebuild it: config, data hash, versions, commit."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_TRACKED_PACKAGES = (
    "gr2", "torch", "transformers", "trl", "feast", "great-expectations", "pandas", "numpy", "scikit-learn",
)


def hash_files(paths: Iterable[str | Path]) -> str:
    """SHA-256 over the bytes of the given files (sorted by path; folders are walked)."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for f in sorted(files):
        digest.update(str(f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes the results."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_metrics(
    path: str | Path,
    metrics: dict[str, Any],
    config: BaseModel | dict[str, Any] | None = None,
    inputs: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Write ``metrics`` with provenance (config, input data hash, versions, commit) as JSON."""
    record = {
        "metrics": metrics,
        "config": config.model_dump(mode="json") if isinstance(config, BaseModel) else config,
        "data_hash": hash_files(inputs) if inputs else None,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "created_unix": int(time.time()),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return record
