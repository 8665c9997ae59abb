"""helm/gr2 lints clean, renders, and every object validates: built-ins with kubernetes-validate at the
chart's kubeVersion floor, custom resources against the real CRD schemas (unknown fields rejected)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from .helmchart import (
    CHART,
    SCENARIOS,
    VALUES_FILES,
    HelmError,
    Scenario,
    crd_errors,
    is_custom,
    kube_version,
    render,
    run_helm,
)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_strict(helm: Path, values_file: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(CHART / values_file),
                   "--kube-version", kube_version())
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_renders_expected_kinds(rendered: dict[str, list[dict]], scenario: Scenario) -> None:
    kinds = {doc["kind"] for doc in rendered[scenario.name]}
    assert scenario.expected_kinds <= kinds, f"missing {sorted(scenario.expected_kinds - kinds)}"
    names = [(d["kind"], d["metadata"]["name"]) for d in rendered[scenario.name]]
    assert len(names) == len(set(names)), "two objects share a kind and name"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_builtin_kinds_validate(rendered: dict[str, list[dict]], scenario: Scenario) -> None:
    version = kube_version()
    builtins = [doc for doc in rendered[scenario.name] if not is_custom(doc)]
    assert builtins
    for doc in builtins:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: "
                        f"{'.'.join(map(str, err.path))}: {err.message}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_custom_resources_match_crds(rendered: dict[str, list[dict]], crd_schemas: dict, scenario: Scenario) -> None:
    customs = [doc for doc in rendered[scenario.name] if is_custom(doc)]
    assert customs
    problems = {f"{d['kind']}/{d['metadata']['name']}": crd_errors(d, crd_schemas) for d in customs}
    assert not {k: v for k, v in problems.items() if v}


def test_unknown_field_in_inferenceservice_fails_crd_check(rendered: dict[str, list[dict]],
                                                           crd_schemas: dict) -> None:
    isvc = next(d for d in rendered["minimal"] if d["kind"] == "InferenceService")
    assert crd_errors(isvc, crd_schemas) == []
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    errors = crd_errors(typo, crd_schemas)
    assert any("storageURI" in e for e in errors), errors
    wrong_type = copy.deepcopy(isvc)
    wrong_type["spec"]["predictor"]["minReplicas"] = "one"
    assert any("spec.predictor.minReplicas" in e for e in crd_errors(wrong_type, crd_schemas))


def test_unknown_field_in_builtin_kind_fails_validation(rendered: dict[str, list[dict]]) -> None:
    deployment = copy.deepcopy(next(d for d in rendered["minimal"] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kube_version(), strict=True)


@pytest.mark.parametrize(("override", "message"), [
    ("serving.gpu=one", "/serving/gpu"),  # wrong type
    ("serving.gpuCount=1", "gpuCount"),  # typo: additionalProperties false
    ("serving.runtime=vllm", "/serving/runtime"),  # not in the enum
    ("feast.registry.type=redis", "/feast/registry/type"),
])
def test_wrong_value_fails_lint(helm: Path, override: str, message: str) -> None:
    with pytest.raises(HelmError, match=message):
        run_helm(helm, "lint", "--strict", str(CHART), "-f", str(CHART / "values-minimal.yaml"), "--set", override)


@pytest.mark.parametrize(("overrides", "message"), [
    (("serving.storageUri=",), "set serving.storageUri"),
    (("redis.enabled=false",), "set externalRedis.host"),
    (("serving.ab.enabled=true", "serving.ab.challengerStorageUri=s3://b/c", "serving.ab.championWeight=80"),
     r"set serving.ab.championWeight \+ serving.ab.challengerWeight = 100"),
    (("trainJob.enabled=true",), "set trainJob.runsClaim"),
    (("feast.replicaCount=2",), r"set feast.persistence.accessModes=\[ReadWriteMany\]"),
    (("serving.scaleMetric=concurrency", "serving.maxReplicas=3"), "set serving.scaleMetric to cpu or memory"),
])
def test_validate_values_names_what_to_set(helm: Path, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm, SCENARIOS[0], overrides)


def test_every_value_is_documented_and_typed() -> None:
    """Each leaf of values.yaml has a `## @param` line and a schema entry, and nothing else is documented."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    params = {line.split()[2] for line in (CHART / "values.yaml").read_text().splitlines()
              if line.strip().startswith("## @param ")}

    def leaves(node: object, prefix: str, sub: dict) -> list[tuple[str, dict]]:
        free = sub.get("type") == "object" and sub.get("additionalProperties") is not False
        if isinstance(node, dict) and node and not free and f"{prefix}" not in params:
            out = []
            for key, value in node.items():
                assert key in sub.get("properties", {}), f"{prefix}.{key} is not in values.schema.json"
                out += leaves(value, f"{prefix}.{key}".lstrip("."), sub["properties"][key])
            return out
        return [(prefix, sub)]

    found = leaves(values, "", schema)
    assert {name for name, _ in found} == params
    readme = set(re.findall(r"^\| `([\w.]+)` \|", (CHART / "README.md").read_text(), flags=re.M))
    assert readme == params, "helm/gr2/README.md's parameter table is out of date"
    assert all("type" in sub for _, sub in found), [n for n, s in found if "type" not in s]
