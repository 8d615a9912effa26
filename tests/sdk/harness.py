"""Helpers shared by the official-SDK tests: deploy with eascmd, and the DIRECT-mode scale check."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from eas.protocols.wire import MAX_BODY_BYTES
from tests.e2e.harness import EasServer, write_json

SDK_DIR = Path(__file__).resolve().parent
ECHO_CODE = SDK_DIR / "assets" / "echo"


def deploy(server: EasServer, spec: dict[str, Any], workdir: Path) -> str:
    """Create a service with eascmd, wait for Running, return its token."""
    path = write_json(workdir / f"{spec['name']}-{uuid.uuid4().hex[:6]}.json", spec)
    out = server.eascmd("create", str(path)).stdout
    assert "[OK] Service is running" in out, out
    return server.desc(spec["name"])["AccessToken"]


#: The client hosts' time zone in every SDK test: China's, where the SDKs that write
#: local time labelled GMT are hours off UTC (eas/protocols/auth.py accepts every zone).
CLIENT_TZ = "Asia/Shanghai"


def echo_spec(name: str, instances: int = 1, cpu: float = 0.5, decompressor: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"instance": instances, "cpu": cpu}
    if decompressor:
        metadata["rpc"] = {"decompressor": decompressor}
    return {"name": name, "processor_type": "python", "processor_path": str(ECHO_CODE),
            "processor_entry": "app.py", "metadata": metadata}


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


def _csv(values) -> str:  # noqa: ANN001
    """Numbers for a client test's environment: integers as such, floats at full precision."""
    import numpy as np

    return ",".join(str(int(v)) if isinstance(v, (int, np.integer)) else repr(float(v)) for v in values)


def sdk_env(server: EasServer, echo_service: dict[str, Any], onnx_service: dict[str, Any],
            framework_services: dict[str, Any], tamper_port: int, direct: tuple[str, str],
            sync: Path, compressed: dict[str, dict[str, str]]) -> dict[str, str]:
    """The EAS_* variables the Java and Go SDK tests read: where the server is, each
    service's name and token, the inputs to send and the answers to expect; and the
    client's time zone, CLIENT_TZ."""
    import os

    rows, expected = onnx_service["rows"], onnx_service["expected"]
    tf, torch = framework_services["tf"], framework_services["torch"]
    return {
        **{k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "POD_NAME")},
        "TZ": CLIENT_TZ,
        **{f"EAS_{codec.upper()}_SERVICE": svc["name"] for codec, svc in compressed.items()},
        **{f"EAS_{codec.upper()}_TOKEN": svc["token"] for codec, svc in compressed.items()},
        "EAS_BODY_LIMIT": str(MAX_BODY_BYTES),
        "EAS_ENDPOINT": f"127.0.0.1:{server.port}",
        "EAS_DISCOVERY": f"127.0.0.1:{server.port}",
        "EAS_TAMPER_ENDPOINT": f"127.0.0.1:{tamper_port}",
        "EAS_ECHO_SERVICE": echo_service["name"], "EAS_ECHO_TOKEN": echo_service["token"],
        "EAS_ONNX_SERVICE": onnx_service["name"], "EAS_ONNX_TOKEN": onnx_service["token"],
        "EAS_ONNX_INPUT": onnx_service["input"], "EAS_ONNX_OUTPUT": onnx_service["output"],
        "EAS_ONNX_SHAPE": _csv(rows.shape), "EAS_ONNX_ROWS": _csv(rows.ravel()),
        "EAS_ONNX_EXPECTED": _csv(expected.ravel()), "EAS_ONNX_EXPECTED_SHAPE": _csv(expected.shape),
        "EAS_TF_SERVICE": tf["name"], "EAS_TF_TOKEN": tf["token"], "EAS_TF_SIGNATURE": tf["signature"],
        "EAS_TF_X": _csv(tf["x"].ravel()), "EAS_TF_X_SHAPE": _csv(tf["x"].shape),
        "EAS_TF_IDS": _csv(tf["ids"].tolist()), "EAS_TF_IDS_SHAPE": _csv(tf["ids"].shape),
        "EAS_TF_OUTPUT": tf["output"], "EAS_TF_EXPECTED": _csv(tf["expected"].ravel()),
        "EAS_TF_EXPECTED_SHAPE": _csv(tf["expected"].shape),
        "EAS_TORCH_SERVICE": torch["name"], "EAS_TORCH_TOKEN": torch["token"],
        "EAS_TORCH_X": _csv(torch["x"].ravel()), "EAS_TORCH_X_SHAPE": _csv(torch["x"].shape),
        "EAS_TORCH_EXPECTED": _csv(torch["expected"].ravel()),
        "EAS_TORCH_EXPECTED_SHAPE": _csv(torch["expected"].shape),
        "EAS_DIRECT_SERVICE": direct[0], "EAS_DIRECT_TOKEN": direct[1], "EAS_SYNC_DIR": str(sync),
    }


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
