"""The text the offline tokenizer is trained on: every kind of text the later stages will show the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gr2.config import GR2Config
from gr2.train.inputs import StageInputs
from gr2.train.tasks import Catalog

RERANK_PROMPTS = 200  # re-ranking prompts rendered into the corpus (format words, enough repetitions)


def corpus_texts(cfg: GR2Config, examples: Sequence[dict[str, Any]], catalog: Catalog,
                 inputs: StageInputs | None = None) -> list[str]:
    """Task examples, item texts, teacher phrases and (when samples exist) re-ranking prompts and answers."""
    from gr2.train.feature_teacher import TEMPLATE_PHRASES

    texts = [m["content"] for e in examples for m in (*e["prompt"], *e["completion"])]
    texts += list(catalog.texts.values())
    texts += list(TEMPLATE_PHRASES) * 20
    texts += _rerank_texts(cfg, inputs or StageInputs.of_run(cfg.run_dir))
    return texts


def _rerank_texts(cfg: GR2Config, inputs: StageInputs) -> list[str]:
    """Rendered re-ranking prompts and answers for a few train samples (skipped if samples are missing)."""
    try:
        from gr2.rerank.format import build_messages, candidate_labels, format_answer
        from gr2.rerank.samples import SamplesError
        from gr2.train.inputs import TrainInputError, subsample
    except ImportError:
        return []
    try:
        samples = subsample(inputs.load_samples("train"), RERANK_PROMPTS, cfg.seed)
        sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
        items = inputs.load_dataset().items
    except (SamplesError, TrainInputError):
        return []
    texts = []
    for row in samples.to_dict("records"):
        cands = [int(c) for c in row["candidates"]]
        labels = dict(zip(cands, candidate_labels(cands, sid_map), strict=True))
        for style in ("reasoning", "answer"):
            texts += [m["content"] for m in build_messages(row, items, sid_map, style=style)]
        texts.append(format_answer(cands, labels, "step"))
    return texts
