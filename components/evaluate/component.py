"""KFP component: stage table and promotion gate (wraps :func:`gr2.pipeline.steps.evaluate`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(config: str, dataset: Input[Dataset], split: Input[Dataset], sid: Input[Model], samples: Input[Dataset],
             midtrain: Input[Model], reasoning: Input[Model], min_lift: float, evaluation: Output[Artifact],
             table: Output[Markdown], metrics: Output[Metrics]) -> NamedTuple("Gate", [("decision", str), ("lift", float)]):
    """Step 10: the stage-by-stage table, and whether the serving model beats the incoming order by min_lift."""
    from collections import namedtuple

    from gr2.pipeline.steps import evaluate as run_evaluate
    from gr2.pipeline.steps import log_metrics

    out = run_evaluate(config, dataset.path, split.path, sid.path, samples.path, midtrain.path, reasoning.path,
                       evaluation.path, table.path, min_lift)
    log_metrics(metrics, out["metrics"])
    return namedtuple("Gate", ["decision", "lift"])(out["decision"], out["lift"])
