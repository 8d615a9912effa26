"""The .proto files are the one schema: the committed descriptor sets match them, and the wire stays put.

Each folder of .proto files (`PROTO_DIRS` in the Makefile) is compiled by `make protos`
into the `descriptors.binpb` beside it, which the message modules load. These tests
compile the .proto files afresh and compare, so an edited .proto without `make protos`
fails here; and they parse wire bytes recorded from the message classes in use when the
schemas moved into .proto files, so a change that would break an official SDK
(eas-prediction, eas-sdk, tritonclient) fails here too.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.unknown_fields import UnknownFieldSet

from eas.protocols import grpc_messages as v2
from processors import _arrayproto, tfproto, torchproto

REPO = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = "descriptors.binpb"


def proto_dirs() -> list[Path]:
    """The folders `make protos` compiles, read from the Makefile so the two cannot differ."""
    found = re.search(r"^PROTO_DIRS\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile has no PROTO_DIRS line"
    return [REPO / d for d in found.group(1).split()]


def file_protos(data: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """A descriptor set's files by name, without source locations (comments, spans)."""
    files = {}
    for fd in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        fd.ClearField("source_code_info")
        files[fd.name] = fd
    return files


def test_proto_dirs_hold_every_proto_file() -> None:
    dirs = proto_dirs()
    assert {d.relative_to(REPO).as_posix() for d in dirs} == {"processors/protos", "eas/protocols/protos"}
    for package in ("eas", "processors"):
        for proto in (REPO / package).rglob("*.proto"):
            assert proto.parent in dirs, f"{proto.relative_to(REPO)} is outside PROTO_DIRS: `make protos` skips it"


@pytest.mark.parametrize("folder", proto_dirs(), ids=lambda d: d.relative_to(REPO).as_posix())
def test_committed_descriptor_set_matches_the_proto_files(folder: Path, tmp_path: Path) -> None:
    protos = sorted(folder.glob("*.proto"))
    assert protos, f"no .proto file in {folder}"
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail("grpcio-tools is missing: install the test extra (pip install -e '.[test]')")
    fresh = tmp_path / DESCRIPTOR_SET
    # The command `make protos` runs.
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--include_imports",
                    f"--descriptor_set_out={fresh}", f"-I{folder}", *map(str, protos)], check=True)
    committed = folder / DESCRIPTOR_SET
    assert committed.exists(), f"{committed.relative_to(REPO)} is missing: run `make protos`"
    assert file_protos(committed.read_bytes()) == file_protos(fresh.read_bytes()), \
        f"{committed.relative_to(REPO)} does not match the .proto files beside it: run `make protos`"


def test_descriptor_sets_ship_in_the_wheel() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for folder in proto_dirs():
        for path in [folder / DESCRIPTOR_SET, *folder.glob("*.proto")]:
            shipped = False
            for package, patterns in package_data.items():
                root = REPO.joinpath(*package.split("."))
                if path.is_relative_to(root):
                    relative = path.relative_to(root).as_posix()
                    shipped = shipped or any(fnmatch.fnmatch(relative, p) for p in patterns)
            assert shipped, f"{path.relative_to(REPO)} is not in [tool.setuptools.package-data]"


def test_messages_live_in_private_pools() -> None:
    # eas-prediction registers "ArrayProto", "pytorch.eas.ArrayProto"; tritonclient "inference.*".
    for cls in (tfproto.ArrayProto, torchproto.ArrayProto, v2.ModelInferRequest, v2.PredictRequest):
        assert cls.DESCRIPTOR.file.pool is not descriptor_pool.Default()


def test_array_data_type_enums_match_the_numpy_tables() -> None:
    for module in (tfproto, torchproto):
        assert [(v.name, v.number) for v in module.ArrayDataType.DESCRIPTOR.values] == list(_arrayproto.DATA_TYPES)
    assert {name: getattr(tfproto, name) for name in dir(tfproto) if name.startswith("DT_")} == {
        name: _arrayproto.DT[name] for name in dir(tfproto) if name.startswith("DT_")}


