"""Compile the pipeline and submit it to a Kubeflow Pipelines endpoint (``kfp.Client``, API v2beta1).

Upload once per content: the pipeline version is named by a hash of the compiled YAML, so submitting an
unchanged pipeline reuses its version and a changed one adds a new version under the same pipeline.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gr2.config import GR2Config
from gr2.contract import PIPELINE_NAME


class SubmitError(RuntimeError):
    """The endpoint refused or could not be reached; the message says which call failed."""


@dataclass(frozen=True)
class Submission:
    """What :func:`submit` created or reused."""

    pipeline_id: str
    version_id: str
    experiment_id: str  # "" when only uploaded
    run_id: str  # "" when only uploaded
    url: str


def compile_pipeline(cfg: GR2Config, out: str | Path) -> Path:
    """Write the IR YAML of the pipeline for ``cfg`` to ``out``."""
    from kfp import compiler

    from pipelines.gr2_pipeline import build_pipeline

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(path))
    return path


def _version_id(client, pipeline_id: str, version_name: str) -> str | None:
    import json

    flt = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]}
    )
    found = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=flt).pipeline_versions or []
    return found[0].pipeline_version_id if found else None


def submit(
    cfg: GR2Config,
    host: str,
    namespace: str,
    experiment: str,
    run_name: str | None = None,
    version_name: str | None = None,
    package: str | Path | None = None,
    start_run: bool = True,
) -> Submission:
    """Upload the pipeline (or a new version of it), make sure the experiment exists, start a run.

    ``package`` uploads an already compiled IR YAML (the Helm chart's copy) instead of compiling ``cfg``;
    ``start_run=False`` only uploads (the chart's install hook: runs start from the KFP UI).
    """
    import kfp
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    with tempfile.TemporaryDirectory() as tmp:
        if package is not None and not Path(package).is_file():
            raise SubmitError(f"{package}: no compiled pipeline there (run `gr2 pipeline compile`)")
        package = Path(package) if package is not None else compile_pipeline(cfg, Path(tmp) / "gr2_pipeline.yaml")
        version = version_name or f"{cfg.profile}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
        step = "connect"
        try:
            client = kfp.Client(host=host, namespace=namespace)
            step = "find pipeline"
            pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
            if pipeline_id is None:
                step = "upload pipeline"
                pipeline_id = client.upload_pipeline(
                    str(package), pipeline_name=PIPELINE_NAME, namespace=namespace
                ).pipeline_id
                step = "upload pipeline version"
                version_id = client.upload_pipeline_version(
                    str(package), version, pipeline_id=pipeline_id
                ).pipeline_version_id
            else:
                step = "find pipeline version"
                version_id = _version_id(client, pipeline_id, version)
                if version_id is None:
                    step = "upload pipeline version"
                    version_id = client.upload_pipeline_version(
                        str(package), version, pipeline_id=pipeline_id
                    ).pipeline_version_id
            if not start_run:
                return Submission(pipeline_id=pipeline_id, version_id=version_id, experiment_id="", run_id="",
                                  url=f"{host.rstrip('/')}/#/pipelines/details/{pipeline_id}")
            step = "create experiment"
            experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
            step = "create run"
            run = client.run_pipeline(
                experiment_id=experiment_id,
                job_name=run_name or f"gr2-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}",
                pipeline_id=pipeline_id,
                version_id=version_id,
                params={"source_path": cfg.data.source_path or "", "min_lift": cfg.pipeline.min_lift},
                enable_caching=cfg.pipeline.caching,
            )
        except (ApiException, HTTPError, ValueError) as err:
            raise SubmitError(f"{host}: {step} failed: {err}") from err
    return Submission(
        pipeline_id=pipeline_id,
        version_id=version_id,
        experiment_id=experiment_id,
        run_id=run.run_id,
        url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
    )
