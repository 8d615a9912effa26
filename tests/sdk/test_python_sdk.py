"""The official Python SDK (PyPI `eas-prediction`, unchanged) against a real eas-server.

The SDK runs in its own venv (tests/sdk/python/.venv: it needs protobuf<=3.20.3) as a
subprocess running tests/sdk/python/sdk_driver.py; these tests say what to call and
check what came back.

The SDK writes `Date` from the local clock but labels it GMT. The driver runs as a client
host in China would (TZ=Asia/Shanghai, 8 hours ahead), one test also from New York
(UTC-5), and the Date tests shift it past the farthest time zones on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.sdk.harness import CLIENT_TZ, SDK_DIR, ScaleDriver, assert_spread, deploy, echo_spec
from tests.sdk.tamper import TamperProxy

pytestmark = pytest.mark.e2e

SDK_PYTHON = SDK_DIR / "python" / ".venv" / "bin" / "python"
DRIVER = SDK_DIR / "python" / "sdk_driver.py"
RESULT_MARK = "SDK-RESULT "


@pytest.fixture(scope="module", autouse=True)
def python_sdk() -> Path:
    if not SDK_PYTHON.exists():
        pytest.fail(f"the Python SDK venv is missing ({SDK_PYTHON}): run `make sdk-deps` (part of `make test`)")
    return SDK_PYTHON


def _env(tz: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "POD_NAME", "PYTHONPATH")}
    env["TZ"] = tz
    return env


def _parse(stdout: str, stderr: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert lines, f"the SDK driver printed no result\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return json.loads(lines[-1][len(RESULT_MARK):])


def run_sdk(calls: list[dict[str, Any]], tz: str = CLIENT_TZ, timeout: float = 120) -> list[dict[str, Any]]:
    proc = subprocess.run([str(SDK_PYTHON), str(DRIVER)], input=json.dumps({"calls": calls}),
                          capture_output=True, text=True, timeout=timeout, env=_env(tz))
    assert proc.returncode == 0, f"SDK driver failed:\n{proc.stdout}\n{proc.stderr}"
    return _parse(proc.stdout, proc.stderr)


def client(endpoint: str, service: dict[str, Any] | str, token: str | None = None, **extra: Any) -> dict[str, Any]:
    name = service if isinstance(service, str) else service["name"]
    if token is None and isinstance(service, dict):
        token = service["token"]
    return {"endpoint": endpoint, "service": name, "token": token, **extra}


def string(body: str) -> dict[str, Any]:
    return {"kind": "string", "body": body}


def ok(result: dict[str, Any]) -> list[Any]:
    assert result["ok"], result
    return result["results"]


@pytest.mark.parametrize("tz", [CLIENT_TZ, "America/New_York"])
def test_string_request_signed(sdk_server, echo_service, tz):
    """Signed from a host 8 hours east of UTC, and from one 5 (or 4, in summer) west."""
    body = "héllo, eas sdk"
    [plain, repeated] = run_sdk([
        {"client": client(sdk_server.url, echo_service), "request": string(body)},
        {"client": client(sdk_server.url, echo_service), "request": string("again"), "repeat": 3},
    ], tz=tz)
    answer = json.loads(ok(plain)[0])
    assert answer["upper"] == body.upper() and answer["length"] == len(body.encode())
    assert [json.loads(r)["upper"] for r in ok(repeated)] == ["AGAIN"] * 3


def test_tf_request_against_onnx(sdk_server, onnx_service):
    rows: np.ndarray = onnx_service["rows"]
    request = {"kind": "tf", "signature": "serving_default",
               "feeds": [{"name": onnx_service["input"], "shape": list(rows.shape), "dtype": "DT_FLOAT",
                          "values": rows.ravel().tolist()}],
               "fetches": [onnx_service["output"]]}
    [result] = run_sdk([{"client": client(sdk_server.url, onnx_service), "request": request}])
    out = ok(result)[0][onnx_service["output"]]
    expected: np.ndarray = onnx_service["expected"]
    assert out["shape"] == list(expected.shape)
    np.testing.assert_allclose(np.array(out["values"]).reshape(expected.shape), expected, rtol=1e-5)


def test_tf_request_against_tensorflow(sdk_server, framework_services):
    tf = framework_services["tf"]
    x, ids = tf["x"], tf["ids"]
    request = {"kind": "tf", "signature": tf["signature"],
               "feeds": [{"name": "x", "shape": list(x.shape), "dtype": "DT_FLOAT", "values": x.ravel().tolist()},
                         {"name": "ids", "shape": list(ids.shape), "dtype": "DT_INT64", "values": ids.tolist()}],
               "fetches": [tf["output"]]}
    [result] = run_sdk([{"client": client(sdk_server.url, tf), "request": request}])
    out = ok(result)[0][tf["output"]]
    assert out["shape"] == list(tf["expected"].shape)
    np.testing.assert_allclose(np.array(out["values"]).reshape(tf["expected"].shape), tf["expected"], rtol=1e-5)


def test_torch_request_against_pytorch(sdk_server, framework_services):
    torch = framework_services["torch"]
    x = torch["x"]
    request = {"kind": "torch", "feeds": [{"index": 0, "shape": list(x.shape), "dtype": "DT_FLOAT",
                                           "values": x.ravel().tolist()}], "fetches": [0]}
    [result] = run_sdk([{"client": client(sdk_server.url, torch), "request": request}])
    out = ok(result)[0]["0"]
    assert out["shape"] == list(torch["expected"].shape)
    np.testing.assert_allclose(np.array(out["values"]).reshape(torch["expected"].shape), torch["expected"],
                               rtol=1e-5, atol=1e-6)


def test_custom_url_sends_the_raw_token(sdk_server, echo_service):
    url = f"{sdk_server.url}/api/predict/{echo_service['name']}"
    [good, bad] = run_sdk([
        {"client": client("", echo_service, custom_url=url), "request": string("raw token")},
        {"client": client("", echo_service, token="not-the-token", custom_url=url, retry_count=1),
         "request": string("raw token")},
    ])
    assert json.loads(ok(good)[0])["upper"] == "RAW TOKEN"
    assert not bad["ok"] and bad["code"] == 401 and "wrong token" in bad["message"]


def test_retries_on_5xx_and_not_on_4xx(sdk_server, echo_service):
    flaky, exhausted, refused = (uuid.uuid4().hex[:8] for _ in range(3))
    results = run_sdk([
        # Two 500s, then an answer: the SDK's default 5 attempts ride them out.
        {"client": client(sdk_server.url, echo_service), "request": string(f"flaky:{flaky}:2")},
        # More failures than attempts: the SDK gives up after exactly retry_count calls.
        {"client": client(sdk_server.url, echo_service, retry_count=2), "request": string(f"flaky:{exhausted}:9")},
        {"client": client(sdk_server.url, echo_service), "request": string(f"fail400:{refused}")},
        {"client": client(sdk_server.url, echo_service), "request": string(f"count:{exhausted}")},
        {"client": client(sdk_server.url, echo_service), "request": string(f"count:{refused}")},
    ])
    assert json.loads(ok(results[0])[0])["attempts"] == 3
    assert not results[1]["ok"] and results[1]["code"] == 500 and "flaky failure 2 of 9" in results[1]["message"]
    assert not results[2]["ok"] and results[2]["code"] == 400 and "refused on purpose" in results[2]["message"]
    assert json.loads(ok(results[3])[0])["calls"] == 2
    assert json.loads(ok(results[4])[0])["calls"] == 1, "a 4xx must not be retried"


def test_clear_errors(sdk_server, echo_service, onnx_service):
    once = {"retry_count": 1}
    wrong_token, unknown, not_proto = run_sdk([
        {"client": client(sdk_server.url, echo_service, token="not-the-token", **once), "request": string("x")},
        {"client": client(sdk_server.url, "no_such_service", token=echo_service["token"], **once),
         "request": string("x")},
        {"client": client(sdk_server.url, onnx_service, **once), "request": string("\x08\x96\x01 not a protobuf")},
    ])
    assert (wrong_token["ok"], wrong_token["code"]) == (False, 401)
    assert "signature does not match" in wrong_token["message"] and "token" in wrong_token["message"]
    assert (unknown["ok"], unknown["code"]) == (False, 404)
    assert "'no_such_service' does not exist" in unknown["message"]
    assert (not_proto["ok"], not_proto["code"]) == (False, 400)
    assert "PredictRequest" in not_proto["message"], not_proto["message"]


def test_tampered_body_is_refused(sdk_server, echo_service):
    with TamperProxy(sdk_server.port, tamper=False) as faithful, TamperProxy(sdk_server.port) as tampering:
        relayed, tampered = run_sdk([
            {"client": client(f"127.0.0.1:{faithful.port}", echo_service), "request": string("sign me")},
            {"client": client(f"127.0.0.1:{tampering.port}", echo_service, retry_count=1),
             "request": string("sign me")},
        ])
        assert faithful.relayed == 1 and tampering.relayed == 1
    assert json.loads(ok(relayed)[0])["upper"] == "SIGN ME"
    assert (tampered["ok"], tampered["code"]) == (False, 401)
    assert "Content-MD5 does not match the body" in tampered["message"]


@pytest.mark.parametrize("inside, outside", [("SKW-14:10", "SKW-14:30"), ("SKW+12:10", "SKW+12:30")])
def test_date_outside_every_time_zone_is_refused(sdk_server, echo_service, inside, outside):
    # POSIX TZ "X-14:10" is 14 h 10 min east of UTC: the SDK's Date (local time labelled
    # GMT) is that far ahead, inside the window of the easternmost zone (UTC+14) plus 900 s;
    # 14 h 30 min is outside. "X+12:10" / "X+12:30": the same past the westernmost, UTC-12.
    call = {"client": client(sdk_server.url, echo_service, retry_count=1), "request": string("what time")}
    [accepted] = run_sdk([call], tz=inside)
    [refused] = run_sdk([call], tz=outside)
    assert json.loads(ok(accepted)[0])["upper"] == "WHAT TIME"
    assert (refused["ok"], refused["code"]) == (False, 401)
    assert "Date header is more than 900 s from server time in every time zone" in refused["message"]


def test_onnx_request_against_onnx(sdk_server, onnx_service):
    """eas-prediction's OnnxRequest (named raw tensors) on the onnx processor, read back as an OnnxResponse."""
    rows: np.ndarray = onnx_service["rows"]
    request = {"kind": "onnx", "tensors": [{"name": onnx_service["input"], "shape": list(rows.shape),
                                             "dtype": "float32", "values": rows.ravel().tolist()}]}
    [result] = run_sdk([{"client": client(sdk_server.url, onnx_service), "request": request}])
    out = ok(result)[0][onnx_service["output"]]
    expected: np.ndarray = onnx_service["expected"]
    assert out["shape"] == list(expected.shape)
    np.testing.assert_allclose(np.array(out["values"]).reshape(expected.shape), expected, rtol=1e-5)


