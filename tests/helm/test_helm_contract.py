"""Both sides of the deployment contract: what gr2 serves and compiles (gr2.contract, the pipeline IR, the
Feast production config) against what helm/gr2 renders (images, names, ports, tensors, metrics)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from gr2 import contract

from .helmchart import CHART, REPO, SCENARIOS, render

PIPELINE_IR = CHART / "files" / "gr2_pipeline.yaml"
FEAST_PRODUCTION = REPO / "feature_store" / "feature_repo" / "feature_store.production.yaml"


def one(docs: list[dict], kind: str, **labels: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind
               and all(d["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{len(matches)} {kind} objects with {labels}"
    return matches[0]


def test_chart_defaults_equal_the_contract() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == contract.IMAGE_TAG
    assert f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}" == contract.IMAGE
    serving = values["serving"]
    assert serving["modelName"] == contract.MODEL_NAME
    assert (serving["containerPorts"]["http"], serving["containerPorts"]["grpc"]) == (contract.HTTP_PORT,
                                                                                     contract.GRPC_PORT)
    assert serving["triton"]["containerPorts"] == {"http": contract.TRITON_HTTP_PORT,
                                                   "grpc": contract.TRITON_GRPC_PORT,
                                                   "metrics": contract.TRITON_METRICS_PORT}
    assert values["feast"]["containerPort"] == contract.FEAST_SERVER_PORT
    assert values["externalRedis"]["port"] == contract.REDIS_PORT


def test_gr2_runtime_serves_the_contract(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["minimal"]
    runtime = one(docs, "ServingRuntime")
    container = runtime["spec"]["containers"][0]
    assert container["image"] == contract.IMAGE
    assert container["command"] + container["args"] == ["gr2", "serve", "--model", "/mnt/models", "--http-port",
                                                        str(contract.HTTP_PORT), "--grpc-port",
                                                        str(contract.GRPC_PORT)]
    assert [p["containerPort"] for p in container["ports"]] == [contract.HTTP_PORT, contract.GRPC_PORT]
    assert container["readinessProbe"]["httpGet"] == {"path": contract.READY_PATH, "port": contract.HTTP_PORT}
    isvc = one(docs, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    # the predictor reads Feast through the feature server's own feature_store.yaml (gr2 serve --feature-repo)
    from gr2.cli.serve import group as serve_command

    assert "--feature-repo" in {opt for p in serve_command.params for opt in p.opts}
    repo = model["args"][model["args"].index("--feature-repo") + 1]
    mount = next(m for m in model["volumeMounts"] if m["mountPath"] == repo)
    volume = next(v for v in isvc["spec"]["predictor"]["volumes"] if v["name"] == mount["name"])
    feast_config = next(d for d in docs if d["kind"] == "ConfigMap" and "feature_store.yaml" in d.get("data", {}))
    assert volume["configMap"]["name"] == feast_config["metadata"]["name"]
    feast = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-feast"))
    server_env = {e["name"]: e for e in feast["spec"]["template"]["spec"]["containers"][0]["env"]}
    store_env = {k: v for k, v in server_env.items() if k.startswith(("GR2_REDIS", "GR2_FEAST", "REDIS"))}
    assert "GR2_REDIS_CONNECTION" in store_env  # what feature_store.yaml expands, same values on both sides
    assert all(e in model["env"] for e in store_env.values())


def test_triton_runtime_serves_the_contract(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["production"]
    container = one(docs, "ServingRuntime")["spec"]["containers"][0]
    assert container["command"] == ["tritonserver"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    assert args["model-repository"] == "/mnt/models"
    assert (int(args["http-port"]), int(args["grpc-port"]), int(args["metrics-port"])) == (
        contract.TRITON_HTTP_PORT, contract.TRITON_GRPC_PORT, contract.TRITON_METRICS_PORT)
    assert container["readinessProbe"]["httpGet"] == {"path": contract.READY_PATH, "port": contract.TRITON_HTTP_PORT}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == contract.TRITON_METRICS_PORT


def test_ab_graph_routes_to_the_two_inference_services(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["ab"]
    isvcs = {d["metadata"]["labels"]["gr2.io/role"]: d for d in docs if d["kind"] == "InferenceService"}
    graph = one(docs, "InferenceGraph")
    steps = {s["name"]: s for s in graph["spec"]["nodes"]["root"]["steps"]}
    assert graph["spec"]["nodes"]["root"]["routerType"] == "Splitter"
    assert {role: steps[role]["serviceName"] for role in steps} == {r: d["metadata"]["name"] for r, d in isvcs.items()}
    assert (steps["champion"]["weight"], steps["challenger"]["weight"]) == (90, 10)
    uris = {role: d["spec"]["predictor"]["model"]["storageUri"] for role, d in isvcs.items()}
    assert uris["champion"] != uris["challenger"]
    canary = one(rendered["ab-knative-canary"], "InferenceService")
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary["spec"]["predictor"]["model"]["storageUri"] == uris["challenger"]
    assert not [d for d in rendered["ab-knative-canary"] if d["kind"] == "InferenceGraph"]


def test_trainjob_runs_the_gr2_train_line(rendered: dict[str, list[dict]]) -> None:
    trainer = one(rendered["training"], "TrainJob")["spec"]
    assert trainer["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["trainer"]["image"] == contract.IMAGE
    command = trainer["trainer"]["command"]
    assert command[command.index("gr2"):] == ["gr2", "train", "midtrain", "--profile", "default",
                                              "--run-dir", "/runs/default"]
    assert trainer["trainer"]["numNodes"] == 2
    assert trainer["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 1


def test_pipeline_resources_carry_the_compiled_ir(rendered: dict[str, list[dict]]) -> None:
    ir_docs = [d for d in yaml.safe_load_all(PIPELINE_IR.read_text()) if d]
    spec = ir_docs[0]
    assert spec["pipelineInfo"]["name"] == contract.PIPELINE_NAME
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {contract.IMAGE}
    docs = rendered["production"]
    pipeline, version = one(docs, "Pipeline"), one(docs, "PipelineVersion")
    assert pipeline["metadata"]["name"] == contract.PIPELINE_NAME == version["spec"]["pipelineName"]
    assert version["spec"]["pipelineSpec"] == spec
    if len(ir_docs) > 1:
        assert version["spec"]["platformSpec"] == ir_docs[1]
    upload = {d["kind"]: d for d in rendered["minimal"] if d["metadata"]["name"].startswith("gr2-pipeline")}
    assert upload["ConfigMap"]["data"]["gr2_pipeline.yaml"].strip() == PIPELINE_IR.read_text().strip()
    job = upload["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == contract.IMAGE
    assert job["command"] == ["gr2", "pipeline", "submit"]
    from gr2.cli.pipeline import submit_cmd  # the Job's arguments are ones the command accepts

    params = submit_cmd.make_context("submit", list(job["args"])).params
    assert params["package"].endswith("gr2_pipeline.yaml") and params["start_run"] is False
    mount = next(m for m in job["volumeMounts"] if params["package"].startswith(m["mountPath"]))
    volume = next(v for v in upload["Job"]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == upload["ConfigMap"]["metadata"]["name"]


def test_pipeline_ir_loads_in_kfp() -> None:
    components = pytest.importorskip("kfp.components", reason="kfp (the [pipeline] extra) is not installed")
    pipeline = components.load_component_from_file(str(PIPELINE_IR))
    assert pipeline.name == contract.PIPELINE_NAME


def test_feast_config_is_the_production_store(rendered: dict[str, list[dict]], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered feature_store.yaml loads in Feast and matches feature_store.production.yaml."""
    from feast.repo_config import load_repo_config

    docs = rendered["production"]
    config_map = one(docs, "ConfigMap", **{"app.kubernetes.io/component": "feast"})
    (tmp_path / "feature_store.yaml").write_text(config_map["data"]["feature_store.yaml"])
    container = one(docs, "Deployment", **{"app.kubernetes.io/component": "feast"})["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["GR2_REDIS_CONNECTION"]["value"] == "gr2-redis.redis.svc.cluster.local:6379,password=$(REDIS_PASSWORD)"
    assert list(env).index("REDIS_PASSWORD") < list(env).index("GR2_REDIS_CONNECTION")  # $(VAR) needs it first
    assert env["GR2_FEAST_REGISTRY_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gr2-feast-registry"
    monkeypatch.setenv("GR2_REDIS_CONNECTION", "redis:6379")
    monkeypatch.setenv("GR2_FEAST_REGISTRY_URL", "postgresql+psycopg://feast:x@postgres:5432/feast")
    rendered_config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    production = load_repo_config(FEAST_PRODUCTION.parent, FEAST_PRODUCTION)
    assert rendered_config.project == production.project
    assert rendered_config.online_store.type == production.online_store.type == "redis"
    assert rendered_config.online_store.connection_string == production.online_store.connection_string
    assert rendered_config.registry.path == production.registry.path
    placeholders = set(re.findall(r"\$\{(\w+)\}", json.dumps(yaml.safe_load(FEAST_PRODUCTION.read_text()))))
    assert placeholders and placeholders <= set(env), f"the chart does not set {placeholders - set(env)}"
    port = container["ports"][0]["containerPort"]
    assert port == contract.FEAST_SERVER_PORT and str(port) in container["args"]


def test_dashboard_queries_use_the_serving_metrics(rendered: dict[str, list[dict]]) -> None:
    config_map = one(rendered["minimal"], "ConfigMap", **{"app.kubernetes.io/component": "monitoring"})
    dashboard = json.loads(config_map["data"]["gr2-serving.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(gr2_\w+?)(?:_bucket)?\{", e)}
    metrics = {contract.METRIC_REQUESTS, contract.METRIC_FALLBACKS, contract.METRIC_INVALID_OUTPUTS,
               contract.METRIC_IDENTITY_OUTPUTS, contract.METRIC_UNKNOWN_ITEMS, contract.METRIC_REQUEST_SECONDS,
               contract.METRIC_PHASE_SECONDS}
    assert used == metrics
    assert all("model_version" in e for e in exprs), "every panel splits by model version"
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any("by (le, phase" in e for e in exprs)


def _load_test_script():
    spec = importlib.util.spec_from_file_location("helm_test_rerank", CHART / "files" / "helm_test_rerank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_helm_test_pod_asks_the_contract(rendered: dict[str, list[dict]]) -> None:
    pod = one(rendered["minimal"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"] == contract.IMAGE
    assert env["GR2_MODEL_NAME"] == contract.MODEL_NAME
    isvc = one(rendered["minimal"], "InferenceService")
    assert env["GR2_URL"] == f"http://{isvc['metadata']['name']}-predictor.gr2.svc.cluster.local"
    assert container["args"] == [(CHART / "files" / "helm_test_rerank.py").read_text()]
    script = _load_test_script()
    request = script.infer_request(int(env["GR2_USER_ID"]), [int(c) for c in env["GR2_CANDIDATES"].split(",")])
    sent = {i["name"]: i for i in request["inputs"]}
    required = set(contract.INPUTS) - contract.OPTIONAL_INPUTS
    assert set(sent) == required
    assert all(sent[n]["datatype"] == contract.INPUTS[n][0] for n in sent)
    assert len(sent["candidates"]["shape"]) == len(contract.INPUTS["candidates"][1])


def test_helm_test_accepts_only_permutations() -> None:
    script = _load_test_script()
    candidates = [5, 3, 9]
    answer = {"outputs": [{"name": "ranking", "datatype": "INT64", "shape": [1, 3], "data": [9, 5, 3]}]}
    assert script.ranking_problem(answer, candidates) is None
    answer["outputs"][0]["data"] = [9, 9, 3]
    assert "not a permutation" in script.ranking_problem(answer, candidates)
    assert "no 'ranking' output" in script.ranking_problem({"outputs": []}, candidates)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_helm_test_pod_command_against_a_kserve_server(rendered: dict[str, list[dict]]) -> None:
    """The rendered test Pod's own command and env (URL aside) pass on a permutation, fail otherwise."""
    if importlib.util.find_spec("kserve") is None:  # find, not import: kserve and tritonclient.grpc clash in one process
        pytest.skip("kserve (the [serve] extra) is not installed")
    container = one(rendered["minimal"], "Pod")["spec"]["containers"][0]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("kserve_ranker.py")),
                               "--http_port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        pod_env = {e["name"]: e["value"] for e in container["env"]} | {"GR2_URL": f"http://127.0.0.1:{port}",
                                                                       "GR2_READY_TIMEOUT_S": "60"}
        command = [sys.executable if part == "python" else part for part in container["command"]]

        def run(model_name: str) -> subprocess.CompletedProcess:
            return subprocess.run([*command, *container["args"]], env=env | pod_env | {"GR2_MODEL_NAME": model_name},
                                  capture_output=True, text=True, timeout=90)

        good = run(contract.MODEL_NAME)
        assert good.returncode == 0, good.stderr + good.stdout
        assert f"ok: {contract.MODEL_NAME} ranked 10 candidates" in good.stdout
        broken = run("broken-reranker")
        assert broken.returncode == 1 and "is not a permutation of the candidates" in broken.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_feast_deployment_command_starts_a_feature_server(rendered: dict[str, list[dict]], tmp_path: Path) -> None:
    """The rendered Feast container (command, args, env, config) serves its readiness route."""
    docs = rendered["minimal"]
    config = one(docs, "ConfigMap", **{"app.kubernetes.io/component": "feast"})["data"]["feature_store.yaml"]
    pod = one(docs, "Deployment", **{"app.kubernetes.io/component": "feast"})["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    local = {mounts[name]: tmp_path / name for name in mounts}  # each volume -> a local directory
    for directory in local.values():
        directory.mkdir()

    pattern = re.compile("|".join(re.escape(m) for m in sorted(local, key=len, reverse=True)))

    def localize(text: str) -> str:  # one pass, so a replaced path is never replaced again
        return pattern.sub(lambda match: str(local[match.group(0)]), text)

    (local[mounts["config"]] / "feature_store.yaml").write_text(localize(config))
    port = _free_port()
    argv = [localize(a) for a in container["command"] + container["args"]]
    argv[argv.index(str(contract.FEAST_SERVER_PORT))] = str(port)
    argv[0] = str(Path(sys.executable).with_name("feast"))
    env = {**os.environ, **{e["name"]: localize(e["value"]) for e in container["env"] if "value" in e}}
    probe = container["readinessProbe"]["httpGet"]["path"]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None and status != 200:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=5) as response:
                    status = response.status
            except OSError:
                continue
        assert status == 200, f"feast serve never became ready: {server.poll()=}"
        assert (local[mounts["data"]] / "registry.db").exists(), "the file registry is not on the data volume"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_bundled_redis_command_runs_with_its_password(helm: Path, tmp_path: Path) -> None:
    """The rendered Redis container's shell line starts redis-server with maxmemory and the Secret's password."""
    import redis

    docs = render(helm, SCENARIOS[0], ("redis.auth.existingSecret=gr2-redis",))
    container = one(docs, "Deployment", **{"app.kubernetes.io/component": "redis"})["spec"]["template"]["spec"][
        "containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "gr2-redis", "key": "redis-password"}
    port = _free_port()
    line = container["args"][0].replace(f"--port {contract.REDIS_PORT}", f"--port {port} --bind 127.0.0.1")
    assert str(port) in line
    server = subprocess.Popen([*container["command"], line], cwd=tmp_path, env={**os.environ, "REDIS_PASSWORD": "s3cr3t"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password="s3cr3t", socket_connect_timeout=1)
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert client.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}
        assert client.config_get("save") == {"save": ""}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, password="wrong").ping()
    finally:
        server.terminate()
        server.wait(timeout=30)
