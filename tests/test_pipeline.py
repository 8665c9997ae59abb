"""The Kubeflow pipeline: compiled IR, drift, config slices, and local runs with kfp.local (smoke profile).

The local runs share one run directory and go in this order: a run that fails at reasoning SFT (a teacher
endpoint that refuses every connection, so no trace is accepted), the fixed rerun (continues from the
cache), an unchanged rerun (everything cached), and a run on bad data (stops at validation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from gr2.cli import main
from gr2.cli.pipeline import COMPILED, HELM_COPY
from gr2.config import GR2Config, load_config
from gr2.contract import IMAGE, PIPELINE_NAME
from gr2.pipeline.steps import step_config

ROOT = Path(__file__).resolve().parents[1]
STAGE_COMPONENTS = {
    "ingest-data",
    "validate-data",
    "reject-data",
    "split-data",
    "sid-tokenizer",
    "feature-store",
    "build-samples",
    "baselines",
    "midtrain",
    "traces",
    "reasoning-sft",
    "rl",
    "rl-2",  # the same component with the naive reward (display name rl-naive)
    "internalize",
    "evaluate",
    "promotion-gate",
    "export-bundle",
    "promote-model",
    "hold-model",
    "run-report",
}
EARLY = [
    "ingest-data",
    "validate-data",
    "split-data",
    "sid-tokenizer",
    "feature-store",
    "build-samples",
    "baselines",
    "midtrain",
]
# smaller than the smoke profile where only the amount of work changes (the suite runs the pipeline 3 times)
SMALL = [
    "sid.epochs=3",
    "rerank.sasrec_epochs=1",
    "train.midtrain.eval_users=8",
    "train.midtrain.eval_titles=8",
    "train.traces.max_samples=30",
    "train.reasoning.eval_samples=8",
    "train.reasoning.eval_generate=1",
    "train.rl.eval_generate=1",
    "train.internalize.eval_generate=1",
    "train.eval.max_samples=16",
    "train.eval.max_generate=2",
    "pipeline.gate_samples=24",
]
BROKEN_TEACHER = [
    "train.traces.teacher=openai",
    "train.traces.openai.base_url=http://127.0.0.1:9/v1",
    "train.traces.openai.max_retries=0",
    "train.traces.openai.timeout_s=2",
    "train.traces.openai.requests_per_second=1000",
]


def _executors(spec: dict) -> set[str]:
    return {name for name, comp in spec["components"].items() if "executorLabel" in comp}


def test_compiled_yaml_loads_back_with_one_component_per_stage() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(ROOT / COMPILED))
    assert loaded.name == PIPELINE_NAME
    assert set(loaded.component_spec.inputs) == {"source_path", "min_lift"}
    spec = yaml.safe_load((ROOT / COMPILED).read_text())
    assert {n.removeprefix("comp-") for n in _executors(spec)} == STAGE_COMPONENTS
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor["container"]
        assert container["image"] == IMAGE
        assert "pip install" not in " ".join(
            container["command"]
        )  # install_kfp_package=False: the image has it


@pytest.mark.parametrize("path", [COMPILED, HELM_COPY])
def test_committed_yaml_matches_the_code(tmp_path: Path, path: Path) -> None:
    from pipelines.submit import compile_pipeline

    fresh = compile_pipeline(load_config("default"), tmp_path / "fresh.yaml").read_text()
    assert (ROOT / path).read_text() == fresh, f"{path} drifted from the code: run `gr2 pipeline compile`"


def test_resources_and_accelerators_come_from_config(tmp_path: Path) -> None:
    from pipelines.submit import compile_pipeline

    cfg = load_config(
        "default",
        overrides=[
            "pipeline.resources.midtrain.accelerator_type=nvidia.com/gpu",
            "pipeline.resources.midtrain.accelerator_count=2",
            "pipeline.resources.midtrain.memory_limit=32Gi",
        ],
    )
    spec = yaml.safe_load(compile_pipeline(cfg, tmp_path / "p.yaml").read_text())
    res = spec["deploymentSpec"]["executors"]["exec-midtrain"]["container"]["resources"]
    assert (
        res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "2"
    )
    assert res["resourceMemoryLimit"] == "32Gi"
    validate = spec["deploymentSpec"]["executors"]["exec-validate-data"]["container"]["resources"]
    assert "accelerator" not in validate and validate["resourceCpuRequest"] == "500m"


def test_unknown_resource_step_is_named() -> None:
    from gr2.config import ConfigError

    with pytest.raises(ConfigError, match="unknown step"):
        load_config("smoke", overrides=["pipeline.resources.nope.cpu_request=1"])


def test_step_config_holds_only_what_the_step_reads() -> None:
    cfg = load_config("smoke")
    changed = load_config("smoke", overrides=["train.traces.max_tries=9"])
    mid = json.loads(step_config(cfg, "midtrain"))
    assert "traces" not in mid["train"] and set(mid["pipeline"]) == {"trainjob"} and "run_dir" not in mid
    assert step_config(cfg, "midtrain") == step_config(changed, "midtrain")  # so its cache key stays
    assert step_config(cfg, "traces") != step_config(changed, "traces")
    assert set(json.loads(step_config(cfg, "validate"))) == {"profile", "seed", "data"}
    handoff = load_config("smoke", overrides=["pipeline.trainjob.enabled=true", "pipeline.min_lift=0.5"])
    assert json.loads(step_config(handoff, "midtrain"))["pipeline"] == {
        "trainjob": handoff.pipeline.trainjob.model_dump()
    }
    assert json.loads(step_config(handoff, "traces"))["pipeline"] == {}
    assert (
        "min_lift" not in json.loads(step_config(handoff, "evaluate"))["pipeline"]
    )  # a run parameter instead
    rl = json.loads(step_config(cfg, "rl"))
    assert "internalize" not in rl["train"] and {"reasoning", "rl"} <= set(rl["train"])
    assert "rl" not in json.loads(step_config(cfg, "reasoning"))["train"]
    assert json.loads(step_config(handoff, "internalize"))["pipeline"] == {
        "trainjob": handoff.pipeline.trainjob.model_dump()
    }
    with pytest.raises(ValueError, match="unknown pipeline step"):
        step_config(cfg, "opd")


@pytest.mark.parametrize(
    ("step", "reward", "staged", "output"),
    [
        ("rl", "conditional", "reasoning", "rl"),
        ("rl", "naive", "reasoning", "rl_naive"),
        ("internalize", None, "rl", "internalize"),
    ],
)
def test_rl_steps_hand_off_from_the_previous_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, reward: str | None, staged: str, output: str
) -> None:
    """With the TrainJob handoff on, RL starts from the staged reasoning model (internalization from the
    conditional RL model) and the naive reward writes ``train/rl_naive``."""
    from gr2.pipeline import steps

    seen: dict = {}

    def handoff(cfg: GR2Config, stage: str, run: Path, output: str = "") -> None:
        seen.update(cfg=cfg, stage=stage, run=run, output=output)
        out = run / "train" / (output or stage)
        (out / "summary.md").write_text("# done\n")
        (out / "metrics.json").write_text(json.dumps({"metrics": {"steps": 2}}))

    monkeypatch.setattr(steps, "_handoff", handoff)
    for name in ("dataset", "split", "sid", "samples", "prev"):
        (tmp_path / name).mkdir()
    cfg = load_config("smoke", overrides=["pipeline.trainjob.enabled=true"])
    args = [step_config(cfg, step), *(str(tmp_path / n) for n in ("dataset", "split", "sid", "samples", "prev"))]
    args += [str(tmp_path / "out" / "model"), str(tmp_path / "out" / "summary.md")]
    metrics = steps.rl(*args, reward=reward) if step == "rl" else steps.internalize(*args)
    assert metrics == {"steps": 2.0} and (tmp_path / "out" / "summary.md").read_text() == "# done\n"
    assert seen["stage"] == step and (seen["output"] or step) == output
    assert (seen["run"] / "train" / staged).resolve() == (tmp_path / "prev").resolve()
    section = getattr(seen["cfg"].train, step)
    assert section.init == staged and (reward is None or section.reward == reward)


# ---- local runs (kfp.local SubprocessRunner) ----------------------------------------------------------
def _run(run_dir: Path, source: Path, overrides: list[str]):
    from pipelines.local import run_local

    cfg = load_config("smoke", overrides=[*SMALL, *overrides])
    return run_local(cfg, run_dir, source_path=str(source), echo=lambda _: None)


def _by_task(result) -> dict:
    return {s.task: s for s in result.steps}


@pytest.fixture(scope="module")
def local_runs(prepared_run: GR2Config, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four runs on one run directory: broken teacher, fixed, unchanged, min_lift 1 (each one kept)."""
    import contextlib
    import io
    import shutil

    run_dir = tmp_path_factory.mktemp("pipeline_run")
    source = Path(prepared_run.run_dir) / "data" / "raw"
    out: dict = {}
    for name, overrides in (
        ("broken", BROKEN_TEACHER),
        ("fixed", []),
        ("again", []),
        ("strict", ["pipeline.min_lift=1.0"]),
    ):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            out[name] = _run(run_dir, source, overrides)
        out[f"{name}_log"] = buf.getvalue()
        # the run directory as this run left it (hard links; the artefact store itself is shared)
        out[f"{name}_dir"] = run_dir.parent / f"after_{name}"
        shutil.copytree(
            run_dir,
            out[f"{name}_dir"],
            ignore=shutil.ignore_patterns(".kfp"),
            symlinks=True,
            copy_function=os.link,
        )
    return out