def test_grpc_services_and_methods() -> None:
    pool = v2.ModelInferRequest.DESCRIPTOR.file.pool
    inference = pool.FindServiceByName(v2.INFERENCE_SERVICE)
    assert v2.INFERENCE_SERVICE == "inference.GRPCInferenceService"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in inference.methods} == {
        **{name: (f"inference.{name}Request", f"inference.{name}Response")
           for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")},
        # Triton's streaming extension (tritonclient's start_stream): requests in, responses out, both streamed.
        "ModelStreamInfer": ("inference.ModelInferRequest", "inference.ModelStreamInferResponse")}
    streaming = {m.name for m in inference.methods if m.client_streaming and m.server_streaming}
    assert streaming == {"ModelStreamInfer"}
    predict = pool.FindServiceByName(v2.PREDICT_SERVICE)
    assert v2.PREDICT_SERVICE == "eas.Predict"
    assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in predict.methods] == [
        ("Predict", "eas.PredictRequest", "eas.PredictReply")]


# ---------------------------------------------------------------- the wire format


def tf_request() -> Any:
    request = tfproto.PredictRequest(signature_name="serving_default", output_filter=["probs", "ids"], debug_level=3)
    x = request.inputs["x"]
    x.dtype = tfproto.DT_FLOAT
    x.array_shape.dim.extend([2, 2])
    x.float_val.extend([1.5, -2.0, 0.25, 8.0])
    ids = request.inputs["ids"]
    ids.dtype = tfproto.DT_STRING
    ids.array_shape.dim.append(2)
    ids.string_val.extend([b"a", b"\xff\x00"])
    flags = request.inputs["flags"]
    flags.dtype = tfproto.DT_BOOL
    flags.bool_val.extend([True, False])
    big = request.inputs["big"]
    big.dtype = tfproto.DT_INT64
    big.int64_val.extend([-(2**63), 2**63 - 1])
    small = request.inputs["small"]
    small.dtype = tfproto.DT_INT8
    small.int_val.extend([-128, 127])
    wide = request.inputs["wide"]
    wide.dtype = tfproto.DT_DOUBLE
    wide.double_val.append(1e300)
    return request


def tf_response() -> Any:
    response = tfproto.PredictResponse()
    probs = response.outputs["probs"]
    probs.dtype = tfproto.DT_FLOAT
    probs.array_shape.dim.extend([1, 2])
    probs.float_val.extend([0.25, 0.75])
    return response


def torch_request() -> Any:
    dt = torchproto.ArrayDataType
    request = torchproto.PredictRequest(output_filter=[0, 2], debug_level=1)
    first = request.inputs.add(dtype=dt.DT_FLOAT, float_val=[1.0, 2.0, 3.0])
    first.array_shape.dim.extend([1, 3])
    request.inputs.add(dtype=dt.DT_INT64, int64_val=[7])
    named = request.map_inputs["m"]
    named.dtype = dt.DT_UINT8
    named.int_val.extend([0, 1, 255])
    return request


def torch_response() -> Any:
    response = torchproto.PredictResponse()
    response.outputs.add(dtype=torchproto.ArrayDataType.DT_DOUBLE, double_val=[0.5])
    response.map_outputs["s"].string_val.append(b"text")
    return response


def infer_request() -> Any:
    request = v2.ModelInferRequest(model_name="iris", model_version="2", id="req-1",
                                   raw_input_contents=[b"\x00\x00\x80\x3f" * 4, b"\x03\x00\x00\x00abc"])
    request.parameters["sequence_id"].uint64_param = 2**64 - 1
    request.parameters["priority"].int64_param = -5
    request.parameters["binary_data_output"].bool_param = True
    request.parameters["mode"].string_param = "fast"
    request.parameters["temperature"].double_param = 0.7
    x = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    x.parameters["binary_data_size"].int64_param = 16
    request.inputs.add(name="s", datatype="BYTES", shape=[1])
    wanted = request.outputs.add(name="probs")
    wanted.parameters["classification"].int64_param = 2
    return request


