"""Processor wire formats as EAS has them, on real tiny models trained here: PMML's bare
lists and missing-value imputation, the signature a GET shows, and server-side batching
of tensor models (compatible requests in one call, the others alone, a bad one failing
only itself). Paddle runs in a subprocess: it cannot share a process with TensorFlow."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from eas.instance.runtime import ServiceRuntime
from processors import Request, create_processor, signature_of, tfproto, torchproto
from tests.support.models import BUILDERS, HEART_REPLACED, BuiltModel, HeartModel, build_pmml_heart
from tests.support.platform import Harness, echo_spec, served_fixture, write_echo_code  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def heart(tmp_path_factory: pytest.TempPathFactory) -> HeartModel:
    return build_pmml_heart(tmp_path_factory.mktemp("heart"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root = tmp_path_factory.mktemp("models")
    return {name: BUILDERS[name](root / name) for name in ("pytorch", "tensorflow")}


def counting(processor: Any) -> list[int]:
    """Record how many model calls the processor's `_run` makes (and still makes them)."""
    calls: list[int] = []
    run = processor._run

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return run(*args, **kwargs)

    processor._run = spy
    return calls


# -- PMML ---------------------------------------------------------------------------------


def test_pmml_takes_and_answers_bare_lists(heart: HeartModel) -> None:
    processor = create_processor({"processor": "pmml"}, model_dir=str(heart.path))
    answer = json.loads(processor.predict(Request(json.dumps(heart.rows).encode())).body)
    assert isinstance(answer, list) and set(answer[0]) == {"p_0", "p_1"}
    np.testing.assert_allclose([a["p_1"] for a in answer], heart.p_1, rtol=1e-6)  # `[0].p_1` reads it
    one = json.loads(processor.predict(Request(json.dumps(heart.rows[0]).encode())).body)
    assert one == answer[:1], "one row object alone answers a one-item list"
    wrapped = json.loads(processor.predict(Request(json.dumps({"instances": heart.rows}).encode())).body)
    assert wrapped == {"predictions": answer}


def test_pmml_imputes_missing_values_as_eas_does(heart: HeartModel) -> None:
    processor = create_processor({"processor": "pmml"}, model_dir=str(heart.path))
    row = dict(heart.rows[0])

    def p_1(record: dict[str, Any]) -> float:
        return json.loads(processor.predict(Request(json.dumps([record]).encode())).body)[0]["p_1"]

    no_age = {k: v for k, v in row.items() if k != "age"}
    assert p_1(no_age) == pytest.approx(heart.predict([{**row, "age": 0.0}])[0]), "no replacement declared: 0.0"
    assert p_1({**row, "age": None}) == pytest.approx(p_1(no_age)), "null is missing too"
    name, value = HEART_REPLACED
    assert p_1({**row, name: None}) == pytest.approx(heart.predict([{**row, name: value}])[0]), \
        "the MiningField's missingValueReplacement wins"
    bad = processor.predict
    with pytest.raises(Exception, match="instance 0: field 'age' expects double, received str"):
        bad(Request(json.dumps([{**row, "age": "old"}]).encode()))


# -- the signature a GET shows ----------------------------------------------------------------


def test_tensorflow_shows_its_signatures_as_eas_does(built: dict[str, BuiltModel]) -> None:
    processor = create_processor(built["tensorflow"].service("t"), model_dir=str(built["tensorflow"].model_path))
    sig = signature_of(processor)
    assert sig["signature_name"] == "serving_default"
    assert sorted(sig["inputs"], key=lambda t: t["name"]) == [
        {"name": "ids", "shape": [-1], "type": "DT_INT64"}, {"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"}]
    assert sorted(sig["outputs"], key=lambda t: t["name"]) == [
        {"name": "ids_twice", "shape": [-1], "type": "DT_INT64"}, {"name": "scores", "shape": [-1, 2], "type": "DT_FLOAT"}]
    assert set(sig["signatures"]) == {"serving_default", "total"}


