"""Declared shapes cannot amplify (docs/security.md, "Decoding").

A request declares shapes: a TF/Torch ArrayProto's `array_shape` (one value fills all of
it, TensorFlow's convention), a v2 tensor's `shape`, a BML tensor's `shape`, the nesting
of JSON lists. Each decoder checks them against the model's inputs (400) and against the
per-request caps (413) before it allocates anything: every test here also bounds what
the refused request allocated (tracemalloc sees numpy's buffers).
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from eas.protocols import grpc_messages, oip
from processors import ModelContext, ModelLoadError, ProcessorError, Request, tfproto, torchproto
from processors._tensors import TensorSpec
from processors.base import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, Budget, DecodeLimits, LimitError
from processors.onnx import OnnxProcessor
from processors.paddle import PaddleProcessor
from processors.sklearn import SklearnProcessor

#: What a refused request may allocate at most: generous, and far below what it declares.
SMALL = 16 * 1024 * 1024
X = np.random.default_rng(0).random((16, 3)).astype(np.float32)


@contextmanager
def peak() -> Iterator[dict[str, int]]:
    """The peak of traced allocations inside the block, in `holder["bytes"]`."""
    holder: dict[str, int] = {}
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield holder
    finally:
        holder["bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def refused(call, status: int, *words: str) -> ProcessorError:  # noqa: ANN001
    """`call()` raises a ProcessorError of `status` whose message holds every word, allocating little."""
    with peak() as used, pytest.raises(ProcessorError) as info:
        call()
    assert info.value.status == status, info.value.message
    assert all(w in info.value.message for w in words), info.value.message
    assert used["bytes"] < SMALL, f"a refused request allocated {used['bytes']} bytes"
    return info.value


def tf_fill(name: str, dims: list[int], value: float = 1.0) -> bytes:
    """A TF PredictRequest whose one value fills `dims` (TensorFlow's convention)."""
    request = tfproto.PredictRequest()
    array = request.inputs[name]
    array.dtype = tfproto.DT_FLOAT
    array.array_shape.dim.extend(dims)
    array.float_val.append(value)
    return request.SerializeToString()


def onnx_dir(tmp: Path, name: str, model) -> Path:  # noqa: ANN001
    (tmp / name).mkdir()
    (tmp / name / "model.onnx").write_bytes(model.SerializeToString())
    return tmp / name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("limits")
    logreg = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    dynamic = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "M"]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return {"logreg": onnx_dir(root, "logreg", to_onnx(logreg, X[:1], options={id(logreg): {"zipmap": False}})),
            "dynamic": onnx_dir(root, "dynamic", dynamic)}


def onnx_processor(path: Path, **config: object) -> OnnxProcessor:
    processor = OnnxProcessor(ModelContext(model_dir=str(path), model_config=config or None))
    processor.load()
    return processor


# ---------------------------------------------------------------- TF / Torch protobuf

def test_the_23_byte_request_is_refused_against_the_model_input(models: dict[str, Path]) -> None:
    """[50000, 50000] with one value was 10 GB of np.full before any check."""
    processor = onnx_processor(models["logreg"])
    body = tf_fill("X", [50000, 50000])
    assert len(body) < 32
    refused(lambda: processor.predict(Request(body)), 400,
            "input 'X' expects tensor(float) with shape [?, 3]; received float32 with shape [50000, 50000]",
            "dimension 1 is 50000, the model needs 3")
    # Within the model's shape but past the per-request cap: 413 naming the limit.
    refused(lambda: processor.predict(Request(tf_fill("X", [50_000_000, 3]))), 413,
            "input 'X'", "[50000000, 3]", "150000000 elements", f"limit of {DEFAULT_MAX_ELEMENTS} elements",
            "max_request_elements")
    # TensorFlow's convention itself still works.
    answer = processor.predict(Request(tf_fill("X", [4, 3], 0.25)))
    assert answer.status == 200


def test_dynamic_dimensions_are_bounded_by_the_cap(models: dict[str, Path]) -> None:
    processor = onnx_processor(models["dynamic"])
    body = tf_fill("a", [50000, 50000]) + tf_fill("b", [50000, 50000])  # two messages concatenate
    refused(lambda: processor.predict(Request(body)), 413, "[50000, 50000]", "2500000000 elements")
    # The cap is per request, over all inputs: configurable per service in model_config.
    small = onnx_processor(models["dynamic"], max_request_elements=10)
    ok = tf_fill("a", [2, 2]) + tf_fill("b", [2, 2])
    assert small.predict(Request(ok)).status == 200
    over = tf_fill("a", [2, 3]) + tf_fill("b", [2, 3])
    refused(lambda: small.predict(Request(over)), 413, "with the request's other inputs, 12",
            "limit of 10 elements per request")


