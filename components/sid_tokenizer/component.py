"""KFP component: semantic-ID tokenizer (text encoder + RQ-VAE) (wraps :func:`gr2.pipeline.steps.sid`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sid_tokenizer(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Output[Model],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """Step 3: a unique semantic ID per item (``sid_map.parquet``, codebooks, report)."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import sid as run_sid

    log_metrics(metrics, run_sid(config, dataset.path, split.path, sid.path, report.path))
