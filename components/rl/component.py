"""KFP component: RL (GRPO with the DAPO loss) with the conditional or the naive reward.

Wraps :func:`gr2.pipeline.steps.rl`.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def rl(
    config: str,
    reward: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    samples: Input[Dataset],
    reasoning: Input[Model],
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 10: GRPO from the reasoning-SFT model; reward conditional (GR2) or naive (the ablation)."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import rl as run_rl

    log_metrics(
        metrics,
        run_rl(
            config,
            dataset.path,
            split.path,
            sid.path,
            samples.path,
            reasoning.path,
            model.path,
            summary.path,
            reward,
        ),
    )
