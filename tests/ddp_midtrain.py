"""Launched by tests/test_distributed.py under ``torchrun``: the mid-training stage as it is, with DDP.

The only addition is a trainer subclass that records a hash of every (unpadded) sequence this rank
trains on, written to ``<run_dir>/seen_rank<R>.json`` so the test can compare what the ranks saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

import gr2.train.midtrain as midtrain
from gr2.config import load_config


def _digest(ids) -> str:
    return hashlib.sha1(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()


class RecordingSFTTrainer(midtrain.SFTTrainer):
    seen: list[str] = []  # noqa: RUF012 (one trainer per process)
    dataset: list[str] = []  # noqa: RUF012

    def compute_loss(self, model, inputs, *args, **kwargs):
        mask = inputs.get("attention_mask")
        for i, row in enumerate(inputs["input_ids"]):
            ids = row[mask[i].bool()] if mask is not None else row
            RecordingSFTTrainer.seen.append(_digest(ids.cpu().numpy()))
        return super().compute_loss(model, inputs, *args, **kwargs)

    def train(self, *args, **kwargs):
        RecordingSFTTrainer.dataset = [_digest(ids) for ids in self.train_dataset["input_ids"]]
        return super().train(*args, **kwargs)


def main() -> None:
    run_dir = sys.argv[1]
    cfg = load_config("smoke", overrides=[f"run_dir={run_dir}", *sys.argv[2:]])
    midtrain.SFTTrainer = RecordingSFTTrainer
    midtrain.run_midtrain(cfg)
    rank = int(os.environ["RANK"])
    Path(run_dir, f"seen_rank{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "world_size": int(os.environ["WORLD_SIZE"]),
                "backend": _backend(),
                "rows": RecordingSFTTrainer.seen,
                "dataset": RecordingSFTTrainer.dataset,
            }
        )
    )


def _backend() -> str:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else "none"


if __name__ == "__main__":
    main()
