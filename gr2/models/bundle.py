"""The serving bundle: one directory that a server (KServe, Triton) loads, nothing else needed.

Layout (a plain HF checkpoint plus the training-time transforms)::

    config.json, model.safetensors, tokenizer files   the causal LM, SID tokens included
    sid_map.parquet                                    item id <-> SID codes
    items.parquet                                      item_id, title (+ categories, year) for prompts
    gr2_serving.json                                   manifest: model name/version, prompt settings
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from gr2.contract import MODEL_NAME

MANIFEST = "gr2_serving.json"
SCORE_PROMPTS = ("rerank", "next_item")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


class BundleError(ValueError):
    """A directory that is not a complete serving bundle."""


@dataclass(frozen=True)
class ServingManifest:
    """What a server needs to know besides the weights."""

    model_version: str
    model_name: str = MODEL_NAME
    num_candidates: int = 10
    history_length: int = 20
    with_sids: bool = True
    score_prompt: str = "rerank"  # score mode's prompt, chosen on validation: rerank (answer-only) or next_item
    source_checkpoint: str = ""
    extra: dict = field(default_factory=dict)


def write_serving_bundle(model_dir: str | Path, sid_map_path: str | Path, items: pd.DataFrame,
                         out_dir: str | Path, manifest: ServingManifest) -> Path:
    """Copy a trained checkpoint and its transforms into ``out_dir`` (may be ``model_dir``) and write the manifest."""
    src, out = Path(model_dir), Path(out_dir)
    if not (src / "config.json").exists():
        raise BundleError(f"{src}: no config.json; not a checkpoint directory")
    out.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir() if src.resolve() != out.resolve() else ():  # in place: the model is already there
        if path.is_file() and (path.name in MODEL_FILES or path.suffix in {".json", ".jinja", ".txt", ".model"}):
            shutil.copy2(path, out / path.name)
    own_map = src / "sid_map.parquet"  # the map (and item-token mode) the checkpoint was trained with
    chosen = own_map if own_map.exists() else Path(sid_map_path)
    if chosen.resolve() != (out / "sid_map.parquet").resolve():
        shutil.copy2(chosen, out / "sid_map.parquet")
    keep = [c for c in ("item_id", "title", "categories", "year") if c in items]
    items[keep].to_parquet(out / "items.parquet", index=False)
    (out / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return out


def read_manifest(bundle_dir: str | Path) -> ServingManifest:
    """The manifest of a bundle, with a clear error for anything missing."""
    root = Path(bundle_dir)
    missing = [n for n in ("config.json", "sid_map.parquet", "items.parquet", MANIFEST) if not (root / n).exists()]
    if missing:
        raise BundleError(f"{root}: not a gr2 serving bundle, missing {missing}")
    manifest = ServingManifest(**json.loads((root / MANIFEST).read_text()))
    if manifest.score_prompt not in SCORE_PROMPTS:
        raise BundleError(f"{root / MANIFEST}: score_prompt must be one of {list(SCORE_PROMPTS)}, "
                          f"got {manifest.score_prompt!r}")
    if manifest.score_prompt == "next_item" and not manifest.with_sids:
        raise BundleError(f"{root / MANIFEST}: score_prompt next_item needs item names (with_sids: true)")
    return manifest
