"""TRL plumbing of the RL stages: the ``GRPOConfig`` of a stage and a GRPO trainer whose rollouts are rankings.

Constrained rollouts: :class:`ConstrainedGRPOTrainer` overrides TRL's ``_generate_single_turn`` (its
transformers generation path) and samples each row under its own :class:`RankingAutomaton`, through a
:class:`RankingLogitsProcessor`. A processor in ``generation_kwargs`` cannot work: it is built once, while the
automata depend on each prompt's candidates. The policy gradient still uses the unmasked log-probabilities of
the sampled tokens (the constraint only decides what is sampled), so every rollout is a permutation of the
candidates (invalid rate 0) and the model learns to put its own mass there too.

Dynamic sampling (DAPO): a group whose rewards all tie has zero advantage, so it only dilutes the token-level
loss. TRL cannot drop groups after scoring, so the trainer keeps them in the batch but removes them from the
loss mask and from the DAPO normaliser (``num_items_in_batch``): the loss is averaged over the tokens of
informative groups only. No new prompts are drawn in their place; the masked share is logged per step
(``rollout/zero_variance_share``), next to TRL's ``frac_reward_zero_std``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from gr2.models.constrained import DecodingTokens, RankingAutomaton, RankingLogitsProcessor
from gr2.models.scoring import _left_pad
from gr2.rerank.format import parse_ranking
from gr2.train.config import RLConfig
from gr2.train.sft import cpu_trainer_kwargs

TIE = 1e-6  # |advantage| below which a group's rewards all tie (distinct rewards differ by >= 1/K)


def grpo_args(rc: RLConfig, output_dir: Path, seed: int, **overrides: Any) -> GRPOConfig:
    """TRL's ``GRPOConfig`` of an RL stage: DAPO loss, clip-higher, one on-policy generation batch per step."""
    kwargs: dict[str, Any] = {
        **cpu_trainer_kwargs(rc.optim, output_dir, seed),
        "per_device_train_batch_size": rc.optim.batch_size * rc.num_generations,  # rollouts, whole groups
        "steps_per_generation": 1,
        "num_iterations": 1,
        "num_generations": rc.num_generations,
        "max_completion_length": rc.max_completion_length,
        "temperature": rc.temperature,
        "top_p": 1.0,  # no truncation of the distribution: the ranking mask is the only filter
        "top_k": 0,
        "loss_type": "dapo",
        "beta": rc.beta,
        "epsilon": rc.epsilon,
        "epsilon_high": rc.epsilon_high,
        "scale_rewards": "group",
        "lr_scheduler_type": "constant_with_warmup",
    }
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def rollout_automaton(tokens: DecodingTokens, tokenizer: Any, labels: Sequence[str], reasoning: bool,
                      max_tokens: int) -> RankingAutomaton:
    """The automaton of one rollout: the answer always fits, reasoning gets what ``max_tokens`` leaves."""
    answer = tokens.automaton(tokenizer, labels, reasoning=False).max_tokens()
    budget = max(0, max_tokens - answer - len(tokens.think.open) - len(tokens.think.close))
    budgeted = dataclasses.replace(tokens, think=dataclasses.replace(tokens.think, budget=budget))
    return budgeted.automaton(tokenizer, labels, reasoning)


