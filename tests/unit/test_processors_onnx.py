"""OnnxProcessor against a skl2onnx-converted model and hand-built ONNX graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from processors import ModelContext, ModelLoadError, ProcessorError, Request, tfproto
from processors.onnx import OnnxProcessor

RNG = np.random.default_rng(0)
X = RNG.random((16, 3)).astype(np.float32)
Y = (X[:, 0] > 0.5).astype(int)
QUERY = [[0.2, 0.4, 0.6], [0.9, 0.1, 0.3]]
W1, W2 = RNG.standard_normal((2, 3)).astype(np.float32), RNG.standard_normal((2, 3)).astype(np.float32)
B1, W3 = RNG.standard_normal(3).astype(np.float32), RNG.standard_normal((3, 1)).astype(np.float32)


def mlp_graph() -> onnx.ModelProto:
    """y = relu(a @ W1 + b @ W2 + B1) @ W3, with two named inputs of fixed width 2."""
    nodes = [
        helper.make_node("MatMul", ["a", "W1"], ["ha"]),
        helper.make_node("MatMul", ["b", "W2"], ["hb"]),
        helper.make_node("Add", ["ha", "hb"], ["hab"]),
        helper.make_node("Add", ["hab", "B1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["h"]),
        helper.make_node("MatMul", ["h", "W3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(v, n) for n, v in (("W1", W1), ("W2", W2), ("B1", B1), ("W3", W3))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def int_graph() -> onnx.ModelProto:
    """doubled = ids + ids on int32: exercises integer casting rules."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["ids", "ids"], ["doubled"])], "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None])],
        [helper.make_tensor_value_info("doubled", TensorProto.INT32, [None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def mlp_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a @ W1 + b @ W2 + B1, 0) @ W3


@pytest.fixture(scope="module")
def logreg() -> LogisticRegression:
    return LogisticRegression().fit(X, Y)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, logreg: LogisticRegression) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    built = {
        "logreg": to_onnx(logreg, X[:1], options={id(logreg): {"zipmap": False}}),
        "zipmap": to_onnx(logreg, X[:1]),
        "mlp": mlp_graph(),
        "ints": int_graph(),
    }
    paths = {}
    for name, model in built.items():
        (root / name).mkdir()
        paths[name] = root / name / f"{name}.onnx"
        paths[name].write_bytes(model.SerializeToString())
    return paths


def loaded(path: Path, **ctx: Any) -> OnnxProcessor:
    processor = OnnxProcessor(ModelContext(model_dir=str(path), **ctx))
    processor.load()
    return processor


def ask_json(processor: OnnxProcessor, payload: Any, content_type: str | None = None) -> Any:
    response = processor.predict(Request(json.dumps(payload).encode(), content_type=content_type))
    assert response.status == 200 and response.content_type == "application/json"
    return json.loads(response.body)


def ask_proto(processor: OnnxProcessor, inputs: dict[str, np.ndarray],
              output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
    request = tfproto.PredictRequest(signature_name="serving_default", output_filter=output_filter)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tfproto.array_to_proto(value))
    response = processor.predict(Request(request.SerializeToString(),
                                         content_type="application/octet-stream"))
    assert response.content_type == "application/octet-stream"
    parsed = tfproto.PredictResponse.FromString(response.body)
    return {name: tfproto.array_from_proto(proto) for name, proto in parsed.outputs.items()}


def client_error(processor: OnnxProcessor, body: bytes, content_type: str | None = None) -> str:
    with pytest.raises(ProcessorError) as info:
        processor.predict(Request(body, content_type=content_type))
    assert info.value.status == 400
    return info.value.message


# ---------------------------------------------------------------- answers

def test_instances_match_sklearn(models: dict[str, Path], logreg: LogisticRegression) -> None:
    processor = loaded(models["logreg"].parent)  # the directory: finds the single .onnx
    answer = ask_json(processor, {"instances": QUERY})
    assert answer == {"predictions": logreg.predict(np.array(QUERY)).tolist()}
    bml = ask_json(processor, {"instances": [{"features": row} for row in QUERY]})
    assert bml == answer


def test_inputs_form_returns_every_output(models: dict[str, Path], logreg: LogisticRegression) -> None:
    outputs = ask_json(loaded(models["logreg"]), {"inputs": {"X": QUERY}})["outputs"]
    assert outputs["label"] == logreg.predict(np.array(QUERY)).tolist()
    np.testing.assert_allclose(outputs["probabilities"], logreg.predict_proba(np.array(QUERY)),
                               rtol=1e-5)
    only = ask_json(loaded(models["logreg"]), {"inputs": QUERY, "output_filter": ["probabilities"]})
    assert list(only["outputs"]) == ["probabilities"]


def test_protobuf_request(models: dict[str, Path], logreg: LogisticRegression) -> None:
    processor = loaded(models["logreg"])
    query = np.array(QUERY, dtype=np.float64)  # double is cast to the model's float
    outputs = ask_proto(processor, {"X": query})
    assert set(outputs) == {"label", "probabilities"}
    np.testing.assert_array_equal(outputs["label"], logreg.predict(query))
    np.testing.assert_allclose(outputs["probabilities"], logreg.predict_proba(query), rtol=1e-5)
    assert set(ask_proto(processor, {"X": query}, ["label"])) == {"label"}


def test_two_input_mlp(models: dict[str, Path]) -> None:
    a = RNG.random((4, 2)).astype(np.float32)
    b = RNG.random((4, 2)).astype(np.float32)
    session = ort.InferenceSession(str(models["mlp"]), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"a": a, "b": b})
    np.testing.assert_allclose(expected, mlp_reference(a, b), rtol=1e-5)

    processor = loaded(models["mlp"])
    answer = ask_json(processor, {"inputs": {"a": a.tolist(), "b": b.tolist()}})
    np.testing.assert_allclose(answer["outputs"]["y"], expected, rtol=1e-6)
    np.testing.assert_allclose(ask_proto(processor, {"a": a, "b": b})["y"], expected, rtol=1e-6)


