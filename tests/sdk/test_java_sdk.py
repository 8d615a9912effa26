"""The official Java SDK (Maven Central `com.aliyun.openservices.eas:eas-sdk`) against a real eas-server.

The JUnit tests live in tests/sdk/java (OfficialJavaSdkTest); this module starts the
server side (services, a tampering relay, the scale-up for DIRECT mode), runs them with
`mvn -o test` (artifacts resolved beforehand by `make sdk-deps`) and checks Surefire's
report: every JUnit test ran and passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.sdk.harness import SDK_DIR, ScaleDriver, deploy, echo_spec
from tests.sdk.tamper import TamperProxy

pytestmark = pytest.mark.e2e

JAVA_DIR = SDK_DIR / "java"
RESOLVED = JAVA_DIR / "target" / ".deps-resolved"
JUNIT_TESTS = {"stringPredictIsSigned", "bodyWhoseMd5StartsWithZero", "contentTypeOtherThanOctetStream", "tfPredictAgainstOnnx",
               "tfPredictAgainstTensorflow", "torchPredictAgainstPytorch", "retriesServerErrors", "clearErrors",
               "tamperedBodyIsRefused", "directModeSpreadsOverNewInstances"}


def _csv(values) -> str:  # noqa: ANN001
    """Numbers for a Java test's environment: integers as such, floats at full precision."""
    return ",".join(str(int(v)) if isinstance(v, (int, np.integer)) else repr(float(v)) for v in values)


def test_official_java_sdk(sdk_server, echo_service, onnx_service, framework_services, tmp_path):
    if shutil.which("mvn") is None or not RESOLVED.exists():
        pytest.fail("Maven or the Java SDK's artifacts are missing: run `make sdk-deps` (part of `make test`)")
    token = deploy(sdk_server, echo_spec("java_direct"), tmp_path)
    sync = tmp_path / "sync"
    driver = ScaleDriver(sdk_server, "java_direct", sync)
    rows, expected = onnx_service["rows"], onnx_service["expected"]
    tf, torch = framework_services["tf"], framework_services["torch"]
    with TamperProxy(sdk_server.port) as tampering:
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "POD_NAME")},
            "EAS_ENDPOINT": f"127.0.0.1:{sdk_server.port}",
            "EAS_DISCOVERY": f"127.0.0.1:{sdk_server.port}",
            "EAS_TAMPER_ENDPOINT": f"127.0.0.1:{tampering.port}",
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
            "EAS_DIRECT_SERVICE": "java_direct", "EAS_DIRECT_TOKEN": token, "EAS_SYNC_DIR": str(sync),
        }
        shutil.rmtree(JAVA_DIR / "target" / "surefire-reports", ignore_errors=True)
        log = tmp_path / "mvn.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["mvn", "-o", "-q", "-B", "test"], cwd=JAVA_DIR, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                driver.wait_ready_then_scale(lambda: proc.poll() is None, timeout=180)
                proc.wait(timeout=240)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, f"mvn test failed:\n{output[-6000:]}"
    report = JAVA_DIR / "target" / "surefire-reports" / "TEST-eas.sdk.OfficialJavaSdkTest.xml"
    suite = ET.parse(report).getroot()
    ran = {case.get("name") for case in suite.iter("testcase")}
    assert ran == JUNIT_TESTS, ran
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "0")
    stdout = JAVA_DIR / "target" / "surefire-reports" / "eas.sdk.OfficialJavaSdkTest-output.txt"
    spread = [line for line in (stdout.read_text() if stdout.exists() else output).splitlines()
              if line.startswith("DIRECT:")]
    print(*spread)
