"""KFP component: validate the dataset with Great Expectations (wraps :func:`gr2.pipeline.steps.validate`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_data(
    config: str,
    dataset: Input[Dataset],
    report: Output[Markdown],
    results: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """Step 1: the interaction, item and user-history suites; returns whether every expectation passed."""
    from gr2.pipeline.steps import log_metrics, validate

    passed, values = validate(config, dataset.path, report.path, results.path)
    log_metrics(metrics, values)
    return passed
