"""The Open Inference Protocol codec (eas/oip.py, eas/grpc_messages.py) and its data plane without Ray.

The codec tests pin the wire formats: datatype <-> numpy, the binary layout, JSON
data, shapes, and errors that name the input at fault. The data-plane tests run the
real gateway (REST and gRPC on 127.0.0.1) in front of real instance servers.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette

from eas.protocols import grpc_messages, oip
from eas.gateway.core import Gateway
from eas.gateway.grpc_server import GrpcGateway, model_name_of
from eas.gateway.oip_http import OipHttp
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.instance.runtime import ServiceRuntime
from eas.server import gateway_lifespan

# ---------------------------------------------------------------------------- datatypes

SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504]], dtype=np.float16),
    "FP32": np.array([[0.1, -2.5, 3.4e38]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5, 1e308]], dtype=np.float64),
    "BYTES": np.array([[b"a", b"", "h\u00e9llo".encode()]], dtype=object),
}


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_every_datatype_round_trips_raw_json_and_protobuf(datatype):
    array = SAMPLES[datatype]
    assert oip.datatype_of(array.dtype) == datatype
    raw = oip.tensor_to_raw(array, datatype)
    back = oip.tensor_from_raw(raw, datatype, list(array.shape), "input 'x'")
    assert back.dtype == oip.DATATYPES[datatype] and back.shape == array.shape
    np.testing.assert_array_equal(back, array)

    request = oip.InferRequest({}, binary={"y": False})
    body, split = oip.encode_rest("m", request, {"y": array})
    assert split is None
    tensor = json.loads(body)["outputs"][0]
    assert tensor["datatype"] == datatype and tensor["shape"] == [1, 3]
    if datatype != "FP16":  # JSON numbers are doubles: FP16 values come back as FP16 after the cast
        decoded = oip.tensor_from_json(tensor["data"], datatype, tensor["shape"], "input 'x'")
        np.testing.assert_array_equal(decoded, array)

    answer = grpc_messages.ModelInferResponse.FromString(oip.encode_grpc("m", request, {"y": array}))
    out = answer.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("y", datatype, [1, 3])
    np.testing.assert_array_equal(oip.tensor_from_raw(answer.raw_output_contents[0], datatype, [1, 3], "y"), array)


def test_binary_layout_is_little_endian_and_bytes_are_length_prefixed():
    assert oip.tensor_to_raw(np.array([1, 256], dtype=np.int32), "INT32") == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    assert oip.tensor_to_raw(np.array(["ab", b"\xff"], dtype=object), "BYTES") == \
        struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"\xff"
    big_endian = np.array([1.5], dtype=">f8")
    assert oip.datatype_of(big_endian.dtype) == "FP64"
    assert oip.tensor_to_raw(big_endian, "FP64") == struct.pack("<d", 1.5)


def test_datatype_mapping_of_other_numpy_types():
    assert oip.datatype_of(np.dtype("<U5")) == "BYTES"
    assert oip.datatype_of(np.dtype("S3")) == "BYTES"
    with pytest.raises(oip.V2Error, match="output 'z' has numpy dtype complex128"):
        oip.datatype_of(np.dtype(np.complex128), "output 'z'")


@pytest.mark.parametrize("data, datatype, shape, words", [
    ([1, 2, 3], "FP32", [2, 2], ["input 'x'", "shape [2, 2] needs 4 values, received 3"]),
    ([1.5, 2], "INT32", [2], ["input 'x'", "INT32 data must be integers", "floating-point"]),
    ([1, 300], "INT8", [2], ["input 'x'", "out of range for INT8"]),
    ([-1], "UINT8", [1], ["input 'x'", "out of range for UINT8"]),
    ([1, 0], "BOOL", [2], ["input 'x'", "BOOL data must be true/false"]),
    (["a", "b"], "FP64", [2], ["input 'x'", "must be numbers", "strings"]),
    ([1, 2], "BYTES", [2], ["input 'x'", "BYTES data must be strings"]),
    ([[1, 2], [3]], "FP32", [2, 2], ["input 'x'", "evenly nested"]),
    ([1], "FLOAT", [1], ["input 'x'", "datatype 'FLOAT' is not one of", "FP32"]),
    ([1], "FP32", [-1], ["input 'x'", "negative dimension"]),
    ([1], "FP32", "1", ["input 'x'", "shape must be a list of integers"]),
])
def test_json_data_errors_name_the_input(data, datatype, shape, words):
    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}).encode()
    with pytest.raises(oip.V2Error) as err:
        oip.decode_rest(body)
    assert all(w in err.value.message for w in words), err.value.message
    assert err.value.status == 400


def test_json_data_may_be_nested_or_flat():
    flat = oip.decode_rest(b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}]}')
    nested = oip.decode_rest(b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [2, 2], '
                            b'"data": [[1, 2], [3, 4]]}]}')
    np.testing.assert_array_equal(flat.inputs["a"], nested.inputs["a"])
    assert flat.inputs["a"].dtype == np.int64 and flat.outputs is None
    words = oip.decode_rest('{"inputs": [{"name": "w", "datatype": "BYTES", "shape": [2], "data": ["h\u00e9", ""]}]}'
                           .encode())
    assert words.inputs["w"].tolist() == ["h\u00e9".encode(), b""]


def test_binary_extension_splits_json_and_tensors():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([b"xy"], dtype=object)
    raw_a, raw_b = oip.tensor_to_raw(a, "FP32"), oip.tensor_to_raw(b, "BYTES")
    head = json.dumps({"id": "r1", "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": len(raw_a)}},
        {"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw_b)}},
        {"name": "c", "datatype": "BOOL", "shape": [1], "data": [True]}],
        "outputs": [{"name": "o1", "parameters": {"binary_data": True}}, {"name": "o2"}],
        "parameters": {"binary_data_output": False}}).encode()
    request = oip.decode_rest(head + raw_a + raw_b, str(len(head)))
    np.testing.assert_array_equal(request.inputs["a"], a)
    assert request.inputs["b"].tolist() == [b"xy"] and request.inputs["c"].tolist() == [True]
    assert request.outputs == ["o1", "o2"] and request.binary == {"o1": True, "o2": False} and request.id == "r1"

    body, split = oip.encode_rest("m", request, {"o1": a, "o2": np.array([1, 2], dtype=np.int64)})
    answer = json.loads(body[:split])
    assert answer["id"] == "r1" and answer["model_name"] == "m"
    o1, o2 = answer["outputs"]
    assert o1["parameters"] == {"binary_data_size": 24} and "data" not in o1
    assert o2["data"] == [1, 2] and "parameters" not in o2
    np.testing.assert_array_equal(np.frombuffer(body[split:], "<f4").reshape(2, 3), a)


def test_binary_output_for_every_output_when_the_request_asks():
    request = oip.decode_rest(b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}], '
                             b'"parameters": {"binary_data_output": true}}')
    body, split = oip.encode_rest("m", request, {"y": np.array([2.0])})
    assert split is not None and body[split:] == struct.pack("<d", 2.0)


@pytest.mark.parametrize("header, body, words", [
    ("x", b"{}", ["Inference-Header-Content-Length must be a number"]),
    ("99", b"{}", ["is 99 but the body has 2 bytes"]),
    ("0", b"{}", ["is 0"]),
])
def test_bad_header_length(header, body, words):
    with pytest.raises(oip.V2Error) as err:
        oip.decode_rest(body, header)
    assert all(w in err.value.message for w in words), err.value.message


def _binary_body(size: int, extra: bytes) -> tuple[bytes, str]:
    head = json.dumps({"inputs": [{"name": "img", "datatype": "FP32", "shape": [2],
                                   "parameters": {"binary_data_size": size}}]}).encode()
    return head + extra, str(len(head))


@pytest.mark.parametrize("size, extra, words", [
    (8, b"\x00" * 4, ["input 'img'", "runs past the end"]),
    (4, b"\x00" * 4, ["input 'img'", "needs 8 bytes of data, received 4"]),
    (8, b"\x00" * 12, ["4 binary bytes no input claims"]),
])
def test_binary_size_errors_name_the_input(size, extra, words):
    body, header = _binary_body(size, extra)
    with pytest.raises(oip.V2Error) as err:
        oip.decode_rest(body, header)
    assert all(w in err.value.message for w in words), err.value.message


@pytest.mark.parametrize("raw, words", [
    (struct.pack("<I", 5) + b"abc", ["input 's'", "says 5 bytes, only 3 left"]),
    (b"\x01\x00", ["input 's'", "inside an element's 4-byte length prefix"]),
    (struct.pack("<I", 1) + b"a", ["input 's'", "needs 2 BYTES elements, received 1"]),
])
def test_bytes_layout_errors(raw, words):
    with pytest.raises(oip.V2Error) as err:
        oip.tensor_from_raw(raw, "BYTES", [2], "input 's'")
    assert all(w in err.value.message for w in words), err.value.message


@pytest.mark.parametrize("payload, words", [
    ({"inputs": []}, ['expected {"inputs"']),
    ({"instances": [[1]]}, ['expected {"inputs"']),
    ({"inputs": [{"datatype": "FP32"}]}, ["inputs[0] must be an object with a string name"]),
    ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}, ["input 'a' has neither data"]),
    ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}] * 2}, ["input 'a' is given twice"]),
    ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "y"}] * 2},
     ["requested twice"]),
    ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1], "parameters": [1]}]},
     ["input 'a': parameters must be an object"]),
])
def test_request_shape_errors(payload, words):
    with pytest.raises(oip.V2Error) as err:
        oip.decode_rest(json.dumps(payload).encode())
    assert all(w in err.value.message for w in words), err.value.message
    with pytest.raises(oip.V2Error, match="not valid JSON"):
        oip.decode_rest(b"\x00\x01 binary")


def test_non_utf8_bytes_output_must_go_binary():
    request = oip.InferRequest({}, binary={"s": False})
    with pytest.raises(oip.V2Error, match="output 's' holds bytes that are not UTF-8"):
        oip.encode_rest("m", request, {"s": np.array([b"\xff"], dtype=object)})


def test_grpc_request_in_contents_or_raw():
    message = grpc_messages.ModelInferRequest(model_name="m", id="7")
    a = message.inputs.add(name="a", datatype="INT16", shape=[2, 2])
    a.contents.int_contents.extend([1, -2, 3, 4])
    s = message.inputs.add(name="s", datatype="BYTES", shape=[1])
    s.contents.bytes_contents.append(b"hi")
    message.outputs.add(name="y")
    request = oip.decode_grpc(message.SerializeToString())
    assert request.inputs["a"].dtype == np.int16 and request.inputs["a"].tolist() == [[1, -2], [3, 4]]
    assert request.inputs["s"].tolist() == [b"hi"] and request.outputs == ["y"] and request.id == "7"

    raw = grpc_messages.ModelInferRequest(model_name="m")
    raw.inputs.add(name="h", datatype="FP16", shape=[3])
    raw.raw_input_contents.append(np.array([1, 2, 3], dtype="<f2").tobytes())
    assert oip.decode_grpc(raw.SerializeToString()).inputs["h"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("build, words", [
    (lambda m: m.inputs.add(name="h", datatype="FP16", shape=[1]), ["input 'h'", "send it in raw_input_contents"]),
    (lambda m: m.inputs.add(name="a", datatype="INT8", shape=[1]).contents.int_contents.append(1000),
     ["input 'a'", "out of range for INT8"]),
    (lambda m: m.inputs.add(name="a", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1, 2]),
     ["input 'a'", "needs 3 values in contents.fp32_contents, received 2"]),
    (lambda m: (m.inputs.add(name="a", datatype="FP32", shape=[1]), m.inputs.add(name="b", datatype="FP32", shape=[1]),
                m.raw_input_contents.append(b"\x00" * 4)), ["raw_input_contents has 1 entries for 2 inputs"]),
    (lambda m: None, ["no inputs"]),
])
def test_grpc_request_errors(build, words):
    message = grpc_messages.ModelInferRequest(model_name="m")
    build(message)
    with pytest.raises(oip.V2Error) as err:
        oip.decode_grpc(message.SerializeToString())
    assert all(w in err.value.message for w in words), err.value.message
    with pytest.raises(oip.V2Error, match="not a serialized inference.ModelInferRequest"):
        oip.decode_grpc(b"\xff\xff\xff")


def test_model_name_is_read_off_the_wire_without_decoding():
    message = grpc_messages.ModelInferRequest(model_name="my_model", id="x")
    message.inputs.add(name="a", datatype="FP32", shape=[1])
    message.raw_input_contents.append(b"\x00" * 4)
    assert model_name_of(message.SerializeToString()) == "my_model"
    # Fields may come in any order: put id (3) and a raw tensor (7) before model_name (1).
    tail = grpc_messages.ModelInferRequest(model_name="late").SerializeToString()
    early = grpc_messages.ModelInferRequest(id="first", raw_input_contents=[b"abc"]).SerializeToString()
    assert model_name_of(early + tail) == "late"
    assert model_name_of(b"") == ""
    with pytest.raises(ValueError):
        model_name_of(b"\x0a\x09short")


def test_descriptors_match_the_open_inference_protocol():
    """Field numbers and types as in KServe's grpc_predict_v2.proto: the wire contract."""
    f = grpc_messages.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert [(n, f[n].number) for n in ("model_name", "model_version", "id", "parameters", "inputs", "outputs",
                                       "raw_input_contents")] == \
        [("model_name", 1), ("model_version", 2), ("id", 3), ("parameters", 4), ("inputs", 5), ("outputs", 6),
         ("raw_input_contents", 7)]
    tensor = grpc_messages.ModelInferRequest.DESCRIPTOR.nested_types_by_name["InferInputTensor"].fields_by_name
    assert {n: tensor[n].number for n in tensor} == {"name": 1, "datatype": 2, "shape": 3, "parameters": 4,
                                                     "contents": 5}
    out = grpc_messages.ModelInferResponse.DESCRIPTOR.fields_by_name
    assert out["outputs"].number == 5 and out["raw_output_contents"].number == 6
    contents = grpc_messages.InferTensorContents.DESCRIPTOR.fields_by_name
    assert {n: contents[n].number for n in contents} == {
        "bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4, "uint64_contents": 5,
        "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8}
    param = grpc_messages.InferParameter.DESCRIPTOR
    assert [fd.name for fd in param.oneofs_by_name["parameter_choice"].fields] == [
        "bool_param", "int64_param", "string_param", "double_param", "uint64_param"]
    meta = grpc_messages.ModelMetadataResponse.DESCRIPTOR
    assert {n: meta.fields_by_name[n].number for n in meta.fields_by_name} == {
        "name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5}
    # A message serialized by hand with those numbers decodes as expected.
    wire = b"\x0a\x01m" + b"\x2a\x0d\x0a\x01x\x12\x04FP32\x1a\x02\x01\x02" + b"\x3a\x08" + b"\x00" * 8
    parsed = grpc_messages.ModelInferRequest.FromString(wire)
    assert parsed.model_name == "m" and parsed.inputs[0].name == "x" and list(parsed.inputs[0].shape) == [1, 2]
    assert list(grpc_messages.PredictRequest.DESCRIPTOR.fields_by_name) == ["service", "body", "token", "content_type"]
    assert list(grpc_messages.PredictReply.DESCRIPTOR.fields_by_name) == ["status", "body", "content_type", "request_id"]


# ---------------------------------------------------------------------------- processors

@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory):
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    model = LogisticRegression().fit(x, (x[:, 0] - x[:, 2] > 0).astype(int))
    directory = tmp_path_factory.mktemp("iris")
    joblib.dump(model, directory / "model.joblib")
    return {"dir": directory, "model": model, "rows": x[:7]}


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """A two-input ONNX graph built by hand: y = a @ W + cast(b), with onnxruntime's own answers."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    w = np.array([[1.0], [-2.0], [0.5]], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "W"], ["m"]), helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["m", "bf"], ["y"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("W", TensorProto.FLOAT, [3, 1], w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory = tmp_path_factory.mktemp("onnx2")
    onnx.save(model, directory / "model.onnx")
    sess = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    b = np.array([[1], [2], [3], [4]], dtype=np.int64)
    return {"dir": directory, "a": a, "b": b, "expected": sess.run(None, {"a": a, "b": b})[0]}


def test_processors_answer_v2_like_their_frameworks(iris_dir, onnx_dir):
    from processors import create_processor

    sk = create_processor({"processor": "sklearn", "model_path": str(iris_dir["dir"])})
    rows, model = iris_dir["rows"], iris_dir["model"]
    out = sk.infer_v2({"anything": rows}, None)
    assert list(out) == ["predictions"]
    np.testing.assert_array_equal(out["predictions"], model.predict(rows))
    out = sk.infer_v2({"x": rows.astype(np.float32)}, ["probabilities"])
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows.astype(np.float32)))
    meta = oip.model_metadata("iris", sk)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}]

    ox = create_processor({"processor": "onnx", "model_path": str(onnx_dir["dir"])})
    out = ox.infer_v2({"a": onnx_dir["a"], "b": onnx_dir["b"]}, None)
    np.testing.assert_allclose(out["y"], onnx_dir["expected"], rtol=1e-6)
    # Whole float64 and int32 values are cast to what the model declares.
    out = ox.infer_v2({"a": onnx_dir["a"].astype(np.float64), "b": onnx_dir["b"].astype(np.int32)}, ["y"])
    np.testing.assert_allclose(out["y"], onnx_dir["expected"], rtol=1e-6)
    assert oip.model_metadata("two", ox)["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1, 3]},
                                                      {"name": "b", "datatype": "INT64", "shape": [-1, 1]}]


@pytest.mark.parametrize("inputs, outputs, words", [
    ({"a": np.zeros((2, 3), np.float32)}, None, ["missing input 'b'"]),
    ({"a": np.zeros((2, 2), np.float32), "b": np.zeros((2, 1), np.int64)}, None,
     ["input 'a'", "dimension 1 is 2, the model needs 3"]),
    ({"a": np.zeros((2, 3), np.float32), "b": np.full((2, 1), 0.5)}, None, ["input 'b'", "takes integers"]),
    ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 1), np.int64), "c": np.zeros(1)}, None,
     ["unknown input 'c'"]),
    ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 1), np.int64)}, ["z"], ["unknown output 'z'"]),
])
def test_onnx_v2_errors_name_the_tensor(onnx_dir, inputs, outputs, words):
    from processors import ProcessorError, create_processor

    ox = create_processor({"processor": "onnx", "model_path": str(onnx_dir["dir"])})
    with pytest.raises(ProcessorError) as err:
        ox.infer_v2(inputs, outputs)
    assert all(w in err.value.message for w in words), err.value.message


@pytest.mark.parametrize("inputs, outputs, words", [
    ({"x": np.zeros((2, 3))}, None, ["input 'x'", "expects 4 features per row, received 3"]),
    ({"x": np.zeros(4)}, None, ["input 'x'", "rank 2", "shape [4]"]),
    ({"x": np.zeros((1, 4)), "y": np.zeros((1, 4))}, None, ["one input", "'x', 'y'"]),
    ({"x": np.zeros((0, 4))}, None, ["input 'x' has no rows"]),
    ({"x": np.zeros((1, 4))}, ["labels"], ["unknown output 'labels'", "predictions, probabilities"]),
])
def test_sklearn_v2_errors_name_the_tensor(iris_dir, inputs, outputs, words):
    from processors import ProcessorError, create_processor

    sk = create_processor({"processor": "sklearn", "model_path": str(iris_dir["dir"])})
    with pytest.raises(ProcessorError) as err:
        sk.infer_v2(inputs, outputs)
    assert all(w in err.value.message for w in words), err.value.message


# ---------------------------------------------------------------------------- data plane, no Ray

TOKEN = "v2-token"
ECHO = """
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return data, 200
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def plane(tmp_path_factory, iris_dir):
    """Instances (sklearn, a python processor without v2) behind the real gateway, REST + gRPC."""
    cache = str(tmp_path_factory.mktemp("cache"))
    code = tmp_path_factory.mktemp("echo")
    (code / "app.py").write_text(ECHO)
    runtimes = {
        "iris": ServiceRuntime({"name": "iris", "processor": "sklearn", "model_path": str(iris_dir["dir"]),
                                "metadata": {"instance": 1}}, cache),
        "echo": ServiceRuntime({"name": "echo", "processor_type": "python", "processor_path": str(code),
                                "metadata": {"instance": 1}}, cache),
    }
    servers = {name: InstanceServer(InstanceApp(rt, f"{name}-1", Credentials(TOKEN, "internal")), "127.0.0.1")
               for name, rt in runtimes.items()}
    routes = RouteTable()
    for name, srv in servers.items():
        srv.start()
        routes.set(Route(name, TOKEN, (Endpoint(f"{name}-1", srv.host, srv.port),), "", keepalive_s=5))
    routes.set(Route("down", TOKEN, (), "service is stopped", keepalive_s=5))
    routes.set_entries({n: Entry(n, TOKEN, ((n, 100),)) for n in ("iris", "echo", "down")})
    gw = Gateway(routes, "internal")
    grpc_gw = GrpcGateway(gw, "127.0.0.1", _free_port())
    app = Starlette(routes=OipHttp(gw).routes(), lifespan=gateway_lifespan(gw, grpc_gw))
    http_port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started
    yield {"url": f"http://127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_gw.port}", "servers": servers,
           "iris": iris_dir}
    server.should_exit = True
    thread.join(timeout=15)
    for srv in servers.values():
        srv.stop()
    for rt in runtimes.values():
        rt.close()


def _rows_body(rows: np.ndarray) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


def test_rest_v2_through_the_gateway_and_directly(plane):
    rows, model = plane["iris"]["rows"], plane["iris"]["model"]
    auth = {"Authorization": TOKEN}
    ok = httpx.post(f"{plane['url']}/v2/models/iris/infer", json=_rows_body(rows), headers=auth)
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == model.predict(rows).tolist()
    assert ok.headers["x-eas-instance"] == "iris-1"

    no_v2 = httpx.post(f"{plane['url']}/v2/models/echo/infer", json=_rows_body(rows), headers=auth)
    assert no_v2.status_code == 400
    assert "does not support the Open Inference Protocol" in no_v2.json()["error"]
    assert "/api/predict/echo" in no_v2.json()["error"]
    meta = httpx.get(f"{plane['url']}/v2/models/echo", headers=auth)
    assert meta.status_code == 400 and "does not support" in meta.json()["error"]

    for path, status, words in [("/v2/models/down/infer", 503, "stopped"), ("/v2/models/nope/infer", 404, "nope")]:
        resp = httpx.post(plane["url"] + path, json=_rows_body(rows), headers=auth)
        assert resp.status_code == status and words in resp.json()["error"], resp.text
    assert httpx.get(f"{plane['url']}/v2/models/down/ready", headers=auth).status_code == 503
    assert httpx.get(f"{plane['url']}/v2/models/iris/ready", headers=auth).status_code == 200
    assert httpx.get(f"{plane['url']}/v2/models/iris/ready", headers={"Authorization": "x"}).status_code == 401
    assert httpx.get(f"{plane['url']}/v2/health/live").json() == {"live": True}

    # An instance serves v2 to DIRECT callers itself, with the token checked there.
    inst = plane["servers"]["iris"]
    direct = f"http://{inst.host}:{inst.port}/v2/models/iris"
    assert httpx.post(direct + "/infer", json=_rows_body(rows)).status_code == 401
    resp = httpx.post(direct + "/infer", json=_rows_body(rows), headers=auth)
    assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == model.predict(rows).tolist()
    assert httpx.get(direct, headers=auth).json()["inputs"][0]["shape"] == [-1, 4]
    assert httpx.get(direct).status_code == 401


def test_grpc_v2_and_status_codes(plane):
    rows, model = plane["iris"]["rows"], plane["iris"]["model"]
    with grpc.insecure_channel(plane["grpc"]) as channel:
        def method(name, req, resp):
            return channel.unary_unary(f"/inference.GRPCInferenceService/{name}",
                                       request_serializer=req.SerializeToString, response_deserializer=resp.FromString)

        infer = method("ModelInfer", grpc_messages.ModelInferRequest, grpc_messages.ModelInferResponse)
        ready = method("ModelReady", grpc_messages.ModelReadyRequest, grpc_messages.ModelReadyResponse)
        live = method("ServerLive", grpc_messages.ServerLiveRequest, grpc_messages.ServerLiveResponse)
        auth = (("authorization", TOKEN),)

        def request(name: str):
            message = grpc_messages.ModelInferRequest(model_name=name, id="abc")
            message.inputs.add(name="x", datatype="FP64", shape=list(rows.shape)).contents.fp64_contents.extend(
                rows.ravel().tolist())
            return message

        answer = infer(request("iris"), metadata=auth, timeout=30)
        assert answer.id == "abc" and answer.outputs[0].name == "predictions"
        got = oip.tensor_from_raw(answer.raw_output_contents[0], answer.outputs[0].datatype,
                                 list(answer.outputs[0].shape), "predictions")
        np.testing.assert_array_equal(got, model.predict(rows))
        assert live(grpc_messages.ServerLiveRequest(), timeout=10).live
        assert ready(grpc_messages.ModelReadyRequest(name="iris"), metadata=auth, timeout=10).ready
        assert not ready(grpc_messages.ModelReadyRequest(name="down"), metadata=auth, timeout=10).ready

        for name, metadata, code, words in [
            ("iris", (("authorization", "wrong"),), grpc.StatusCode.UNAUTHENTICATED, "wrong token"),
            ("iris", (), grpc.StatusCode.UNAUTHENTICATED, "missing"),
            ("nope", auth, grpc.StatusCode.NOT_FOUND, "nope"),
            ("down", auth, grpc.StatusCode.UNAVAILABLE, "stopped"),
            ("echo", auth, grpc.StatusCode.INVALID_ARGUMENT, "does not support the Open Inference Protocol"),
            ("", auth, grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                infer(request(name), metadata=metadata, timeout=30)
            assert err.value.code() == code and words in err.value.details(), (name, err.value)
        trailing = dict(err.value.trailing_metadata())
        assert trailing["eas-status"] == "400"


# ---------------------------------------------------------------------------- one instance path

def test_batched_v2_calls_are_stacked_and_split_back(iris_dir):
    """infer_batch stacks compatible calls into one model call; a bad call fails alone."""
    from eas.instance.oip import infer_batch
    from processors import Request, create_processor

    sk = create_processor({"processor": "sklearn", "model_path": str(iris_dir["dir"])})
    calls = []
    real = sk.infer_v2

    def counting(inputs, outputs):
        calls.append({k: v.shape for k, v in inputs.items()})
        return real(inputs, outputs)

    sk.infer_v2 = counting
    rows, model = iris_dir["rows"], iris_dir["model"]
    binary = oip.tensor_to_raw(rows[3:5], "FP64")
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 4],
                                   "parameters": {"binary_data_size": len(binary)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    grpc_form = grpc_messages.ModelInferRequest(model_name="iris", id="g")
    grpc_form.inputs.add(name="x", datatype="FP64", shape=[2, 4])
    grpc_form.raw_input_contents.append(oip.tensor_to_raw(rows[5:7], "FP64"))
    requests = [
        Request(json.dumps(_rows_body(rows[:1])).encode(), "application/json", request_id="a"),
        Request(json.dumps(_rows_body(rows[1:3])).encode(), "application/json", request_id="b"),
        Request(head + binary, "application/octet-stream", headers={"inference-header-content-length": str(len(head))},
                request_id="c"),
        Request(grpc_form.SerializeToString(), oip.INFER_REQUEST_TYPE, request_id="d"),
        Request(b'{"inputs": "nope"}', "application/json", request_id="bad"),
        Request(json.dumps(_rows_body(np.zeros((1, 3)))).encode(), "application/json", request_id="narrow"),
    ]
    answers = infer_batch(sk, "iris", requests)
    assert calls[0] == {"x": (7, 4)}, "the four calls of width 4 ran as one model call of 7 rows"
    assert [a.status for a in answers] == [200, 200, 200, 200, 400, 400]
    assert json.loads(answers[0].body)["outputs"][0]["data"] == model.predict(rows[:1]).tolist()
    assert json.loads(answers[1].body)["outputs"][0]["data"] == model.predict(rows[1:3]).tolist()
    split = int(answers[2].content_type.rpartition("=")[2])
    meta = json.loads(answers[2].body[:split])["outputs"][0]
    got = oip.tensor_from_raw(answers[2].body[split:], meta["datatype"], meta["shape"], "predictions")
    np.testing.assert_array_equal(got, model.predict(rows[3:5]))
    reply = grpc_messages.ModelInferResponse.FromString(answers[3].body)
    assert reply.id == "g"
    np.testing.assert_array_equal(oip.tensor_from_raw(reply.raw_output_contents[0], reply.outputs[0].datatype,
                                                      list(reply.outputs[0].shape), "p"), model.predict(rows[5:7]))
    assert "inputs" in json.loads(answers[4].body)["message"]
    assert "expects 4 features per row, received 3" in json.loads(answers[5].body)["message"]


def test_v2_takes_the_instance_path_of_eas_predict(tmp_path, iris_dir):
    """Over HTTP at one instance, v2 calls share the EAS predict path: server-side
    batching, the queue limit (450) and the counters /stats reports."""
    import asyncio

    spec = {"name": "iris", "processor": "sklearn", "model_path": str(iris_dir["dir"]),
            "metadata": {"instance": 1, "rpc": {"batching": True, "max_batch_size": 16, "max_batch_timeout": 100,
                                                "worker_threads": 1, "max_queue_size": 3}}}
    runtime = ServiceRuntime(spec, str(tmp_path / "cache"))
    server = InstanceServer(InstanceApp(runtime, "iris-1", Credentials(TOKEN, "internal")), "127.0.0.1")
    server.start()
    rows, model = iris_dir["rows"], iris_dir["model"]
    url = f"http://127.0.0.1:{server.port}/v2/models/iris/infer"

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers={"X-Eas-Internal-Key": "internal"}) as client:
            return await asyncio.gather(*(client.post(url, json=_rows_body(rows[i % 7:i % 7 + 1]))
                                          for i in range(n)))

    try:
        answers = asyncio.run(burst(4))
        assert [a.status_code for a in answers] == [200] * 4
        for i, answer in enumerate(answers):
            assert answer.json()["outputs"][0]["data"] == model.predict(rows[i % 7:i % 7 + 1]).tolist()
        assert max(runtime.batch_sizes()) > 1, runtime.batch_sizes()
        shed = asyncio.run(burst(12))
        codes = sorted(a.status_code for a in shed)
        assert 450 in codes and set(codes) <= {200, 450}, codes
        assert "queue is full" in next(a for a in shed if a.status_code == 450).json()["error"]
        stats = httpx.get(f"http://127.0.0.1:{server.port}/stats").json()
        assert stats["codes"]["200"] == 4 + codes.count(200) and stats["codes"]["450"] == codes.count(450)
    finally:
        server.stop()
        runtime.close()
