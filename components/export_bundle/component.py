"""KFP component: export the serving bundle (wraps :func:`gr2.pipeline.steps.export`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_bundle(
    config: str, dataset: Input[Dataset], sid: Input[Model], internalize: Input[Model], bundle: Output[Model]
):
    """Step 14: the directory KServe/Triton load (internalized checkpoint, SID map, items, manifest)."""
    from gr2.pipeline.steps import export

    bundle.metadata.update(export(config, dataset.path, sid.path, internalize.path, bundle.path))
