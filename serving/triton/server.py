"""Start and stop a real ``tritonserver`` on loopback ports (tests, benchmarks, local runs)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from serving.triton.runtime import TritonRuntime, TritonRuntimeError, ensure_runtime


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """``with TritonServer(repo) as server:`` runs tritonserver until the block ends.

    ``server.http_url`` / ``server.grpc_url`` are ``host:port`` strings as tritonclient expects them.
    """

    def __init__(self, model_repository: str | Path, runtime: TritonRuntime | None = None,
                 log_path: str | Path | None = None, startup_timeout_s: float = 300.0) -> None:
        self.repository = Path(model_repository).resolve()
        self.runtime = runtime or ensure_runtime()
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = Path(log_path) if log_path else self.repository.parent / "tritonserver.log"
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        return [str(self.runtime.tritonserver), f"--model-repository={self.repository}",
                f"--backend-directory={self.runtime.backends}", "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
                "--exit-on-error=true", "--exit-timeout-secs=10"]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> TritonServer:
        import tritonclient.http as httpclient

        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.runtime.environment())
        client = httpclient.InferenceServerClient(self.http_url)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonRuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:
                if client.is_server_ready():
                    return self
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        self.stop()
        raise TritonRuntimeError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
