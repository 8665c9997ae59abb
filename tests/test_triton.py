"""The Triton backend: `gr2 export triton`, a real tritonserver on loopback, tritonclient HTTP and gRPC.

The server is the `tritonserver` binary of the PyPI wheel nvidia-pytriton (serving/triton/runtime.py builds
it and the stub's numpy<2 venv once, under ~/.cache/gr2/triton); the model is a smoke-size serving bundle.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from gr2.contract import DIAGNOSTIC_OUTPUTS, INPUTS, MODEL_NAME, OPTIONAL_INPUTS, OUTPUTS
from gr2.models.bundle import read_manifest
from gr2.models.reranker import Reranker, RerankResult
from serving.triton.client import TritonBackendError, TritonReranker
from serving.triton.codec import RequestError, pad_histories, read_request
from serving.triton.export import ExportError, TritonExportConfig, export_triton
from serving.triton.runtime import SYSTEM_PYTHON

THREADS = 2  # torch threads, here and in the Triton model instance: same kernels, same numbers
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64" or not Path(SYSTEM_PYTHON).exists(),
    reason="the tritonserver wheel is linux x86_64 and its Python stub needs the system python3")]


@pytest.fixture(scope="module")
def serving_bundle(serving_run) -> Path:
    """The smoke serving bundle shared with the KServe tests (conftest ``serving_run``)."""
    return serving_run.bundle


# -- requests: rows of 10 catalog items, histories of different lengths, one unknown item --------------------


@pytest.fixture(scope="module")
def requests(serving_bundle: Path) -> tuple[np.ndarray, list[list[int]]]:
    ids = pd.read_parquet(serving_bundle / "items.parquet")["item_id"].to_numpy()
    rng = np.random.default_rng(7)
    cands = np.stack([rng.choice(ids, size=10, replace=False) for _ in range(5)]).astype(np.int64)
    cands[4, 3] = int(ids.max()) + 1000  # unknown to the catalog: keeps its slot, row flagged
    histories = [rng.choice(ids, size=n, replace=False).tolist() for n in (0, 3, 8, 15, 5)]
    return cands, histories


@pytest.fixture(scope="module")
def in_process(serving_bundle: Path) -> Reranker:
    return Reranker.from_bundle(serving_bundle)


@pytest.fixture(scope="module")
def triton_server(serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    from serving.triton.server import TritonServer

    repo = tmp_path_factory.mktemp("triton") / "repo"
    torch.set_num_threads(THREADS)  # the in-process comparisons run with the threads of the Triton instance
    export_triton(serving_bundle, repo, TritonExportConfig(torch_threads=THREADS))
    with TritonServer(repo) as server:
        yield server


def _contract_inputs(lib, cands: np.ndarray, histories: list[list[int]], users: np.ndarray | None = None) -> list:
    arrays = {"candidates": cands, "user_id": np.arange(len(cands), dtype=np.int64) if users is None else users,
              "history": pad_histories(histories)}
    tensors = []
    for name, array in arrays.items():
        tensor = lib.InferInput(name, list(array.shape), INPUTS[name][0])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _same(remote: RerankResult, local: RerankResult) -> None:
    assert remote.ranking.tolist() == local.ranking.tolist()
    np.testing.assert_allclose(remote.scores, local.scores, rtol=1e-4, atol=1e-4)
    assert remote.fallback.tolist() == local.fallback.tolist()
    assert remote.unknown_items.tolist() == local.unknown_items.tolist()


# -- the exported repository -----------------------------------------------------------------------------------


def test_exported_repository_follows_the_contract(serving_bundle: Path, tmp_path: Path) -> None:
    model = export_triton(serving_bundle, tmp_path / "repo", TritonExportConfig(instance_count=2))
    assert {p.name for p in (model / "1").iterdir()} == {"model.py", "model.yaml", "bundle"}
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == MODEL_NAME and config.backend == "python" and config.max_batch_size == 0
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 2
    dtype = {v: k.removeprefix("TYPE_") for k, v in model_config_pb2.DataType.items()}
    got_in = {t.name: (dtype[t.data_type], list(t.dims), t.optional) for t in config.input}
    assert got_in == {n: ("STRING" if t == "BYTES" else t, d, n in OPTIONAL_INPUTS) for n, (t, d) in INPUTS.items()}
    got_out = {t.name: (dtype[t.data_type], list(t.dims)) for t in config.output}
    expected = {**OUTPUTS, **DIAGNOSTIC_OUTPUTS}
    assert got_out == {n: ("STRING" if t == "BYTES" else t, d) for n, (t, d) in expected.items()}


def test_export_refuses_bad_settings(serving_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="mode must be one of"):
        export_triton(serving_bundle, tmp_path, TritonExportConfig(mode="fast"))
    with pytest.raises(ValueError, match="not a gr2 serving bundle"):
        export_triton(tmp_path, tmp_path / "repo")


def test_an_installed_gr2_is_copied_not_put_on_the_stub_path(serving_bundle: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.triton.export as export_module

    site = tmp_path / "site-packages"  # an installed gr2 next to numpy 2 & co
    for name in ("gr2", "serving", "numpy"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
    monkeypatch.setattr(export_module, "PROJECT_ROOT", site)
    model = export_triton(serving_bundle, tmp_path / "repo", TritonExportConfig(copy_bundle=False))
    source = Path(yaml.safe_load((model / "1" / "model.yaml").read_text())["gr2_source"])
    assert source == model / "1" / "gr2_src" and sorted(p.name for p in source.iterdir()) == ["gr2", "serving"]


def test_read_request_names_each_problem() -> None:
    ok = np.array([[1, 2, 3]])
    assert read_request(ok, np.array([5]), np.array([[-1, 4, 9]]), 10)[1] == [[4, 9]]
    for cands, users, hist, message in [
        (np.array([[1, 2, 2]]), np.array([5]), None, "duplicate item ids: \\[2\\]"),
        (np.array([[1, -2, 3]]), np.array([5]), None, "negative item id"),
        (np.zeros((1, 0), dtype=np.int64), np.array([5]), None, "at least one row and one column"),
        (np.arange(12).reshape(1, 12), np.array([5]), None, "more than the maximum of 10"),
        (ok, np.array([5, 6]), None, "user_id has 2 entries but candidates has 1 rows"),
        (ok, np.array([5]), np.array([[1], [2]]), "history must have shape \\[B, H\\] with B = 1"),
        (ok, np.array([-5]), None, "user_id has a negative id"),
    ]:
        with pytest.raises(RequestError, match=message):
            read_request(cands, users, hist, 10)
    assert pad_histories([[1, 2], []]).tolist() == [[1, 2], [-1, -1]]


# -- the real server -------------------------------------------------------------------------------------------


def test_http_and_grpc_rank_like_the_in_process_backend(triton_server, in_process, requests,
                                                        serving_bundle) -> None:
    cands, histories = requests
    assert in_process.rerank(cands, histories, "score").fallback.tolist() == [False, False, False, False, True]
    http = httpclient.InferenceServerClient(triton_server.http_url)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert http.is_server_ready() and http.is_model_ready(MODEL_NAME) and grpc.is_model_ready(MODEL_NAME)
    for client, lib, rows in ((http, httpclient, slice(0, 3)), (grpc, grpcclient, slice(3, 5))):
        result = client.infer(MODEL_NAME, _contract_inputs(lib, cands[rows], histories[rows]), request_id="req-7")
        local = in_process.rerank(cands[rows], histories[rows], "score")  # same rows, same padding
        response = result.get_response()
        assert (response["id"] if isinstance(response, dict) else response.id) == "req-7"
        assert result.as_numpy("ranking").tolist() == local.ranking.tolist()
        np.testing.assert_allclose(result.as_numpy("scores"), local.scores, rtol=1e-4, atol=1e-4)
        assert result.as_numpy("fallback").tolist() == local.fallback.tolist()
        assert [v.decode() for v in result.as_numpy("model_version")] == [read_manifest(serving_bundle).model_version] * len(cands[rows])


def test_bad_requests_get_errors_and_the_server_keeps_serving(triton_server, requests) -> None:
    cands, histories = requests
    http = httpclient.InferenceServerClient(triton_server.http_url)
    dup = cands[:1].copy()
    dup[0, 1] = dup[0, 0]
    neg = cands[:1].copy()
    neg[0, 2] = -4
    wide = np.arange(1, 62, dtype=np.int64).reshape(1, 61)
    cases = [
        (_contract_inputs(httpclient, dup, histories[:1]), "duplicate item ids"),
        (_contract_inputs(httpclient, neg, histories[:1]), "negative item id"),
        (_contract_inputs(httpclient, wide, histories[:1]), "more than the maximum of 50"),
        (_contract_inputs(httpclient, cands[:2], histories[:2], np.array([1, 2, 3])), "user_id has 3 entries"),
        (_contract_inputs(httpclient, cands[:1], histories[:1])[1:], "candidates"),  # missing candidates
    ]
    floats = httpclient.InferInput("candidates", [1, 10], "FP32")
    floats.set_data_from_numpy(cands[:1].astype(np.float32))
    cases.append(([floats, *_contract_inputs(httpclient, cands[:1], histories[:1])[1:]], "FP32"))
    for inputs, message in cases:
        with pytest.raises(InferenceServerException, match=message) as err:
            http.infer(MODEL_NAME, inputs)
        assert str(err.value.status()) == "400"
    with pytest.raises(InferenceServerException, match="mode must be one of"):
        http.infer(MODEL_NAME, _contract_inputs(httpclient, cands[:1], histories[:1]), parameters={"mode": "x"})
    ok = http.infer(MODEL_NAME, _contract_inputs(httpclient, cands[:1], histories[:1])[:2])  # history is optional
    assert sorted(ok.as_numpy("ranking")[0].tolist()) == sorted(cands[0].tolist())


# -- the KServe server's Triton backend (serve.backend: triton) ----------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_backend_returns_the_in_process_result(triton_server, in_process, requests, protocol,
                                                      serving_bundle) -> None:
    cands, histories = requests
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    backend = TritonReranker(url, protocol=protocol)
    assert backend.is_ready() and backend.model_version == read_manifest(serving_bundle).model_version
    _same(backend.rerank(cands, histories, "score"), in_process.rerank(cands, histories, "score"))
    with pytest.raises(TritonBackendError, match="duplicate item ids") as err:
        backend.rerank(np.array([[3, 3]]), [[]])
    assert err.value.bad_request


def test_generate_mode_through_triton_matches_in_process(triton_server, in_process, requests) -> None:
    cands, histories = requests
    backend = TritonReranker(triton_server.grpc_url, protocol="grpc")
    remote = backend.rerank(cands[1:3], histories[1:3], "generate")
    local = in_process.rerank(cands[1:3], histories[1:3], "generate")
    assert remote.ranking.tolist() == local.ranking.tolist()
    assert remote.invalid.tolist() == local.invalid.tolist()


def test_unreachable_triton_is_a_backend_error() -> None:
    from serving.triton.server import free_port

    backend = TritonReranker(f"127.0.0.1:{free_port()}", protocol="http", timeout_s=2)
    assert not backend.is_ready()
    with pytest.raises(TritonBackendError) as err:
        backend.rerank(np.array([[1, 2]]), [[]])
    assert not err.value.bad_request


def test_runtime_is_built_once_and_reused() -> None:
    import json
    import subprocess
    import time

    import transformers

    from serving.triton.runtime import ensure_runtime, stub_requirements

    start = time.perf_counter()
    runtime = ensure_runtime()  # built by the server fixture: this call only checks the markers
    assert time.perf_counter() - start < 10
    assert json.loads((runtime.stub_venv / ".installed").read_text()) == stub_requirements()
    probe = subprocess.run([str(runtime.stub_venv / "bin" / "python"), "-c",
                            "import numpy, torch, transformers; print(numpy.__version__, torch.__version__, "
                            "transformers.__version__)"], capture_output=True, text=True, env=runtime.environment())
    numpy_version, torch_version, transformers_version = probe.stdout.split()
    assert numpy_version.startswith("1.") and torch_version == torch.__version__
    assert transformers_version == transformers.__version__


def test_cli_exports_a_repository(serving_bundle: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gr2.cli import main

    out = CliRunner().invoke(main, ["export", "triton", "--model", str(serving_bundle), "--out", str(tmp_path / "r"),
                                    "--mode", "generate", "--instances", "2", "--reference-bundle"])
    assert out.exit_code == 0, out.output
    settings = (tmp_path / "r" / MODEL_NAME / "1" / "model.yaml").read_text()
    assert "mode: generate" in settings and f"bundle: {serving_bundle.resolve()}" in settings
    assert not (tmp_path / "r" / MODEL_NAME / "1" / "bundle").exists()
    bad = CliRunner().invoke(main, ["export", "triton", "--model", str(tmp_path), "--out", str(tmp_path / "s")])
    assert bad.exit_code == 1 and "not a gr2 serving bundle" in bad.output


def test_kserve_server_backend_is_this_client(triton_server, in_process, requests, serving_bundle) -> None:
    from gr2.models.serve_config import ServeConfig
    from serving.backends import make_backend

    backend = make_backend(ServeConfig(backend="triton", triton_url=triton_server.http_url), serving_bundle)
    assert isinstance(backend, TritonReranker) and backend.protocol == "http"
    cands, histories = requests
    remote = backend.rerank(cands, histories, "score", catalog=in_process.catalog)
    _same(remote, in_process.rerank(cands, histories, "score"))
    assert remote.timings["model"] > 0


def test_kserve_server_with_the_triton_backend_answers_through_tritonserver(triton_server, in_process, requests,
                                                                            serving_bundle) -> None:
    """`python -m serving --set serve.backend=triton`: the KServe server's answers come from tritonserver."""
    import requests as http
    from serving_helpers import kserve_server

    cands, histories = requests
    stats = httpclient.InferenceServerClient(triton_server.http_url)

    def triton_requests() -> int:
        return int(stats.get_inference_statistics(MODEL_NAME)["model_stats"][0]["inference_stats"]["success"]["count"])

    before = triton_requests()
    with kserve_server(serving_bundle, "--set", "serve.backend=triton",
                       "--set", f"serve.triton_url={triton_server.http_url}") as (url, _, _):
        body = {"instances": [{"user_id": 1, "candidates": cands[r].tolist(), "history": histories[r]}
                              for r in (1, 2)]}
        res = http.post(f"{url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
        assert res.status_code == 200, res.text
        rankings = [p["ranking"] for p in res.json()["predictions"]]
        assert not any(p["fallback"] for p in res.json()["predictions"])
    assert triton_requests() == before + 1
    assert rankings == in_process.rerank(cands[1:3], histories[1:3], "score").ranking.tolist()


def test_kserve_server_falls_back_when_triton_is_down(serving_bundle, requests) -> None:
    """A Triton backend that cannot be reached gives the incoming order with `fallback`, not an error."""
    import requests as http
    from serving_helpers import kserve_server

    from serving.triton.server import free_port

    cands, _ = requests
    with kserve_server(serving_bundle, "--set", "serve.backend=triton",
                       "--set", f"serve.triton_url=127.0.0.1:{free_port()}", "--set", "serve.timeout_s=5") as (url, _, _):
        body = {"instances": [{"user_id": 1, "candidates": cands[0].tolist(), "history": []}]}
        res = http.post(f"{url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
        assert res.status_code == 200, res.text
        prediction = res.json()["predictions"][0]
        assert prediction["fallback"] and prediction["ranking"] == cands[0].tolist()
        assert http.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
