"""Configuration of the model factory and the staged training (mid-training, traces, reasoning SFT, RL).

Every field has a default so that ``train: {}`` in a profile is valid; the profiles override sizes.

NOTE: changed defaults with respect to TRL's ``SFTConfig`` (applied in :func:`gr2.train.sft.sft_args`):
``bf16=False`` and ``activation_checkpointing=False`` (formerly ``gradient_checkpointing``; CPU training of
tiny models), ``report_to=[]``,
``dataloader_num_workers=0``, ``learning_rate`` of ``1e-3`` for models trained from scratch.
With respect to TRL's ``GRPOConfig`` (applied in :func:`gr2.train.grpo.grpo_args`): ``loss_type="dapo"``,
clip-higher ``epsilon=0.2``/``epsilon_high=0.28``, ``beta=0`` and ``num_generations=8``.
With respect to TRL's ``DistillationConfig`` (applied in :func:`gr2.train.opd.distillation_args`):
``learning_rate=1e-3`` (the student starts from scratch), ``gradient_checkpointing=False``, ``bf16=False``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gr2.models.config import ModelConfig

__all__ = ["ModelConfig", "TrainConfig"]  # ModelConfig lives with the model factory

MIDTRAIN_TASKS = ("next_item", "sid_to_text", "text_to_sid", "persona", "item_text")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Section):
    """The optimisation settings shared by the SFT stages (mapped onto TRL's ``SFTConfig``)."""

    # Parameters that control the optimisation
    max_steps: int = Field(300, ge=1, description="Optimizer steps of the stage.")
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate; high because small models "
                                 "start from scratch.")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_length: int = Field(512, ge=32, description="Longest training sequence (tokens); longer ones are cut.")
    # Parameters that control checkpoints and logging
    logging_steps: int = Field(10, ge=1, description="Steps between loss log lines.")
    save_steps: int = Field(100, ge=1, description="Steps between resumable checkpoints.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    resume: bool = Field(True, description="Resume from the last checkpoint in the stage folder if one exists.")


class ReasoningOptimConfig(OptimConfig):
    """Optimisation of the reasoning stage: it starts from the mid-trained model, so a lower rate."""

    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate (fine-tuning, not from scratch).")
    max_length: int = Field(1024, ge=32, description="Longest sequence (tokens): prompt, reasoning and ranking.")


class MidtrainConfig(_Section):
    """Mid-training: a mixture of SID tasks that teaches the model the catalog and the user sequences."""

    # Parameters that control the task mixture
    num_examples: int = Field(4000, ge=10, description="Training examples drawn from the mixture.")
    task_ratios: dict[str, float] = Field(
        default_factory=lambda: {"next_item": 0.6, "sid_to_text": 0.1, "text_to_sid": 0.1, "persona": 0.1,
                                 "item_text": 0.1},
        description="Share of each task in the mixture (normalised); tasks: " + ", ".join(MIDTRAIN_TASKS))
    history_length: int = Field(20, ge=1, description="Most recent items shown as history (items).")
    completion_only_loss: bool = Field(
        False, description="False = loss on the whole sequence, so every SID of the history is a next-item "
        "target too (denser sequential signal).")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    # Parameters that control next-item pretraining over sliding windows
    sequence_epochs: int = Field(
        0, ge=0, description="Passes over sliding windows of every learnable user sequence, loss on every item "
        "(0 = the task mixture only). When > 0 the stage runs one pass over windows + mixture and "
        "optim.max_steps is not used.")
    sequence_window: int = Field(50, ge=2, description="Items per window (the last is the completion).")
    sequence_stride: int = Field(25, ge=1, description="Items between window starts; each epoch draws a new "
                                 "random offset, so windows differ between epochs.")
    packing: bool = Field(False, description="Pack examples into max_length rows (TRL best-fit packing, "
                          "padding-free; attention stays inside each example).")
    # Parameters that control the before/after evaluation on validation
    eval_users: int = Field(200, ge=1, description="Validation users scored for next-item Recall@k.")
    recall_k: int = Field(10, ge=1, description="Cut-off of next-item Recall (beam width of the SID search).")
    eval_titles: int = Field(200, ge=1, description="Items asked for their title (SID -> title accuracy).")
    title_choices: int = Field(10, ge=2, description="Titles per question (1 true + distractors); chance = 1/n.")

    @field_validator("task_ratios")
    @classmethod
    def _known_tasks(cls, ratios: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(ratios) - set(MIDTRAIN_TASKS))
        if unknown:
            raise ValueError(f"train.midtrain.task_ratios: unknown task(s) {unknown}; known: {list(MIDTRAIN_TASKS)}")
        if any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError("train.midtrain.task_ratios: ratios must be >= 0 and sum to > 0")
        return ratios


class OpenAITeacherConfig(_Section):
    """An OpenAI-compatible chat endpoint (vLLM, KServe OpenAI route, Triton OpenAI frontend)."""

    # Parameters that control the endpoint
    base_url: str = Field("http://127.0.0.1:8000/v1", description="Root of the OpenAI API (…/v1).")
    model: str = Field("teacher", description="Model name sent in each request.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key, if any.")
    max_tokens: int = Field(512, ge=16, description="Completion budget per trace (tokens).")
    # Parameters that control robustness
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (seconds).")
    max_retries: int = Field(3, ge=0, description="Retries after a timeout, 5xx/429 or unparsable answer.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay, doubled each retry (seconds).")
    requests_per_second: float = Field(2.0, gt=0, description="Client-side rate limit (requests/second).")


class TracesConfig(_Section):
    """Rejection sampling of reasoning traces from a teacher."""

    # Parameters that control the teacher
    teacher: Literal["feature", "openai"] = Field(
        "feature", description="feature = offline heuristic teacher on Feast features; openai = chat endpoint.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the teacher's ranking.")
    openai: OpenAITeacherConfig = Field(default_factory=OpenAITeacherConfig)
    # Parameters that control rejection sampling
    split: Literal["train", "validation"] = Field("train", description="Samples traced.")
    max_samples: int = Field(2000, ge=0, description="Samples traced (0 = all), drawn at random with the seed.")
    max_tries: int = Field(4, ge=1, description="Traces drawn per sample (M) before giving up or falling back.")
    targeted_fallback: bool = Field(
        True, description="After M rejections, ask the teacher once more with the answer revealed.")
    # Parameters that control the feature-grounded teacher's scores
    w_category: float = Field(1.0, description="Weight of category overlap with the history.")
    w_cooccurrence: float = Field(1.5, description="Weight of co-occurrence with the recent items.")
    w_recency: float = Field(0.3, description="Weight of how recently the item was seen in the catalog.")
    w_popularity: float = Field(0.5, description="Weight of log popularity.")
    cooccurrence_window: int = Field(5, ge=1, description="Items after each history item counted as co-occurring.")


class ReasoningConfig(_Section):
    """Reasoning SFT on accepted traces, with weighted reasoning vs ranking tokens."""

    # Parameters that control the loss weights
    lambda_r: float = Field(0.3, ge=0, description="Weight of reasoning tokens (inside <think>...</think>).")
    lambda_o: float = Field(1.0, gt=0, description="Weight of the ranking (answer) tokens; lambda_r <= lambda_o.")
    # Parameters that control the data mixture
    answer_only_share: float = Field(
        0.5, ge=0, description="Answer-only copies of the traces per trace (for likelihood scoring in the prompt).")
    midtrain_mix: float = Field(
        1.0, ge=0, description="Mid-training examples mixed in per trace, so the stage keeps what they taught.")
    optim: ReasoningOptimConfig = Field(default_factory=ReasoningOptimConfig)
    # Parameters that control the validation metrics written after the stage
    eval_samples: int = Field(200, ge=0, description="Validation samples ranked by likelihood after the stage.")
    eval_generate: int = Field(50, ge=0, description="Validation samples decoded with reasoning after the stage.")
    max_new_tokens: int = Field(256, ge=16, description="Decoding budget per validation sample (tokens).")

    @model_validator(mode="after")
    def _lambda_order(self) -> ReasoningConfig:
        if self.lambda_r > self.lambda_o:
            raise ValueError(f"train.reasoning: lambda_r ({self.lambda_r}) must not exceed lambda_o ({self.lambda_o})")
        return self


class RLOptimConfig(OptimConfig):
    """Optimisation of an RL stage: ``batch_size`` counts prompts, each rolled out ``num_generations`` times."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps (one generation batch each, on-policy).")
    batch_size: int = Field(4, ge=1, description="Prompts per optimizer step (x num_generations rollouts).")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate; RL moves a trained policy gently.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_length: int = Field(1024, ge=32, description="Longest prompt (tokens); samples with longer ones are left out.")
    save_steps: int = Field(50, ge=1, description="Steps between resumable checkpoints.")


class RLConfig(_Section):
    """GRPO on the re-ranking samples (DAPO loss, clip-higher), every rollout decoded under the ranking constraint."""

    # Parameters that control the policy and its format
    init: str = Field("auto", description="Starting model: auto (the candidate stage with the higher validation "
                      "likelihood R@1), midtrain, reasoning, rl, or a checkpoint path.")
    style: Literal["reasoning", "answer"] = Field("reasoning", description="Prompt and rollout format: "
                                                  "<think> block then ranking, or the ranking only.")
    reward: Literal["conditional", "naive"] = Field("conditional", description="conditional = GR2's reward; "
                                                    "naive = the hackable sum (ablation; writes train/rl_naive).")
    alpha: float = Field(0.2, ge=0, description="Format bonus of the reward.")
    # Parameters that control the rollouts
    num_generations: int = Field(8, ge=2, description="Rollouts per prompt (the GRPO group).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    max_completion_length: int = Field(
        256, ge=16, description="Rollout budget (tokens); the answer of 10 SID labels takes ~70, reasoning gets "
        "the rest (the answer-only format uses only what the answer needs).")
    dynamic_sampling: bool = Field(True, description="Mask out groups whose rewards all tie (DAPO): they carry no "
                                   "signal and would only dilute the token-level loss.")
    # Parameters that control the GRPO loss
    beta: float = Field(0.0, ge=0, description="KL coefficient to the starting model (0 = no reference model).")
    epsilon: float = Field(0.2, gt=0, description="Lower clip range of the importance ratio.")
    epsilon_high: float = Field(0.28, gt=0, description="Upper clip range (clip-higher, DAPO).")
    optim: RLOptimConfig = Field(default_factory=RLOptimConfig)
    # Parameters that control the validation metrics written after the stage
    eval_samples: int = Field(200, ge=0, description="Validation samples ranked by likelihood after the stage.")
    eval_generate: int = Field(50, ge=0, description="Validation samples decoded under the constraint after the stage.")


class InternalizeConfig(RLConfig):
    """A second GRPO pass in the answer-only format; its model is the serving checkpoint."""

    init: str = Field("auto", description="Starting model: auto (rl or reasoning, the higher validation likelihood "
                      "R@1), or a stage name or checkpoint path.")
    style: Literal["answer"] = Field("answer", description="Always the answer-only format (no <think>).")
    max_completion_length: int = Field(96, ge=16, description="Rollout budget (tokens): the ranking only.")


class StudentConfig(_Section):
    """Size of the OPD student: the offline Qwen architecture of ``train.model``, narrower and shallower."""

    # Parameters that control the size of the student
    hidden_size: int = Field(48, ge=8, description="Width of the residual stream (units).")
    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads; hidden_size must be divisible by it.")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(128, ge=8, description="Width of the MLP (units).")
    max_param_ratio: float = Field(0.25, gt=0, le=1, description="Largest student/teacher parameter ratio "
                                   "accepted (the stage stops with an error above it).")

    @model_validator(mode="after")
    def _heads_divide(self) -> StudentConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"train.opd.student: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads}) and num_heads by num_kv_heads ({self.num_kv_heads})")
        return self


class OPDOptimConfig(OptimConfig):
    """Optimisation of the student: fresh weights, so a from-scratch rate; ``batch_size`` counts prompts."""

    max_steps: int = Field(200, ge=1, description="Optimizer steps (one on-policy generation batch each).")
    batch_size: int = Field(8, ge=1, description="Prompts per optimizer step (one rollout each).")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (the student starts from scratch).")
    max_length: int = Field(1024, ge=32, description="Longest prompt (tokens); samples with longer ones are left out.")
    save_steps: int = Field(100, ge=1, description="Steps between resumable checkpoints.")


class OPDConfig(_Section):
    """On-policy distillation of the re-ranker into a small student (TRL's ``DistillationTrainer``), or plain SFT
    of the same student on the teacher's decoded answers (``method: sft``, the comparison)."""

    # Parameters that control the teacher and the student
    teacher: str = Field("auto", description="auto = train/internalize/model, else train/rl/model; or a "
                         "checkpoint path.")
    method: Literal["opd", "sft"] = Field("opd", description="opd = on-policy distillation (writes train/opd); "
                                          "sft = SFT on the teacher's answers (writes train/opd_sft).")
    student: StudentConfig = Field(default_factory=StudentConfig)
    # Parameters that control the rollouts and the divergence
    beta: float = Field(1.0, ge=0, le=1, description="Generalised JSD mix: 1 = reverse KL (mode-seeking, the OPD "
                        "default), 0 = forward KL, 0.5 = JSD.")
    temperature: float = Field(1.0, gt=0, description="Sampling and loss temperature of the student's rollouts.")
    max_completion_length: int = Field(96, ge=16, description="Rollout budget (tokens): the answer-only ranking.")
    max_samples: int = Field(0, ge=0, description="Train samples used as prompts (0 = all); OPD and SFT share them.")
    optim: OPDOptimConfig = Field(default_factory=OPDOptimConfig)
    # Parameters that control the validation metrics written after the stage
    style: Literal["answer"] = Field("answer", description="Always the answer-only format (no <think>).")
    eval_samples: int = Field(200, ge=0, description="Validation samples ranked by likelihood (student and teacher).")
    eval_generate: int = Field(50, ge=0, description="Validation samples decoded under the constraint.")


class CompressorConfig(_Section):
    """Prompt compression of the history and candidate metadata: a rule and a learned selector side by side."""

    # Parameters that control what is compressed
    model: str = Field("auto", description="Re-ranker scored (and the learned selector's judge): auto = "
                       "train/internalize/model, else train/rl/model; or a checkpoint path.")
    budgets: list[float] = Field(default_factory=lambda: [1.0, 0.75, 0.5, 0.35],
                                 description="Prompt-token budgets as a share of the original prompt.")
    keep_recent: int = Field(3, ge=0, description="Most recent history items the rule always keeps (items).")
    title_words: int = Field(4, ge=0, description="Words kept of each title when metadata is shortened (0 = all).")
    # Parameters that control the learned selector
    train_samples: int = Field(200, ge=1, description="Train samples the selector is fitted on.")
    epochs: int = Field(200, ge=1, description="Full-batch passes of the logistic selector.")
    learning_rate: float = Field(0.1, gt=0, description="Step size of the selector's gradient ascent.")
    lambda_compress: float = Field(0.5, ge=0, description="Reward per history item dropped (compression term).")
    # Parameters that control the evaluation curve
    eval_samples: int = Field(100, ge=1, description="Validation samples of the curve.")


class StageEvalConfig(_Section):
    """The stage-by-stage table on the re-ranking samples."""

    # Parameters that control the evaluation
    split: Literal["validation", "test"] = Field("test", description="Samples the stage table is computed on.")
    max_samples: int = Field(0, ge=0, description="Samples scored by likelihood (0 = all).")
    max_generate: int = Field(300, ge=0, description="Samples decoded with reasoning (generation is slow).")
    max_new_tokens: int = Field(256, ge=16, description="Decoding budget per sample (tokens).")
    batch_size: int = Field(16, ge=1, description="Prompts decoded together.")


class TrainConfig(_Section):
    """Model factory and staged-training settings."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    midtrain: MidtrainConfig = Field(default_factory=MidtrainConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    internalize: InternalizeConfig = Field(default_factory=InternalizeConfig)
    opd: OPDConfig = Field(default_factory=OPDConfig)
    compress: CompressorConfig = Field(default_factory=CompressorConfig)
    eval: StageEvalConfig = Field(default_factory=StageEvalConfig)
    threads: int = Field(2, ge=1, description="torch CPU threads (the build machines have 2 cores).")


def with_stage_fields(cfg: Any, section: str, **update: Any) -> Any:
    """A copy of the settings tree ``cfg`` with fields of ``train.<section>`` replaced (validated)."""
    current = getattr(cfg.train, section)
    new = type(current).model_validate({**current.model_dump(), **update})
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={section: new})})
