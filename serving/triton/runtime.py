"""A CPU Triton Inference Server runtime, built from PyPI alone and cached.

Two pieces, each built once and reused (a marker file records what was built):

* the ``tritonserver`` binary, its Python backend and libraries, unpacked from the PyPI wheel
  ``nvidia-pytriton`` (only its server files; pytriton itself is never imported);
* a small venv for the Python-backend stub. The stub links the system ``libpython3.X`` and imports
  numpy, which must be < 2, so the venv is made from the system interpreter and holds ``numpy<2``
  plus the libraries the gr2 re-ranker imports, at the versions of the calling environment (so that
  Triton and the in-process backend run the same code).

``ensure_runtime()`` is idempotent and safe to call from concurrent processes (a file lock);
``python -m serving.triton.runtime`` builds it ahead of time (CI does this).
"""

from __future__ import annotations

import ctypes.util
import fcntl
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Parameters that control where the runtime comes from
PYTRITON_WHEEL = "nvidia-pytriton==0.7.0"  # ships tritonserver 2.51 (runs on CPU) and its Python backend
SYSTEM_PYTHON = "/usr/bin/python3"  # the stub links this interpreter's shared libpython
CACHE_ENV = "GR2_TRITON_CACHE"  # overrides the cache directory
DEFAULT_CACHE = Path.home() / ".cache" / "gr2" / "triton"

# Parameters that control the stub venv: pinned to the calling environment's versions
STUB_PINNED = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "pandas", "pydantic",
               "pyyaml", "jinja2")
STUB_EXTRA = ("numpy<2", "pyarrow==20.0.0")  # the stub is built against numpy 1.x; pyarrow 21+ needs numpy 2


class TritonRuntimeError(RuntimeError):
    """The Triton runtime cannot be built or started here."""


@dataclass(frozen=True)
class TritonRuntime:
    """Paths of a ready runtime."""

    server_root: Path  # .../pytriton/tritonserver
    libs: Path  # bundled shared libraries (LD_LIBRARY_PATH)
    stub_venv: Path

    @property
    def tritonserver(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_root / "backends"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment to run ``tritonserver`` in: bundled libs, and the stub venv first on PATH."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(self.libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = f"{self.stub_venv / 'bin'}:{env.get('PATH', '')}"
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the stub must see only its own venv
            env.pop(name, None)
        return env


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def stub_requirements() -> list[str]:
    """``name==version`` for each stub package, taken from the calling environment, plus numpy<2."""
    reqs = []
    for name in STUB_PINNED:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise TritonRuntimeError(f"{name} is not installed in {sys.prefix}; the stub venv pins it") from err
        reqs.append(f"{name}=={version.split('+')[0]}")  # torch 2.13.0+cpu -> the local CPU wheel
    return [*reqs, *STUB_EXTRA]


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TritonRuntimeError(f"{what} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")


def _system_python_version(python: str) -> str:
    if not Path(python).exists():
        raise TritonRuntimeError(f"{python} not found; the Python backend stub needs the system Python 3")
    out = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _install_server(root: Path, python_version: str) -> Path:
    """Unpack tritonserver, its backends and libraries from the pytriton wheel into ``root/server``."""
    dest = root / "server"
    marker = dest / ".complete"
    if marker.exists() and marker.read_text().strip() == f"{PYTRITON_WHEEL} {python_version}":
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PYTRITON_WHEEL, "-d", tmp],
             f"downloading {PYTRITON_WHEEL}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
            zf.extractall(dest, members)
    server = dest / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonRuntimeError(f"{PYTRITON_WHEEL} has no Python backend stub for Python {python_version}")
    shutil.copy2(stub, server / "backends" / "python" / stub.name)
    for exe in (server / "bin" / "tritonserver", server / "backends" / "python" / stub.name):
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    marker.write_text(f"{PYTRITON_WHEEL} {python_version}\n")
    return dest


def _install_stub_venv(root: Path, python: str) -> Path:
    """A venv of the system Python holding numpy<2 and the re-ranker's libraries."""
    venv = root / "stub-venv"
    marker = venv / ".installed"
    reqs = stub_requirements()
    if marker.exists() and json.loads(marker.read_text()) == reqs:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    _run([python, "-m", "venv", str(venv)], f"creating the stub venv with {python} (needs python3-venv)")
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *reqs],
         "installing the stub venv packages")
    marker.write_text(json.dumps(reqs) + "\n")
    return venv


def ensure_runtime(root: Path | None = None, python: str = SYSTEM_PYTHON) -> TritonRuntime:
    """Build (first call) or reuse (later calls) the Triton server and the stub venv under ``root``."""
    root = Path(root) if root else cache_dir()
    version = _system_python_version(python)
    if ctypes.util.find_library(f"python{version}") is None:
        raise TritonRuntimeError(f"libpython{version}.so not found; the Python backend stub links it "
                                 f"(Debian: apt-get install libpython{version})")
    with _locked(root):
        server_dir = _install_server(root, version)
        venv = _install_stub_venv(root, python)
    return TritonRuntime(server_root=server_dir / "pytriton" / "tritonserver",
                         libs=server_dir / "nvidia_pytriton.libs", stub_venv=venv)


if __name__ == "__main__":
    runtime = ensure_runtime()
    print(f"tritonserver: {runtime.tritonserver}\nstub venv:    {runtime.stub_venv}")