@pytest.mark.slow
def test_failing_component_fails_the_run_with_its_error_visible(local_runs: dict) -> None:
    broken = local_runs["broken"]
    assert not broken.succeeded
    assert "reasoning-sft" in broken.error
    tasks = _by_task(broken)
    assert tasks["reasoning-sft"].status == "FAILURE" and tasks["traces"].status == "SUCCESS"
    assert "no accepted trace to train on" in local_runs["broken_log"]  # the component's own error


@pytest.mark.slow
def test_rerun_after_fixing_continues_from_the_cache(local_runs: dict) -> None:
    fixed = local_runs["fixed"]
    assert fixed.succeeded, fixed.error
    tasks = _by_task(fixed)
    assert all(tasks[t].cached for t in EARLY), {t: tasks[t].cached for t in EARLY}
    assert not tasks["traces"].cached and not tasks["reasoning-sft"].cached  # the teacher changed
    run_dir = local_runs["fixed_dir"]
    for task in (
        *EARLY,
        "traces",
        "reasoning-sft",
        "rl",
        "rl-2",
        "internalize",
        "evaluate",
        "promotion-gate",
        "export-bundle",
        "run-report",
    ):
        assert (run_dir / task).is_dir(), task
    assert (run_dir / "reasoning-sft" / "model" / "model" / "config.json").exists()
    trained = {
        t: json.loads((run_dir / t / "model" / "metrics.json").read_text())["metrics"]
        for t in ("rl", "rl-2", "internalize")
    }
    assert [trained[t]["reward"] for t in ("rl", "rl-2")] == ["conditional", "naive"]
    # <task>/<output>/model in the artefact store: both RL runs start from reasoning SFT, internalization from RL
    assert [Path(trained[t]["init_model"]).parts[-3] for t in trained] == ["reasoning-sft"] * 2 + ["rl"]
    assert trained["internalize"]["style"] == "answer"
    manifest = json.loads((run_dir / "export-bundle" / "bundle" / "gr2_serving.json").read_text())
    assert manifest["extra"]["stage"] == "internalize"  # the serving bundle is the internalized model
    stages = json.loads((run_dir / "evaluate" / "evaluation" / "train_stages.json").read_text())
    rows = stages.get("metrics", stages)["rows"]
    assert {"midtrain", "reasoning", "rl_naive", "rl", "internalize"} <= {r["stage"] for r in rows}
    assert [r["stage"] for r in rows if r.get("serving")] == ["internalize"]
    decision = "promote-model" if "promote-model" in tasks else "hold-model"
    assert (run_dir / decision / "decision").read_text().startswith(("# Promoted", "# Not promoted"))
    report = (run_dir / "report.md").read_text()
    assert "## Stage table" in report and "data:image/png;base64," in report
    gate = json.loads((run_dir / "promotion-gate" / "gate" / "gate.json").read_text())
    assert f"lift {gate['lift']:+.4f}" in report
    assert ("promoted" in report) and gate["decision"] in ("promote", "hold")
    metrics = json.loads((run_dir / "evaluate" / "metrics.metadata.json").read_text())
    assert "serving.lift" in metrics
    record = json.loads((run_dir / "pipeline_run.json").read_text())
    assert record["succeeded"] and len(record["steps"]) == len(tasks)


