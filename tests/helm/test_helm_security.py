"""Every pod of every scenario: non-root, read-only root filesystem, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault, and requests and limits on every container."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helmchart import SCENARIOS, Scenario, pod_specs, render, security_problems

POD_KINDS = {"Deployment", "Job", "Pod", "InferenceService", "TrainJob"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_pod_is_locked_down(rendered: dict[str, list[dict]], scenario: Scenario) -> None:
    docs = rendered[scenario.name]
    pods = pod_specs(docs)
    rendered_pod_kinds = {d["kind"] for d in docs} & POD_KINDS
    assert {p.origin.split("/")[0] for p in pods} == rendered_pod_kinds
    problems = [problem for pod in pods for problem in security_problems(pod)]
    assert not problems


def test_walker_sees_all_pods(rendered: dict[str, list[dict]]) -> None:
    """The walk covers the predictor (runtime merged), Feast, Redis, the upload Job and the helm test."""
    origins = {p.origin for p in pod_specs(rendered["minimal"])}
    assert origins == {"InferenceService/gr2-reranker", "Deployment/gr2-feast", "Deployment/gr2-redis",
                       "Job/gr2-pipeline-upload", "Pod/gr2-test-rerank"}
    predictor = next(p for p in pod_specs(rendered["minimal"]) if p.origin.startswith("InferenceService"))
    container = predictor.containers[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # from the ServingRuntime
    assert container["resources"]["limits"]["cpu"]  # from the InferenceService's model
    training = {p.origin for p in pod_specs(rendered["training"])}
    assert "TrainJob/gr2-train-midtrain/node" in training


@pytest.mark.parametrize(("override", "problem"), [
    ("containerSecurityContext.readOnlyRootFilesystem=false", "root filesystem is writable"),
    ("containerSecurityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
    ("containerSecurityContext.capabilities.drop=null", "capabilities not all dropped"),
    ("serving.resources.requests.cpu=1", "no limits"),
])
def test_walker_reports_a_weakened_chart(helm: Path, override: str, problem: str) -> None:
    pods = pod_specs(render(helm, SCENARIOS[0], (override,)))
    problems = [p for pod in pods for p in security_problems(pod)]
    assert any(problem in p for p in problems), problems
