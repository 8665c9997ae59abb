"""KFP component: stop the run after a failed validation (wraps :func:`gr2.pipeline.steps.reject_data`)."""

from kfp import dsl
from kfp.dsl import Input, Markdown

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def reject_data(report: Input[Markdown]):
    """Step 1 (else branch): fail the run, naming the failed expectations of the validation report."""
    from gr2.pipeline.steps import reject_data as reject

    reject(report.path)
