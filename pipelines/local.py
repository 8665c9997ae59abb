"""Run the pipeline on this machine with ``kfp.local`` and collect every artefact into one run directory.

``kfp.local.SubprocessRunner(use_venv=False)`` runs each component as a subprocess of this Python, with
kfp.local's file cache (the same cache-key rules as on a cluster: component, command, inputs). The
artefact store and the cache live in ``<run_dir>/.kfp``; a rerun with the same inputs reuses cached
steps, and a rerun after a failure starts from the first step whose inputs changed or that failed.

Layout of the run directory after a run::

    report.md            the run report (or the validation report when the data failed)
    pipeline_run.json    one entry per step: status, cached, seconds, output artefacts
    <step>/<output>      every output artefact of the run (hard links into the artefact store)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gr2.config import GR2Config


@dataclass
class StepRecord:
    """What one task did in a local run."""

    task: str
    status: str
    cached: bool
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LocalRun:
    """The result of :func:`run_local`."""

    run_dir: Path
    succeeded: bool
    steps: list[StepRecord]
    report: Path | None
    error: str = ""
    seconds: float = 0.0


@contextlib.contextmanager
def _record_tasks(steps: list[StepRecord], pipeline_root: str) -> Iterator[None]:
    """Record each task kfp.local executes (or takes from its cache): status, time, output URIs.

    kfp.local has no public hook for this; its orchestrators call ``task_executor.execute_single_task``
    for every container task, so the recorder wraps that one function for the duration of the run.
    """
    from kfp.local.orchestrator import task_executor

    original = task_executor.execute_single_task

    def recording(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        outputs, status = original(*args, **kwargs)
        task = kwargs.get("task_name") or args[0]
        run_root = os.path.join(pipeline_root, kwargs.get("pipeline_resource_name", ""))
        uris = {name: value.uri for name, value in (outputs or {}).items() if hasattr(value, "uri")}
        cached = bool(uris) and not any(u.startswith(run_root + os.sep) for u in uris.values())
        meta = {
            name: dict(value.metadata)
            for name, value in (outputs or {}).items()
            if getattr(value, "metadata", None)
        }
        steps.append(
            StepRecord(
                task=task,
                status=status.name,
                cached=cached,
                seconds=round(time.perf_counter() - t0, 2),
                outputs=uris,
                metadata=meta,
            )
        )
        return outputs, status

    task_executor.execute_single_task = recording
    try:
        yield
    finally:
        task_executor.execute_single_task = original


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (file or folder) to ``dst``, copying where links are impossible."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link, symlinks=True)
    elif src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        link(str(src), str(dst))


def _collect(run_dir: Path, steps: list[StepRecord]) -> Path | None:
    """Link every output artefact under ``run_dir/<task>/<output>``; return the report's path."""
    previous = run_dir / "pipeline_run.json"
    if previous.exists():  # a task of the last run that this run skipped must not look current
        for old in json.loads(previous.read_text()).get("steps", []):
            shutil.rmtree(run_dir / old["task"], ignore_errors=True)
    for step in steps:
        target = run_dir / step.task
        if target.exists():
            shutil.rmtree(target)
        for name, uri in step.outputs.items():
            _link_tree(Path(uri), target / name)
        for name, meta in step.metadata.items():  # Metrics artefacts live in metadata, not in files
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{name}.metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    for task, output in (("run-report", "report"), ("validate-data", "report")):
        source = run_dir / task / output
        if source.is_file() and (task == "run-report" or not (run_dir / "report.md").exists()):
            shutil.copyfile(source, run_dir / "report.md")
            return run_dir / "report.md"
    return None


@contextlib.contextmanager
def _scratch_in(folder: Path) -> Iterator[None]:
    """Point TMPDIR of the component subprocesses at ``folder`` (emptied afterwards): the steps' scratch
    run directories stay out of /tmp, as they would vanish with the pod on a cluster."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)  # links into artefacts are removed, never followed


def run_local(
    cfg: GR2Config,
    run_dir: str | Path | None = None,
    source_path: str = "",
    echo: Callable[[str], None] = print,
) -> LocalRun:
    """Compile the pipeline for ``cfg``, run it with ``kfp.local``; the run directory gets every artefact."""
    from kfp import local

    from pipelines.gr2_pipeline import build_pipeline

    run = Path(run_dir or cfg.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    (run / "report.md").unlink(missing_ok=True)
    pipeline_root = run / ".kfp"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=cfg.pipeline.caching,
    )
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not cfg.train.model.base_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pipeline = build_pipeline(cfg)
    steps: list[StepRecord] = []
    error = ""
    t0 = time.perf_counter()
    with _record_tasks(steps, str(pipeline_root)), _scratch_in(pipeline_root / "tmp"):
        try:
            pipeline(source_path=source_path or cfg.data.source_path or "", min_lift=cfg.pipeline.min_lift)
        except RuntimeError as err:
            error = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # kfp colours its messages
    seconds = round(time.perf_counter() - t0, 1)
    report = _collect(run, steps)
    failed = [s.task for s in steps if s.status != "SUCCESS"]
    if failed and not error:
        error = f"task(s) failed: {failed}"
    result = LocalRun(
        run_dir=run, succeeded=not error, steps=steps, report=report, error=error, seconds=seconds
    )
    (run / "pipeline_run.json").write_text(
        json.dumps(
            {
                "succeeded": result.succeeded,
                "error": error,
                "seconds": seconds,
                "profile": cfg.profile,
                "steps": [asdict(s) for s in steps],
            },
            indent=2,
        )
        + "\n"
    )
    for s in steps:
        echo(f"{s.task:<16} {s.status:<8} {'cached' if s.cached else f'{s.seconds:7.1f} s'}")
    return result
