"""`gr2 export trtllm`: checkpoint weight mapping, Triton configs for the TensorRT-LLM backend, pre/post steps.

No GPU here: the engine itself is not built. What is tested is everything around it: the unified checkpoint
round-trips to the exact HF tensors, every config.pbtxt parses as Triton's ModelConfig and the ensemble's
wiring is consistent, and the preprocessing/postprocessing Python models run in a real tritonserver with the
model's own greedy continuation (transformers) standing in for the engine's.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from google.protobuf import text_format
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config
from tritonclient.grpc import model_config_pb2

from gr2.contract import DIAGNOSTIC_OUTPUTS, INPUTS, MODEL_NAME, OPTIONAL_INPUTS, OUTPUTS
from gr2.models.bundle import read_manifest
from gr2.models.factory import load_model
from gr2.models.scoring import render_prompt
from gr2.rerank.format import build_messages
from gr2.sid.sidmap import SIDMap
from serving.triton.codec import pad_histories
from serving.triton.runtime import SYSTEM_PYTHON
from serving.trtllm.checkpoint import (
    CheckpointError,
    hf_to_trtllm,
    trtllm_config,
    trtllm_to_hf,
    write_checkpoint,
)
from serving.trtllm.export import TrtllmExport, TrtllmExportConfig, export_trtllm
from serving.trtllm.pipeline import RerankText

REPO_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", MODEL_NAME)


@pytest.fixture(scope="module")
def serving_bundle(serving_run) -> Path:
    """The smoke serving bundle shared with the KServe tests (conftest ``serving_run``)."""
    return serving_run.bundle


@pytest.fixture(scope="module")
def exported(serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> TrtllmExport:
    return export_trtllm(serving_bundle, tmp_path_factory.mktemp("trtllm") / "out")


@pytest.fixture(scope="module")
def served_lm(serving_bundle: Path):
    """The model as every gr2 server loads it (SID tokens added as in Reranker.from_bundle)."""
    return load_model(serving_bundle, SIDMap.load(serving_bundle / "sid_map.parquet").all_tokens())


def _configs(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    return {name: text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
            for name in REPO_MODELS}


# -- the checkpoint --------------------------------------------------------------------------------------------


def test_checkpoint_round_trips_to_the_exact_hf_tensors(exported: TrtllmExport, served_lm) -> None:
    config = json.loads((exported.checkpoint / "config.json").read_text())
    weights = load_file(exported.checkpoint / "rank0.safetensors")
    assert sorted(p.name for p in exported.checkpoint.iterdir()) == ["config.json", "rank0.safetensors"]
    assert config["architecture"] == "Qwen3ForCausalLM" and config["qwen_type"] == "qwen3"
    assert config["vocab_size"] == len(served_lm.tokenizer) == weights["lm_head.weight"].shape[0]
    assert "transformer.layers.0.attention.q_layernorm.weight" in weights
    assert not any(".bias" in name for name in weights)  # Qwen3 has no attention bias
    state = served_lm.model.state_dict()
    rebuilt = trtllm_to_hf(weights, config)
    assert set(rebuilt) == set(state)
    for name, tensor in state.items():
        assert torch.equal(rebuilt[name], tensor), name
    # the rebuilt weights are a working model: same logits as the served one
    fresh = AutoModelForCausalLM.from_config(served_lm.model.config, dtype=torch.float32).eval()
    fresh.load_state_dict(rebuilt)
    ids = torch.tensor([served_lm.tokenizer("Rank all 10 candidates.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, served_lm.model.eval()(ids).logits)


@pytest.mark.parametrize("config_cls, tied", [(Qwen2Config, False), (Qwen3Config, True)])
def test_mapping_is_exact_for_both_qwen_families_and_dtypes(config_cls, tied, tmp_path: Path) -> None:
    extra = {"head_dim": 24} if config_cls is Qwen3Config else {}  # head_dim * heads != hidden_size
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_cls(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96, num_hidden_layers=2,
        vocab_size=128, tie_word_embeddings=tied, **extra))
    config = write_checkpoint(model, tmp_path / "fp32")
    weights = load_file(tmp_path / "fp32" / "rank0.safetensors")
    q, kv = 4 * config["head_size"], 2 * config["head_size"]
    assert weights["transformer.layers.1.attention.qkv.weight"].shape == (q + 2 * kv, 64)
    assert config["attn_bias"] == (config_cls is Qwen2Config)
    assert ("transformer.layers.0.attention.qkv.bias" in weights) == (config_cls is Qwen2Config)
    # GatedMLP naming: TensorRT-LLM's `gate` is HF's up_proj, its `fc` is HF's gate_proj
    assert torch.equal(weights["transformer.layers.0.mlp.gate.weight"], model.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(weights["transformer.layers.0.mlp.fc.weight"], model.model.layers[0].mlp.gate_proj.weight)
    state = model.state_dict()
    rebuilt = trtllm_to_hf(weights, config)
    assert set(rebuilt) == set(state) and all(torch.equal(rebuilt[k], v) for k, v in state.items())
    half = trtllm_to_hf(hf_to_trtllm(state, trtllm_config(model.config, "bfloat16")), config)
    assert all(torch.equal(half[k], v.to(torch.bfloat16)) for k, v in state.items())


def test_unsupported_models_are_refused_by_name() -> None:
    llama = LlamaConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64)
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        trtllm_config(llama)
    with pytest.raises(CheckpointError, match="dtype must be"):
        trtllm_config(Qwen2Config(), "int3")


# -- the Triton repository for the TensorRT-LLM backend ------------------------------------------------------


def test_every_config_parses_and_the_ensemble_is_wired(exported: TrtllmExport) -> None:
    configs = _configs(exported.repository)
    assert {p.name for p in exported.repository.iterdir()} == set(REPO_MODELS)
    assert all((exported.repository / name / "1").is_dir() for name in REPO_MODELS)
    engine = configs["tensorrt_llm"]
    assert engine.backend == "tensorrtllm" and engine.max_batch_size == 64
    assert engine.parameters["gpt_model_type"].string_value == "inflight_fused_batching"
    assert engine.parameters["gpt_model_path"].string_value == str(exported.root / "engine")
    assert configs["preprocessing"].backend == configs["postprocessing"].backend == "python"
    assert Path(configs["preprocessing"].parameters["tokenizer_dir"].string_value) == exported.tokenizer

    ensemble = configs[MODEL_NAME]
    assert ensemble.platform == "ensemble"
    dtype = {v: k.removeprefix("TYPE_") for k, v in model_config_pb2.DataType.items()}
    got_in = {t.name: (dtype[t.data_type], list(t.dims), t.optional) for t in ensemble.input}
    assert got_in == {n: (t, d, n in OPTIONAL_INPUTS) for n, (t, d) in INPUTS.items()}
    expected_out = {n: ("STRING" if t == "BYTES" else t, d) for n, (t, d) in {**OUTPUTS, **DIAGNOSTIC_OUTPUTS}.items()}
    assert {t.name: (dtype[t.data_type], list(t.dims)) for t in ensemble.output} == expected_out

    available = {t.name for t in ensemble.input}  # tensors produced so far, step by step
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        model_inputs = {t.name: t for t in model.input}
        assert set(step.input_map) <= set(model_inputs), step.model_name
        assert set(step.input_map.values()) <= available, step.model_name
        missing = {n for n, t in model_inputs.items() if not t.optional} - set(step.input_map)
        assert not missing, f"{step.model_name} gets no {missing}"
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name
        available |= set(step.output_map.values())
    assert set(expected_out) <= available


def test_build_command_is_written_and_sized_from_the_catalog(exported: TrtllmExport) -> None:
    script = (exported.root / "trtllm-build.sh").read_text()
    assert " ".join(exported.build_command) in script
    cmd = exported.build_command
    flag = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1, 2)}
    assert cmd[0] == "trtllm-build" and flag["--checkpoint_dir"] == str(exported.checkpoint)
    assert int(flag["--max_input_len"]) == exported.max_input_len and exported.max_input_len % 128 == 0
    assert exported.max_seq_len > exported.max_input_len
    text = RerankText.from_dir(exported.tokenizer)
    ids = text.catalog.items.index.tolist()
    assert len(text.plan(ids[:10], ids[10:20]).prompt) < exported.max_input_len


def test_export_refuses_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a gr2 serving bundle"):
        export_trtllm(tmp_path, tmp_path / "out", TrtllmExportConfig())


def test_cli_prints_the_build_command(serving_bundle: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gr2.cli import main

    out = CliRunner().invoke(main, ["export", "trtllm", "--model", str(serving_bundle), "--out", str(tmp_path / "o"),
                                    "--dtype", "bfloat16", "--max-batch-size", "8"])
    assert out.exit_code == 0, out.output
    assert "trtllm-build --checkpoint_dir" in out.output and "--gemm_plugin bfloat16" in out.output
    assert json.loads((tmp_path / "o" / "checkpoint" / "config.json").read_text())["dtype"] == "bfloat16"
    bad = CliRunner().invoke(main, ["export", "trtllm", "--model", str(tmp_path), "--out", str(tmp_path / "p")])
    assert bad.exit_code == 1 and "not a gr2 serving bundle" in bad.output


# -- the pre/post steps, in-process and in a real tritonserver ----------------------------------------------


def _requests(bundle: Path) -> tuple[np.ndarray, list[list[int]]]:
    ids = pd.read_parquet(bundle / "items.parquet")["item_id"].to_numpy()
    rng = np.random.default_rng(3)
    cands = np.stack([rng.choice(ids, size=10, replace=False) for _ in range(3)]).astype(np.int64)
    cands[2, 5] = int(ids.max()) + 7  # unknown item
    return cands, [rng.choice(ids, size=n, replace=False).tolist() for n in (4, 0, 12)]


def _engine_stand_in(lm, encoded: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the engine computes for these inputs: the model's greedy continuation (input excluded)."""
    rows = []
    for ids, n, new, end in zip(encoded["INPUT_ID"], encoded["REQUEST_INPUT_LEN"][:, 0],
                                encoded["REQUEST_OUTPUT_LEN"][:, 0], encoded["OUT_END_ID"][:, 0], strict=True):
        prompt = torch.tensor([ids[:n].tolist()])
        with torch.no_grad():
            out = lm.model.generate(prompt, max_new_tokens=int(new), do_sample=False, eos_token_id=int(end),
                                    pad_token_id=int(end))
        rows.append(out[0, n:].tolist())
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), 1, width), encoded["OUT_PAD_ID"][0, 0], dtype=np.int32)
    for r, row in enumerate(rows):
        tokens[r, 0, :len(row)] = row
    return tokens, np.array([[len(r)] for r in rows], dtype=np.int32)


