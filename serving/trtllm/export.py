"""``gr2 export trtllm``: TensorRT-LLM checkpoint, Triton repository for the TensorRT-LLM backend, build command.

Output layout::

    OUT/checkpoint/config.json, rank0.safetensors   TensorRT-LLM unified checkpoint (serving/trtllm/checkpoint.py)
    OUT/tokenizer/                                  tokenizer (SID tokens included), items, SID map, manifest
    OUT/trtllm-build.sh                             the trtllm-build command line (engine -> OUT/engine)
    OUT/triton_repo/preprocessing/                  Python: contract tensors -> prompt token ids
    OUT/triton_repo/tensorrt_llm/                   backend "tensorrtllm", inflight fused batching
    OUT/triton_repo/postprocessing/                 Python: generated tokens -> ranking, scores, fallback
    OUT/triton_repo/gr2-reranker/                   the ensemble: the KServe contract's tensors end to end

Modelled on TensorRT-LLM's ``triton_backend/all_models/inflight_batcher_llm``; the ensemble is named after
the contract's model (Triton requires folder name = model name), so a client calls ``gr2-reranker`` on
either backend. The ensemble and the Python steps keep the contract's full shapes (``max_batch_size: 0``,
``user_id [B]`` has no room for Triton's batch dimension); batching happens where it pays, in the
``tensorrt_llm`` model's in-flight batcher.
"""

from __future__ import annotations

import math
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gr2.contract import DIAGNOSTIC_OUTPUTS, INPUTS, MODEL_NAME, OPTIONAL_INPUTS, OUTPUTS
from gr2.models.bundle import MANIFEST, read_manifest
from serving.triton.export import ExportError, gr2_source
from serving.trtllm.checkpoint import write_checkpoint

HERE = Path(__file__).parent
_TYPE = {"BYTES": "TYPE_STRING", "STRING": "TYPE_STRING"}


@dataclass(frozen=True)
class TrtllmExportConfig:
    """Settings of ``gr2 export trtllm``."""

    # Parameters that control the checkpoint and the engine build
    dtype: str = "auto"  # auto = the checkpoint's dtype; float16/bfloat16 for GPU serving
    max_batch_size: int = 64  # requests the in-flight batcher schedules together
    input_margin: float = 1.25  # max_input_len = longest prompt of this catalog x margin, rounded up to 128
    # Parameters that control the Triton repository
    model_name: str = MODEL_NAME  # the ensemble, called by clients
    max_candidates: int = 50  # longest candidate row accepted (items)
    kv_cache_free_gpu_mem_fraction: float = 0.9  # GPU memory left after weights that the KV cache may take
    max_queue_delay_microseconds: int = 1000  # in-flight batcher queue delay
    engine_dir: str = ""  # where trtllm-build writes the engine; empty = OUT/engine