@pytest.mark.slow
def test_unchanged_rerun_reuses_every_cached_step(local_runs: dict) -> None:
    again = local_runs["again"]
    assert again.succeeded, again.error
    executed = [s.task for s in again.steps if not s.cached]
    assert set(executed) <= {"promote-model", "hold-model"}, (
        executed
    )  # promotion has side effects: never cached
    assert (local_runs["again_dir"] / "report.md").exists()


@pytest.mark.slow
def test_model_below_min_lift_is_held_and_the_report_says_why(local_runs: dict) -> None:
    strict = local_runs["strict"]
    assert strict.succeeded, strict.error
    executed = {s.task for s in strict.steps if not s.cached}
    assert executed == {"promotion-gate", "hold-model", "run-report"}, executed  # min_lift is a run parameter
    run_dir = local_runs["strict_dir"]
    assert not (run_dir / "promote-model").exists()  # a decision of an earlier run is not shown as this one's
    assert (run_dir / "hold-model" / "decision").read_text().startswith("# Not promoted")
    assert "**Serving model not promoted" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_bad_input_stops_at_validation_with_the_failed_expectations(
    prepared_run: GR2Config, tmp_path: Path
) -> None:
    raw = Path(prepared_run.run_dir) / "data" / "raw"
    bad = tmp_path / "bad"
    bad.mkdir()
    inter = pd.read_parquet(raw / "interactions.parquet")
    inter.loc[inter.index[:5], "rating"] = 9.0
    inter.loc[inter.index[5], "item_id"] = 10_000_000
    inter.to_parquet(bad / "interactions.parquet", index=False)
    pd.read_parquet(raw / "items.parquet").to_parquet(bad / "items.parquet", index=False)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["pipeline", "run", "--local", "--profile", "smoke", "--run-dir", str(run_dir), "--source", str(bad)],
    )
    assert result.exit_code == 1
    assert "reject-data" in result.output
    report = (run_dir / "report.md").read_text()
    assert "FAILED" in report and "rating" in report and "item_id" in report
    tasks = json.loads((run_dir / "pipeline_run.json").read_text())["steps"]
    assert [t["task"] for t in tasks] == ["ingest-data", "validate-data", "reject-data"]