def infer_request_with_contents() -> Any:
    request = v2.ModelInferRequest(model_name="m")
    tensors = [("b", "BOOL", "bool_contents", [True, False]),
               ("i", "INT32", "int_contents", [-1, 2]),
               ("l", "INT64", "int64_contents", [-(2**40)]),
               ("u", "UINT32", "uint_contents", [2**32 - 1]),
               ("ul", "UINT64", "uint64_contents", [2**64 - 1]),
               ("f", "FP32", "fp32_contents", [0.5]),
               ("d", "FP64", "fp64_contents", [1e-300]),
               ("s", "BYTES", "bytes_contents", [b"x", b""])]
    for name, datatype, field, values in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        getattr(tensor.contents, field).extend(values)
    return request


def infer_response() -> Any:
    response = v2.ModelInferResponse(model_name="iris", model_version="2", id="req-1",
                                     raw_output_contents=[b"\x02\x00\x00\x00\x00\x00\x00\x00"])
    response.parameters["triton_final_response"].bool_param = True
    out = response.outputs.add(name="predictions", datatype="INT64", shape=[1])
    out.parameters["binary_data_size"].int64_param = 8
    response.outputs.add(name="labels", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"virginica")
    return response


def metadata() -> Any:
    response = v2.ModelMetadataResponse(name="iris", versions=["1", "2"], platform="onnxruntime_onnx")
    response.inputs.add(name="input", datatype="FP32", shape=[-1, 4])
    response.outputs.add(name="probs", datatype="FP32", shape=[-1, 3])
    return response


BUILDERS: dict[str, Callable[[], Any]] = {
    "tf_request": tf_request,
    "tf_response": tf_response,
    "torch_request": torch_request,
    "torch_response": torch_response,
    "infer_request": infer_request,
    "infer_request_with_contents": infer_request_with_contents,
    "infer_response": infer_response,
    "metadata": metadata,
    "server_live": lambda: v2.ServerLiveResponse(live=True),
    "server_ready": lambda: v2.ServerReadyResponse(ready=True),
    "model_ready_request": lambda: v2.ModelReadyRequest(name="iris", version="1"),
    "model_ready": lambda: v2.ModelReadyResponse(ready=True),
    "server_metadata": lambda: v2.ServerMetadataResponse(name="eas-serving", version="0.1.0",
                                                         extensions=["binary_tensor_data"]),
    "model_metadata_request": lambda: v2.ModelMetadataRequest(name="iris", version="1"),
    "eas_predict_request": lambda: v2.PredictRequest(service="iris/v1", body=b'{"instances": [[1, 2]]}',
                                                     token="tok", content_type="application/json"),
    "eas_predict_reply": lambda: v2.PredictReply(status=429, body=b"too many", content_type="text/plain",
                                                 request_id="abc-123"),
    "stream_infer_error": lambda: v2.ModelStreamInferResponse(
        error_message="bad", infer_response=v2.ModelInferResponse(model_name="iris", id="r1")),
}

