"""KFP component: Feast apply + materialize (wraps :func:`gr2.pipeline.steps.features`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def feature_store(
    config: str,
    dataset: Input[Dataset],
    split: Input[Dataset],
    sid: Input[Model],
    feature_repo: Output[Artifact],
    metrics: Output[Metrics],
):
    """Step 4: write the Feast sources, ``feast apply`` and materialize the online store."""
    from gr2.pipeline.steps import features, log_metrics

    log_metrics(metrics, features(config, dataset.path, split.path, sid.path, feature_repo.path))
