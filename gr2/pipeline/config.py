"""Settings of the Kubeflow pipeline: promotion gate, caching, per-step resources, TrainJob handoff.

NOTE: defaults are sized for the 2-core build machines (no accelerator); a GPU cluster sets
``pipeline.resources.<step>.accelerator_*`` and ``pipeline.trainjob.*`` in a profile or with ``--set``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

STEP_NAMES = (
    "ingest",
    "validate",
    "split",
    "sid",
    "features",
    "samples",
    "baselines",
    "midtrain",
    "traces",
    "reasoning",
    "rl",
    "internalize",
    "evaluate",
    "gate",
    "export",
    "promote",
    "report",
)
TRAINING_STEPS = ("midtrain", "reasoning", "rl", "internalize")  # the ones a TrainJob can run


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", coerce_numbers_to_str=True
    )  # `--set x.cpu_request=2` is a quantity


class StepResources(_Section):
    """Kubernetes requests/limits of one component's pod (empty = not set)."""

    # Parameters that control CPU and memory
    cpu_request: str = Field("500m", description="CPU request (Kubernetes quantity).")
    cpu_limit: str = Field("", description="CPU limit (Kubernetes quantity); empty = none.")
    memory_request: str = Field("1Gi", description="Memory request (Kubernetes quantity).")
    memory_limit: str = Field("4Gi", description="Memory limit (Kubernetes quantity).")
    # Parameters that control accelerators
    accelerator_type: str = Field("", description="Accelerator resource, e.g. nvidia.com/gpu; empty = none.")
    accelerator_count: int = Field(0, ge=0, description="Accelerators per pod.")


def _default_resources() -> dict[str, StepResources]:
    """Small pods for data steps, larger ones for training and evaluation."""
    big = StepResources(cpu_request="2", memory_request="4Gi", memory_limit="16Gi")
    return {
        name: (
            big if name in (*TRAINING_STEPS, "traces", "evaluate", "sid", "baselines") else StepResources()
        )
        for name in STEP_NAMES
    }


class TrainJobConfig(_Section):
    """Hand a training step to a Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1)."""

    # Parameters that control whether and where training leaves the component's pod
    enabled: bool = Field(
        False,
        description="Run midtrain/reasoning/rl/internalize as a TrainJob instead of in the component.",
    )
    namespace: str = Field("kubeflow", description="Namespace the TrainJob is created in.")
    runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime the TrainJob refers to.")
    workdir: str = Field(
        "/mnt/gr2", description="Shared volume (PVC) mounted in the component and the TrainJob pods."
    )
    pvc_name: str = Field("gr2-workdir", description="PersistentVolumeClaim that holds workdir.")
    # Parameters that control the size of the job
    num_nodes: int = Field(1, ge=1, description="Nodes (pods) of the TrainJob.")
    procs_per_node: int = Field(1, ge=1, description="torchrun processes per node (one per GPU).")
    gpus_per_node: int = Field(0, ge=0, description="nvidia.com/gpu per node; 0 = CPU (gloo).")
    cpu_per_node: str = Field("2", description="CPU per node (Kubernetes quantity).")
    memory_per_node: str = Field("8Gi", description="Memory per node (Kubernetes quantity).")
    # Parameters that control waiting for it
    timeout_s: int = Field(6 * 3600, ge=1, description="Give up waiting after this long (seconds).")
    poll_s: float = Field(10.0, gt=0, description="Seconds between status checks.")


class PipelineConfig(_Section):
    """The Kubeflow pipeline (``gr2 pipeline ...``)."""

    # Parameters that control the promotion gate
    min_lift: float = Field(
        0.0,
        description="Promote only when the serving model's R@1 minus the incoming order's R@1 on validation "
        "is at least this (absolute, e.g. 0.01 = one point).",
    )
    gate_samples: int = Field(200, ge=0, description="Validation samples scored for the gate (0 = all).")
    registry_dir: str = Field(
        "",
        description="Directory (a mounted volume on a cluster) a promoted bundle is copied to, as "
        "<model>/<version>/ plus a `latest` file; empty = record the decision only.",
    )
    # Parameters that control the runs
    caching: bool = Field(True, description="Reuse outputs of deterministic steps with unchanged inputs.")
    host: str = Field(
        "", description="KFP API endpoint for `gr2 pipeline submit` (e.g. http://ml-pipeline:8888)."
    )
    namespace: str = Field("kubeflow", description="Kubeflow profile namespace runs are created in.")
    experiment: str = Field("gr2", description="KFP experiment the runs are filed under.")
    resources: dict[str, StepResources] = Field(
        default_factory=_default_resources,
        description="Per-step pod resources; steps: " + ", ".join(STEP_NAMES),
    )
    trainjob: TrainJobConfig = Field(default_factory=TrainJobConfig)

    @field_validator("resources")
    @classmethod
    def _known_steps(cls, resources: dict[str, StepResources]) -> dict[str, StepResources]:
        unknown = sorted(set(resources) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"pipeline.resources: unknown step(s) {unknown}; steps are {list(STEP_NAMES)}")
        return resources

    def step_resources(self, step: str) -> StepResources:
        """Resources of ``step`` (the defaults when the config leaves it out)."""
        if step not in STEP_NAMES:
            raise ValueError(f"unknown pipeline step {step!r}; steps are {list(STEP_NAMES)}")
        return self.resources.get(step) or _default_resources()[step]
