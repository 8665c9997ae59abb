"""KFP component: reasoning SFT with weighted reasoning/ranking tokens.

Wraps :func:`gr2.pipeline.steps.reasoning`.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def reasoning_sft(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    samples: Input[Dataset],
    midtrain: Input[Model],
    traces: Input[Dataset],
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 9: SFT of the mid-trained model on accepted traces (here, or as a Kubeflow TrainJob)."""
    from gr2.pipeline.steps import log_metrics, reasoning

    log_metrics(
        metrics,
        reasoning(
            config,
            dataset.path,
            split.path,
            sid.path,
            samples.path,
            midtrain.path,
            traces.path,
            model.path,
            summary.path,
        ),
    )