def test_string_fill_is_bounded_by_bytes() -> None:
    proto = tfproto.ArrayProto(dtype=tfproto.DT_STRING)
    proto.array_shape.dim.extend([1024])
    proto.string_val.append(b"x" * (1024 * 1024))
    refused(lambda: tfproto.array_from_proto(proto, "input 's'"), 413,
            "input 's'", "[1024]", f"limit of {DEFAULT_MAX_BYTES} bytes", "max_request_bytes")


def test_torch_proto_checks_declared_inputs_then_the_cap() -> None:
    proto = torchproto.ArrayProto(dtype=tfproto.DT_FLOAT, float_val=[1.0])
    proto.array_shape.dim.extend([50000, 50000])
    spec = TensorSpec("x", np.dtype(np.float32), (None, 3))
    refused(lambda: torchproto.array_from_proto(proto, "input 0", spec=spec), 400,
            "input 'x' expects float32 with shape [?, 3]; received float32 with shape [50000, 50000]")
    refused(lambda: torchproto.array_from_proto(proto, "input 0"), 413, "input 0", "[50000, 50000]")
    deep = torchproto.ArrayProto(dtype=tfproto.DT_FLOAT, float_val=[1.0])
    deep.array_shape.dim.extend([1] * 40)
    refused(lambda: torchproto.array_from_proto(deep, "input 0"), 400, "40 dimensions")


def test_pytorch_processor_refuses_an_amplifying_request(tmp_path: Path) -> None:
    from processors import create_processor
    from tests.support.models import build_pytorch

    built = build_pytorch(tmp_path)
    declared = create_processor(built.service("t"), model_dir=str(built.model_path))
    request = torchproto.PredictRequest()
    array = request.inputs.add(dtype=tfproto.DT_FLOAT, float_val=[1.0])
    array.array_shape.dim.extend([50000, 50000])
    body = request.SerializeToString()
    refused(lambda: declared.predict(Request(body)), 400,
            "input 'x' expects float32 with shape [?, 3]; received float32 with shape [50000, 50000]")
    undeclared = create_processor({"processor": "pytorch"}, model_dir=str(built.model_path))
    refused(lambda: undeclared.predict(Request(body)), 413, "input 0", "2500000000 elements")


def test_tensorflow_protobuf_and_tf_serving_json(tmp_path: Path) -> None:
    from processors import create_processor
    from tests.support.models import build_tensorflow

    built = build_tensorflow(tmp_path)
    processor = create_processor(built.service("t"), model_dir=str(built.model_path))
    request = tfproto.PredictRequest.FromString(tf_fill("x", [50000, 50000]))
    request.inputs["ids"].CopyFrom(tfproto.array_to_proto(np.arange(4)))
    refused(lambda: processor.predict(Request(request.SerializeToString())), 400,
            "input 'x' expects float32 with shape [?, 3]; received float32 with shape [50000, 50000]")
    request = tfproto.PredictRequest.FromString(tf_fill("x", [100_000_000, 3]))
    request.inputs["ids"].CopyFrom(tfproto.array_to_proto(np.arange(4)))
    refused(lambda: processor.predict(Request(request.SerializeToString())), 413,
            "input 'x'", "[100000000, 3]", "max_request_elements")
    small = create_processor({**built.service("t"), "model_config": {"max_request_elements": 10}},
                             model_dir=str(built.model_path))
    rows = json.dumps({"instances": [{"x": [1.0, 2.0, 3.0], "ids": 1}] * 5}).encode()
    refused(lambda: small.predict(Request(rows)), 413, "input 'x'", "[5, 3]", "limit of 10")
    rows = json.dumps({"instances": [{"x": [1.0, 2.0, 3.0], "ids": 1}] * 2}).encode()
    assert small.predict(Request(rows)).status == 200


# ---------------------------------------------------------------- JSON

def test_json_rows_count_against_the_cap(models: dict[str, Path], tmp_path: Path) -> None:
    import joblib

    rows = json.dumps({"instances": [[0.1, 0.2, 0.3]] * 50}).encode()
    onnx = onnx_processor(models["logreg"], max_request_elements=100)
    refused(lambda: onnx.predict(Request(rows)), 413, "input 'X'", "[50, 3]", "150 elements", "limit of 100")
    assert onnx.predict(Request(json.dumps({"instances": [[0.1, 0.2, 0.3]] * 30}).encode())).status == 200

    joblib.dump(LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int)), tmp_path / "m.joblib")
    sklearn = SklearnProcessor(ModelContext(model_dir=str(tmp_path), model_config={"max_request_elements": 100}))
    sklearn.load()
    refused(lambda: sklearn.predict(Request(rows)), 413, "instances", "[50, 3]", "limit of 100")
    too_deep = b'{"inputs": {"X": ' + b"[" * 40 + b"1.0" + b"]" * 40 + b"}}"
    refused(lambda: onnx.predict(Request(too_deep)), 400, "input 'X'", "nest deeper than 32")


