"""``gr2 export triton``: a Triton model repository with the Python-backend model ``gr2-reranker``.

Layout (as TensorRT-LLM's ``triton_backend/all_models/llmapi/tensorrt_llm/``)::

    REPO/gr2-reranker/config.pbtxt      backend "python", the contract tensors, KIND_CPU instances
    REPO/gr2-reranker/1/model.py        TritonPythonModel (serving/triton/python_model.py)
    REPO/gr2-reranker/1/model.yaml      load-time settings: bundle, mode, threads, where gr2 lives
    REPO/gr2-reranker/1/bundle/         the serving bundle (copied; or referenced with copy_bundle=False)

The model speaks exactly the KServe contract of ``gr2/contract.py`` (full shapes, ``max_batch_size: 0``):
Triton's batcher needs a batch dimension on every tensor, which ``user_id [B]`` and ``fallback [B]``
cannot carry without changing their shape, so each request's B rows run as one batch instead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from gr2.contract import DIAGNOSTIC_OUTPUTS, INPUTS, MODEL_NAME, OPTIONAL_INPUTS, OUTPUTS
from gr2.models.bundle import read_manifest
from gr2.models.reranker import MODES

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # holds gr2/ and serving/
MODEL_SOURCE = Path(__file__).with_name("python_model.py")
PACKAGES = ("gr2", "serving")  # what the Triton stub imports from this project


def gr2_source(target: Path) -> Path:
    """A folder holding only ``gr2/`` and ``serving/``, for the stub's ``sys.path``.

    A source checkout is used where it is. An installed gr2 lives in a site-packages whose other packages
    (numpy 2, ...) must not shadow the stub venv's, so its two packages are copied to ``target``.
    """
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    shutil.rmtree(target, ignore_errors=True)
    for name in PACKAGES:
        shutil.copytree(PROJECT_ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


class ExportError(ValueError):
    """Export settings or inputs that cannot produce a working repository."""


@dataclass(frozen=True)
class TritonExportConfig:
    """Settings of ``gr2 export triton``."""

    # Parameters that control the model Triton serves
    model_name: str = MODEL_NAME
    mode: str = "score"  # default re-ranking mode; a request may pick another with the parameter `mode`
    think_tokens: int = 64  # tokens of <think> budget in `reason` mode
    max_candidates: int = 50  # longest candidate row accepted (items)
    # Parameters that control the instances
    instance_count: int = 1  # model instances (each loads the model once)
    torch_threads: int = 2  # intra-op threads per instance
    copy_bundle: bool = True  # False: model.yaml points at the bundle where it is


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False) -> str:
    opt = "\n    optional: true" if optional else ""
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_{"STRING" if dtype == "BYTES" else dtype}\n' \
           f'    dims: [ {", ".join(str(d) for d in dims)} ]{opt}\n  }}'


def model_config_pbtxt(cfg: TritonExportConfig) -> str:
    """The ``config.pbtxt`` of the Python-backend model, tensors taken from ``gr2/contract.py``."""
    inputs = ",\n".join(_tensor(n, t, d, n in OPTIONAL_INPUTS) for n, (t, d) in INPUTS.items())
    outputs = ",\n".join(_tensor(n, t, d) for n, (t, d) in {**OUTPUTS, **DIAGNOSTIC_OUTPUTS}.items())
    return (f'name: "{cfg.model_name}"\nbackend: "python"\n'
            "max_batch_size: 0  # full contract shapes: B is the first dimension of every tensor\n"
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"instance_group [\n  {{\n    count: {cfg.instance_count}\n    kind: KIND_CPU\n  }}\n]\n")


def export_triton(bundle: str | Path, out: str | Path, cfg: TritonExportConfig | None = None) -> Path:
    """Write the model repository for ``bundle`` under ``out``; returns the model folder."""
    cfg = cfg or TritonExportConfig()
    if cfg.mode not in MODES:
        raise ExportError(f"mode must be one of {list(MODES)}, got {cfg.mode!r}")
    if cfg.instance_count < 1 or cfg.torch_threads < 1 or cfg.max_candidates < 1:
        raise ExportError("instance_count, torch_threads and max_candidates must be >= 1")
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)  # BundleError names what is missing
    model_dir = Path(out) / cfg.model_name
    version = model_dir / "1"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(model_config_pbtxt(cfg))
    shutil.copy2(MODEL_SOURCE, version / "model.py")
    if cfg.copy_bundle:
        shutil.copytree(bundle, version / "bundle")
    settings = {
        "bundle": "bundle" if cfg.copy_bundle else str(bundle),
        "model_version": manifest.model_version,
        "mode": cfg.mode,
        "think_tokens": cfg.think_tokens,
        "max_candidates": cfg.max_candidates,
        "torch_threads": cfg.torch_threads,
        "gr2_source": str(gr2_source(version / "gr2_src")),
    }
    (version / "model.yaml").write_text("# Load-time settings of the gr2-reranker Triton model (read by model.py)\n"
                                        + yaml.safe_dump(settings, sort_keys=False))
    return model_dir
