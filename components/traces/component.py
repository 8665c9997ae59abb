"""KFP component: rejection-sampled reasoning traces (wraps :func:`gr2.pipeline.steps.traces`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def traces(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    feature_repo: Input[Artifact],
    samples: Input[Dataset],
    traces: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 8: teacher traces, accepted when the top-1 is the target, with acceptance statistics."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import traces as run_traces

    log_metrics(
        metrics,
        run_traces(
            config,
            dataset.path,
            split.path,
            sid.path,
            feature_repo.path,
            samples.path,
            traces.path,
            summary.path,
        ),
    )