def test_json_sniffed_without_content_type(models: dict[str, Path],
                                          logreg: LogisticRegression) -> None:
    processor = loaded(models["logreg"])
    body = b'  \n {"instances": [[0.2, 0.4, 0.6]]}'
    response = processor.predict(Request(body, content_type="application/octet-stream"))
    assert json.loads(response.body)["predictions"] == logreg.predict([[0.2, 0.4, 0.6]]).tolist()


def test_integer_inputs(models: dict[str, Path]) -> None:
    processor = loaded(models["ints"])
    assert ask_json(processor, {"instances": [1, 2.0, -3]}) == {"predictions": [2, 4, -6]}
    np.testing.assert_array_equal(
        ask_proto(processor, {"ids": np.array([5, 6], dtype=np.int64)})["doubled"], [10, 12])
    assert "the model takes integers" in client_error(processor, b'{"instances": [1.5]}')
    assert "out of range for int32" in client_error(processor, b'{"instances": [3000000000]}')


def test_zipmap_outputs(models: dict[str, Path], logreg: LogisticRegression) -> None:
    processor = loaded(models["zipmap"])
    outputs = ask_json(processor, {"inputs": {"X": QUERY}})["outputs"]
    expected = logreg.predict_proba(np.array(QUERY))
    got = [[row[k] for k in ("0", "1")] for row in outputs["output_probability"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A sequence of maps has no ArrayProto form: left out unless asked for by name.
    assert set(ask_proto(processor, {"X": np.array(QUERY, np.float32)})) == {"output_label"}
    request = tfproto.PredictRequest(output_filter=["output_probability"])
    request.inputs["X"].CopyFrom(tfproto.array_to_proto(np.array(QUERY, np.float32)))
    assert "no ArrayProto form" in client_error(processor, request.SerializeToString())


def test_batch_matches_single_requests(models: dict[str, Path]) -> None:
    processor = loaded(models["logreg"])
    proto = tfproto.PredictRequest()
    proto.inputs["X"].CopyFrom(tfproto.array_to_proto(np.array(QUERY, np.float32)))
    bodies = [json.dumps({"instances": QUERY}).encode(), b'{"instances": [[1, 2]]}',
              json.dumps({"instances": [QUERY[1]]}).encode(),
              json.dumps({"inputs": {"X": QUERY}}).encode(), proto.SerializeToString()]
    requests = [Request(body, request_id=str(i)) for i, body in enumerate(bodies)]
    batch = processor.predict_batch(requests)
    assert [r.status for r in batch] == [200, 400, 200, 200, 200]
    for request, response in zip(requests, batch):
        if response.status == 200:
            assert response.body == processor.predict(request).body
    assert json.loads(batch[1].body)["request_id"] == "1"


def test_session_options(models: dict[str, Path]) -> None:
    for level in ("basic", "ORT_ENABLE_ALL", 99, "disable"):
        config = {"intra_op_num_threads": 1, "inter_op_num_threads": 1,
                  "graph_optimization_level": level}
        processor = loaded(models["logreg"], model_config=json.dumps(config))
        assert ask_json(processor, {"instances": QUERY})["predictions"]
    with pytest.raises(ModelLoadError, match="graph_optimization_level 'turbo' is not one of"):
        loaded(models["logreg"], model_config={"graph_optimization_level": "turbo"})
    with pytest.raises(ModelLoadError, match="intra_op_num_threads must be a non-negative integer"):
        loaded(models["logreg"], model_config={"intra_op_num_threads": -2})


# ---------------------------------------------------------------- errors

def test_load_errors(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="model.onnx is not a valid ONNX model"):
        loaded(tmp_path)
    (tmp_path / "other.onnx").write_bytes(models["mlp"].read_bytes())
    with pytest.raises(ModelLoadError, match="several ONNX model files.*model.onnx, other.onnx"):
        loaded(tmp_path)
    assert loaded(tmp_path, model_entry="other.onnx").inputs.keys() == {"a", "b"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no \*.onnx file in .*empty \(it is empty\)"):
        loaded(tmp_path / "empty")


@pytest.mark.parametrize("payload, message", [
    ({"inputs": {"a": [[1, 2]]}}, "missing input 'b'; model inputs: a (tensor(float) [N, 2]), b"),
    ({"inputs": {"a": [[1, 2]], "b": [[1, 2]], "c": [1]}}, "unknown input 'c'"),
    ({"inputs": {"a": [1, 2], "b": [[1, 2]]}},
     "input 'a' expects tensor(float) with shape [N, 2]; received int64 with shape [2]: "
     "rank 1 instead of 2; wrap a single instance in a list"),
    ({"inputs": {"a": [[1, 2, 3]], "b": [[1, 2]]}}, "dimension 1 is 3, the model needs 2"),
    ({"inputs": {"a": [["x", "y"]], "b": [[1, 2]]}},
     "input 'a' expects tensor(float) with shape [N, 2]; received string with shape [1, 2]"),
    ({"inputs": {"a": [[1, 2], [3]], "b": [[1, 2]]}}, "nested lists of uneven lengths"),
    ({"instances": [[1, 2]]}, '"instances" works for single-input models only'),
    ({"rows": [[1, 2]]}, 'expected {"inputs": {name: values}} or {"instances": [...]}; '
                         "the object has keys: rows"),
    ({"inputs": [[1, 2]]}, '"inputs" must map input names to values'),
    ({"inputs": {"a": [[1, 2]], "b": [[1, 2]]}, "output_filter": ["z"]}, "unknown output 'z'"),
])
def test_bad_json_requests(models: dict[str, Path], payload: Any, message: str) -> None:
    assert message in client_error(loaded(models["mlp"]), json.dumps(payload).encode())


def test_bad_protobuf_requests(models: dict[str, Path]) -> None:
    processor = loaded(models["mlp"])
    request = tfproto.PredictRequest()
    request.inputs["a"].CopyFrom(tfproto.array_to_proto(np.ones((1, 2), np.float32)))
    request.inputs["b"].CopyFrom(tfproto.array_to_proto(np.array([["s", "t"]])))
    assert "input 'b' expects tensor(float)" in client_error(processor, request.SerializeToString())
    del request.inputs["b"]
    assert "missing input 'b'" in client_error(processor, request.SerializeToString())
    request.inputs["zz"].CopyFrom(tfproto.array_to_proto(np.ones(1, np.float32)))
    assert "unknown input 'zz'" in client_error(processor, request.SerializeToString())


def test_undecodable_bodies(models: dict[str, Path]) -> None:
    processor = loaded(models["mlp"])
    assert "neither JSON nor a serialized TF PredictRequest" in client_error(processor, b"\xff\xff\xff")
    assert "not valid JSON" in client_error(processor, b"{broken", "application/json")
    assert "not valid JSON" in client_error(processor, b"[1, 2")
    assert "empty request body" in client_error(processor, b"  ")


def test_string_inputs(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])], "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("o", TensorProto.STRING, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (tmp_path / "s.onnx").write_bytes(model.SerializeToString())
    processor = loaded(tmp_path)
    assert ask_json(processor, {"instances": ["a", "bé"]}) == {"predictions": ["a", "bé"]}
    sent = np.array(["x".encode(), "é".encode()], dtype=object)
    np.testing.assert_array_equal(ask_proto(processor, {"s": sent})["o"], sent)
    bad = tfproto.PredictRequest()
    bad.inputs["s"].CopyFrom(tfproto.array_to_proto(np.array([b"\xff"], dtype=object)))
    assert "not valid UTF-8" in client_error(processor, bad.SerializeToString())
    assert "the model takes strings" in client_error(processor, b'{"instances": [1, 2]}')
