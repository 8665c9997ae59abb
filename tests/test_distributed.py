"""Distributed training on existing engines: mid-training under ``torchrun`` with 2 CPU processes (gloo),
and the Kubeflow Trainer ``TrainJob`` a training step hands off to on a cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from gr2.config import GR2Config, load_config
from gr2.contract import IMAGE
from gr2.paths import RunPaths
from gr2.pipeline.trainjob import job_name, job_state, render_trainjob, validate_trainjob

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT.parent / "shared" / "k8s-crds" / "trainer.kubeflow.org_trainjobs.yaml"


@pytest.mark.slow
def test_midtrain_under_torchrun_ddp_two_cpu_ranks_see_different_data(
    prepared_run: GR2Config, tmp_path: Path
) -> None:
    from test_train import _sid_map

    run = tmp_path / "run"
    shutil.copytree(RunPaths.of(prepared_run.run_dir).root / "data", run / "data")
    items = pd.read_parquet(RunPaths.of(run).raw / "items.parquet")
    _sid_map(items["item_id"].to_numpy()).save(RunPaths.of(run).sid / "sid_map.parquet")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "ddp_midtrain.py"),
        str(run),
        "train.midtrain.optim.max_steps=6",
        "train.midtrain.num_examples=96",
        "train.midtrain.eval_users=4",
        "train.midtrain.eval_titles=4",
        "train.threads=1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = [json.loads((run / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world_size"] for s in seen] == [2, 2] and {s["backend"] for s in seen} == {"gloo"}
    a, b = seen[0]["rows"], seen[1]["rows"]
    assert len(a) == len(b) == 6 * 8  # max_steps x per-device batch on each rank
    assert seen[0]["dataset"] == seen[1]["dataset"] and len(seen[0]["dataset"]) == 96
    # 6 steps x 8 x 2 ranks = one epoch of 96 examples: the ranks split it, each example trained on once
    assert Counter(a) + Counter(b) == Counter(seen[0]["dataset"])
    metrics = json.loads((run / "train" / "midtrain" / "metrics.json").read_text())["metrics"]
    assert metrics["steps"] == 6
    assert (run / "train" / "midtrain" / "model" / "model.safetensors").exists()


def _cfg(*overrides: str) -> GR2Config:
    return load_config("default", overrides=["pipeline.trainjob.enabled=true", *overrides])


def test_trainjob_is_rendered_from_config() -> None:
    cfg = _cfg(
        "pipeline.trainjob.num_nodes=4",
        "pipeline.trainjob.gpus_per_node=8",
        "pipeline.trainjob.procs_per_node=8",
        "pipeline.trainjob.namespace=team-a",
    )
    name = job_name("midtrain", "run-1")
    obj = render_trainjob(cfg, "midtrain", name, "/mnt/gr2/x/run", "/mnt/gr2/x/config.yaml")
    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] == "TrainJob"
    assert obj["metadata"] == {
        "name": "gr2-midtrain-run-1",
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/part-of": "gr2", "gr2.stage": "midtrain"},
    }
    spec = obj["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = spec["trainer"]
    assert trainer["image"] == IMAGE and trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer["command"] == [
        "torchrun",
        "--nproc_per_node=8",
        "-m",
        "gr2.cli",
        "train",
        "midtrain",
        "--profile",
        "default",
        "--config",
        "/mnt/gr2/x/config.yaml",
        "--run-dir",
        "/mnt/gr2/x/run",
    ]
    patch = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert patch["name"] == "node"
    mounts = patch["template"]["spec"]["template"]["spec"]
    assert mounts["volumes"][0]["persistentVolumeClaim"]["claimName"] == "gr2-workdir"
    assert mounts["containers"][0]["volumeMounts"][0]["mountPath"] == "/mnt/gr2"
    cpu_only = render_trainjob(_cfg(), "reasoning", "gr2-reasoning-x", "/r", "/c")["spec"]["trainer"]
    assert "nvidia.com/gpu" not in cpu_only["resourcesPerNode"]["requests"]
    for stage in ("rl", "internalize"):  # the GRPO stages run the same way
        command = render_trainjob(cfg, stage, f"gr2-{stage}-x", "/r", "/c")["spec"]["trainer"]["command"]
        assert command[4:6] == ["train", stage]
    with pytest.raises(ValueError, match="no TrainJob for stage"):
        render_trainjob(cfg, "traces", "x", "/r", "/c")


def test_trainjob_command_is_the_local_command() -> None:
    """What the TrainJob runs is the `gr2 train <stage>` CLI, which `python -m gr2.cli` reaches."""
    out = subprocess.run(
        [sys.executable, "-m", "gr2.cli", "train", "midtrain", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0 and "Mid-train" in out.stdout


@pytest.mark.skipif(not CRD.exists(), reason=f"{CRD} is not present (Kubeflow Trainer CRDs not vendored)")
def test_rendered_trainjob_validates_against_the_crd_schema() -> None:
    import jsonschema

    obj = render_trainjob(
        _cfg("pipeline.trainjob.num_nodes=2", "pipeline.trainjob.gpus_per_node=1"),
        "midtrain",
        "gr2-midtrain-x",
        "/mnt/gr2/x/run",
        "/mnt/gr2/x/config.yaml",
    )
    validate_trainjob(obj, CRD)
    bad_type = json.loads(json.dumps(obj))
    bad_type["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="two"):
        validate_trainjob(bad_type, CRD)
    unknown = json.loads(json.dumps(obj))
    unknown["spec"]["podSpecOverrides"] = []  # a field of older Trainer releases: this CRD would drop it
    with pytest.raises(jsonschema.ValidationError, match="podSpecOverrides"):
        validate_trainjob(unknown, CRD)


def test_job_state_reads_conditions() -> None:
    running = {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_state(running) is None and job_state(done) == "Complete" and job_state({}) is None


@pytest.mark.skipif(not CRD.exists(), reason=f"{CRD} is not present (Kubeflow Trainer CRDs not vendored)")
@pytest.mark.parametrize("outcome", ["Complete", "Failed", "timeout"])
def test_trainjob_is_created_with_the_kubernetes_client_and_awaited(outcome: str) -> None:
    from k8s_api_server import K8sApiServer
    from kubernetes import client

    from gr2.pipeline.trainjob import TrainJobError, submit_and_wait

    obj = render_trainjob(
        _cfg("pipeline.trainjob.num_nodes=2"), "reasoning", "gr2-reasoning-t", "/w/run", "/w/c.yaml"
    )
    with K8sApiServer(CRD) as srv:
        if outcome == "Failed":
            srv.state.fail_stages.add("reasoning")
        api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=srv.url)))
        timeout = 0.0 if outcome == "timeout" else 30.0
        if outcome == "Complete":
            final = submit_and_wait(obj, timeout_s=timeout, poll_s=0.01, api=api, echo=lambda _: None)
            assert [c["type"] for c in final["status"]["conditions"]] == ["Created", "Running", "Complete"]
        else:
            match = "exit code 1" if outcome == "Failed" else "did not finish"
            with pytest.raises(TrainJobError, match=match):
                submit_and_wait(obj, timeout_s=timeout, poll_s=0.01, api=api, echo=lambda _: None)
        stored = srv.state.objects[("kubeflow", "gr2-reasoning-t")]
        assert stored["spec"] == obj["spec"]  # accepted by the schema checks, unchanged
        assert srv.state.requests[0] == (
            "POST",
            "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow/trainjobs",
        )


@pytest.mark.slow
@pytest.mark.skipif(not CRD.exists(), reason=f"{CRD} is not present (Kubeflow Trainer CRDs not vendored)")
def test_midtrain_step_hands_off_to_a_trainjob_that_runs_its_command(
    prepared_run: GR2Config, tmp_path: Path
) -> None:
    """The handoff end to end: stage on the shared volume, create the TrainJob, the job's own command trains
    (run here by the test server on one node), outputs come back into the step's output folder."""
    from k8s_api_server import K8sApiServer
    from kubernetes import client
    from test_train import _sid_map

    from gr2.pipeline.steps import stage_run_dir
    from gr2.pipeline.trainjob import run_trainjob

    raw = RunPaths.of(prepared_run.run_dir).raw
    sid = tmp_path / "sid"
    _sid_map(pd.read_parquet(raw / "items.parquet")["item_id"].to_numpy()).save(sid / "sid_map.parquet")
    out = tmp_path / "artefacts" / "model"
    run = stage_run_dir(
        {"data/raw": raw, "data/split": RunPaths.of(prepared_run.run_dir).split, "sid": sid},
        {"train/midtrain": out},
        root=tmp_path / "step",
    )
    cfg = load_config(
        "smoke",
        overrides=[
            "pipeline.trainjob.enabled=true",
            f"pipeline.trainjob.workdir={tmp_path / 'pvc'}",
            "pipeline.trainjob.poll_s=0.01",
            "train.midtrain.optim.max_steps=2",
            "train.midtrain.num_examples=16",
            "train.midtrain.eval_users=2",
            "train.midtrain.eval_titles=2",
            "train.threads=1",
        ],
    )
    with K8sApiServer(CRD) as srv:
        srv.state.execute = True
        srv.state.env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=srv.url)))
        run_trainjob(cfg, "midtrain", run, api=api)
        (job,) = srv.state.objects.values()
    assert job["status"]["conditions"][-1]["type"] == "Complete", srv.state.logs
    assert job["spec"]["trainer"]["command"][:6] == [
        "torchrun",
        "--nproc_per_node=1",
        "-m",
        "gr2.cli",
        "train",
        "midtrain",
    ]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]  # copied back into the artefact
    assert metrics["steps"] == 2 and (out / "model" / "model.safetensors").exists()
    shared = tmp_path / "pvc" / job["metadata"]["name"]
    assert (shared / "run" / "data" / "raw" / "interactions.parquet").is_file()  # inputs copied, not linked
