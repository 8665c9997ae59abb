"""``gr2 export triton`` and ``gr2 export trtllm``: a serving bundle as a Triton model repository."""

from __future__ import annotations

import shlex

import click

from gr2.cli.common import fail
from gr2.contract import MODEL_NAME


@click.group(name="export")
def group() -> None:
    """Export a serving bundle for Triton (Python backend, CPU) or TensorRT-LLM (GPU nodes)."""


@group.command("triton")
@click.option("--model", "bundle", required=True, type=click.Path(file_okay=False), help="Serving bundle directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model repository to write.")
@click.option("--model-name", default=MODEL_NAME, show_default=True, help="Name clients call.")
@click.option("--mode", type=click.Choice(["score", "generate", "reason"]), default="score", show_default=True,
              help="Default re-ranking mode (a request may pass the parameter `mode`).")
@click.option("--instances", default=1, show_default=True, help="Model instances (KIND_CPU).")
@click.option("--threads", default=2, show_default=True, help="Torch threads per instance.")
@click.option("--max-candidates", default=50, show_default=True, help="Longest candidate row accepted.")
@click.option("--reference-bundle", is_flag=True, help="Point model.yaml at the bundle instead of copying it.")
def triton_cmd(bundle: str, out: str, model_name: str, mode: str, instances: int, threads: int,
               max_candidates: int, reference_bundle: bool) -> None:
    """Write a Triton model repository whose Python-backend model runs the gr2 re-ranker."""
    from gr2.models.bundle import BundleError
    from serving.triton.export import ExportError, TritonExportConfig, export_triton

    cfg = TritonExportConfig(model_name=model_name, mode=mode, instance_count=instances, torch_threads=threads,
                             max_candidates=max_candidates, copy_bundle=not reference_bundle)
    try:
        model_dir = export_triton(bundle, out, cfg)
    except (BundleError, ExportError) as err:
        fail(str(err))
    click.echo(f"wrote {model_dir} (config.pbtxt, 1/model.py, 1/model.yaml)")
    click.echo(f"serve: tritonserver --model-repository={out}   (python -m serving.triton.runtime builds a CPU one)")


@group.command("trtllm")
@click.option("--model", "bundle", required=True, type=click.Path(file_okay=False), help="Serving bundle directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Checkpoint dtype (auto = the model's).")
@click.option("--max-batch-size", default=64, show_default=True, help="In-flight batcher size.")
@click.option("--model-name", default=MODEL_NAME, show_default=True, help="Name of the ensemble clients call.")
@click.option("--engine-dir", default="", help="Where trtllm-build writes the engine (default OUT/engine).")
def trtllm_cmd(bundle: str, out: str, dtype: str, max_batch_size: int, model_name: str, engine_dir: str) -> None:
    """Write a TensorRT-LLM checkpoint, the Triton repository for its backend and the trtllm-build command."""
    from gr2.models.bundle import BundleError
    from serving.triton.export import ExportError
    from serving.trtllm.checkpoint import CheckpointError
    from serving.trtllm.export import TrtllmExportConfig, export_trtllm

    cfg = TrtllmExportConfig(dtype=dtype, max_batch_size=max_batch_size, model_name=model_name,
                             engine_dir=engine_dir)
    try:
        result = export_trtllm(bundle, out, cfg)
    except (BundleError, ExportError, CheckpointError) as err:
        fail(str(err))
    click.echo(f"checkpoint: {result.checkpoint} ({result.config['architecture']}, {result.config['dtype']})")
    click.echo(f"triton repository: {result.repository} (preprocessing, tensorrt_llm, postprocessing, {model_name})")
    click.echo(f"build the engine on a GPU node ({result.root / 'trtllm-build.sh'}):")
    click.echo("  " + shlex.join(result.build_command))
