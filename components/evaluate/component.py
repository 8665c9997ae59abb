"""KFP component: stage table and the serving model's lift (wraps :func:`gr2.pipeline.steps.evaluate`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    samples: Input[Dataset],
    midtrain: Input[Model],
    reasoning: Input[Model],
    rl_naive: Input[Model],
    rl: Input[Model],
    internalize: Input[Model],
    evaluation: Output[Artifact],
    table: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 12: the stage-by-stage table (every trained stage), and the serving (internalized) model's lift
    over the incoming order on validation."""
    from gr2.pipeline.steps import evaluate as run_evaluate
    from gr2.pipeline.steps import log_metrics

    log_metrics(
        metrics,
        run_evaluate(
            config,
            dataset.path,
            split.path,
            sid.path,
            samples.path,
            midtrain.path,
            reasoning.path,
            rl_naive.path,
            rl.path,
            internalize.path,
            evaluation.path,
            table.path,
        ),
    )
