"""A small server for the Kubernetes custom-object calls the TrainJob handoff makes (create, get).

Created objects are checked against the CRD's schema (types and fields the API server would prune) and
stored; each GET advances a stored job one phase (Created -> Running -> Complete, or -> Failed when the
job's command names a stage listed in ``fail_stages``), the way a controller's status updates appear to a
polling client. With ``execute``, the last phase runs the job's trainer command on this machine (one node,
``torchrun --standalone``) and reports Complete or Failed by its exit code. Every request is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema

from gr2.pipeline.trainjob import GROUP, PLURAL, VERSION, pruned_fields, trainjob_schema

PREFIX = f"/apis/{GROUP}/{VERSION}/namespaces/"


@dataclass
class K8sState:
    schema: dict[str, Any]
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_stages: set[str] = field(default_factory=set)
    execute: bool = False
    env: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class _Handler(BaseHTTPRequestHandler):
    state: K8sState

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _parts(self) -> list[str] | None:
        if not self.path.startswith(PREFIX):
            return None
        return self.path[len(PREFIX) :].split("?")[0].split("/")  # ns, plural[, name]

    def do_POST(self) -> None:
        self.state.requests.append(("POST", self.path))
        parts = self._parts()
        if not parts or len(parts) != 2 or parts[1] != PLURAL:
            return self._reply(404, _status(404, "NotFound", self.path))
        obj = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        try:
            jsonschema.validate(obj, self.state.schema)
        except jsonschema.ValidationError as err:
            return self._reply(422, _status(422, "Invalid", err.message))
        dropped = pruned_fields(obj, self.state.schema)
        if dropped:  # a strict field-validation server refuses what it would prune
            return self._reply(422, _status(422, "Invalid", f"unknown field(s) {dropped}"))
        key = (parts[0], obj["metadata"]["name"])
        if obj["metadata"].get("namespace", parts[0]) != parts[0]:
            return self._reply(400, _status(400, "BadRequest", "namespace of the object and the URL differ"))
        if key in self.state.objects:
            return self._reply(409, _status(409, "AlreadyExists", f"trainjobs {key[1]} already exists"))
        self.state.objects[key] = {**obj, "status": {"conditions": [{"type": "Created", "status": "True"}]}}
        self._reply(201, self.state.objects[key])

    def do_GET(self) -> None:
        self.state.requests.append(("GET", self.path))
        parts = self._parts()
        key = (parts[0], parts[2]) if parts and len(parts) == 3 and parts[1] == PLURAL else None
        if key not in self.state.objects:
            return self._reply(404, _status(404, "NotFound", self.path))
        obj = self.state.objects[key]
        conditions = obj["status"]["conditions"]
        if len(conditions) == 1:
            conditions.append({"type": "Running", "status": "True"})
        elif len(conditions) == 2:
            command = obj["spec"]["trainer"]["command"]
            failed = any(stage in command for stage in self.state.fail_stages)
            if self.state.execute and not failed:
                failed = self._run(obj["spec"]["trainer"]) != 0
            conditions.append(
                {
                    "type": "Failed" if failed else "Complete",
                    "status": "True",
                    "message": "node-0: exit code 1" if failed else "all nodes succeeded",
                }
            )
        self._reply(200, obj)

    def _run(self, trainer: dict[str, Any]) -> int:
        """The trainer command on one local node; ``torchrun`` becomes ``python -m torch.distributed.run``."""
        command = list(trainer["command"])
        if command[0] == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", *command[1:]]
        env = {**os.environ, **self.state.env, **{e["name"]: e["value"] for e in trainer.get("env", [])}}
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        self.state.logs.append(proc.stdout[-3000:] + proc.stderr[-3000:])
        return proc.returncode


class K8sApiServer:
    """``with K8sApiServer(crd_file) as srv: ... srv.url, srv.state``"""

    def __init__(self, crd_file: str | Path) -> None:
        self.state = K8sState(schema=trainjob_schema(crd_file))
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", 0), type("Handler", (_Handler,), {"state": self.state})
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> K8sApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