def test_pytorch_and_onnx_show_what_they_know(built: dict[str, BuiltModel], tmp_path: Path) -> None:
    torch_model = built["pytorch"]
    processor = create_processor(torch_model.service("t"), model_dir=str(torch_model.model_path))
    sig = signature_of(processor)
    assert sig["inputs"] == [{"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"}]
    assert [o["name"] for o in sig["outputs"]] == ["0", "1"] and sig["returns"].startswith("Tuple[Tensor, Tensor]")

    from tests.unit.test_processors_onnx import mlp_graph  # the ONNX tests' own two-input graph
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp_graph().SerializeToString())
    onnx_sig = signature_of(create_processor({"processor": "onnx"}, model_dir=str(path)))
    assert onnx_sig == {"signature_name": "serving_default",
                        "inputs": [{"name": "a", "shape": [-1, 2], "type": "DT_FLOAT"},
                                   {"name": "b", "shape": [-1, 2], "type": "DT_FLOAT"}],
                        "outputs": [{"name": "y", "shape": [-1, 1], "type": "DT_FLOAT"}]}


def test_processors_without_a_signature_say_so(tmp_path: Path) -> None:
    code = tmp_path / "app.py"
    code.write_text("class P:\n    def initialize(self): pass\n    def process(self, data): return data, 200\n")
    processor = create_processor({"processor_type": "python"}, processor_path=str(code))
    with pytest.raises(Exception, match="has no model signature to show"):
        signature_of(processor)


# -- batching ----------------------------------------------------------------------------------


def torch_json(rows: Any) -> Request:
    return Request(json.dumps({"instances": rows}).encode(), content_type="application/json")


def test_pytorch_batches_compatible_requests_into_one_forward(built: dict[str, BuiltModel]) -> None:
    model = built["pytorch"]
    processor = create_processor({"processor": "pytorch"}, model_dir=str(model.model_path))  # no declared inputs
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 3)).round(3), rng.normal(size=(1, 3)).round(3)
    proto = torchproto.PredictRequest()
    proto.inputs.add().CopyFrom(torchproto.array_to_proto(rng.normal(size=(3, 3)).astype(np.float32)))
    alone = [processor.predict(r) for r in (torch_json(a.tolist()), torch_json(b.tolist()), Request(proto.SerializeToString()))]
    calls = counting(processor)
    batch = processor.predict_batch([
        torch_json(a.tolist()), torch_json(b.tolist()), Request(proto.SerializeToString()),
        torch_json([[1, 2, 3]]),  # int64: another key, runs alone, and the model refuses it
        Request(b'{"instances": [[1.0, 2.0'),  # does not decode
    ])
    assert [r.status for r in batch] == [200, 200, 200, 400, 400]
    assert [r.body for r in batch[:3]] == [r.body for r in alone], "each gets its own rows, in its own form"
    assert len(calls) == 2, "the three float requests ran as one forward(), the int one alone"
    assert b"the model rejected the input" in batch[3].body and b"not valid JSON" in batch[4].body


def test_tensorflow_batches_requests_to_one_signature(built: dict[str, BuiltModel]) -> None:
    model = built["tensorflow"]
    processor = create_processor(model.service("t"), model_dir=str(model.model_path))
    other = tfproto.PredictRequest(signature_name="serving_default", output_filter=["scores"])
    other.inputs["x"].CopyFrom(tfproto.array_to_proto(np.ones((1, 3), np.float32)))
    other.inputs["ids"].CopyFrom(tfproto.array_to_proto(np.array([7], np.int64)))
    requests = [Request(model.body), Request(other.SerializeToString()),
                Request(json.dumps({"signature_name": "total", "instances": [[1.0, 1.0, 1.0]]}).encode()),
                Request(model.bad_body)]
    alone = [processor.predict(r) for r in requests[:3]]
    calls = counting(processor)
    batch = processor.predict_batch(requests)
    assert [r.status for r in batch] == [200, 200, 200, 400]
    assert [r.body for r in batch[:3]] == [r.body for r in alone]
    assert len(calls) == 2, "serving_default once for two requests (same outputs asked), total alone"


