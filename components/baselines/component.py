"""KFP component: incoming, popularity, random and SASRec baselines.

Wraps :func:`gr2.pipeline.steps.baselines`.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def baselines(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    samples: Input[Dataset],
    predictions: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 6: score the baselines on validation and test with bootstrap intervals."""
    from gr2.pipeline.steps import baselines as run_baselines
    from gr2.pipeline.steps import log_metrics

    log_metrics(
        metrics, run_baselines(config, dataset.path, split.path, samples.path, predictions.path, report.path)
    )
