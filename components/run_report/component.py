"""KFP component: the run report (wraps :func:`gr2.pipeline.steps.report`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from gr2.contract import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def run_report(
    validation: Input[Markdown],
    sid_report: Input[Markdown],
    baselines: Input[Markdown],
    midtrain: Input[Markdown],
    traces: Input[Markdown],
    reasoning: Input[Markdown],
    rl: Input[Markdown],
    rl_naive: Input[Markdown],
    internalize: Input[Markdown],
    evaluation: Input[Artifact],
    gate: Input[Artifact],
    report: Output[Markdown],
):
    """Step 16: stage table, R@1 chart, the promotion decision and every step's summary, in one Markdown."""
    from gr2.pipeline.report import write_report

    write_report(
        evaluation.path,
        gate.path,
        report.path,
        {
            "Data validation": validation.path,
            "Semantic IDs": sid_report.path,
            "Baselines": baselines.path,
            "Mid-training": midtrain.path,
            "Reasoning traces": traces.path,
            "Reasoning SFT": reasoning.path,
            "RL (conditional reward)": rl.path,
            "RL (naive reward, ablation)": rl_naive.path,
            "Internalization": internalize.path,
        },
    )
