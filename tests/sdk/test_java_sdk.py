"""The official Java SDK (Maven Central `com.aliyun.openservices.eas:eas-sdk`) against a real eas-server.

The JUnit tests live in tests/sdk/java (OfficialJavaSdkTest); this module starts the
server side (services, a tampering relay, the scale-up for DIRECT mode), runs them with
`mvn -o test` (artifacts resolved beforehand by `make sdk-deps`) with TZ=Asia/Shanghai
and checks Surefire's report: every JUnit test ran and passed, the compressed bodies of
every codec of the SDK's compressors and a decompression bomb (413) included.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.sdk.harness import SDK_DIR, ScaleDriver, deploy, echo_spec, sdk_env
from tests.sdk.tamper import TamperProxy

pytestmark = pytest.mark.e2e

JAVA_DIR = SDK_DIR / "java"
RESOLVED = JAVA_DIR / "target" / ".deps-resolved"
JUNIT_TESTS = {"stringPredictIsSigned", "bodyWhoseMd5StartsWithZero", "contentTypeOtherThanOctetStream", "tfPredictAgainstOnnx",
               "tfPredictAgainstTensorflow", "torchPredictAgainstPytorch", "retriesServerErrors", "clearErrors",
               "tamperedBodyIsRefused", "directModeSpreadsOverNewInstances", "compressedGzip", "compressedZlib",
               "compressedSnappy", "compressedLz4Block", "compressedLz4Frame", "compressedZstd",
               "decompressionBombIs413"}


def test_official_java_sdk(sdk_server, echo_service, onnx_service, framework_services, compressed_services,
                          tmp_path):
    """Every JUnit test, run from a client host in China (TZ=Asia/Shanghai)."""
    if shutil.which("mvn") is None or not RESOLVED.exists():
        pytest.fail("Maven or the Java SDK's artifacts are missing: run `make sdk-deps` (part of `make test`)")
    token = deploy(sdk_server, echo_spec("java_direct"), tmp_path)
    sync = tmp_path / "sync"
    driver = ScaleDriver(sdk_server, "java_direct", sync)
    with TamperProxy(sdk_server.port) as tampering:
        env = sdk_env(sdk_server, echo_service, onnx_service, framework_services, tampering.port,
                      ("java_direct", token), sync, compressed_services)
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
