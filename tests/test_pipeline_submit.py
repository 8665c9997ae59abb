"""`gr2 pipeline submit` against a local server speaking the KFP v2beta1 REST API (kfp_api_server.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from kfp_api_server import KfpApiServer

from gr2.cli import main
from gr2.contract import PIPELINE_NAME

API = "/apis/v2beta1"


def _submit(url: str, *extra: str):
    return CliRunner().invoke(
        main,
        [
            "pipeline",
            "submit",
            "--profile",
            "smoke",
            "--host",
            url,
            "--namespace",
            "team-a",
            "--experiment",
            "gr2-smoke",
            *extra,
        ],
    )


def test_submit_uploads_once_and_starts_runs() -> None:
    with KfpApiServer() as srv:
        first = _submit(srv.url, "--run-name", "first", "--set", "pipeline.min_lift=0.02")
        assert first.exit_code == 0, first.output
        second = _submit(srv.url, "--run-name", "second", "--set", "pipeline.min_lift=0.02")
        assert second.exit_code == 0, second.output
        calls = [(r["method"], r["path"]) for r in srv.state.requests]
        state = srv.state
    # first submit: find (none) -> upload -> version -> experiment (none) -> create -> run
    assert calls[:6] == [
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload"),
        ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    # second submit: the same content reuses pipeline, version and experiment; only a new run
    assert [c for c in calls[6:] if c[0] == "POST"] == [("POST", f"{API}/runs")]
    upload = next(r for r in state.requests if r["path"].endswith("/pipelines/upload"))
    assert upload["query"] == {"name": PIPELINE_NAME, "namespace": "team-a"} and upload["files"] == [
        "uploadfile"
    ]
    assert len(state.pipelines) == 1 and len(state.experiments) == 1 and len(state.runs) == 2
    version = next(v for v in state.versions.values() if v["display_name"].startswith("smoke-"))
    assert version["spec"]["pipelineInfo"]["name"] == PIPELINE_NAME
    exp = next(iter(state.experiments.values()))
    assert exp["display_name"] == "gr2-smoke" and exp["namespace"] == "team-a"
    runs = sorted(state.runs.values(), key=lambda r: r["display_name"])
    assert [r["display_name"] for r in runs] == ["first", "second"]
    for run in runs:
        assert run["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
        assert run["runtime_config"]["parameters"] == {"source_path": "", "min_lift": 0.02}
    assert f"run {runs[0]['run_id']}" in first.output


def test_changed_pipeline_becomes_a_new_version() -> None:
    with KfpApiServer() as srv:
        assert _submit(srv.url).exit_code == 0
        assert _submit(srv.url, "--set", "train.midtrain.optim.max_steps=7").exit_code == 0
        versions = [v for v in srv.state.versions.values() if v["display_name"].startswith("smoke-")]
        runs = list(srv.state.runs.values())
    assert len(versions) == 2 and versions[0]["display_name"] != versions[1]["display_name"]
    assert ['\\"max_steps\\": 7' in json.dumps(v["spec"]) for v in versions] == [False, True]
    assert [r["pipeline_version_reference"]["pipeline_version_id"] for r in runs] == [
        v["pipeline_version_id"] for v in versions
    ]


def test_unreachable_endpoint_is_one_clear_error() -> None:
    result = _submit("http://127.0.0.1:9")
    assert result.exit_code == 1 and "http://127.0.0.1:9:" in result.output and "failed" in result.output


def test_submit_needs_a_host() -> None:
    result = CliRunner().invoke(main, ["pipeline", "submit", "--profile", "smoke"])
    assert result.exit_code == 1 and "--host" in result.output


@pytest.mark.parametrize("bad", [b"not: [yaml", b"kind: Deployment\n"])
def test_server_refuses_what_is_not_a_pipeline(bad: bytes) -> None:
    import kfp

    with KfpApiServer() as srv, pytest.raises(Exception, match=r"pipeline spec|not YAML"):
        from tempfile import NamedTemporaryFile

        with NamedTemporaryFile("wb", suffix=".yaml") as fh:
            fh.write(bad)
            fh.flush()
            kfp.Client(host=srv.url, namespace="team-a").upload_pipeline(fh.name, pipeline_name="x")


def test_upload_only_of_a_compiled_package(tmp_path) -> None:
    """What the Helm chart's hook Job does: upload the chart's compiled copy, start no run."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "helm" / "gr2" / "files" / "gr2_pipeline.yaml"
    with KfpApiServer() as srv:
        result = _submit(srv.url, "--package", str(package), "--version-name", "chart-1", "--no-run")
        state = srv.state
    assert result.exit_code == 0, result.output
    assert "uploaded" in result.output and not state.runs and not state.experiments
    version = next(v for v in state.versions.values() if v["display_name"] == "chart-1")
    assert version["spec"]["pipelineInfo"]["name"] == PIPELINE_NAME
    missing = CliRunner().invoke(main, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package",
                                        str(tmp_path / "nope.yaml"), "--no-run"])
    assert missing.exit_code == 1 and "no compiled pipeline there" in missing.output