def test_eas_python_code_opts_in_to_batching(tmp_path: Path) -> None:
    code = tmp_path / "app.py"
    code.write_text('''
import json

class Doubler:
    def initialize(self):
        self.batches = []

    def process(self, data):
        return self.process_batch([data])[0]

    def process_batch(self, data_list):
        self.batches.append(len(data_list))
        out = []
        for data in data_list:
            x = json.loads(data)["x"]
            out.append((json.dumps({"y": x * 2}), 200))
        return out
''')
    spec = {"name": "doubler", "processor_type": "python", "processor_path": str(code),
            "metadata": {"instance": 1, "rpc": {"batching": True, "max_batch_size": 8, "max_batch_timeout": 200,
                                                "worker_threads": 1}}}
    runtime = ServiceRuntime(spec, str(tmp_path / "cache"))
    try:
        async def burst() -> list[Any]:
            bodies = [json.dumps({"x": i}).encode() for i in range(6)] + [b"{}"]
            return await asyncio.gather(*(runtime.predict(Request(b, request_id=str(i)))
                                          for i, b in enumerate(bodies)))

        answers = asyncio.run(burst())
    finally:
        runtime.close()
    assert [json.loads(a.body)["y"] for a in answers[:6]] == [0, 2, 4, 6, 8, 10]
    assert answers[6].status == 400 and b"KeyError" in answers[6].body, "the bad body fails alone"
    assert max(runtime.processor.instance.batches) > 1, runtime.processor.instance.batches


PADDLE_BATCH = '''
import json, sys
from pathlib import Path
import numpy as np
from processors import Request, create_processor, signature_of
from tests.support.models import build_paddle

built = build_paddle(Path(sys.argv[1]))
processor = create_processor({"processor": "paddle"}, model_dir=str(built.model_path))
calls = []
run = processor._run
processor._run = lambda feeds: (calls.append(1), run(feeds))[1]
rows = np.random.default_rng(5).normal(size=(3, 3)).astype(np.float32)
requests = [Request(json.dumps({"inputs": {"x": rows[:2].tolist()}}).encode()),
            Request(json.dumps({"inputs": {"x": rows[2:].tolist()}}).encode()),
            Request(built.body), Request(built.bad_body)]
alone = [processor.predict(r).body for r in requests[:3]]
calls.clear()
batch = processor.predict_batch(requests)
print(json.dumps({"status": [r.status for r in batch], "same": [r.body == a for r, a in zip(batch, alone)],
                  "calls": len(calls), "signature": signature_of(processor)}))
'''


def test_paddle_batches_one_run_requests(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PADDLE_BATCH, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == [200, 200, 200, 400] and all(result["same"])
    assert result["calls"] == 1, "the three one-run requests of x [?, 3] ran as one predictor call"
    assert result["signature"]["inputs"] == [{"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"}]


def test_get_on_the_predict_path_goes_through_gateway_and_instance(served: Harness, tmp_path: Path) -> None:
    """The real gateway and instance server (in-memory backend for Ray): the token is
    checked on a GET as on a POST, and the instance answers with the processor's signature
    (user code has none: a 400 saying so)."""
    code = write_echo_code(tmp_path / "echo")
    served.running(echo_spec("echo", code))
    token = served.describe("echo")["AccessToken"]
    url = f"{served.url}/api/predict/echo"
    assert httpx.get(url, timeout=10).status_code == 401
    answer = httpx.get(url, headers={"Authorization": token}, timeout=10)
    assert answer.status_code == 400 and "has no model signature to show" in answer.json()["message"]
    assert httpx.post(url, content=b"hi", headers={"Authorization": token}, timeout=10).content == b"echo:hi"
