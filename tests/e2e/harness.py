"""The test harness: the real `eas-server` (with its own local Ray) as a subprocess.

Every server runs in its own process group on 127.0.0.1 and is torn down with its
whole group, so no Ray process outlives a test even after a `kill -9` of the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from eas.client import config
from eas.backend.ray_serve import remove_local_session

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EasServer:
    def __init__(self, data_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_args = tuple(extra_args)
        """More eas-server options (--store URL, --ray-address ADDR, ...)."""
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.groups: list[int] = []
        self.log_path = data_dir / "server.log"

    @property
    def conf(self) -> Path:
        return self.data_dir / "eascmd.conf"

    def start(self, timeout: float = 120) -> "EasServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eas.server", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", str(self.grpc_port), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
            env={**os.environ, **self.env} if self.env else None,
        )
        self.groups.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"eas-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 and self.conf.exists():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"eas-server did not answer in {timeout} s:\n{self.log_tail()}")

    def kill9(self) -> None:
        """Crash the server process only, as a power cut of the control plane would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                pass
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            remove_local_session(group)  # its Ray's logs and pip environments
        self.groups.clear()

    def rss_bytes(self) -> int:
        """Resident memory of the eas-server process (not its Ray workers), from /proc."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for eas-server")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- helpers for tests ------------------------------------------------------

    def eascmd(self, *args: str, input: str | None = None, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "eascmd", "-c", str(self.conf), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout, cwd=REPO)
        if check and res.returncode != 0:
            raise AssertionError(
                f"eascmd {' '.join(args)} exited {res.returncode}\nstdout:\n{res.stdout}\n"
                f"stderr:\n{res.stderr}\nserver log:\n{self.log_tail()}"
            )
        return res

    def desc(self, name: str) -> dict[str, Any]:
        return json.loads(self.eascmd("desc", name, "--json").stdout)

    def admin(self) -> httpx.Client:
        cfg = config.read(self.conf)
        return httpx.Client(base_url=self.url, auth=(cfg.access_id, cfg.access_key), timeout=30)

    def predict(self, name: str, body: bytes | str, token: str | None, **headers: str) -> httpx.Response:
        hdrs = dict(headers)
        if token is not None:
            hdrs.setdefault("Authorization", token)
        return httpx.post(f"{self.url}/api/predict/{name}", content=body, headers=hdrs, timeout=30)

    def wait_status(self, name: str, status: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        with self.admin() as client:
            while time.monotonic() < deadline:
                resp = client.get(f"/api/v2/services/local/{name}")
                if resp.status_code == 200:
                    last = resp.json()
                    if last["Status"] == status:
                        return last
                time.sleep(0.3)
        raise AssertionError(f"{name} not {status} after {timeout} s: {last}\n{self.log_tail()}")


def sklearn_service(name: str, model_path: Path | str, **meta: Any) -> dict[str, Any]:
    return {"name": name, "processor": "sklearn", "model_path": str(model_path),
            "metadata": {"instance": 1, "cpu": 0.5, **meta}}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


class Load:
    """Constant, bounded load on loopback from a background thread, recording every answer.

    Stops by itself after `max_requests` or `max_seconds`, whichever comes first.
    """

    def __init__(self, url: str, body: bytes, token: str, concurrency: int = 4,
                 max_requests: int = 50_000, max_seconds: float = 300, headers: dict[str, str] | None = None) -> None:
        import threading

        self.url, self.body, self.concurrency = url, body, concurrency
        self.headers = {"Authorization": token, **(headers or {})}
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.results: list[tuple[int, float, bytes]] = []  # status, seconds, body
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def mark(self) -> int:
        return len(self.results)

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        deadline = time.monotonic() + self.max_seconds
        async with httpx.AsyncClient(timeout=30, headers=self.headers) as client:
            async def worker() -> None:
                while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < self.max_requests:
                    t0 = time.perf_counter()
                    try:
                        resp = await client.post(self.url, content=self.body)
                        self.results.append((resp.status_code, time.perf_counter() - t0, resp.content))
                    except httpx.HTTPError as exc:
                        self.results.append((-1, time.perf_counter() - t0, str(exc).encode()))
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
