"""The ``Pipeline`` and ``PipelineVersion`` custom resources (pipelines.kubeflow.org/v2beta1) of a compiled
pipeline, for KFP installed with the Kubernetes-native API (``--pipelineStore=kubernetes``): the Helm chart
applies them instead of uploading through the REST API."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from gr2.contract import PIPELINE_NAME

API_VERSION = "pipelines.kubeflow.org/v2beta1"


def version_name(profile: str, compiled: str) -> str:
    """``<profile>-<hash of the compiled YAML>``: a new version exactly when the pipeline changed.

    >>> version_name("Default", "x")
    'default-2d711642b726'
    """
    return f"{profile.lower()}-{hashlib.sha256(compiled.encode()).hexdigest()[:12]}"


def pipeline_resources(compiled: str, namespace: str, profile: str) -> list[dict[str, Any]]:
    """The Pipeline and its PipelineVersion for the IR YAML text ``compiled``."""
    docs = [d for d in yaml.safe_load_all(compiled) if d]
    spec, platform = docs[0], (docs[1] if len(docs) > 1 else None)
    name = spec["pipelineInfo"]["name"]
    if name != PIPELINE_NAME:
        raise ValueError(f"compiled pipeline is named {name!r}, expected {PIPELINE_NAME!r}")
    version = version_name(profile, compiled)
    description = spec["pipelineInfo"].get("description", "")
    labels = {"app.kubernetes.io/part-of": "gr2"}
    pipeline = {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"displayName": name, "description": description},
    }
    pv_spec: dict[str, Any] = {
        "pipelineName": name,
        "displayName": version,
        "description": description,
        "pipelineSpec": spec,
    }
    if platform:
        pv_spec["platformSpec"] = platform
    pipeline_version = {
        "apiVersion": API_VERSION,
        "kind": "PipelineVersion",
        "metadata": {"name": f"{name}-{version}", "namespace": namespace, "labels": labels},
        "spec": pv_spec,
    }
    return [pipeline, pipeline_version]
