"""The GR2 main job as a Kubeflow pipeline, in the order of the report's method.

Every step is a component from ``components/``; its settings are the part of the gr2 config it reads
(a constant input, so it is also the cache key) and its pod resources come from ``pipeline.resources``.
Two gates: the run stops after validation when the data fails, and the serving model is promoted only
when it beats the incoming order on validation by ``min_lift``. Training runs mid-training -> traces ->
reasoning SFT -> RL (GRPO with the DAPO loss; the naive-reward ablation beside it) -> internalization, whose
model is the one exported and gated. Not yet here (no gr2 stage for them): on-policy distillation, the
compressor.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from components.baselines import baselines
from components.build_samples import build_samples
from components.evaluate import evaluate
from components.export_bundle import export_bundle
from components.feature_store import feature_store
from components.hold_model import hold_model
from components.ingest_data import ingest_data
from components.internalize import internalize
from components.midtrain import midtrain
from components.promote_model import promote_model
from components.promotion_gate import promotion_gate
from components.reasoning_sft import reasoning_sft
from components.reject_data import reject_data
from components.rl import rl
from components.run_report import run_report
from components.sid_tokenizer import sid_tokenizer
from components.split_data import split_data
from components.traces import traces
from components.validate_data import validate_data
from gr2.config import GR2Config, load_config
from gr2.contract import PIPELINE_NAME
from gr2.pipeline.steps import step_config

UNCACHED = frozenset({"promote"})  # side effects outside the artefact store


def _configure(task: dsl.PipelineTask, cfg: GR2Config, step: str, name: str = "") -> dsl.PipelineTask:
    """Kubernetes concerns of a step, applied after it: resources, accelerators, caching, display name
    (``name``, default the step's)."""
    res = cfg.pipeline.step_resources(step)
    task.set_display_name(name or step)
    task.set_cpu_request(res.cpu_request).set_memory_request(res.memory_request)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    if res.memory_limit:
        task.set_memory_limit(res.memory_limit)
    if res.accelerator_type and res.accelerator_count:
        task.set_accelerator_type(res.accelerator_type).set_accelerator_limit(res.accelerator_count)
    task.set_caching_options(cfg.pipeline.caching and step not in UNCACHED)
    return task


def build_pipeline(cfg: GR2Config) -> Callable[..., Any]:
    """The pipeline for one resolved config (profile + overrides)."""

    def conf(step: str) -> str:
        return step_config(cfg, step)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="GR2 generative reasoning re-ranker: data -> SIDs -> features "
        "-> samples -> training -> evaluation -> export -> promotion.",
    )
    def gr2_pipeline(source_path: str = cfg.data.source_path or "", min_lift: float = cfg.pipeline.min_lift):
        # Step 0: ingest the dataset (named dataset, or a folder in the canonical schema)
        ingest = _configure(ingest_data(config=conf("ingest"), source_path=source_path), cfg, "ingest")
        data = ingest.outputs["dataset"]
        # Step 1: validate data (Great Expectations); the gate
        validate = _configure(validate_data(config=conf("validate"), dataset=data), cfg, "validate")
        with dsl.If(validate.outputs["Output"] == True, name="data-valid"):  # noqa: E712 (a KFP condition)
            # Step 2: chronological split
            split = _configure(split_data(config=conf("split"), dataset=data), cfg, "split")
            splits = split.outputs["split"]
            # Step 3: semantic-ID tokenizer (text encoder + RQ-VAE)
            sid = _configure(sid_tokenizer(config=conf("sid"), dataset=data, split=splits), cfg, "sid")
            sids = sid.outputs["sid"]
            # Step 4: features in Feast (apply + materialize)
            feats = _configure(
                feature_store(config=conf("features"), dataset=data, split=splits, sid=sids), cfg, "features"
            )
            # Step 5: legacy pre-ranker and re-ranking samples
            samp = _configure(
                build_samples(config=conf("samples"), dataset=data, split=splits), cfg, "samples"
            )
            samples = samp.outputs["samples"]
            # Step 6: baselines (incoming order, popularity, random, SASRec)
            base = _configure(
                baselines(config=conf("baselines"), dataset=data, split=splits, samples=samples),
                cfg,
                "baselines",
            )
            # Step 7: mid-training on the SID task mixture
            mid = _configure(
                midtrain(config=conf("midtrain"), dataset=data, split=splits, sid=sids, samples=samples),
                cfg,
                "midtrain",
            )
            # Step 8: reasoning traces by rejection sampling
            trc = _configure(
                traces(
                    config=conf("traces"),
                    dataset=data,
                    split=splits,
                    sid=sids,
                    feature_repo=feats.outputs["feature_repo"],
                    samples=samples,
                ),
                cfg,
                "traces",
            )
            # Step 9: reasoning SFT (lambda_r < lambda_o)
            rsn = _configure(
                reasoning_sft(
                    config=conf("reasoning"),
                    dataset=data,
                    split=splits,
                    sid=sids,
                    samples=samples,
                    midtrain=mid.outputs["model"],
                    traces=trc.outputs["traces"],
                ),
                cfg,
                "reasoning",
            )
            # Step 10: RL from the reasoning-SFT model (GRPO, DAPO loss): GR2's conditional reward, and the
            # naive reward beside it (the stage table's ablation row)
            rl_runs = {
                reward: _configure(
                    rl(
                        config=conf("rl"),
                        reward=reward,
                        dataset=data,
                        split=splits,
                        sid=sids,
                        samples=samples,
                        reasoning=rsn.outputs["model"],
                    ),
                    cfg,
                    "rl",
                    name="rl" if reward == "conditional" else "rl-naive",
                )
                for reward in ("conditional", "naive")
            }
            rlc, rln = rl_runs["conditional"], rl_runs["naive"]
            # Step 11: internalization (answer-only GRPO) from the RL model: the serving checkpoint
            intl = _configure(
                internalize(
                    config=conf("internalize"),
                    dataset=data,
                    split=splits,
                    sid=sids,
                    samples=samples,
                    rl=rlc.outputs["model"],
                ),
                cfg,
                "internalize",
            )
            # Steps OPD, compressor: not in gr2 yet
            # Step 12: evaluate: stage table on test, serving model vs incoming order on validation
            ev = _configure(
                evaluate(
                    config=conf("evaluate"),
                    dataset=data,
                    split=splits,
                    sid=sids,
                    samples=samples,
                    midtrain=mid.outputs["model"],
                    reasoning=rsn.outputs["model"],
                    rl_naive=rln.outputs["model"],
                    rl=rlc.outputs["model"],
                    internalize=intl.outputs["model"],
                ),
                cfg,
                "evaluate",
            )
            # Step 13: the promotion gate (a run parameter: changing min_lift reruns only the gate and after)
            gate = _configure(
                promotion_gate(evaluation=ev.outputs["evaluation"], min_lift=min_lift), cfg, "gate"
            )
            # Step 14: export the serving bundle (the internalized model)
            bundle = _configure(
                export_bundle(
                    config=conf("export"), dataset=data, sid=sids, internalize=intl.outputs["model"]
                ),
                cfg,
                "export",
            )
            # Step 15: register/promote only when the serving model beats the incoming order by min_lift
            with dsl.If(gate.outputs["Output"] == "promote", name="beats-incoming"):
                _configure(
                    promote_model(
                        config=conf("promote"), bundle=bundle.outputs["bundle"], gate=gate.outputs["gate"]
                    ),
                    cfg,
                    "promote",
                )
            with dsl.Else(name="below-min-lift"):
                _configure(hold_model(gate=gate.outputs["gate"]), cfg, "promote")
            # Step 16: the run report (stage table, chart, decision, every step's summary)
            _configure(
                run_report(
                    validation=validate.outputs["report"],
                    sid_report=sid.outputs["report"],
                    baselines=base.outputs["report"],
                    midtrain=mid.outputs["summary"],
                    traces=trc.outputs["summary"],
                    reasoning=rsn.outputs["summary"],
                    rl=rlc.outputs["summary"],
                    rl_naive=rln.outputs["summary"],
                    internalize=intl.outputs["summary"],
                    evaluation=ev.outputs["evaluation"],
                    gate=gate.outputs["gate"],
                ),
                cfg,
                "report",
            )
        with dsl.Else(name="data-invalid"):
            # Step 1b: stop, naming the failed expectations (they are in validate's report artefact)
            reject_data(report=validate.outputs["report"]).set_display_name("reject-data")

    return gr2_pipeline


gr2_pipeline = build_pipeline(load_config("default"))
