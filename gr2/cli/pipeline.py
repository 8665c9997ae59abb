"""``gr2 pipeline ...``: compile the Kubeflow pipeline, run it locally, or submit it to a KFP endpoint."""

from __future__ import annotations

from pathlib import Path

import click

from gr2.cli.common import config_options, fail
from gr2.config import GR2Config

COMPILED = Path("pipelines/gr2_pipeline.yaml")
HELM_COPY = Path("helm/gr2/files/gr2_pipeline.yaml")


@click.group(name="pipeline")
def group() -> None:
    """The Kubeflow pipeline: every stage a component, one DAG (compile, run --local, submit)."""


@group.command("compile")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=str(COMPILED),
    show_default=True,
    help="Where the IR YAML is written.",
)
@click.option(
    "--helm/--no-helm",
    default=True,
    show_default=True,
    help=f"Also write the Helm chart's copy ({HELM_COPY}).",
)
@click.option(
    "--resources",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the Pipeline + PipelineVersion custom resources (Kubernetes-native KFP) here.",
)
@click.option(
    "--namespace", default=None, help="Namespace of the custom resources (default: pipeline.namespace)."
)
@config_options
def compile_cmd(cfg: GR2Config, out: str, helm: bool, resources: str | None, namespace: str | None) -> None:
    """Compile the pipeline for the profile (IR YAML that the KFP UI and API accept)."""
    import yaml

    from gr2.pipeline.resources import pipeline_resources
    from pipelines.submit import compile_pipeline

    written = [compile_pipeline(cfg, out)]
    if helm:
        written.append(compile_pipeline(cfg, HELM_COPY))
    if resources:
        docs = pipeline_resources(written[0].read_text(), namespace or cfg.pipeline.namespace, cfg.profile)
        Path(resources).parent.mkdir(parents=True, exist_ok=True)
        Path(resources).write_text(yaml.safe_dump_all(docs, sort_keys=False))
        written.append(Path(resources))
    click.echo("\n".join(f"wrote {p}" for p in written))


@group.command("run")
@click.option("--local", "local_", is_flag=True, required=True, help="Run on this machine with kfp.local.")
@click.option("--source", default="", help="Dataset folder (GroupLens/RecBole layout or canonical Parquet).")
@config_options
def run_cmd(cfg: GR2Config, local_: bool, source: str) -> None:
    """Run every step with kfp.local (SubprocessRunner, cached) into the run directory."""
    run_locally(cfg, source, "gr2 pipeline run --local")


def run_locally(cfg: GR2Config, source: str, title: str) -> None:
    """The local run and its summary lines (shared by `gr2 pipeline run --local` and `gr2 demo`)."""
    from pipelines.local import run_local

    click.echo(f"{title}: profile {cfg.profile}, run dir {cfg.run_dir}")
    result = run_local(cfg, cfg.run_dir, source_path=source, echo=click.echo)
    if result.report:
        click.echo(f"report: {result.report}")
    if not result.succeeded:
        fail(f"{result.error} (artefacts and pipeline_run.json in {result.run_dir})")
    click.echo(f"done in {result.seconds:.1f} s; artefacts in {result.run_dir}")


@group.command("submit")
@click.option("--host", default=None, help="KFP API endpoint (default: pipeline.host).")
@click.option("--namespace", default=None, help="Kubeflow namespace (default: pipeline.namespace).")
@click.option("--experiment", default=None, help="Experiment name (default: pipeline.experiment).")
@click.option("--run-name", default=None, help="Name of the run (default: gr2-<profile>-<time>).")
@click.option(
    "--version", "--version-name", "version_name", default=None,
    help="Pipeline version name (default: a content hash).",
)
@click.option("--package", type=click.Path(dir_okay=False), default=None,
              help="Upload this compiled IR YAML (e.g. the Helm chart's copy) instead of compiling the profile.")
@click.option("--run/--no-run", "start_run", default=True, show_default=True,
              help="Start a run after the upload (--no-run: upload only, as the Helm chart's hook Job does).")
@config_options
def submit_cmd(
    cfg: GR2Config,
    host: str | None,
    namespace: str | None,
    experiment: str | None,
    run_name: str | None,
    version_name: str | None,
    package: str | None,
    start_run: bool,
) -> None:
    """Upload the compiled pipeline (new version when it changed) and start a run on a KFP endpoint."""
    from pipelines.submit import SubmitError, submit

    endpoint = host or cfg.pipeline.host
    if not endpoint:
        fail("no KFP endpoint: pass --host URL or set pipeline.host")
    try:
        sub = submit(
            cfg,
            endpoint,
            namespace or cfg.pipeline.namespace,
            experiment or cfg.pipeline.experiment,
            run_name=run_name,
            version_name=version_name,
            package=package,
            start_run=start_run,
        )
    except SubmitError as err:
        fail(str(err))
    if not start_run:
        click.echo(f"pipeline {sub.pipeline_id} version {sub.version_id} uploaded: {sub.url}")
        return
    click.echo(f"pipeline {sub.pipeline_id} version {sub.version_id}\nrun {sub.run_id}: {sub.url}")
