"""Helpers shared by the official-SDK tests: deploy with eascmd, and the DIRECT-mode scale check."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.harness import EasServer, write_json

SDK_DIR = Path(__file__).resolve().parent
ECHO_CODE = SDK_DIR / "assets" / "echo"


def deploy(server: EasServer, spec: dict[str, Any], workdir: Path) -> str:
    """Create a service with eascmd, wait for Running, return its token."""
    path = write_json(workdir / f"{spec['name']}-{uuid.uuid4().hex[:6]}.json", spec)
    out = server.eascmd("create", str(path)).stdout
    assert "[OK] Service is running" in out, out
    return server.desc(spec["name"])["AccessToken"]


def echo_spec(name: str, instances: int = 1) -> dict[str, Any]:
    return {"name": name, "processor_type": "python", "processor_path": str(ECHO_CODE),
            "processor_entry": "app.py", "metadata": {"instance": instances, "cpu": 0.5}}


class ScaleDriver:
    """The server side of the DIRECT-mode check, shared by every SDK's test.

    A client process (any language) calls the service, writes `<sync>/ready`, and waits
    for `<sync>/scaled`; meanwhile this scales the service 1 -> 2 with eascmd and, once
    eascmd reports both instances running, creates `scaled`.
    """

    def __init__(self, server: EasServer, service: str, sync_dir: Path) -> None:
        self.server, self.service, self.sync_dir = server, service, sync_dir
        sync_dir.mkdir(parents=True, exist_ok=True)

    def wait_ready_then_scale(self, client_alive, timeout: float = 120) -> list[str]:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        ready = self.sync_dir / "ready"
        while not ready.exists():
            assert client_alive(), "the SDK client exited before it was ready"
            assert time.monotonic() < deadline, "the SDK client never reported its first calls"
            time.sleep(0.1)
        before = json.loads(ready.read_text())
        self.server.eascmd("modify", self.service, "-Dmetadata.instance=2")
        instances = json.loads(self.server.eascmd("w", self.service, "--json").stdout)
        assert [i["Status"] for i in instances] == ["Running", "Running"], instances
        (self.sync_dir / "scaled").write_text("2")
        return before


def assert_spread(result: dict[str, Any], deadline_s: float = 10) -> None:
    """The DIRECT-mode contract: one instance before, both within `deadline_s` after scaling."""
    assert result.get("ok"), result
    assert len(set(result["before"])) == 1, result["before"]
    assert len(set(result["until_spread"])) == 2, \
        f"calls did not reach a second instance within {deadline_s} s: {result}"
    assert result["spread_s"] <= deadline_s, result
    after = result["after"]
    counts = {i: after.count(i) for i in set(after)}
    assert len(counts) == 2 and min(counts.values()) >= len(after) // 4, counts
    print(f"DIRECT: second instance answered {result['spread_s']:.2f} s after scaling; then {counts}")