#: What each message above serialized to (deterministic: map entries sorted by key) with
#: the message classes in use when these schemas moved into .proto files.
WIRE = {
    "tf_request": (
        "0a0f73657276696e675f64656661756c74121e0a03626967121708093a1380808080808080808001ffffffff"
        "ffffffff7f120f0a05666c6167731206080a4202010012150a03696473120e080712030a01023201613202ff"
        "0012180a05736d616c6c120f08062a0b80ffffffffffffffff017f12140a0477696465120c080222089c7500"
        "883ce4377e121f0a0178121a080112040a0202021a100000c03f000000c00000803e000000411a0570726f62"
        "731a03696473a00603"
    ),
    "tf_response": "0a1b0a0570726f62731212080112040a0201021a080000803e0000403f",
    "torch_request": (
        "0a16080112040a0201031a0c0000803f00000040000040400a0508093a0107120200021a0d0a016d12080804"
        "2a040001ff01a00601"
    ),
    "torch_response": "0a0c08022208000000000000e03f120b0a01731206320474657874",
    "infer_request": (
        "0a04697269731201321a057265712d3122180a1262696e6172795f646174615f6f757470757412020801220e"
        "0a046d6f646512061a046661737422170a087072696f72697479120b10fbffffffffffffffff01221a0a0b73"
        "657175656e63655f6964120b28ffffffffffffffffff0122180a0b74656d7065726174757265120921666666"
        "666666e63f2a250a01781204465033321a02010422160a1062696e6172795f646174615f73697a6512021010"
        "2a0d0a0173120542595445531a0101321d0a0570726f627312140a0e636c617373696669636174696f6e1202"
        "10023a100000803f0000803f0000803f0000803f3a0703000000616263"
    ),
    "infer_request_with_contents": (
        "0a016d2a120a01621204424f4f4c1a01022a040a0201002a1c0a01691205494e5433321a01022a0d120bffff"
        "ffffffffffffff01022a1b0a016c1205494e5436341a01012a0c1a0a8080808080e0ffffff012a170a017512"
        "0655494e5433321a01012a072205ffffffff0f2a1d0a02756c120655494e5436341a01012a0c2a0affffffff"
        "ffffffffff012a140a01661204465033321a01012a0632040000003f2a180a01641204465036341a01012a0a"
        "3a0859f3f8c21f6ea5012a140a0173120542595445531a01022a054201784200"
    ),
    "infer_response": (
        "0a04697269731201321a057265712d31221b0a15747269746f6e5f66696e616c5f726573706f6e7365120208"
        "012a2f0a0b70726564696374696f6e731205494e5436341a010122160a1062696e6172795f646174615f7369"
        "7a65120210082a1f0a066c6162656c73120542595445531a01012a0b420976697267696e6963613208020000"
        "0000000000"
    ),
    "metadata": (
        "0a04697269731201311201321a106f6e6e7872756e74696d655f6f6e6e78221a0a05696e7075741204465033"
        "321a0bffffffffffffffffff01042a1a0a0570726f62731204465033321a0bffffffffffffffffff0103"
    ),
    "server_live": "0801",
    "server_ready": "0801",
    "model_ready_request": "0a0469726973120131",
    "model_ready": "0801",
    "server_metadata": "0a0b6561732d73657276696e671205302e312e301a1262696e6172795f74656e736f725f64617461",
    "model_metadata_request": "0a0469726973120131",
    "eas_predict_request": (
        "0a07697269732f763112177b22696e7374616e636573223a205b5b312c20325d5d7d1a03746f6b2210617070"
        "6c69636174696f6e2f6a736f6e"
    ),
    "eas_predict_reply": "08ad031208746f6f206d616e791a0a746578742f706c61696e22076162632d313233",
    # Written by hand from Triton's grpc_service.proto (error_message = 1, infer_response = 2).
    "stream_infer_error": "0a03626164120a0a04697269731a027231",
}


def assert_no_unknown_fields(message: Any) -> None:
    """Every byte landed in a declared field (a renumbered field would land in unknown ones)."""
    assert len(UnknownFieldSet(message)) == 0, f"{message.DESCRIPTOR.full_name} has unknown fields"
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            assert_no_unknown_fields(item)


def test_every_message_is_recorded() -> None:
    assert set(BUILDERS) == set(WIRE)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_recorded_wire_bytes_parse_field_for_field(name: str) -> None:
    expected = BUILDERS[name]()
    wire = bytes.fromhex(WIRE[name])
    parsed = type(expected).FromString(wire)
    assert_no_unknown_fields(parsed)
    assert parsed == expected
    assert parsed.SerializeToString(deterministic=True) == wire
    assert expected.SerializeToString(deterministic=True) == wire
