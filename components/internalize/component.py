"""KFP component: internalization, answer-only GRPO whose model is the serving checkpoint.

Wraps :func:`gr2.pipeline.steps.internalize`.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def internalize(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    samples: Input[Dataset],
    rl: Input[Model],
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 11: answer-only GRPO from the RL model (no <think> block); its model folder is the serving bundle."""
    from gr2.pipeline.steps import internalize as run_internalize
    from gr2.pipeline.steps import log_metrics

    log_metrics(
        metrics,
        run_internalize(
            config,
            dataset.path,
            split.path,
            sid.path,
            samples.path,
            rl.path,
            model.path,
            summary.path,
        ),
    )