def test_preprocessing_builds_the_training_prompt_and_postprocessing_parses(exported, served_lm,
                                                                           serving_bundle) -> None:
    text = RerankText.from_dir(exported.tokenizer)
    cands, histories = _requests(serving_bundle)
    encoded = text.encode(cands, histories)
    sids = SIDMap.load(serving_bundle / "sid_map.parquet")
    items = pd.read_parquet(serving_bundle / "items.parquet")
    prompt = render_prompt(served_lm.tokenizer, build_messages(
        {"history": histories[0][-text.manifest.history_length:], "candidates": cands[0].tolist()}, items, sids,
        style="answer"))
    assert encoded["INPUT_ID"][0, :encoded["REQUEST_INPUT_LEN"][0, 0]].tolist() == prompt
    tokens, lengths = _engine_stand_in(served_lm, encoded)
    out = text.read(cands, tokens, lengths)
    assert all(sorted(r) == sorted(c) for r, c in zip(out.ranking.tolist(), cands.tolist(), strict=True))
    assert out.fallback.tolist() == [False, False, True] and out.ranking[2, 5] == cands[2, 5]
    answer = " > ".join(sids.token_string(i) for i in cands[1][::-1])  # a well-formed reply, reversed order
    ids = served_lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    reply = np.full((3, 1, len(ids)), text.pad_id, dtype=np.int32)
    reply[1, 0] = ids
    parsed = text.read(cands, reply, np.array([[0], [len(ids)], [0]], dtype=np.int32))
    assert parsed.ranking[1].tolist() == cands[1][::-1].tolist() and not parsed.invalid[1] and parsed.invalid[0]


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64"
                    or not Path(SYSTEM_PYTHON).exists(), reason="tritonserver wheel: linux x86_64, system python3")
