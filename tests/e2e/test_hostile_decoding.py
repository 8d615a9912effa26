"""Hostile request bodies against the real eas-server (docs/security.md, "Decoding").

- a TF PredictRequest of a couple dozen bytes that declares shape [50000, 50000] and one
  value (10 GB by TensorFlow's "one value fills the shape" convention) is a fast 400,
  the instance's memory stays flat and the service keeps answering;
- a deeply nested JSON body batched with good requests fails alone;
- hostile v2 bodies (huge declared shapes, deep nesting) fail alone, memory flat.

Instance memory is the RSS of the Ray worker that hosts the replica (`Pid` of
`eascmd w <service> --json`), read from /proc.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest

from processors import tfproto
from tests.e2e.harness import EasServer, sklearn_service, write_json

pytestmark = pytest.mark.e2e

#: How much an instance may grow while refusing hostile requests (generous: allocator
#: noise and the good requests' own buffers; the attacks ask for gigabytes).
RSS_SLACK = 150 * 1024 * 1024
#: A refusal must not take a noticeable time.
FAST_S = 2.0
DEEP = b"[" * 20000 + b"]" * 20000


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def instance_pid(server: EasServer, name: str) -> int:
    (instance,) = json.loads(server.eascmd("w", name, "--json").stdout)
    return int(instance["Ext"]["Pid"])


def tf_fill(name: str, dims: list[int], value: float = 1.0) -> bytes:
    request = tfproto.PredictRequest()
    array = request.inputs[name]
    array.dtype = tfproto.DT_FLOAT
    array.array_shape.dim.extend(dims)
    array.float_val.append(value)
    return request.SerializeToString()


@pytest.fixture(scope="module")
def services(server: EasServer, iris: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An ONNX regressor (input [?, 3]) and a batched sklearn classifier, created side by side."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    directory = tmp_path_factory.mktemp("hostile-onnx")
    model = to_onnx(LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5], np.float32)), x[:1])
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    specs = {
        "hostile_onnx": {"name": "hostile_onnx", "processor": "onnx", "model_path": str(directory),
                         "metadata": {"instance": 1, "cpu": 0.5}},
        # A wide batching window: requests sent together share a batch.
        "hostile_batch": sklearn_service("hostile_batch", iris["path"],
                                         rpc={"batching": True, "max_batch_size": 16, "max_batch_timeout": 300}),
    }
    root = tmp_path_factory.mktemp("hostile-specs")
    errors: list[BaseException] = []

    def create(name: str) -> None:
        try:
            server.eascmd("create", str(write_json(root / f"{name}.json", specs[name])), timeout=180)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(name,)) for name in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    rows = x[:4]
    return {"tokens": {name: server.desc(name)["AccessToken"] for name in specs},
            "input": session.get_inputs()[0].name, "output": session.get_outputs()[0].name,
            "rows": rows, "expected": session.run(None, {session.get_inputs()[0].name: rows})[0]}


def test_amplifying_tf_request_is_a_fast_400_and_memory_stays_flat(server: EasServer, services: dict[str, Any]) -> None:
    token, name = services["tokens"]["hostile_onnx"], services["input"]
    good = json.dumps({"inputs": {name: services["rows"].tolist()}})
    assert server.predict("hostile_onnx", good, token).status_code == 200
    pid = instance_pid(server, "hostile_onnx")
    before = rss(pid)

    body = tf_fill(name, [50000, 50000])
    assert len(body) < 32, len(body)  # a couple dozen bytes that declare 2.5e9 floats
    for _ in range(3):
        started = time.monotonic()
        resp = server.predict("hostile_onnx", body, token, **{"Content-Type": "application/octet-stream"})
        assert time.monotonic() - started < FAST_S
        assert resp.status_code == 400, resp.text
        message = resp.json()["message"]
        assert f"input {name!r}" in message and "[50000, 50000]" in message and "the model needs 3" in message
    # Within the model's [?, 3] but past the per-request cap: 413 naming the limit.
    resp = server.predict("hostile_onnx", tf_fill(name, [100_000_000, 3]), token,
                          **{"Content-Type": "application/octet-stream"})
    assert resp.status_code == 413, resp.text
    assert "[100000000, 3]" in resp.json()["message"] and "max_request_elements" in resp.json()["message"]

    assert rss(pid) - before < RSS_SLACK, f"instance RSS grew {before} -> {rss(pid)}"
    assert instance_pid(server, "hostile_onnx") == pid  # the same instance, never restarted
    resp = server.predict("hostile_onnx", good, token)
    assert resp.status_code == 200
    np.testing.assert_allclose(np.array(resp.json()["outputs"][services["output"]]), services["expected"], rtol=1e-5)


def batches_of(server: EasServer, service: str) -> dict[int, int]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found: dict[int, int] = {}
    for labels, value in re.findall(r'^eas_batches_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        if f'service="{service}"' in labels:
            size = int(re.search(r'size="(\d+)"', labels).group(1))
            found[size] = found.get(size, 0) + int(float(value))
    return found


def test_deeply_nested_json_fails_only_itself_in_a_batch(server: EasServer, services: dict[str, Any],
                                                         iris: dict[str, Any]) -> None:
    token = services["tokens"]["hostile_batch"]
    good = json.dumps({"instances": iris["rows"]}).encode()
    pid = instance_pid(server, "hostile_batch")
    before = rss(pid)
    bodies = [good, good, DEEP, good, b'{"instances": ' + DEEP + b"}", good]

    async def send_together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{server.url}/api/predict/hostile_batch", content=body,
                            headers={"Authorization": token}) for body in bodies))

    answers = asyncio.run(send_together())
    assert [a.status_code for a in answers] == [200, 200, 400, 200, 400, 200], [a.text[:200] for a in answers]
    for answer in (answers[i] for i in (0, 1, 3, 5)):
        assert answer.json() == {"predictions": iris["expected"]}
    assert "nests too deeply" in answers[2].json()["message"]
    assert rss(pid) - before < RSS_SLACK
    # They did share batches: the instance reports a batch of more than one (scraped each second).
    deadline = time.monotonic() + 15
    while not any(size > 1 for size in batches_of(server, "hostile_batch")):
        assert time.monotonic() < deadline, f"no batch of 2+ reported: {batches_of(server, 'hostile_batch')}"
        time.sleep(0.5)


def test_hostile_v2_bodies_fail_alone(server: EasServer, services: dict[str, Any]) -> None:
    token, name = services["tokens"]["hostile_onnx"], services["input"]
    url = f"{server.url}/v2/models/hostile_onnx/infer"
    headers = {"Authorization": token, "Content-Type": "application/json"}
    pid = instance_pid(server, "hostile_onnx")
    before = rss(pid)

    def tensor(shape: list[int], data: Any) -> bytes:
        return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}).encode()

    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [50000, 50000],
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    hostile = [
        (tensor([50000, 50000], [1.0]), {}, 413, "[50000, 50000]"),
        (tensor([2**32, 2**32], []), {}, 413, "max_request_elements"),
        (b'{"inputs": [{"name": "' + name.encode() + b'", "datatype": "FP32", "shape": [1], "data": '
         + DEEP + b"}]}", {}, 400, "nests too deeply"),
        (head + b"\0\0\0\0", {"Inference-Header-Content-Length": str(len(head))}, 413, "[50000, 50000]"),
    ]
    for body, extra, status, words in hostile:
        started = time.monotonic()
        resp = httpx.post(url, content=body, headers={**headers, **extra}, timeout=30)
        assert time.monotonic() - started < FAST_S
        assert resp.status_code == status, resp.text[:300]
        error = resp.json()["error"]
        assert words in error, error
        if status == 413:  # the limit's message names the input, its declared shape and the limit
            assert f"input {name!r}" in error and "per request" in error, error
    assert rss(pid) - before < RSS_SLACK
    rows = services["rows"]
    resp = httpx.post(url, content=tensor(list(rows.shape), rows.ravel().tolist()), headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    (output,) = resp.json()["outputs"]
    np.testing.assert_allclose(np.array(output["data"]).reshape(output["shape"]), services["expected"], rtol=1e-5)