def rollout_stats(texts: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Invalid rate, identity rate and R@1 (target ranked first) of rollouts parsed against their rows.

    >>> rollout_stats(["[B] > [A]", "[A] > [B]"], [{"candidates": [1, 2], "target": 2, "labels": ["[A]", "[B]"]}] * 2)
    {'invalid_rate': 0.0, 'identity_rate': 0.5, 'r1': 0.5}
    """
    invalid = identity = hits = 0
    for text, row in zip(texts, rows, strict=True):
        parsed = parse_ranking(text, [int(c) for c in row["candidates"]], [str(x) for x in row["labels"]])
        invalid += not (parsed.valid and parsed.complete)
        identity += parsed.identity
        hits += parsed.ranking[0] == int(row["target"])
    n = max(len(texts), 1)
    return {"invalid_rate": invalid / n, "identity_rate": identity / n, "r1": hits / n}


def zero_variance_rows(advantages: torch.Tensor, group: int) -> torch.Tensor:
    """Per rollout, True when every advantage of its group is zero (all rewards tied).

    >>> zero_variance_rows(torch.tensor([0.0, 0.0, 1.0, -1.0]), 2).tolist()
    [True, True, False, False]
    """
    tied = (advantages.abs() < TIE).view(-1, group).all(dim=1)
    return tied.repeat_interleave(group)


def sample_constrained(trainer: Any, prompt_ids: list[list[int]], rows: Sequence[dict[str, Any]],
                       reasoning: bool) -> list[list[int]]:
    """One completion per prompt, sampled with the trainer's generation settings under its row's ranking
    automaton (TRL's transformers generation path; shared by the GRPO and distillation trainers)."""
    tokenizer, decoding = trainer._tokenizer, trainer._decoding
    automata = [rollout_automaton(decoding, tokenizer, [str(x) for x in row["labels"]], reasoning,
                                  trainer.max_completion_length) for row in rows]
    eos = sorted(set(trainer.eos_token_ids) | set(decoding.eos))
    ids, attention = _left_pad(prompt_ids, int(tokenizer.pad_token_id))
    processor = RankingLogitsProcessor(automata, ids.shape[1])
    config = copy.deepcopy(trainer.generation_config)  # TRL's sampling settings; length and EOS of the automata
    config.max_new_tokens = max(a.max_tokens() for a in automata)
    config.eos_token_id = eos
    device = trainer.accelerator.device
    with (unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                      gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                      generation_kwargs=trainer.generation_kwargs,
                                      gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
                                      ) as unwrapped, torch.no_grad()):
        out = unwrapped.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config, logits_processor=LogitsProcessorList([processor]))
    completions = []
    for row in out[:, ids.shape[1]:].tolist():
        end = next((i for i, t in enumerate(row) if t in eos), len(row) - 1)
        completions.append(row[: end + 1])  # up to and including the first EOS, as TRL does
    return completions


class ConstrainedGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose rollouts are decoded under the ranking constraint, with DAPO dynamic sampling.

    Each dataset row needs ``labels`` (its candidates' labels), ``candidates`` and ``target``. Logs per step
    ``rollout/{invalid_rate,identity_rate,r1,zero_variance_share}`` besides TRL's reward parts.
    """

    def __init__(self, *args: Any, reasoning: bool, dynamic_sampling: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reasoning = reasoning
        self._dynamic_sampling = dynamic_sampling
        self._decoding = DecodingTokens.of(self._tokenizer, 0)
        self._rows: list[dict[str, Any]] = []
        self.rollout_history: list[dict[str, float]] = []  # one entry per generation batch, for the stage metrics

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._rows = inputs  # the automata of _generate_single_turn are built from these rows
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        mask = output["completion_mask"].bool()
        texts = self._tokenizer.batch_decode([ids[m].tolist() for ids, m in zip(output["completion_ids"], mask,
                                                                               strict=True)],
                                             skip_special_tokens=True)
        stats = rollout_stats(texts, inputs)
        tied = zero_variance_rows(output["advantages"], self.num_generations)
        stats["zero_variance_share"] = tied.float().mean().item()
        if self._dynamic_sampling:
            keep = (~tied).to(output["completion_mask"].dtype).unsqueeze(1)
            output["tool_mask"] = torch.ones_like(output["completion_mask"]) * keep  # TRL's loss-only mask
            output["num_items_in_batch"] = self.accelerator.gather((output["completion_mask"] * keep).sum()).sum()
        for name, value in stats.items():
            self._metrics[mode][f"rollout/{name}"].append(value)
        if mode == "train":
            self.rollout_history.append({"step": self.state.global_step + 1, **stats})
        return output

    def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any,
                              num_generations: int, has_tool_images: bool = False) -> tuple[list[list[int]], None]:
        if self.use_vllm or self.use_transformers_continuous_batching or images is not None:
            raise NotImplementedError("constrained rollouts use the transformers generation path only")
        return sample_constrained(self, prompt_ids, self._rows, self._reasoning), None
