"""One function per pipeline step: artefact paths in, artefact paths written, a flat metrics dict back.

The training and evaluation stages take their input artefacts as explicit paths
(:class:`gr2.train.inputs.StageInputs`). The data, SID, feature and sample stages find their inputs by
run-directory convention (:class:`gr2.paths.RunPaths`); for those a step builds a component-local run
directory whose folders are links to the input artefacts and whose output folders are the output
artefacts, then calls the stage function as it is. Either way a component is a few lines and the DAG's
edges are the real data flow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gr2.config import GR2Config
from gr2.pipeline.config import STEP_NAMES, TRAINING_STEPS
from gr2.train.config import with_stage_fields

# Sections of the settings tree a step must not see: the ones of later steps. Leaving them out of the
# step's config keeps its cache key unchanged when only a later step's settings change.
_TRAIN_LATER = {
    "midtrain": {"traces", "reasoning", "rl", "internalize", "eval"},
    "traces": {"reasoning", "rl", "internalize", "eval"},
    "reasoning": {"rl", "internalize"},
    "rl": {"internalize"},
    "internalize": set(),
}
_DATA_STEPS = ("ingest", "validate")
# pipeline settings that shape the DAG or the run, not what a step computes (min_lift is a run parameter)
_ORCHESTRATION = {"min_lift", "caching", "host", "namespace", "experiment", "resources"}
_FEATURE_STEPS = ("split", "sid", "features", "samples", "baselines")  # the protocol (rerank) shapes the split


class StepError(RuntimeError):
    """A pipeline step that cannot run; the message names the missing or bad input."""


def step_config(cfg: GR2Config, step: str) -> str:
    """The part of ``cfg`` that ``step`` reads, as JSON (a component parameter, hence its cache key)."""
    if step not in STEP_NAMES:
        raise ValueError(f"unknown pipeline step {step!r}; steps are {list(STEP_NAMES)}")
    data = cfg.model_dump(mode="json", exclude={"run_dir": True, "pipeline": _ORCHESTRATION})
    if step in _DATA_STEPS:
        keep = {"profile", "seed", "data"}
    elif step in _FEATURE_STEPS:
        keep = {"profile", "seed", "data", "features", "sid", "rerank"}
    else:
        keep = set(data)
    data = {k: v for k, v in data.items() if k in keep}
    if step in _TRAIN_LATER:
        data["train"] = {k: v for k, v in data["train"].items() if k not in _TRAIN_LATER[step]}
        # training steps read only the TrainJob handoff settings of the pipeline section
        data["pipeline"] = {"trainjob": data["pipeline"]["trainjob"]} if step in TRAINING_STEPS else {}
    return json.dumps(data, sort_keys=True)


def load_step_config(config: str, run_dir: str | Path) -> GR2Config:
    """Rebuild the settings tree from a step's JSON (absent sections take their defaults)."""
    try:
        data = json.loads(config)
    except json.JSONDecodeError as err:
        raise StepError(f"step config is not JSON: {err}") from err
    return GR2Config.model_validate({**data, "run_dir": str(run_dir)})


def stage_run_dir(
    inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], root: str | Path | None = None
) -> Path:
    """A run directory whose ``RunPaths`` folders (keys, e.g. ``data/raw``) link to artefact paths (values).

    Inputs must exist; output folders are created. Writes to an output folder land in the artefact.
    """
    run = Path(root or tempfile.mkdtemp(prefix="gr2-step-"))
    for rel, target in {**inputs, **outputs}.items():
        target = Path(target)
        if rel in inputs and not target.exists():
            raise StepError(f"input artefact for {rel} not found: {target}")
        if rel in outputs:
            target.mkdir(parents=True, exist_ok=True)
        link = run / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            raise StepError(f"{link}: two artefacts staged at the same place")
        os.symlink(target.resolve(), link, target_is_directory=True)
    return run