def test_pre_and_postprocessing_models_run_in_tritonserver(exported, served_lm, serving_bundle) -> None:
    import tritonclient.grpc as grpcclient

    from serving.triton.server import TritonServer

    class PrePostOnly(TritonServer):  # the engine model needs a GPU build: load the two Python steps only
        def command(self) -> list[str]:
            return [*super().command(), "--model-control-mode=explicit", "--load-model=preprocessing",
                    "--load-model=postprocessing"]

    cands, histories = _requests(serving_bundle)
    local = RerankText.from_dir(exported.tokenizer)
    with PrePostOnly(exported.repository, log_path=exported.root / "tritonserver.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = []
        for name, array in (("candidates", cands), ("user_id", np.arange(3, dtype=np.int64)),
                            ("history", pad_histories(histories))):
            inputs.append(grpcclient.InferInput(name, list(array.shape), "INT64"))
            inputs[-1].set_data_from_numpy(array)
        pre = client.infer("preprocessing", inputs)
        encoded = {n: pre.as_numpy(n) for n in ("INPUT_ID", "REQUEST_INPUT_LEN", "REQUEST_OUTPUT_LEN", "OUT_END_ID",
                                                "OUT_PAD_ID")}
        expected = local.encode(cands, histories)
        assert all(np.array_equal(encoded[n], expected[n]) for n in expected)
        tokens, lengths = _engine_stand_in(served_lm, encoded)
        post_inputs = []
        for name, array, dtype in (("candidates", cands, "INT64"), ("TOKENS_BATCH", tokens, "INT32"),
                                   ("SEQUENCE_LENGTH", lengths, "INT32")):
            post_inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            post_inputs[-1].set_data_from_numpy(array)
        post = client.infer("postprocessing", post_inputs)
        want = local.read(cands, tokens, lengths)
        assert post.as_numpy("ranking").tolist() == want.ranking.tolist()
        assert post.as_numpy("fallback").tolist() == [False, False, True]
        assert [v.decode() for v in post.as_numpy("model_version")] == [read_manifest(serving_bundle).model_version] * 3