@dataclass
class TrtllmExport:
    """What ``export_trtllm`` wrote."""

    root: Path
    checkpoint: Path
    tokenizer: Path
    repository: Path
    build_command: list[str]
    max_input_len: int
    max_seq_len: int
    config: dict = field(default_factory=dict)


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False, reshape: bool = False) -> str:
    lines = [f'    name: "{name}"', f"    data_type: {_TYPE.get(dtype, 'TYPE_' + dtype)}",
             f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
    lines += ["    reshape: { shape: [ ] }"] if reshape else []
    lines += ["    optional: true"] if optional else []
    return "  {\n" + "\n".join(lines) + "\n  }"


def _block(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(f'parameters: {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}\n' for k, v in values.items())


CONTRACT_IN = [_tensor(n, t, d, n in OPTIONAL_INPUTS) for n, (t, d) in INPUTS.items()]
CONTRACT_OUT = [_tensor(n, t, d) for n, (t, d) in {**OUTPUTS, **DIAGNOSTIC_OUTPUTS}.items()]
# The engine inputs as preprocessing emits them, full shapes [B, ...]
ENGINE_FEED = {"INPUT_ID": [-1, -1], "REQUEST_INPUT_LEN": [-1, 1], "REQUEST_OUTPUT_LEN": [-1, 1],
               "OUT_END_ID": [-1, 1], "OUT_PAD_ID": [-1, 1]}


def preprocessing_pbtxt(params: dict[str, str]) -> str:
    outputs = [_tensor(n, "INT32", d) for n, d in ENGINE_FEED.items()]
    return ('name: "preprocessing"\nbackend: "python"\nmax_batch_size: 0\n' + _block("input", CONTRACT_IN)
            + _block("output", outputs) + _parameters(params)
            + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n")


def postprocessing_pbtxt(params: dict[str, str]) -> str:
    inputs = [_tensor("candidates", "INT64", [-1, -1]), _tensor("TOKENS_BATCH", "INT32", [-1, -1, -1]),
              _tensor("SEQUENCE_LENGTH", "INT32", [-1, -1])]
    return ('name: "postprocessing"\nbackend: "python"\nmax_batch_size: 0\n' + _block("input", inputs)
            + _block("output", CONTRACT_OUT) + _parameters(params)
            + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n")


def tensorrt_llm_pbtxt(cfg: TrtllmExportConfig, engine_dir: str) -> str:
    """The ``tensorrt_llm`` model: TensorRT-LLM's backend with in-flight fused batching, greedy decoding."""
    scalar = {"input_lengths": "INT32", "request_output_len": "INT32", "end_id": "INT32", "pad_id": "INT32",
              "beam_width": "INT32", "runtime_top_k": "INT32", "temperature": "FP32", "seed": "UINT64",
              "return_log_probs": "BOOL", "exclude_input_in_output": "BOOL", "streaming": "BOOL"}
    required = {"input_lengths", "request_output_len"}
    inputs = [_tensor("input_ids", "INT32", [-1]).replace("  }", "    allow_ragged_batch: true\n  }")]
    inputs += [_tensor(n, t, [1], optional=n not in required, reshape=True) for n, t in scalar.items()]
    outputs = [_tensor("output_ids", "INT32", [-1, -1]), _tensor("sequence_length", "INT32", [-1]),
               _tensor("cum_log_probs", "FP32", [-1]), _tensor("output_log_probs", "FP32", [-1, -1])]
    params = {"max_beam_width": "1", "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
              "gpt_model_type": "inflight_fused_batching", "gpt_model_path": engine_dir,
              "batch_scheduler_policy": "guaranteed_no_evict",
              "kv_cache_free_gpu_mem_fraction": str(cfg.kv_cache_free_gpu_mem_fraction),
              "enable_kv_cache_reuse": "true",  # the system prompt is shared by every request
              "exclude_input_in_output": "true", "decoding_mode": "top_k"}
    return ('name: "tensorrt_llm"\nbackend: "tensorrtllm"\n'
            f"max_batch_size: {cfg.max_batch_size}\n"
            "model_transaction_policy {\n  decoupled: false\n}\n"
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {cfg.max_batch_size} ]\n"
            f"  max_queue_delay_microseconds: {cfg.max_queue_delay_microseconds}\n}}\n"
            + _block("input", inputs) + _block("output", outputs)
            + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n" + _parameters(params))


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'      input_map {{\n        key: "{k}"\n        value: "{v}"\n      }}' for k, v in inputs.items()]
    maps += [f'      output_map {{\n        key: "{k}"\n        value: "{v}"\n      }}' for k, v in outputs.items()]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"


def ensemble_pbtxt(cfg: TrtllmExportConfig) -> str:
    """The client-facing ensemble: contract inputs -> preprocessing -> tensorrt_llm -> postprocessing."""
    pre = _step("preprocessing", {n: n for n in INPUTS}, {n: f"_{n}" for n in ENGINE_FEED})
    engine = _step("tensorrt_llm", {"input_ids": "_INPUT_ID", "input_lengths": "_REQUEST_INPUT_LEN",
                                    "request_output_len": "_REQUEST_OUTPUT_LEN", "end_id": "_OUT_END_ID",
                                    "pad_id": "_OUT_PAD_ID"},
                   {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"})
    post = _step("postprocessing", {"candidates": "candidates", "TOKENS_BATCH": "_TOKENS_BATCH",
                                    "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
                 {n: n for n in {**OUTPUTS, **DIAGNOSTIC_OUTPUTS}})
    return (f'name: "{cfg.model_name}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _block("input", CONTRACT_IN) + _block("output", CONTRACT_OUT)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join([pre, engine, post]) + "\n  ]\n}\n")


def build_command(checkpoint: Path, engine_dir: str, dtype: str, max_batch_size: int, max_input_len: int,
                  max_seq_len: int) -> list[str]:
    """The ``trtllm-build`` command line for this checkpoint (run on the GPU node)."""
    return ["trtllm-build", "--checkpoint_dir", str(checkpoint), "--output_dir", engine_dir,
            "--gemm_plugin", dtype, "--gpt_attention_plugin", dtype, "--kv_cache_type", "paged",
            "--remove_input_padding", "enable", "--max_batch_size", str(max_batch_size),
            "--max_input_len", str(max_input_len), "--max_seq_len", str(max_seq_len),
            "--max_num_tokens", str(max(8192, max_input_len))]  # tokens per scheduler step (8192 = its default)


def _longest_prompt(tokenizer_dir: Path) -> tuple[int, int]:
    """(prompt tokens, answer tokens) of the longest request this catalog makes: longest titles everywhere."""
    from serving.trtllm.pipeline import RerankText

    text = RerankText.from_dir(tokenizer_dir)
    items = text.catalog.items
    by_length = items.index[items["title"].astype(str).str.len().argsort()[::-1]].tolist()
    k, h = text.manifest.num_candidates, text.manifest.history_length
    plan = text.plan(by_length[:k], by_length[k:k + h])
    return len(plan.prompt), plan.max_new_tokens


def export_trtllm(bundle: str | Path, out: str | Path, cfg: TrtllmExportConfig | None = None) -> TrtllmExport:
    """Convert ``bundle`` and write the checkpoint, tokenizer, Triton repository and build command under ``out``."""
    from gr2.models.factory import load_model
    from gr2.sid.sidmap import SIDMap

    cfg = cfg or TrtllmExportConfig()
    if cfg.max_batch_size < 1 or cfg.max_candidates < 1 or cfg.input_margin < 1:
        raise ExportError("max_batch_size and max_candidates must be >= 1, input_margin >= 1")
    bundle, root = Path(bundle).resolve(), Path(out).resolve()
    manifest = read_manifest(bundle)  # BundleError names what is missing
    lm = load_model(bundle, SIDMap.load(bundle / "sid_map.parquet").all_tokens())  # as Reranker.from_bundle
    root.mkdir(parents=True, exist_ok=True)
    config = write_checkpoint(lm.model, root / "checkpoint", cfg.dtype)

    tokenizer_dir = root / "tokenizer"
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    lm.tokenizer.save_pretrained(tokenizer_dir)
    for name in ("items.parquet", "sid_map.parquet", MANIFEST):
        shutil.copy2(bundle / name, tokenizer_dir / name)
    (tokenizer_dir / "config.json").write_text((bundle / "config.json").read_text())  # read_manifest checks it

    prompt_len, answer_len = _longest_prompt(tokenizer_dir)
    max_input_len = 128 * math.ceil(prompt_len * cfg.input_margin / 128)
    max_seq_len = max_input_len + 32 * math.ceil(answer_len * cfg.input_margin / 32)
    engine_dir = cfg.engine_dir or str(root / "engine")
    command = build_command(root / "checkpoint", engine_dir, config["dtype"], cfg.max_batch_size, max_input_len,
                            max_seq_len)
    script = root / "trtllm-build.sh"
    script.write_text("#!/usr/bin/env bash\n# Build the TensorRT-LLM engine of "
                      f"{manifest.model_name} {manifest.model_version} (on a GPU node with tensorrt_llm installed)\n"
                      "set -euo pipefail\n" + shlex.join(command) + "\n")
    script.chmod(0o755)

    repo = root / "triton_repo"
    shutil.rmtree(repo, ignore_errors=True)
    text_params = {"tokenizer_dir": str(tokenizer_dir), "gr2_source": str(gr2_source(root / "gr2_src")),
                   "max_candidates": str(cfg.max_candidates)}
    files = {
        "preprocessing": (preprocessing_pbtxt(text_params), HERE / "preprocessing_model.py"),
        "tensorrt_llm": (tensorrt_llm_pbtxt(cfg, engine_dir), None),
        "postprocessing": (postprocessing_pbtxt(text_params), HERE / "postprocessing_model.py"),
        cfg.model_name: (ensemble_pbtxt(cfg), None),
    }
    for name, (pbtxt, model_py) in files.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(pbtxt)
        if model_py is not None:
            shutil.copy2(model_py, repo / name / "1" / "model.py")
    return TrtllmExport(root, root / "checkpoint", tokenizer_dir, repo, command, max_input_len, max_seq_len, config)
