"""KFP component: chronological split (wraps :func:`gr2.pipeline.steps.split`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split_data(config: str, dataset: Input[Dataset], split: Output[Dataset], metrics: Output[Metrics]):
    """Step 2: train/validation/test by time per user."""
    from gr2.pipeline.steps import log_metrics
    from gr2.pipeline.steps import split as run_split

    log_metrics(metrics, run_split(config, dataset.path, split.path))
