"""KFP component: the promotion gate (wraps :func:`gr2.pipeline.steps.gate`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promotion_gate(evaluation: Input[Artifact], min_lift: float, gate: Output[Artifact]) -> str:
    """Step 13: ``promote`` when the serving model beats the incoming order on validation by min_lift,
    else ``hold``."""
    from gr2.pipeline.steps import gate as decide

    return decide(evaluation.path, min_lift, gate.path)
