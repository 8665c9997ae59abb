"""KFP component: register and promote the serving bundle (wraps :func:`gr2.pipeline.steps.promote`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_model(config: str, bundle: Input[Model], gate: Input[Artifact], decision: Output[Markdown]):
    """Step 15: copy the bundle into the registry as the latest version and record why."""
    from gr2.pipeline.steps import promote

    promote(config, bundle.path, gate.path, decision.path)
