"""Training throughput: the mid-training stage (TRL ``SFTTrainer``) against a bare PyTorch loop.

Both train the same model (the profile's offline Qwen3 with the SID tokens, same initial weights) on the
same tokenized mid-training sequences, in batches built by the same collator, with AdamW at the same
learning rate. Both run at the same time, one torch thread each, in their own processes (so peak RSS is
their own and a shared machine's load weighs on both alike); tokens/s counts non-padding tokens of the
timed steps (the first ``--warmup`` steps are not timed). Prints a table and writes JSON.

    python benchmarks/train_bench.py --run-dir R [--profile default] [--steps 40] [--warmup 5]

``R`` needs ``gr2 data split`` and ``gr2 sid train`` (the model's SID tokens come from its SID map).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _prepare(cfg: Any, workdir: Path) -> tuple[Any, Any]:
    """A fresh model from the profile's base checkpoint and TRL's tokenized dataset + collator."""
    import torch
    from datasets import Dataset as HFDataset
    from trl import SFTTrainer

    from gr2.models.factory import load_model
    from gr2.train.corpus import corpus_texts
    from gr2.train.inputs import StageInputs, learnable_sequences
    from gr2.train.midtrain import prepare_base_model
    from gr2.train.sft import sft_args
    from gr2.train.tasks import Catalog, build_examples

    torch.manual_seed(cfg.seed)
    inputs = StageInputs.of_run(cfg.run_dir)
    sid_map, data = inputs.load_sid_map(), inputs.load_dataset()
    catalog = Catalog.build(data.items, sid_map)
    mc = cfg.train.midtrain
    examples = build_examples(learnable_sequences(inputs.load_protocol(cfg)), catalog, sid_map, mc, cfg.seed)
    base = prepare_base_model(cfg, corpus_texts(cfg, examples, catalog, inputs), workdir / "base")
    lm = load_model(base, sid_map.all_tokens(), seed=cfg.seed)
    dataset = HFDataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return lm, (dataset, sft_args, SFTTrainer)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl(cfg: Any, steps: int, warmup: int, workdir: Path) -> dict[str, Any]:
    """The stage's own trainer; a callback times steps after the warm-up."""
    from transformers import TrainerCallback

    lm, (dataset, sft_args, sft_trainer) = _prepare(cfg, workdir)
    mc = cfg.train.midtrain
    optim = mc.optim.model_copy(update={"max_steps": steps, "save_steps": 10**9, "logging_steps": 10**9})
    args = sft_args(optim, workdir / "trl", cfg.seed, completion_only_loss=mc.completion_only_loss,
                    include_num_input_tokens_seen="non_padding", save_strategy="no", disable_tqdm=True)

    class Clock(TrainerCallback):
        start = tokens = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                Clock.start, Clock.tokens = time.perf_counter(), float(state.num_input_tokens_seen)

    trainer = sft_trainer(model=lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer,
                          callbacks=[Clock()])
    trainer.train()
    seconds = time.perf_counter() - Clock.start
    tokens = float(trainer.state.num_input_tokens_seen) - Clock.tokens
    return {"steps_timed": steps - warmup, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": float(trainer.state.log_history[-1].get("train_loss", float("nan"))),
            "peak_rss_mib": _peak_rss_mib()}


def run_bare(cfg: Any, steps: int, warmup: int, workdir: Path) -> dict[str, Any]:
    """nanoGPT's loop on TRL's tokenized dataset and collator: forward, backward, AdamW step."""
    import torch
    from torch.utils.data import DataLoader

    lm, (dataset, sft_args, sft_trainer) = _prepare(cfg, workdir)
    mc = cfg.train.midtrain
    args = sft_args(mc.optim, workdir / "bare", cfg.seed, completion_only_loss=mc.completion_only_loss)
    # build the trainer only for its tokenized dataset and collator (the same ones the stage uses)
    tokenized = sft_trainer(model=lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer)
    loader = DataLoader(tokenized.train_dataset.remove_columns(
        [c for c in tokenized.train_dataset.column_names if c not in ("input_ids", "completion_mask")]),
        batch_size=mc.optim.batch_size, shuffle=True, collate_fn=tokenized.data_collator,
        generator=torch.Generator().manual_seed(cfg.seed))
    model = lm.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=mc.optim.learning_rate, weight_decay=mc.optim.weight_decay)
    step, tokens, start, loss = 0, 0.0, 0.0, torch.tensor(float("nan"))
    while step < steps:
        for batch in loader:
            if step == warmup:
                start, tokens = time.perf_counter(), 0.0
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            loss = out.loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= warmup:
                tokens += float(batch["attention_mask"].sum())
            step += 1
            if step == steps:
                break
    seconds = time.perf_counter() - start
    return {"steps_timed": steps - warmup, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": float(loss), "peak_rss_mib": _peak_rss_mib()}


def _child(mode: str, argv: argparse.Namespace) -> None:
    import torch

    from gr2.config import load_config

    cfg = load_config(argv.profile, overrides=[f"run_dir={argv.run_dir}", "train.threads=1"])
    torch.set_num_threads(1)
    workdir = Path(argv.work_dir) / mode
    workdir.mkdir(parents=True, exist_ok=True)
    result = (run_trl if mode == "trl" else run_bare)(cfg, argv.steps, argv.warmup, workdir)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="run with a split and a SID map")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--work-dir", default="/tmp/gr2_train_bench")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_bench.json"))
    parser.add_argument("--child", choices=["trl", "bare"], help=argparse.SUPPRESS)
    argv = parser.parse_args()
    if argv.child:
        _child(argv.child, argv)
        return
    # side by side: both loops run at the same time, one thread each, in their own processes, so that the
    # load of a shared machine weighs on both alike (run one after the other, a load change skews the ratio)
    procs = {mode: subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--child", mode],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode in ("bare", "trl")}
    results = {}
    for mode, proc in procs.items():
        stdout, stderr = proc.communicate()
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{mode} run failed:\n{stderr[-3000:]}")
        results[mode] = json.loads(line.removeprefix("RESULT "))
    ratio = results["trl"]["tokens_per_s"] / results["bare"]["tokens_per_s"]
    record = {"profile": argv.profile, "steps": argv.steps, "warmup": argv.warmup, "threads_per_loop": 1,
              "results": results,
              "trl_over_bare": ratio, "goal": 0.75, "machine": platform.platform(),
              "python": platform.python_version()}
    Path(argv.out).parent.mkdir(parents=True, exist_ok=True)
    Path(argv.out).write_text(json.dumps(record, indent=2) + "\n")
    print("| loop | timed steps | tokens | seconds | tokens/s | peak RSS (MiB) | final loss |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['steps_timed']} | {r['tokens']:.0f} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} "
              f"| {r['peak_rss_mib']:.0f} | {r['final_loss']:.3f} |")
    print(f"\nTRL SFTTrainer / bare loop: {ratio:.2f} (goal >= 0.75); wrote {argv.out}")


if __name__ == "__main__":
    main()
