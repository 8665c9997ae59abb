"""KFP component: fetch or import the dataset (wraps :func:`gr2.pipeline.steps.ingest`)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest_data(config: str, source_path: str, dataset: Output[Dataset], metrics: Output[Metrics]):
    """Step 0: the canonical dataset (interactions, items, users) from ``data.dataset`` or ``source_path``."""
    from gr2.pipeline.steps import ingest, log_metrics

    log_metrics(metrics, ingest(config, source_path, dataset.path))
