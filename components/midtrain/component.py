"""KFP component: mid-training on the SID task mixture (TRL SFTTrainer).

Wraps :func:`gr2.pipeline.steps.midtrain`.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def midtrain(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    samples: Input[Dataset],
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 7: teach the LM the catalog's SIDs and user sequences (here, or as a Kubeflow TrainJob)."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import midtrain as run_midtrain

    log_metrics(
        metrics,
        run_midtrain(config, dataset.path, split.path, sid.path, samples.path, model.path, summary.path),
    )