def test_bml_tensors_check_the_declared_shape_first() -> None:
    processor = PaddleProcessor(ModelContext(model_config={"max_request_elements": 4}))
    processor.inputs = {"x": TensorSpec("x", np.dtype(np.float32), (None, 3))}
    refused(lambda: processor._bml_tensor(0, {"name": "x", "type": "FLOAT", "shape": [50000, 50000],
                                              "float_data": [1.0]}), 400,
            "tensor 'x'", "shape [50000, 50000] needs 2500000000 values", "float_data has 1")
    refused(lambda: processor._bml_tensor(0, {"name": "x", "type": "FLOAT", "shape": [1, 2],
                                              "float_data": [1.0, 2.0]}), 400,
            "input 'x' expects float32 with shape [?, 3]; received float32 with shape [1, 2]")
    refused(lambda: processor._bml_tensor(0, {"name": "x", "type": "FLOAT", "shape": [2, 3],
                                              "float_data": [1.0] * 6}), 413, "tensor 'x'", "limit of 4")


# ---------------------------------------------------------------- Open Inference Protocol

def v2(*inputs: dict) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def test_v2_declared_shapes_are_counted_before_decoding() -> None:
    refused(lambda: oip.decode_rest(v2({"name": "a", "datatype": "FP32", "shape": [50000, 50000], "data": [1]})),
            413, "input 'a'", "[50000, 50000]", "2500000000 elements")
    # numpy's int64 product wraps around to 0 for this shape: the count must not.
    refused(lambda: oip.decode_rest(v2({"name": "a", "datatype": "FP32", "shape": [2**32, 2**32], "data": []})),
            413, "input 'a'", str(2**64))
    refused(lambda: oip.decode_rest(v2({"name": "a", "datatype": "FP32", "shape": [1] * 40, "data": [1]})),
            400, "input 'a'", "40 dimensions")
    refused(lambda: oip.decode_rest(v2({"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2, 3]]})),
            400, "input 'a'", "needs 4 values, received 3")
    head = json.dumps({"inputs": [{"name": "b", "datatype": "FP32", "shape": [50000, 50000],
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    refused(lambda: oip.decode_rest(head + b"\0\0\0\0", str(len(head))), 413, "input 'b'", "[50000, 50000]")
    # BYTES: every element is a Python object, so millions of empty strings cost bytes too.
    count = 16 * 1024 * 1024
    head = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [count],
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    refused(lambda: oip.decode_rest(head + struct.pack("<II", 0, 0), str(len(head))), 413,
            "input 's'", f"[{count}]", "bytes per request")
    message = grpc_messages.ModelInferRequest()
    message.inputs.add(name="g", datatype="FP32", shape=[50000, 50000])
    message.raw_input_contents.append(b"\0\0\0\0")
    refused(lambda: oip.decode_grpc(message.SerializeToString()), 413, "input 'g'", "[50000, 50000]")
    # Per service: the processor's limits travel with the call.
    limits = DecodeLimits(max_elements=3)
    refused(lambda: oip.decode_rest(v2({"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}),
                                    None, limits), 413, "limit of 3")


# ---------------------------------------------------------------- where the limits come from

def test_limits_from_model_config_and_environment() -> None:
    assert DecodeLimits.from_config(None, {}) == DecodeLimits(DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_BYTES)
    env = {"EAS_MAX_REQUEST_ELEMENTS": "1000", "EAS_MAX_REQUEST_BYTES": "8000"}
    assert DecodeLimits.from_config(None, env) == DecodeLimits(1000, 8000)
    assert DecodeLimits.from_config({"max_request_elements": 10}, env) == DecodeLimits(10, 8000)
    assert DecodeLimits.from_config('{"max_request_bytes": 99}', {}).max_bytes == 99
    assert DecodeLimits.from_config("free text for user code", {}) == DecodeLimits()
    with pytest.raises(ModelLoadError, match="model_config max_request_elements must be a positive integer"):
        DecodeLimits.from_config({"max_request_elements": 0}, {})
    with pytest.raises(ModelLoadError, match="EAS_MAX_REQUEST_BYTES"):
        DecodeLimits.from_config(None, {"EAS_MAX_REQUEST_BYTES": "lots"})
    budget = Budget(DecodeLimits(10, 1000))
    assert budget.take("a", [2, 3], 4) == 6
    with pytest.raises(LimitError) as info:
        budget.take("b", [5], 4)
    assert info.value.status == 413
    assert info.value.message.startswith("b: shape [5] declares 5 elements (with the request's other inputs, 11)")


def test_a_bad_limit_fails_the_service_load(tmp_path: Path) -> None:
    import joblib

    from eas.instance.runtime import load_processor
    from eas.spec import ServiceSpec

    joblib.dump(LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int)), tmp_path / "m.joblib")
    spec = ServiceSpec.model_validate({"name": "s", "processor": "sklearn", "model_path": str(tmp_path),
                                       "model_config": {"max_request_bytes": -1}, "metadata": {"instance": 1}})
    with pytest.raises(ModelLoadError, match="model_config max_request_bytes must be a positive integer, got -1"):
        load_processor(spec, str(tmp_path / "cache"))
