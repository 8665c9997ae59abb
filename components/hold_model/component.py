"""KFP component: record why the model is not promoted (wraps :func:`gr2.pipeline.steps.hold`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hold_model(gate: Input[Artifact], decision: Output[Markdown]):
    """Step 15 (else branch): the lift was below min_lift; say so."""
    from gr2.pipeline.steps import hold

    hold(gate.path, decision.path)
