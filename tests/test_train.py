"""Training stages: task mixture, weighted SFT loss, and midtrain -> traces -> reasoning -> table end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from datasets import Dataset as HFDataset
from safetensors.torch import load_file
from trl import SFTTrainer

from gr2.cli import main
from gr2.config import GR2Config, load_config
from gr2.models.config import ModelConfig
from gr2.models.factory import build_offline_checkpoint, load_model
from gr2.models.scoring import encode_plain, render_prompt
from gr2.paths import RunPaths
from gr2.sid.sidmap import SIDMap
from gr2.train.config import MidtrainConfig, OptimConfig
from gr2.train.reasoning import weighted_example
from gr2.train.sft import WEIGHTS, WeightedCollator, WeightedSFTTrainer, sft_args
from gr2.train.tasks import Catalog, build_examples, next_item_prompt, task_counts

torch.set_num_threads(2)
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=300)


def _sid_map(item_ids: np.ndarray, size: int = 16, seed: int = 0) -> SIDMap:
    """Unique random 3-level codes (a stand-in for `gr2 sid train` in these tests)."""
    flat = np.random.default_rng(seed).choice(size ** 3, size=len(item_ids), replace=False)
    return SIDMap(item_ids, np.stack([flat // size ** 2, (flat // size) % size, flat % size], axis=1), size)


ITEMS = pd.DataFrame({"item_id": np.arange(1, 21, dtype="int64"), "title": [f"Film {i}" for i in range(1, 21)],
                      "categories": ["Drama|War", "Comedy", "Horror", "Drama"] * 5})
SIDS = _sid_map(ITEMS["item_id"].to_numpy())
SEQS = {1: [1, 2, 3, 4, 5, 6], 2: [7, 8, 9, 10], 3: [11, 12, 13, 14, 15, 16, 17]}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory):
    catalog = Catalog.build(ITEMS, SIDS)
    examples = build_examples(SEQS, catalog, SIDS, MidtrainConfig(num_examples=40), seed=0)
    corpus = [m["content"] for e in examples for m in (*e["prompt"], *e["completion"])] * 3
    path = build_offline_checkpoint(TINY, corpus, tmp_path_factory.mktemp("tiny") / "base", seed=0)
    return path, examples


def test_task_mixture_is_seeded_and_follows_ratios() -> None:
    catalog = Catalog.build(ITEMS, SIDS)
    cfg = MidtrainConfig(num_examples=50, task_ratios={"next_item": 0.6, "persona": 0.2, "text_to_sid": 0.2})
    a, b = build_examples(SEQS, catalog, SIDS, cfg, seed=1), build_examples(SEQS, catalog, SIDS, cfg, seed=1)
    assert a == b and len(a) == 50
    tasks = pd.Series([e["task"] for e in a]).value_counts().to_dict()
    assert tasks == {"next_item": 30, "persona": 10, "text_to_sid": 10}
    nxt = next(e for e in a if e["task"] == "next_item")
    answer = nxt["completion"][0]["content"]
    assert SIDS.item_for(answer.removeprefix("<|sid_begin|>").removesuffix("<|sid_end|>")) is not None
    persona = next(e for e in a if e["task"] == "persona")["completion"][0]["content"]
    assert persona.startswith("Favourite categories: ")
    no_cats = Catalog.build(ITEMS.drop(columns="categories"), SIDS)
    tasks = {e["task"] for e in build_examples(SEQS, no_cats, SIDS, cfg, seed=1)}
    assert "persona" not in tasks  # a catalog without categories cannot describe a persona
    assert task_counts({"next_item": 1, "item_text": 1}, 5, {"next_item", "item_text"}) == {"next_item": 3,
                                                                                          "item_text": 2}


def test_trl_tokenization_matches_the_scoring_prompt(tiny_lm, tmp_path) -> None:
    """What SFTTrainer trains on is exactly what the likelihood scorer feeds the model."""
    path, examples = tiny_lm
    lm = load_model(path, SIDS.all_tokens())
    example = next(e for e in examples if e["task"] == "next_item")
    trainer = SFTTrainer(model=lm.model, processing_class=lm.tokenizer,
                         args=sft_args(OptimConfig(max_steps=1), tmp_path, 0, completion_only_loss=True),
                         train_dataset=HFDataset.from_list([{"prompt": example["prompt"],
                                                              "completion": example["completion"]}]))
    row = trainer.train_dataset[0]
    prompt = render_prompt(lm.tokenizer, example["prompt"])
    answer = encode_plain(lm.tokenizer, example["completion"][0]["content"] + "<|im_end|>\n")
    assert row["input_ids"] == prompt + answer
    assert row["labels"] == [-100] * len(prompt) + answer
    mine = weighted_example(lm.tokenizer, example["prompt"], example["completion"][0]["content"], 0.5, 1.0)
    assert mine["input_ids"] == row["input_ids"] and mine["labels"] == row["labels"]


def test_weighted_example_gives_reasoning_and_ranking_their_lambdas(tiny_lm) -> None:
    lm = load_model(tiny_lm[0], SIDS.all_tokens())
    prompt = next_item_prompt(SIDS, [1, 2])
    completion = f"<think>\nFilm 1 then Film 2\n</think>\n{SIDS.token_string(3)} > {SIDS.token_string(4)}"
    ex = weighted_example(lm.tokenizer, prompt, completion, lambda_r=0.25, lambda_o=1.0)
    toks = lm.tokenizer.convert_ids_to_tokens(ex["input_ids"])
    n_prompt = len(render_prompt(lm.tokenizer, prompt))
    assert ex["labels"][:n_prompt] == [-100] * n_prompt and set(ex[WEIGHTS][:n_prompt]) == {0.0}
    opened, close = toks.index("<think>"), toks.index("</think>")
    assert opened == n_prompt and ex[WEIGHTS][opened] == ex[WEIGHTS][close] == 1.0  # the format tags
    assert set(ex[WEIGHTS][opened + 1: close]) == {0.25}  # the reasoning
    assert set(ex[WEIGHTS][close + 1:]) == {1.0}  # the ranking and <|im_end|>
    assert toks[close + 2:close + 5] == SIDS.tokens(3)
    full = weighted_example(lm.tokenizer, prompt, completion, 0.25, 1.0, full_sequence=True, max_length=10)
    assert full["labels"] == full["input_ids"] and len(full["input_ids"]) == 10


def _weighted_trainer(path: Path, out: Path, lambda_r: float, steps: int = 3) -> WeightedSFTTrainer:
    lm = load_model(path, SIDS.all_tokens())
    prompt = next_item_prompt(SIDS, [1, 2, 3])
    rows = [weighted_example(lm.tokenizer, prompt, f"<think>\nwhy {i}\n</think>\n{SIDS.token_string(i)}",
                             lambda_r, 1.0) for i in range(4, 12)]
    args = sft_args(OptimConfig(max_steps=steps, batch_size=4, save_steps=2, logging_steps=1), out, seed=0,
                    max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
    return WeightedSFTTrainer(model=lm.model, args=args, train_dataset=HFDataset.from_list(rows),
                              processing_class=lm.tokenizer,
                              data_collator=WeightedCollator(pad_token_id=lm.tokenizer.pad_token_id))


def test_weighted_loss_is_the_weighted_token_nll(tiny_lm, tmp_path) -> None:
    trainer = _weighted_trainer(tiny_lm[0], tmp_path, lambda_r=0.2)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    weights = batch[WEIGHTS].clone()
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    nll = -torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1) * mask
    expected = (nll * weights[:, 1:]).sum() / mask.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert {round(w, 3) for w in weights[:, 1:][mask].tolist()} == {0.2, 1.0}
    plain = (nll.sum() / mask.sum()).item()
    assert loss.item() < plain  # down-weighting the reasoning tokens lowers the loss


def test_weighted_training_changes_params_is_seeded_and_resumes(tiny_lm, tmp_path) -> None:
    runs = []
    for name in ("a", "b"):
        trainer = _weighted_trainer(tiny_lm[0], tmp_path / name, lambda_r=0.3)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        after = trainer.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
        assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)
        runs.append(after)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])  # same seed, same weights
    assert (tmp_path / "a" / "checkpoint-2" / "model.safetensors").exists()
    resumed = _weighted_trainer(tiny_lm[0], tmp_path / "a", lambda_r=0.3, steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert resumed.state.global_step == 4
    assert len([e for e in resumed.state.log_history if "loss" in e]) == 4  # 3 restored + 1 new step


# -- the stages end to end, through the CLI, on ML-100K when ../shared has it (synthetic otherwise) ----------


@pytest.fixture(scope="module")
def train_run(prepared_run: GR2Config, tmp_path_factory: pytest.TempPathFactory) -> GR2Config:
    """A copy of the prepared run with a SID map, re-ranking samples and a materialized Feast store."""
    from gr2.features.store import apply_and_materialize
    from gr2.rerank.samples import build_samples

    root = tmp_path_factory.mktemp("train_run")
    shutil.copytree(RunPaths.of(prepared_run.run_dir).root / "data", root / "data")
    cfg = load_config("smoke", overrides=[f"run_dir={root}"])
    items = pd.read_parquet(RunPaths.of(root).raw / "items.parquet")
    _sid_map(items["item_id"].to_numpy()).save(RunPaths.of(root).sid / "sid_map.parquet")
    build_samples(cfg)
    apply_and_materialize(cfg)
    return cfg


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _metrics(cfg: GR2Config, stage: str) -> dict:
    return json.loads((RunPaths.of(cfg.run_dir).train / stage / "metrics.json").read_text())


@pytest.mark.slow
def test_midtrain_traces_reasoning_and_table(train_run: GR2Config, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = ["--profile", "smoke", "--run-dir", train_run.run_dir]
    paths = RunPaths.of(train_run.run_dir)

    code, out = _cli("train", "midtrain", *run)
    assert code == 0, out
    m = _metrics(train_run, "midtrain")
    assert m["config"]["train"]["midtrain"]["optim"]["max_steps"] == 30 and m["data_hash"]
    mm = m["metrics"]
    assert mm["steps"] == 30 and np.isfinite(mm["final_loss"]) and mm["final_loss"] < mm["loss_curve"][0]["loss"]
    assert set(mm["examples_per_task"]) == {"next_item", "sid_to_text", "text_to_sid", "persona", "item_text"}
    for when in ("validation_before", "validation_after"):
        assert 0 <= mm[when]["next_item"]["recall@10"] <= 1
        assert 0 < mm[when]["next_item"]["positions"] <= train_run.train.midtrain.eval_users
        assert "R@1" in mm[when]["rerank_likelihood"]
    base = load_file(paths.train / "base" / "model.safetensors")
    trained = load_file(paths.train / "midtrain" / "model" / "model.safetensors")
    shared = [k for k in base if k in trained and base[k].shape == trained[k].shape]
    assert shared and any(not torch.equal(base[k], trained[k]) for k in shared)
    assert list((paths.train / "midtrain" / "checkpoints").glob("checkpoint-*"))
    assert "| next-item Recall@10" in (paths.train / "midtrain" / "summary.md").read_text()

    code, out = _cli("train", "midtrain", *run, "--set", "train.midtrain.optim.max_steps=33",
                     "--set", "train.midtrain.eval_users=3", "--set", "train.midtrain.eval_titles=3")
    assert code == 0, out
    assert _metrics(train_run, "midtrain")["metrics"]["steps"] == 33  # resumed from checkpoint-30

    code, out = _cli("train", "traces", *run)
    assert code == 0, out
    t = _metrics(train_run, "traces")["metrics"]
    n_train = len(pd.read_parquet(paths.samples / "train.parquet"))
    assert t["samples"] == min(60, n_train) and t["feature_source"] == "feast (point-in-time item_stats)"
    assert 0 < t["acceptance_rate"] <= 1 and t["accepted"] >= t["acceptance_rate"] * t["samples"]
    traces = pd.read_parquet(paths.train / "traces" / "traces.parquet")
    accepted = traces[traces["accepted"]]
    assert (accepted["ranking"].map(lambda r: r[0]) == accepted["target"]).all()
    assert accepted["text"].str.startswith("<think>").all()

    code, out = _cli("train", "reasoning", *run)
    assert code == 0, out
    r = _metrics(train_run, "reasoning")["metrics"]
    assert r["steps"] == train_run.train.reasoning.optim.max_steps and np.isfinite(r["final_loss"])
    assert set(r["weighted_tokens"]) == {"0.3", "1"} and r["examples_per_kind"]["mid"] > 0
    assert {"likelihood", "generated"} <= set(r["validation"])
    lm = load_model(paths.train / "reasoning" / "model", SIDMap.load(paths.sid).all_tokens())
    assert lm.added_tokens == 0  # the SID tokens were saved with the model

    results = tmp_path_factory.mktemp("results")
    code, out = _cli("eval", "stages", *run, "--results", str(results))
    assert code == 0, out
    table = json.loads((paths.eval / "train_stages.json").read_text())["metrics"]["rows"]
    methods = {(row["stage"], row["method"]) for row in table}
    assert ("reasoning", "decoded (reasoning)") in methods
    decoded = next(r for r in table if r["method"] == "decoded (reasoning)")
    assert decoded["invalid_rate"] == 0.0 and decoded["strict R@1"] == decoded["R@1"]  # constrained decoding
    assert decoded["generated_tokens"] > 0 and decoded["prompt_tokens"] > 0 and decoded["ms_per_request"] > 0
    assert ("midtrain", "likelihood, next-item prompt") in methods
    incoming = table[0]
    assert incoming["stage"] == "incoming" and incoming["identity_rate"] == 1.0
    n_test = len(pd.read_parquet(paths.samples / "test.parquet"))
    assert incoming["samples"] == min(train_run.train.eval.max_samples, n_test)
    assert (paths.train / "stages.md").read_text() == (paths.eval / "train_stages.md").read_text()
    assert (paths.eval / "train_stages.png").read_bytes().startswith(b"\x89PNG")
    compact = json.loads((results / "stages.json").read_text())
    assert compact["split"] == "test" and compact["n"] == incoming["samples"]
    assert sum(r["serving"] for r in compact["rows"]) == 1
    serving = next(r for r in compact["rows"] if r["serving"])
    assert serving["stage"] == "reasoning" and serving["method"] == "likelihood, re-ranking prompt"
    lo, hi = serving["R@1_lift_ci"]
    assert lo <= serving["R@1_lift"] <= hi and serving["R@1_ci"][0] <= serving["R@1"] <= serving["R@1_ci"][1]
    assert [r["stage"] for r in compact["rows"]].count("incoming") == 1


@pytest.mark.slow
def test_sequence_epochs_with_item_tokens(train_run: GR2Config, tmp_path, monkeypatch) -> None:
    """Sliding-window epochs decide the length of the stage; item tokens name every item with one token, and
    the model folder keeps the map (with its mode) that serving loads. (Ten users' sequences, to keep it short.)"""
    from gr2.sid.sidmap import SIDMap
    from gr2.train import midtrain
    from gr2.train.midtrain import run_midtrain
    from gr2.train.tasks import sequence_examples

    every_user = midtrain.learnable_sequences
    monkeypatch.setattr(midtrain, "learnable_sequences",
                        lambda protocol: dict(list(every_user(protocol).items())[:10]))

    cfg = load_config("smoke", overrides=[f"run_dir={train_run.run_dir}", "train.model.item_tokens=item",
                                          "train.midtrain.sequence_epochs=2", "train.midtrain.sequence_window=8",
                                          "train.midtrain.sequence_stride=8", "train.midtrain.num_examples=40",
                                          "train.midtrain.eval_users=5", "train.midtrain.eval_titles=5"])
    art = run_midtrain(cfg, out_dir=tmp_path / "midtrain")
    m = json.loads(art.metrics.read_text())["metrics"]
    windows = m["examples_per_task"]["sequence"]
    assert windows > 0 and m["examples"] == windows + 40
    assert m["steps"] == -(-m["examples"] // cfg.train.midtrain.optim.batch_size)  # one pass, not max_steps
    saved = SIDMap.load(art.model / "sid_map.parquet")
    assert saved.item_tokens == "item" and saved.tokens(saved.item_ids[0]) == [f"<i_{saved.item_ids[0]}>"]
    from gr2.models.factory import load_model

    lm = load_model(art.model, saved.all_tokens())
    assert lm.added_tokens == 0 and len(lm.tokenizer.tokenize(saved.token_string(saved.item_ids[3]))) == 1
    inputs_map = SIDMap.load(RunPaths.of(cfg.run_dir).sid).with_item_tokens("item")
    first = sequence_examples({1: inputs_map.item_ids[:20]}, _catalog(cfg, inputs_map), inputs_map,
                              cfg.train.midtrain.model_copy(update={"sequence_stride": 4}), seed=0)
    assert len(first) == 2 * 4  # 2 epochs x windows of 8 every 4 over 20 items (the last ends at item 20)


def _catalog(cfg: GR2Config, sid_map):
    from gr2.train.inputs import StageInputs
    from gr2.train.tasks import Catalog

    return Catalog.build(StageInputs.of_run(cfg.run_dir).load_dataset().items, sid_map)


def test_cli_reports_missing_inputs_in_one_line(tmp_path) -> None:
    code, out = _cli("train", "midtrain", "--profile", "smoke", "--run-dir", str(tmp_path))
    assert code == 1 and "run `gr2 sid train` first" in out and "Traceback" not in out
    code, out = _cli("train", "reasoning", "--profile", "smoke", "--run-dir", str(tmp_path))
    assert code == 1 and "run `gr2 train traces` first" in out
    code, out = _cli("train", "midtrain", "--profile", "smoke", "--set", "train.reasoning.lambda_r=2")
    assert code == 2 and "lambda_r" in out


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path) -> None:
    from gr2.config import load_config
    from gr2.train.sft import resume_checkpoint, stage_fingerprint

    cfg = load_config("smoke")
    same = stage_fingerprint(cfg.model_copy(update={"seed": cfg.seed}), "midtrain")
    longer = load_config("smoke", overrides=["train.midtrain.optim.max_steps=99"])
    other = load_config("smoke", overrides=["train.midtrain.optim.learning_rate=0.5"])
    assert stage_fingerprint(longer, "midtrain") == same  # training longer resumes
    assert stage_fingerprint(other, "midtrain") != same  # another learning rate does not
    out = tmp_path / "checkpoints"
    assert resume_checkpoint(out, True, same) is None
    (out / "checkpoint-5").mkdir()
    (out / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert resume_checkpoint(out, True, same).endswith("checkpoint-5")
    assert resume_checkpoint(out, True, stage_fingerprint(other, "midtrain")) is None
    assert not (out / "checkpoint-5").exists()  # removed, not resumed
