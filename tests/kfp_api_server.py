"""A small in-memory server for the KFP v2beta1 REST calls that ``gr2 pipeline submit`` makes.

It keeps pipelines, versions, experiments and runs, checks every request the way the real API server
would for these calls (an uploaded file must be a pipeline spec; a run must name an existing experiment
and pipeline version and only parameters that the pipeline declares), and records each request so a
test can read what the client sent.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class KfpState:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # version id -> version (+ "spec")
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _display_name_filter(query: dict[str, list[str]]) -> str | None:
    """The value of a ``display_name EQUALS`` predicate, if the request has one."""
    if "filter" not in query:
        return None
    for pred in json.loads(query["filter"][0]).get("predicates", []):
        if pred.get("key") == "display_name" and str(pred.get("operation")) in ("EQUALS", "1"):
            return pred.get("stringValue", pred.get("string_value"))
    raise ApiError(400, f"unsupported filter {query['filter'][0]}")


def _pipeline_spec(data: bytes) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(data)
    except yaml.YAMLError as err:
        raise ApiError(400, f"uploadfile is not YAML: {err}") from err
    if not isinstance(spec, dict) or not spec.get("pipelineInfo", {}).get("name") or "root" not in spec:
        raise ApiError(400, "uploadfile is not a pipeline spec (pipelineInfo.name and root required)")
    if not spec.get("deploymentSpec", {}).get("executors"):
        raise ApiError(400, "pipeline spec has no executors")
    return spec


class _Handler(BaseHTTPRequestHandler):
    state: KfpState

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        record: dict[str, Any] = {
            "method": method,
            "path": url.path,
            "query": {k: v[0] for k, v in query.items()},
        }
        try:
            record["body"], files = self._parse_body(body)
            record["files"] = sorted(files)
            self.state.requests.append(record)
            status, reply = self._route(method, url.path, query, record["body"], files)
        except ApiError as err:
            status, reply = err.status, {"error": str(err), "code": err.status, "message": str(err)}
        self._reply(status, reply)

    def _parse_body(self, body: bytes) -> tuple[Any, dict[str, bytes]]:
        ctype = self.headers.get("Content-Type", "")
        if not body:
            return None, {}
        if ctype.startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            files = {
                part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in msg.iter_parts()
            }
            return None, files
        try:
            return json.loads(body), {}
        except json.JSONDecodeError as err:
            raise ApiError(400, f"body is not JSON: {err}") from err

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, files: dict[str, bytes]
    ) -> tuple[int, dict[str, Any]]:
        s = self.state
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{API}/pipelines"):
            name = _display_name_filter(query)
            found = [p for p in s.pipelines.values() if name is None or p["display_name"] == name]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/pipelines/upload"):
            if "uploadfile" not in files:
                raise ApiError(400, "multipart field uploadfile missing")
            spec = _pipeline_spec(files["uploadfile"])
            name = query.get("name", [spec["pipelineInfo"]["name"]])[0]
            if any(p["display_name"] == name for p in s.pipelines.values()):
                raise ApiError(409, f"pipeline {name} already exists")
            pid = str(uuid.uuid4())
            s.pipelines[pid] = {
                "pipeline_id": pid,
                "display_name": name,
                "created_at": _now(),
                "namespace": query.get("namespace", [""])[0],
            }
            self._add_version(pid, name, spec)
            return 200, s.pipelines[pid]
        if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
            pid = query.get("pipelineid", [""])[0]
            if pid not in s.pipelines:
                raise ApiError(404, f"pipeline {pid!r} not found")
            if "uploadfile" not in files or "name" not in query:
                raise ApiError(400, "uploadfile and name are required")
            version = self._add_version(pid, query["name"][0], _pipeline_spec(files["uploadfile"]))
            return 200, version
        if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[-2]
            if pid not in s.pipelines:
                raise ApiError(404, f"pipeline {pid!r} not found")
            name = _display_name_filter(query)
            found = [
                {k: v for k, v in ver.items() if k != "spec"}
                for ver in s.versions.values()
                if ver["pipeline_id"] == pid and (name is None or ver["display_name"] == name)
            ]
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if (method, path) == ("GET", f"{API}/experiments"):
            name, ns = _display_name_filter(query), query.get("namespace", [None])[0]
            found = [
                e
                for e in s.experiments.values()
                if (name is None or e["display_name"] == name) and (ns is None or e["namespace"] == ns)
            ]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/experiments"):
            if not body or not body.get("display_name"):
                raise ApiError(400, "experiment display_name is required")
            eid = str(uuid.uuid4())
            s.experiments[eid] = {
                "experiment_id": eid,
                "display_name": body["display_name"],
                "namespace": body.get("namespace") or "",
                "created_at": _now(),
                "storage_state": "AVAILABLE",
            }
            return 200, s.experiments[eid]
        if (method, path) == ("POST", f"{API}/runs"):
            return 200, self._create_run(body or {})
        raise ApiError(404, f"{method} {path} is not part of this server")

    def _add_version(self, pid: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if any(v["pipeline_id"] == pid and v["display_name"] == name for v in self.state.versions.values()):
            raise ApiError(409, f"version {name} of pipeline {pid} already exists")
        vid = str(uuid.uuid4())
        self.state.versions[vid] = {
            "pipeline_id": pid,
            "pipeline_version_id": vid,
            "display_name": name,
            "created_at": _now(),
            "spec": spec,
        }
        return {k: v for k, v in self.state.versions[vid].items() if k != "spec"}

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        s = self.state
        if body.get("experiment_id") not in s.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')!r} not found")
        ref = body.get("pipeline_version_reference") or {}
        version = s.versions.get(ref.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
            raise ApiError(404, f"pipeline version {ref} not found")
        declared = version["spec"]["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (body.get("runtime_config") or {}).get("parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ApiError(400, f"unknown pipeline parameter(s) {unknown}; declared: {sorted(declared)}")
        rid = str(uuid.uuid4())
        s.runs[rid] = {
            "run_id": rid,
            "display_name": body.get("display_name", ""),
            "experiment_id": body["experiment_id"],
            "pipeline_version_reference": ref,
            "runtime_config": body.get("runtime_config") or {},
            "state": "PENDING",
            "created_at": _now(),
        }
        return s.runs[rid]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


class KfpApiServer:
    """``with KfpApiServer() as srv: ... srv.url, srv.state``"""

    def __init__(self) -> None:
        self.state = KfpState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> KfpApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