def _flat(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b`` keys (what a KFP Metrics artefact shows).

    >>> _flat({"a": {"b": 1, "c": "x"}, "d": 0.5, "e": True})
    {'a.b': 1.0, 'd': 0.5}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _copy_text(src: Path, dst: str | Path) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# Step 0: ingest --------------------------------------------------------------------------------------------
def ingest(config: str, source_path: str, dataset_out: str) -> dict[str, float]:
    """Fetch ``data.dataset`` into ``dataset_out`` (``source_path`` may be a canonical dataset folder)."""
    from gr2.data.fetch import fetch
    from gr2.data.schema import Dataset

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-ingest-"))
    source = source_path or cfg.data.source_path
    if source and any((Path(source) / f"interactions.{ext}").exists() for ext in ("parquet", "csv")):
        data = Dataset.load(source)  # already in the canonical schema (`gr2 data import` output)
        data.save(dataset_out)
        return {
            "interactions": float(len(data.interactions)),
            "items": float(len(data.items)),
            "users": float(data.interactions["user_id"].nunique()),
        }
    r = fetch(cfg.data.dataset, dataset_out, source or None, cfg.data.max_users)
    return {"interactions": float(r.n_interactions), "items": float(r.n_items), "users": float(r.n_users)}


# Step 1: validate ------------------------------------------------------------------------------------------
def validate(config: str, dataset: str, report_out: str, results_out: str) -> tuple[bool, dict[str, float]]:
    """Great Expectations suites; writes the Markdown report and validation.json; (passed, metrics)."""
    from gr2.data.validate import validate_dataset

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-validate-"))
    report = validate_dataset(dataset, cfg.data, results_out)
    assert report.markdown_path is not None
    _copy_text(report.markdown_path, report_out)
    return report.success, {
        "expectations": float(len(report.outcomes)),
        "failed": float(len(report.failures)),
    }


# Step 2: split ---------------------------------------------------------------------------------------------
def split(config: str, dataset: str, split_out: str) -> dict[str, float]:
    from gr2.data.split import split_dataset

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-split-"))
    art = split_dataset(dataset, split_out, cfg.rerank, cfg.data.kcore)
    return _flat(json.loads(art.summary.read_text()))


# Step 3: semantic IDs --------------------------------------------------------------------------------------
def sid(config: str, dataset: str, split_dir: str, sid_out: str, report_out: str) -> dict[str, float]:
    from gr2.sid.train import train_sid

    run = stage_run_dir({"data/raw": dataset, "data/split": split_dir}, {"sid": sid_out})
    art = train_sid(load_step_config(config, run))
    report = Path(sid_out) / "report.md"
    if report.exists():
        _copy_text(report, report_out)
    else:
        Path(report_out).write_text(f"# Semantic IDs\n\n{json.dumps(art.metrics, indent=2, default=str)}\n")
    return _flat(art.metrics)


# Step 4: features (Feast apply + materialize) --------------------------------------------------------------
def features(config: str, dataset: str, split_dir: str, sid_dir: str, repo_out: str) -> dict[str, float]:
    from gr2.features.store import apply_and_materialize

    run = stage_run_dir(
        {"data/raw": dataset, "data/split": split_dir, "sid": sid_dir}, {"features/feature_repo": repo_out}
    )
    rows = apply_and_materialize(load_step_config(config, run))
    return {f"rows.{k}": float(v) for k, v in rows.items()}


# Step 5: samples -------------------------------------------------------------------------------------------
def samples(config: str, dataset: str, split_dir: str, samples_out: str) -> dict[str, float]:
    from gr2.rerank.samples import build_samples

    run = stage_run_dir({"data/raw": dataset, "data/split": split_dir}, {"samples": samples_out})
    art = build_samples(load_step_config(config, run))
    return _flat(json.loads(art.summary.read_text()).get("splits", {}))


# Step 6: baselines -----------------------------------------------------------------------------------------
def baselines(
    config: str, dataset: str, split_dir: str, samples_dir: str, eval_out: str, report_out: str
) -> dict[str, float]:
    from gr2.rerank.baselines import run_baselines

    run = stage_run_dir(
        {"data/raw": dataset, "data/split": split_dir, "samples": samples_dir}, {"eval": eval_out}
    )
    art = run_baselines(load_step_config(config, run))
    _copy_text(art.markdown, report_out)
    return _baseline_metrics(json.loads(art.json.read_text()))


def _baseline_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """R@1 of each baseline on each split/protocol (the rest stays in the JSON)."""
    out = {}
    for row in record.get("rows", []):
        if isinstance(row, Mapping) and isinstance(row.get("R@1"), int | float):
            key = ".".join(str(row[k]) for k in ("split", "protocol", "method") if k in row)
            out[f"{key}.R@1"] = float(row["R@1"])
    return out or _flat(record)


# Steps 7-11: training (in the component's pod, or as a Kubeflow TrainJob) ----------------------------------
def _inputs(dataset: str, split_dir: str, sid_dir: str, samples_dir: str) -> Any:
    from gr2.train.inputs import StageInputs

    return StageInputs(
        dataset=Path(dataset), sid_map=Path(sid_dir) / "sid_map.parquet", samples=Path(samples_dir),
        split=Path(split_dir),
    )


def midtrain(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    samples_dir: str,
    model_out: str,
    summary_out: str,
) -> dict[str, float]:
    from gr2.train.midtrain import run_midtrain

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-midtrain-"))
    if cfg.pipeline.trainjob.enabled:
        run = stage_run_dir(
            {"data/raw": dataset, "data/split": split_dir, "sid": sid_dir, "samples": samples_dir},
            {"train/midtrain": model_out},
            root=cfg.run_dir,
        )
        _handoff(cfg, "midtrain", run)
    else:
        run_midtrain(cfg, _inputs(dataset, split_dir, sid_dir, samples_dir), out_dir=model_out)
    _copy_text(Path(model_out) / "summary.md", summary_out)
    return _training_metrics(Path(model_out) / "metrics.json")


def traces(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    repo_dir: str,
    samples_dir: str,
    traces_out: str,
    summary_out: str,
) -> dict[str, float]:
    from gr2.train.traces import run_traces

    # the feature-grounded teacher reads Feast and the split from a run directory: stage one
    run = stage_run_dir({"data/raw": dataset, "data/split": split_dir}, {})
    shutil.copytree(
        repo_dir, run / "features" / "feature_repo", symlinks=True
    )  # Feast may touch its registry
    art = run_traces(
        load_step_config(config, run), _inputs(dataset, split_dir, sid_dir, samples_dir), out_dir=traces_out
    )
    _copy_text(art.summary, summary_out)
    return _training_metrics(art.metrics)


def reasoning(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    samples_dir: str,
    midtrain_dir: str,
    traces_dir: str,
    model_out: str,
    summary_out: str,
) -> dict[str, float]:
    from gr2.train.reasoning import run_reasoning

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-reasoning-"))
    if cfg.pipeline.trainjob.enabled:
        run = stage_run_dir(
            {
                "data/raw": dataset,
                "data/split": split_dir,
                "sid": sid_dir,
                "samples": samples_dir,
                "train/midtrain": midtrain_dir,
                "train/traces": traces_dir,
            },
            {"train/reasoning": model_out},
            root=cfg.run_dir,
        )
        _handoff(cfg, "reasoning", run)
    else:
        run_reasoning(
            cfg,
            _inputs(dataset, split_dir, sid_dir, samples_dir),
            midtrain_model=Path(midtrain_dir) / "model",
            traces_file=Path(traces_dir) / "traces.parquet",
            out_dir=model_out,
        )
    _copy_text(Path(model_out) / "summary.md", summary_out)
    return _training_metrics(Path(model_out) / "metrics.json")


def rl(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    samples_dir: str,
    init_model_dir: str,
    model_out: str,
    summary_out: str,
    reward: str = "conditional",
) -> dict[str, float]:
    """GRPO (DAPO loss) from the reasoning-SFT model; ``reward`` naive is the stage table's ablation row."""
    from gr2.train.rl import run_rl

    cfg = with_stage_fields(
        load_step_config(config, tempfile.mkdtemp(prefix="gr2-rl-")), "rl", reward=reward, init="reasoning"
    )
    output = "rl_naive" if reward == "naive" else "rl"
    if cfg.pipeline.trainjob.enabled:
        run = stage_run_dir(
            {
                "data/raw": dataset,
                "data/split": split_dir,
                "sid": sid_dir,
                "samples": samples_dir,
                "train/reasoning": init_model_dir,
            },
            {f"train/{output}": model_out},
            root=cfg.run_dir,
        )
        _handoff(cfg, "rl", run, output)
    else:
        run_rl(
            cfg,
            _inputs(dataset, split_dir, sid_dir, samples_dir),
            init_model=Path(init_model_dir) / "model",
            out_dir=model_out,
        )
    _copy_text(Path(model_out) / "summary.md", summary_out)
    return _training_metrics(Path(model_out) / "metrics.json")


def internalize(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    samples_dir: str,
    rl_dir: str,
    model_out: str,
    summary_out: str,
) -> dict[str, float]:
    """Answer-only GRPO from the RL model; its ``model`` folder is the serving checkpoint."""
    from gr2.train.internalize import run_internalize

    cfg = with_stage_fields(
        load_step_config(config, tempfile.mkdtemp(prefix="gr2-internalize-")), "internalize", init="rl"
    )
    if cfg.pipeline.trainjob.enabled:
        run = stage_run_dir(
            {
                "data/raw": dataset,
                "data/split": split_dir,
                "sid": sid_dir,
                "samples": samples_dir,
                "train/rl": rl_dir,
            },
            {"train/internalize": model_out},
            root=cfg.run_dir,
        )
        _handoff(cfg, "internalize", run)
    else:
        run_internalize(
            cfg,
            _inputs(dataset, split_dir, sid_dir, samples_dir),
            init_model=Path(rl_dir) / "model",
            out_dir=model_out,
        )
    _copy_text(Path(model_out) / "summary.md", summary_out)
    return _training_metrics(Path(model_out) / "metrics.json")


def _handoff(cfg: GR2Config, stage: str, run: Path, output: str = "") -> None:
    """Hand the stage to a Kubeflow ``TrainJob`` on the shared volume and wait; outputs land in ``run``."""
    from gr2.pipeline.trainjob import run_trainjob

    run_trainjob(cfg, stage, run, output=output)


def _training_metrics(path: Path) -> dict[str, float]:
    record = json.loads(Path(path).read_text())
    record = record.get("metrics", record)  # gr2 metrics files wrap the payload with config and provenance
    record = {k: v for k, v in record.items() if k not in ("config", "loss_curve", "provenance", "versions")}
    return _flat(record)


# Step 12: evaluate (stage table + promotion gate) ----------------------------------------------------------
def evaluate(
    config: str,
    dataset: str,
    split_dir: str,
    sid_dir: str,
    samples_dir: str,
    midtrain_dir: str,
    reasoning_dir: str,
    rl_naive_dir: str,
    rl_dir: str,
    internalize_dir: str,
    eval_out: str,
    table_out: str,
) -> dict[str, float]:
    """Stage table on ``train.eval.split`` (every trained stage); the serving (internalized) model's lift over
    the incoming order on validation."""
    from gr2.pipeline.gate import serving_lift
    from gr2.train.stages import run_stage_table

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-evaluate-"))
    inputs = _inputs(dataset, split_dir, sid_dir, samples_dir)
    stages = {
        "midtrain": midtrain_dir,
        "reasoning": reasoning_dir,
        "rl_naive": rl_naive_dir,
        "rl": rl_dir,
        "internalize": internalize_dir,
    }
    table = run_stage_table(
        cfg, inputs, models={k: Path(v) / "model" for k, v in stages.items()}, out_dir=eval_out
    )
    lift = serving_lift(cfg, inputs, Path(internalize_dir) / "model")
    (Path(eval_out) / "serving_lift.json").write_text(json.dumps(lift, indent=2) + "\n")
    _copy_text(table.markdown, table_out)
    metrics = {f"{r['stage']} / {r['method']}.R@1": float(r["R@1"]) for r in table.rows if "R@1" in r}
    metrics.update({f"serving.{k}": float(v) for k, v in lift.items() if isinstance(v, int | float)})
    return metrics


# Step 13: the promotion gate -------------------------------------------------------------------------------
def gate(eval_dir: str, min_lift: float, gate_out: str) -> str:
    """``promote`` when the serving model's validation lift reaches ``min_lift``, else ``hold``.

    Writes ``gate.json`` (the lift, ``min_lift`` and the decision) to ``gate_out``.
    """
    from gr2.pipeline.gate import decide

    decision = decide(json.loads((Path(eval_dir) / "serving_lift.json").read_text()), min_lift)
    Path(gate_out).mkdir(parents=True, exist_ok=True)
    (Path(gate_out) / "gate.json").write_text(json.dumps(decision, indent=2) + "\n")
    return decision["decision"]


# Step 14: export for serving -------------------------------------------------------------------------------
def export(config: str, dataset: str, sid_dir: str, internalize_dir: str, bundle_out: str) -> dict[str, Any]:
    """The serving bundle (:func:`gr2.models.bundle.write_serving_bundle`) of the internalized model."""
    from gr2.data.schema import Dataset
    from gr2.models.bundle import write_serving_bundle
    from gr2.train.internalize import serving_manifest

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-export-"))
    model_dir = Path(internalize_dir) / "model"
    if not (model_dir / "model.safetensors").exists():
        raise StepError(f"{model_dir}: no model.safetensors; the internalize step did not finish")
    manifest = serving_manifest(cfg, Path(internalize_dir))
    write_serving_bundle(
        model_dir, Path(sid_dir) / "sid_map.parquet", Dataset.load(dataset).items, bundle_out, manifest
    )
    return {"model_version": manifest.model_version, "model_name": manifest.model_name}


# Step 15: register / promote -------------------------------------------------------------------------------
def promote(config: str, bundle_dir: str, gate_dir: str, record_out: str) -> dict[str, Any]:
    """Register the bundle: copy it to ``pipeline.registry_dir/<model>/<version>``, point ``latest``
    at it."""
    from gr2.models.bundle import read_manifest

    cfg = load_step_config(config, tempfile.mkdtemp(prefix="gr2-promote-"))
    manifest = read_manifest(bundle_dir)
    gate = json.loads((Path(gate_dir) / "gate.json").read_text())
    where = "not copied (pipeline.registry_dir is empty)"
    if cfg.pipeline.registry_dir:
        target = Path(cfg.pipeline.registry_dir) / manifest.model_name / manifest.model_version
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(bundle_dir, target)
        (target.parent / "latest").write_text(manifest.model_version + "\n")
        where = f"`{target}`"
    Path(record_out).write_text(
        f"# Promoted {manifest.model_name} {manifest.model_version}\n\n"
        f"R@1 lift over the incoming order on validation: {gate['lift']:+.4f} "
        f"(95% CI [{gate['lift_lo']:+.4f}, {gate['lift_hi']:+.4f}], {gate['samples']} samples) "
        f">= min_lift {gate['min_lift']:+.4f}.\n\nBundle {where}.\n"
    )
    return {"model_version": manifest.model_version, "registry": where}


def hold(gate_dir: str, record_out: str) -> str:
    """Record why the model was not promoted."""
    gate = json.loads((Path(gate_dir) / "gate.json").read_text())
    text = (
        f"# Not promoted\n\nR@1 lift over the incoming order on validation: {gate['lift']:+.4f} "
        f"(95% CI [{gate['lift_lo']:+.4f}, {gate['lift_hi']:+.4f}], {gate['samples']} samples) is below "
        f"pipeline.min_lift {gate['min_lift']:+.4f}; the serving model stays as it is.\n"
    )
    Path(record_out).write_text(text)
    return text


def reject_data(report: str) -> None:
    """Stop the run after a failed validation, naming the failed expectations."""
    text = Path(report).read_text()
    failed = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| table")]
    raise StepError(
        "data validation failed; the pipeline stops here. Failed expectations:\n" + "\n".join(failed)
    )


def log_metrics(artifact: Any, values: Mapping[str, float]) -> None:
    """Log ``values`` on a KFP ``Metrics`` artefact, with plain names (letters, digits, ``._@-``).

    >>> class M:
    ...     logged, path = {}, None
    ...     def log_metric(self, k, v): self.logged[k] = v
    >>> m = M(); log_metrics(m, {"incoming order / as given.R@1": 0.25}); m.logged
    {'incoming_order_as_given.R@1': 0.25}
    """
    import re

    clean = {
        re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.@-]", "_", k)).strip("_"): float(v)
        for k, v in values.items()
    }
    for name, value in clean.items():
        artifact.log_metric(name, value)
    path = getattr(artifact, "path", None)
    if path:  # the values as a file too: kfp.local's cache treats an artefact without a file as missing
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
