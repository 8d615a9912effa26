"""The servers a benchmark compares, each started as its own process on 127.0.0.1.

Every target is a context manager that yields the URL to load and stops its whole
process group on exit, so a benchmark never leaves a server (or a Ray) behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from eas.backend.ray_serve import remove_local_session

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(cmd: list[str], ready_url: str, log: Path, timeout: float = 120,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd` in its own session; wait until `ready_url` answers; kill the group after."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited early; see {log}")
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd[:3]} not ready in {timeout} s; see {log}")
            time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        remove_local_session(proc.pid)  # eas-server's and bare Serve's local Ray files


@contextlib.contextmanager
def plain_echo(workdir: Path) -> Iterator[str]:
    """The floor: a bare ASGI echo under uvicorn (uvloop + httptools), no framework."""
    port = free_port()
    cmd = [PY, "-m", "uvicorn", "bench.servers:echo_app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log"]
    with process(cmd, f"http://127.0.0.1:{port}/health", workdir / "plain.log"):
        yield f"http://127.0.0.1:{port}/echo"


@contextlib.contextmanager
def bare_serve(workdir: Path) -> Iterator[str]:
    """Ray Serve's own HTTP proxy in front of the same kind of echo replica."""
    port = free_port()
    cmd = [PY, "-m", "bench.servers", "serve-echo", str(port)]
    with process(cmd, f"http://127.0.0.1:{port}/-/healthz", workdir / "serve.log", timeout=180):
        deadline = time.monotonic() + 120
        while httpx.post(f"http://127.0.0.1:{port}/echo", content=b"{}").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("bare Serve echo never answered")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/echo"


class EasServer:
    """eas-server with its own local Ray, driven through eascmd like a user would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = Path(tempfile.mkdtemp(prefix="eas-bench-", dir=workdir))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator["EasServer"]:
        cmd = [PY, "-m", "eas.server", "--data-dir", str(self.data), "--port", str(self.port),
               "--grpc-port", "0", "--log-level", "WARNING"]
        with process(cmd, f"{self.url}/healthz", self.workdir / "eas-server.log", timeout=180):
            yield self

    def eascmd(self, *args: str) -> str:
        res = subprocess.run([PY, "-m", "eascmd", "-c", str(self.data / "eascmd.conf"), *args],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"eascmd {' '.join(args)}: {res.stdout}\n{res.stderr}")
        return res.stdout

    def create(self, spec: dict[str, Any]) -> str:
        """Create a service and return its token."""
        path = self.workdir / f"{spec['name']}.json"
        path.write_text(json.dumps(spec))
        self.eascmd("create", str(path))
        return json.loads(self.eascmd("desc", spec["name"], "--json"))["AccessToken"]

    def delete(self, name: str) -> None:
        self.eascmd("delete", name, "-y")


@contextlib.contextmanager
def mlserver(workdir: Path, model_path: Path, python: str) -> Iterator[str]:
    """MLServer (SeldonIO) serving the same sklearn model from its own venv."""
    repo = workdir / "mlserver-models" / "iris"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_path)}}))
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (workdir / "mlserver-models" / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0}))
    cmd = [str(Path(python).parent / "mlserver"), "start", str(workdir / "mlserver-models")]
    with process(cmd, f"http://127.0.0.1:{port}/v2/health/ready", workdir / "mlserver.log", timeout=180):
        yield f"http://127.0.0.1:{port}/v2/models/iris/infer"