SHARED_CRDS = ROOT.parent / "shared" / "k8s-crds"


@pytest.mark.skipif(
    not (SHARED_CRDS / "pipelines.kubeflow.org_pipelineversions.yaml").exists(),
    reason="../shared/k8s-crds has no KFP Pipeline/PipelineVersion CRDs",
)
def test_pipeline_custom_resources_validate_against_the_crds(tmp_path: Path) -> None:
    import jsonschema

    from gr2.pipeline.trainjob import pruned_fields

    out = tmp_path / "resources.yaml"
    result = CliRunner().invoke(
        main,
        [
            "pipeline",
            "compile",
            "--profile",
            "default",
            "--out",
            str(tmp_path / "p.yaml"),
            "--no-helm",
            "--resources",
            str(out),
            "--namespace",
            "team-a",
        ],
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["Pipeline", "PipelineVersion"]
    assert docs[1]["spec"]["pipelineName"] == docs[0]["metadata"]["name"] == PIPELINE_NAME
    assert docs[1]["spec"]["pipelineSpec"] == yaml.safe_load((tmp_path / "p.yaml").read_text())
    for doc, crd in zip(docs, ("pipelines", "pipelineversions"), strict=True):
        spec = yaml.safe_load((SHARED_CRDS / f"pipelines.kubeflow.org_{crd}.yaml").read_text())
        schema = next(v for v in spec["spec"]["versions"] if v["name"] == "v2beta1")["schema"][
            "openAPIV3Schema"
        ]
        jsonschema.validate(doc, schema)
        assert pruned_fields(doc, schema) == []


def test_pipeline_doctests() -> None:
    import doctest

    import gr2.pipeline.resources
    import gr2.pipeline.steps
    import gr2.pipeline.trainjob

    for module in (gr2.pipeline.steps, gr2.pipeline.trainjob, gr2.pipeline.resources):
        assert doctest.testmod(module).failed == 0, module.__name__


COMPONENT_DIRS = sorted(p.parent for p in (ROOT / "components").glob("*/component.py"))


@pytest.mark.parametrize("folder", COMPONENT_DIRS, ids=lambda p: p.name)
def test_each_component_is_a_thin_typed_adapter(folder: Path) -> None:
    import ast
    import importlib
    import inspect

    component = getattr(importlib.import_module(f"components.{folder.name}"), folder.name)
    container = component.component_spec.implementation.container
    assert container.image == IMAGE
    source = inspect.getsource(component.python_func)
    body = ast.parse(source).body[0].body[1:]  # after the docstring
    assert "from gr2." in source and len(body) <= 5, "a component only imports and calls a gr2 function"
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["name"] == folder.name and meta["stability"] and meta["lastVerified"]
    assert meta["wraps"].startswith("gr2.")


def test_stage_run_dir_links_artefacts_and_names_a_missing_one(tmp_path: Path) -> None:
    from gr2.pipeline.steps import StepError, stage_run_dir

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "interactions.parquet").write_text("x")
    run = stage_run_dir(
        {"data/raw": tmp_path / "raw"}, {"sid": tmp_path / "out" / "sid"}, root=tmp_path / "run"
    )
    assert (run / "data" / "raw" / "interactions.parquet").read_text() == "x"
    (run / "sid" / "sid_map.parquet").write_text("y")  # a write to the output folder lands in the artefact
    assert (tmp_path / "out" / "sid" / "sid_map.parquet").read_text() == "y"
    with pytest.raises(StepError, match=r"input artefact for samples not found: .*nope"):
        stage_run_dir({"samples": tmp_path / "nope"}, {}, root=tmp_path / "run2")
