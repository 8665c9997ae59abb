"""Hand a training stage to a Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1) and wait for it.

Scale-out is configuration: the TrainJob runs the same ``gr2 train <stage>`` line as a laptop, under
``torchrun`` from the ``torch-distributed`` ClusterTrainingRuntime (which sets the ``PET_*`` rendezvous
variables), on ``numNodes`` pods with ``resourcesPerNode`` from ``pipeline.trainjob``. Inputs and outputs
travel through a shared volume (``pipeline.trainjob.pvc_name`` mounted at ``workdir``).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gr2.config import GR2Config
from gr2.contract import IMAGE

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
STAGES = ("midtrain", "reasoning", "rl", "internalize")
CONTAINER = "node"  # the trainer container/job name in the torch-distributed runtime


class TrainJobError(RuntimeError):
    """The TrainJob could not be created, failed, or did not finish in time."""


def job_name(stage: str, run_id: str) -> str:
    """A DNS-1035 name for the TrainJob of ``stage`` in run ``run_id``.

    >>> job_name("midtrain", "Run_2026.11.30")
    'gr2-midtrain-run-2026-11-30'
    """
    return re.sub(r"[^a-z0-9-]+", "-", f"gr2-{stage}-{run_id}".lower()).strip("-")[:63].rstrip("-")


def trainjob_command(
    stage: str, run_dir: str, config_file: str, profile: str, procs_per_node: int
) -> list[str]:
    """``torchrun ... -m gr2.cli train <stage>``: the same command a laptop runs, per node."""
    return [
        "torchrun",
        f"--nproc_per_node={procs_per_node}",
        "-m",
        "gr2.cli",
        "train",
        stage,
        "--profile",
        profile,
        "--config",
        config_file,
        "--run-dir",
        run_dir,
    ]


def render_trainjob(cfg: GR2Config, stage: str, name: str, run_dir: str, config_file: str) -> dict[str, Any]:
    """The TrainJob object for ``stage`` (a dict ready for the Kubernetes API)."""
    if stage not in STAGES:
        raise ValueError(f"no TrainJob for stage {stage!r}; stages: {list(STAGES)}")
    tj = cfg.pipeline.trainjob
    requests: dict[str, Any] = {"cpu": tj.cpu_per_node, "memory": tj.memory_per_node}
    limits: dict[str, Any] = {"memory": tj.memory_per_node}
    if tj.gpus_per_node:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = tj.gpus_per_node
    env = [
        {"name": "HF_HUB_OFFLINE", "value": "1" if not cfg.train.model.base_model else "0"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": tj.namespace,
            "labels": {"app.kubernetes.io/part-of": "gr2", "gr2.stage": stage},
        },
        "spec": {
            "runtimeRef": {"name": tj.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": IMAGE,
                "command": trainjob_command(stage, run_dir, config_file, cfg.profile, tj.procs_per_node),
                "env": env,
                "numNodes": tj.num_nodes,
                "numProcPerNode": tj.procs_per_node,
                "resourcesPerNode": {"requests": requests, "limits": limits},
            },
            "runtimePatches": [
                {  # mount the shared volume in the runtime's trainer pods
                    "manager": "gr2.kubeflow.org/pipeline",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": CONTAINER,
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {
                                                        "volumes": [
                                                            {
                                                                "name": "gr2-workdir",
                                                                "persistentVolumeClaim": {
                                                                    "claimName": tj.pvc_name
                                                                },
                                                            }
                                                        ],
                                                        "containers": [
                                                            {
                                                                "name": CONTAINER,
                                                                "volumeMounts": [
                                                                    {
                                                                        "name": "gr2-workdir",
                                                                        "mountPath": tj.workdir,
                                                                    }
                                                                ],
                                                            }
                                                        ],
                                                    }
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def trainjob_schema(crd_file: str | Path) -> dict[str, Any]:
    """The openAPIV3Schema of the TrainJob CRD's ``v1alpha1`` version."""
    crd = yaml.safe_load(Path(crd_file).read_text())
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise TrainJobError(f"{crd_file}: no {VERSION} version in the CRD")


def pruned_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``obj`` that the API server would silently drop (not in the structural schema).

    >>> schema = {"properties": {"b": {"properties": {}}}}
    >>> pruned_fields({"metadata": {"name": "x"}, "a": 1, "b": {"c": 2}}, schema)
    ['.a', '.b.c']
    """
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        if props is None and isinstance(extra, dict):
            return [p for k, v in obj.items() for p in pruned_fields(v, extra, f"{path}.{k}")]
        props = props or {}
        return [
            p
            for k, v in obj.items()
            if not (path == "" and k == "metadata")  # ObjectMeta: never pruned
            for p in ([f"{path}.{k}"] if k not in props else pruned_fields(v, props[k], f"{path}.{k}"))
        ]
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(obj) for p in pruned_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def validate_trainjob(obj: dict[str, Any], crd_file: str | Path) -> None:
    """Raise ``jsonschema.ValidationError`` when ``obj`` does not fit the CRD schema or has pruned fields."""
    import jsonschema

    schema = trainjob_schema(crd_file)
    jsonschema.validate(obj, schema)
    dropped = pruned_fields(obj, schema)
    if dropped:
        raise jsonschema.ValidationError(
            f"fields not in the {KIND} schema (the API server would drop them): {dropped}"
        )


def job_state(obj: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once a condition of that type is ``True``, else None (still running).

    >>> job_state({"status": {"conditions": [{"type": "Created", "status": "True"}]}}) is None
    True
    >>> job_state({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "x"}]}})
    'Failed'
    """
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None


def submit_and_wait(
    obj: dict[str, Any], timeout_s: float, poll_s: float, api: Any = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Create the TrainJob with the Kubernetes API and poll until it completes; returns its last state."""
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.CustomObjectsApi()
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)
    echo(f"created TrainJob {namespace}/{name}")
    deadline = time.monotonic() + timeout_s
    while True:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state = job_state(current)
        if state == "Complete":
            return current
        if state == "Failed":
            reasons = [
                c.get("message", "") for c in current["status"]["conditions"] if c.get("type") == "Failed"
            ]
            raise TrainJobError(f"TrainJob {namespace}/{name} failed: {'; '.join(reasons)}")
        if time.monotonic() > deadline:
            raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f} s")
        time.sleep(poll_s)


def run_trainjob(cfg: GR2Config, stage: str, run: Path, api: Any = None, output: str = "") -> Path:
    """Copy the staged run to the shared volume, run ``stage`` there as a TrainJob, copy its outputs back.

    The stage writes ``train/<output>`` (default: ``train/<stage>``; ``rl_naive`` for the naive RL reward).
    """
    tj = cfg.pipeline.trainjob
    name = job_name(stage, f"{run.name}-{int(time.time())}")
    shared = Path(tj.workdir) / name
    shutil.copytree(run, shared / "run", symlinks=False)  # resolves the links to the input artefacts
    config_file = shared / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"run_dir", "profile"})))
    obj = render_trainjob(cfg, stage, name, str(shared / "run"), str(config_file))
    submit_and_wait(obj, tj.timeout_s, tj.poll_s, api=api)
    produced = shared / "run" / "train" / (output or stage)
    if not (produced / "metrics.json").exists():
        raise TrainJobError(f"TrainJob {name} completed but wrote no {produced / 'metrics.json'}")
    out = run / "train" / (output or stage)
    for item in produced.iterdir():
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    return out