def test_snappy_torch_request_against_pytorch(sdk_server, framework_services):
    """TorchRequest(True) Snappy-compresses its body (the SDK's one compressor); the service
    says so with metadata.rpc.decompressor "snappy" and answers as for a plain one."""
    torch, snappy = framework_services["torch"], framework_services["torch_snappy"]
    x = torch["x"]
    request = {"kind": "torch", "compress": True, "fetches": [0],
               "feeds": [{"index": 0, "shape": list(x.shape), "dtype": "DT_FLOAT", "values": x.ravel().tolist()}]}
    [result] = run_sdk([{"client": client(sdk_server.url, snappy), "request": request}])
    out = ok(result)[0]["0"]
    assert out["shape"] == list(torch["expected"].shape)
    np.testing.assert_allclose(np.array(out["values"]).reshape(torch["expected"].shape), torch["expected"],
                               rtol=1e-5, atol=1e-6)


def test_decompression_bomb_is_413(sdk_server, compressed_services, tmp_path):
    """A few MB of Snappy that would inflate past the 64 MiB body limit: 413, from the
    length the data declares, before anything is inflated."""
    import cramjam

    from eas.protocols.wire import MAX_BODY_BYTES

    bomb = tmp_path / "bomb.snappy"
    bomb.write_bytes(bytes(cramjam.snappy.compress_raw(b"\0" * (MAX_BODY_BYTES + 1))))
    call = {"client": client(sdk_server.url, compressed_services["snappy"], retry_count=1),
            "request": {"kind": "bytes", "file": str(bomb)}}
    [refused] = run_sdk([call])
    assert (refused["ok"], refused["code"]) == (False, 413), refused
    assert "decompresses to more than" in refused["message"]


def test_direct_mode_spreads_over_new_instances(sdk_server, tmp_path):
    token = deploy(sdk_server, echo_spec("py_direct"), tmp_path)
    sync = tmp_path / "sync"
    driver = ScaleDriver(sdk_server, "py_direct", sync)
    job = {"spread": {"client": client(f"127.0.0.1:{sdk_server.port}", "py_direct", token, endpoint_type="DIRECT"),
                      "body": "direct", "sync_dir": str(sync), "deadline_s": 10}}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    proc = subprocess.Popen([str(SDK_PYTHON), str(DRIVER), str(job_file)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(CLIENT_TZ))
    try:
        driver.wait_ready_then_scale(lambda: proc.poll() is None)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert_spread(_parse(stdout, stderr))
