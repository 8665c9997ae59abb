"""KFP component: legacy pre-ranker and re-ranking samples (wraps :func:`gr2.pipeline.steps.samples`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_samples(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    samples: Output[Dataset],
    metrics: Output[Metrics],
):
    """Step 5: fit the legacy pre-ranker; K=10 candidates per evaluated position, every split and protocol."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import samples as run_samples

    log_metrics(metrics, run_samples(config, dataset.path, split.path, samples.path))
