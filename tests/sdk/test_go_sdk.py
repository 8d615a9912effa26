"""The official Go SDK (`github.com/pai-eas/eas-golang-sdk`) against a real eas-server.

The Go tests live in tests/sdk/go (sdk_test.go); this module starts the server side
(services, a tampering relay, the scale-up for DIRECT mode), builds them with the SDK
and runs `go test -json` with TZ=Asia/Shanghai (the SDK writes local time labelled GMT
in `Date`), then checks every Go test ran and passed: string, TF, Torch, retries, clear
errors, a tampered body, DIRECT, Gzip and Zlib compression, and a decompression bomb.

Where the SDK comes from: the Go module proxy when it serves the module; otherwise the
official source checked out beside the project (`$EAS_GO_SDK_DIR`, default
`<project>/../shared/third_party/eas-golang-sdk`), through a `replace` directive in a
build copy of the test module. The module's other dependencies come from the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import REPO
from tests.sdk.harness import SDK_DIR, ScaleDriver, assert_spread, deploy, echo_spec, sdk_env
from tests.sdk.tamper import TamperProxy

pytestmark = pytest.mark.e2e

GO_DIR = SDK_DIR / "go"
MODULE = "github.com/pai-eas/eas-golang-sdk"
GO_TESTS = {"TestStringPredictIsSigned", "TestTFPredictAgainstOnnx", "TestTFPredictAgainstTensorflow",
            "TestTorchPredictAgainstPytorch", "TestRetriesServerErrors", "TestClearErrors",
            "TestTamperedBodyIsRefused", "TestDirectModeSpreadsOverNewInstances", "TestCompressedGzipAndZlib",
            "TestDecompressionBombIs413"}


def _go(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["go", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {}), "GOFLAGS": "-mod=mod"})


def build_module(workdir: Path, module: Path = GO_DIR) -> tuple[Path, str]:
    """A copy of a Go test module (tests/sdk/go, tests/sdk/goqueue) wired to the SDK;
    returns it and where the SDK came from."""
    build = workdir / module.name
    shutil.copytree(module, build)
    fetched = _go(["get", f"{MODULE}@latest"], build, timeout=120)
    if fetched.returncode == 0:
        return build, "the Go module proxy"
    local = Path(os.environ.get("EAS_GO_SDK_DIR") or REPO.parent / "shared" / "third_party" / "eas-golang-sdk")
    if not (local / "go.mod").exists():
        pytest.fail(f"the Go SDK is neither served by the module proxy ({fetched.stderr.strip()[-300:]}) nor "
                    f"found at {local}: set EAS_GO_SDK_DIR to a checkout of {MODULE}")
    edited = _go(["mod", "edit", f"-replace={MODULE}={local.resolve()}"], build, timeout=60)
    assert edited.returncode == 0, edited.stderr
    return build, str(local.resolve())


def test_official_go_sdk(sdk_server, echo_service, onnx_service, framework_services, compressed_services,
                        tmp_path):
    """Every Go test, run from a client host in China (TZ=Asia/Shanghai): the Go SDK signs
    its local time labelled GMT."""
    if shutil.which("go") is None:
        pytest.fail("Go is missing: install it (the Go SDK test builds the official SDK)")
    build, source = build_module(tmp_path)
    compiled = _go(["test", "-c", "-o", "sdk.test", "."], build, timeout=600)
    assert compiled.returncode == 0, f"building the Go SDK tests failed:\n{compiled.stderr[-4000:]}"
    print(f"Go SDK from {source}")
    token = deploy(sdk_server, echo_spec("go_direct"), tmp_path)
    sync = tmp_path / "sync"
    driver = ScaleDriver(sdk_server, "go_direct", sync)
    with TamperProxy(sdk_server.port) as tampering:
        env = sdk_env(sdk_server, echo_service, onnx_service, framework_services, tampering.port,
                      ("go_direct", token), sync, compressed_services)
        log = tmp_path / "go-test.json"
        with open(log, "wb") as out:
            # The compiled test binary speaks test2json through `go tool test2json`.
            proc = subprocess.Popen(["go", "tool", "test2json", "-t", "./sdk.test", "-test.v", "-test.count=1"],
                                    cwd=build, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
            try:
                driver.wait_ready_then_scale(lambda: proc.poll() is None, timeout=180)
                proc.wait(timeout=240)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
    events = [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    outcome = {e["Test"]: e["Action"] for e in events if e.get("Test") and e["Action"] in ("pass", "fail", "skip")}
    failed = {name: "".join(e.get("Output", "") for e in events if e.get("Test") == name)
              for name, action in outcome.items() if action != "pass"}
    assert not failed, failed
    assert set(outcome) == GO_TESTS, set(outcome) ^ GO_TESTS
    assert proc.returncode == 0
    assert_spread(json.loads((sync / "result.json").read_text()))
