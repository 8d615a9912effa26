"""Streamed answers through the real eas-server and Ray Serve (issue 22).

One server for the module, two services: `streams`, a python processor whose `process`
returns generators (server-sent events 100 ms apart, 1 GiB in 1 MiB pieces, ticks
forever), on a single worker thread so that an abandoned stream holding it would show;
and `iris`, the sklearn model, for gRPC ModelStreamInfer (with grpcio, and with
tritonclient's own stream API from its venv). What each test measures is printed.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from eas.protocols import grpc_messages
from tests.e2e.harness import REPO, sklearn_service, write_json

pytestmark = pytest.mark.e2e

CODE = '''
import time


class Streams:
    def initialize(self):
        pass

    def process(self, data):
        if data == b"sse":
            return self.sse()
        if data == b"gib":
            return self.gib()
        if data == b"forever":
            return self.forever()
        return b"pong", 200

    def sse(self):
        for i in range(20):
            if i:
                time.sleep(0.1)
            yield f"id: {i}\\ndata: event {i}\\n\\n"

    def gib(self):
        piece = b"g" * (1 << 20)
        for _ in range(1024):
            yield piece

    def forever(self):
        while True:
            yield b"tick\\n"
            time.sleep(0.05)
'''
V2_PYTHON = REPO / "tests" / "e2e" / "v2client" / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def deployed(server, iris, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("streams")
    (root / "code").mkdir()
    (root / "code" / "app.py").write_text(CODE)
    specs = {
        "streams": {"name": "streams", "processor_type": "python", "processor_path": str(root / "code"),
                    "metadata": {"instance": 1, "cpu": 0.5, "rpc": {"worker_threads": 1, "keepalive": 5000}}},
        "iris": sklearn_service("iris", iris["path"]),
    }
    with ThreadPoolExecutor(len(specs)) as pool:
        list(pool.map(lambda s: server.eascmd("create", str(write_json(root / f"{s['name']}.json", s))),
                      specs.values()))
    with server.admin() as client:
        tokens = {n: client.get(f"/api/v2/services/local/{n}").json()["AccessToken"] for n in specs}
    return {"tokens": tokens, "iris": iris}


def test_server_sent_events_arrive_as_they_are_made(server, deployed: dict[str, Any]) -> None:
    token = deployed["tokens"]["streams"]
    started = time.perf_counter()
    arrivals: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{server.url}/api/predict/streams", content=b"sse",
                      headers={"Authorization": token}, timeout=30) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.perf_counter() - started, line[6:]))
    first, last = arrivals[0][0], arrivals[-1][0]
    print(f"\nSSE through the gateway: first event after {first * 1000:.0f} ms, last after {last * 1000:.0f} ms")
    assert [event for _, event in arrivals] == [f"event {i}" for i in range(20)]
    assert first < 0.3, f"first event after {first:.3f} s"
    assert last - first > 1.5, "the events came together: the answer was buffered somewhere"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'eas_first_byte_seconds_count{service="streams"}' in metrics


def test_a_gib_streams_through_with_the_gateway_memory_flat(server, deployed: dict[str, Any]) -> None:
    token = deployed["tokens"]["streams"]
    before = server.rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], server.rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received = 0
    started = time.perf_counter()
    try:
        with httpx.stream("POST", f"{server.url}/api/predict/streams", content=b"gib",
                          headers={"Authorization": token}, timeout=60) as answer:
            assert answer.status_code == 200
            for piece in answer.iter_raw():
                received += len(piece)
    finally:
        done.set()
        sampler.join(timeout=5)
    seconds = time.perf_counter() - started
    growth = (peak[0] - before) / (1 << 20)
    print(f"\n1 GiB streamed in {seconds:.1f} s ({1024 / seconds:.0f} MiB/s); gateway RSS +{growth:.1f} MiB at peak")
    assert received == 1 << 30
    assert growth < 100, f"eas-server grew by {growth:.0f} MiB while streaming"


def test_a_client_that_leaves_mid_stream_frees_the_instance(server, deployed: dict[str, Any]) -> None:
    token = deployed["tokens"]["streams"]
    with httpx.stream("POST", f"{server.url}/api/predict/streams", content=b"forever",
                      headers={"Authorization": token}, timeout=30) as answer:
        ticks = answer.iter_raw()
        assert next(ticks).startswith(b"tick")
    # Gone: the one worker thread of this service must be free for the next request at once.
    started = time.perf_counter()
    pong = httpx.post(f"{server.url}/api/predict/streams", content=b"ping", headers={"Authorization": token},
                      timeout=30)
    waited = time.perf_counter() - started
    print(f"\nnext request after a client left mid-stream: answered in {waited * 1000:.0f} ms")
    assert (pong.status_code, pong.content) == (200, b"pong")
    assert waited < 1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if 'eas_requests_total{code="499",service="streams"}' in metrics and \
                'eas_instance_requests_total{code="499"' in metrics:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the 499 never showed in /metrics (gateway and instance)")


def _infer_request(rows: np.ndarray, request_id: str) -> Any:
    request = grpc_messages.ModelInferRequest(model_name="iris", id=request_id)
    request.inputs.add(name="input", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f8").tobytes())
    return request


def test_grpc_model_stream_infer(server, deployed: dict[str, Any]) -> None:
    rows, model = np.array(deployed["iris"]["rows"]), deployed["iris"]["model"]
    token = deployed["tokens"]["iris"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       request_serializer=grpc_messages.ModelInferRequest.SerializeToString,
                                       response_deserializer=grpc_messages.ModelStreamInferResponse.FromString)
        answers = list(stream(iter([_infer_request(rows[i:i + 1], f"r{i}") for i in range(len(rows))]),
                              metadata=(("authorization", token),), timeout=30))
    got = {a.infer_response.id: np.frombuffer(a.infer_response.raw_output_contents[0], "<i8").tolist()
           for a in answers if not a.error_message}
    assert got == {f"r{i}": model.predict(rows[i:i + 1]).tolist() for i in range(len(rows))}


TRITON_STREAM = '''
import json, queue, sys
import numpy as np
import tritonclient.grpc as grpcclient

target, token, rows = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
results = queue.Queue()
client = grpcclient.InferenceServerClient(target)
client.start_stream(callback=lambda result, error: results.put((result, error)), headers={"authorization": token})
for i, row in enumerate(rows):
    tensor = grpcclient.InferInput("input", [1, row.shape[0]], "FP64")
    tensor.set_data_from_numpy(row[None, :].astype(np.float64))
    client.async_stream_infer("iris", [tensor], request_id=f"t{i}")
out = {}
for _ in range(len(rows)):
    result, error = results.get(timeout=30)
    if error is not None:
        out["error"] = str(error)
    else:
        out[result.get_response().id] = result.as_numpy("predictions").tolist()
client.stop_stream()
client.close()
print(json.dumps(out))
'''


def test_tritonclient_streams_through_the_gateway(server, deployed: dict[str, Any]) -> None:
    if not V2_PYTHON.exists():
        pytest.fail(f"tritonclient's venv is missing: run `make v2client-deps` (makes {V2_PYTHON})")
    rows, model = np.array(deployed["iris"]["rows"]), deployed["iris"]["model"]
    res = subprocess.run([str(V2_PYTHON), "-c", textwrap.dedent(TRITON_STREAM), server.grpc_target,
                          deployed["tokens"]["iris"], json.dumps(rows.tolist())],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)
    assert got == {f"t{i}": model.predict(rows[i:i + 1]).tolist() for i in range(len(rows))}
