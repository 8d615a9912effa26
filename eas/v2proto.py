"""Protobuf messages of the gRPC face: KServe's Open Inference Protocol and the raw EAS predict RPC.

`inference.*` follows KServe's `grpc_predict_v2.proto` (the messages Triton's
`grpc_service.proto` shares with it, same names and field numbers, so `tritonclient`
and KServe clients talk to us unchanged); `InferParameter` carries Triton's two extra
choices (`double_param`, `uint64_param`) so no client's parameter is dropped.
`eas.PredictRequest/PredictReply` carry an EAS predict call as bytes.

The descriptors are built here at import time from `descriptor_pb2` (as
processors/_protoschema.py does for the EAS tensor protos) rather than committed protoc
output: no codegen step on a fresh clone, and no generated file that pins a protobuf
runtime (protoc's `_pb2.py` refuses runtimes older than the protoc that made it, and
tritonclient wants protobuf<7 while our runtime is newer). They live in a private pool,
because tritonclient registers messages with these very names in the default one.
The wire format is all that matters to clients, and tests/unit/test_v2.py checks it
against the field numbers below.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto

POOL = descriptor_pool.DescriptorPool()

#: gRPC service and method names (what clients put in the request path).
INFERENCE_SERVICE = "inference.GRPCInferenceService"
PREDICT_SERVICE = "eas.Predict"

_SCALARS = {
    "bool": F.TYPE_BOOL, "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "int32": F.TYPE_INT32,
    "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64, "float": F.TYPE_FLOAT,
    "double": F.TYPE_DOUBLE,
}


def _field(msg: descriptor_pb2.DescriptorProto, scope: str, spec: str, number: int,
           oneof: int | None = None) -> None:
    """Add a field from a proto-like spec: `"repeated int64 shape"`, `"InferTensorContents contents"`,
    `"map<InferParameter> parameters"` (string keys). `scope` is the message's full name."""
    words = spec.split()
    repeated = words[0] == "repeated"
    if repeated:
        words = words[1:]
    type_name, name = words
    package = scope.split(".")[0]
    if type_name.startswith("map<"):
        entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        _field(entry, f"{scope}.{entry_name}", "string key", 1)
        _field(entry, f"{scope}.{entry_name}", f"{type_name[4:-1]} value", 2)
        msg.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=f".{scope}.{entry_name}")
        return
    f = msg.field.add(name=name, number=number, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name in _SCALARS:
        f.type = _SCALARS[type_name]
    else:
        f.type = F.TYPE_MESSAGE
        f.type_name = f".{package}.{type_name}"
    if oneof is not None:
        f.oneof_index = oneof


def _message(parent: Any, scope: str, name: str, fields: list[str]) -> tuple[Any, str]:
    """Add message `name` to a file (scope = package) or a message (scope = its full name);
    fields are numbered 1, 2, ... in order. Returns the message and its full name."""
    msg = (parent.message_type if isinstance(parent, descriptor_pb2.FileDescriptorProto)
           else parent.nested_type).add(name=name)
    full = f"{scope}.{name}"
    for number, spec in enumerate(fields, start=1):
        _field(msg, full, spec, number)
    return msg, full


def _inference_file() -> descriptor_pb2.FileDescriptorProto:
    pkg = "inference"
    fd = descriptor_pb2.FileDescriptorProto(name="eas_serving/grpc_predict_v2.proto", package=pkg, syntax="proto3")
    _message(fd, pkg, "ServerLiveRequest", [])
    _message(fd, pkg, "ServerLiveResponse", ["bool live"])
    _message(fd, pkg, "ServerReadyRequest", [])
    _message(fd, pkg, "ServerReadyResponse", ["bool ready"])
    _message(fd, pkg, "ModelReadyRequest", ["string name", "string version"])
    _message(fd, pkg, "ModelReadyResponse", ["bool ready"])
    _message(fd, pkg, "ServerMetadataRequest", [])
    _message(fd, pkg, "ServerMetadataResponse", ["string name", "string version", "repeated string extensions"])
    _message(fd, pkg, "ModelMetadataRequest", ["string name", "string version"])
    meta, scope = _message(fd, pkg, "ModelMetadataResponse", [])
    _message(meta, scope, "TensorMetadata", ["string name", "string datatype", "repeated int64 shape"])
    for number, spec in enumerate(["string name", "repeated string versions", "string platform",
                                   "repeated ModelMetadataResponse.TensorMetadata inputs",
                                   "repeated ModelMetadataResponse.TensorMetadata outputs"], start=1):
        _field(meta, scope, spec, number)

    tensor = ["string name", "string datatype", "repeated int64 shape", "map<InferParameter> parameters",
              "InferTensorContents contents"]
    req, scope = _message(fd, pkg, "ModelInferRequest", [])
    _message(req, scope, "InferInputTensor", tensor)
    _message(req, scope, "InferRequestedOutputTensor", ["string name", "map<InferParameter> parameters"])
    for number, spec in enumerate(["string model_name", "string model_version", "string id",
                                   "map<InferParameter> parameters",
                                   "repeated ModelInferRequest.InferInputTensor inputs",
                                   "repeated ModelInferRequest.InferRequestedOutputTensor outputs",
                                   "repeated bytes raw_input_contents"], start=1):
        _field(req, scope, spec, number)
    resp, scope = _message(fd, pkg, "ModelInferResponse", [])
    _message(resp, scope, "InferOutputTensor", tensor)
    for number, spec in enumerate(["string model_name", "string model_version", "string id",
                                   "map<InferParameter> parameters",
                                   "repeated ModelInferResponse.InferOutputTensor outputs",
                                   "repeated bytes raw_output_contents"], start=1):
        _field(resp, scope, spec, number)

    param, scope = _message(fd, pkg, "InferParameter", [])
    param.oneof_decl.add(name="parameter_choice")
    for number, spec in enumerate(["bool bool_param", "int64 int64_param", "string string_param",
                                   "double double_param", "uint64 uint64_param"], start=1):
        _field(param, scope, spec, number, oneof=0)
    _message(fd, pkg, "InferTensorContents", [
        "repeated bool bool_contents", "repeated int32 int_contents", "repeated int64 int64_contents",
        "repeated uint32 uint_contents", "repeated uint64 uint64_contents", "repeated float fp32_contents",
        "repeated double fp64_contents", "repeated bytes bytes_contents"])
    return fd


def _eas_file() -> descriptor_pb2.FileDescriptorProto:
    pkg = "eas"
    fd = descriptor_pb2.FileDescriptorProto(name="eas_serving/eas_predict.proto", package=pkg, syntax="proto3")
    _message(fd, pkg, "PredictRequest", ["string service", "bytes body", "string token", "string content_type"])
    _message(fd, pkg, "PredictReply", ["int32 status", "bytes body", "string content_type", "string request_id"])
    return fd


def _classes(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    POOL.Add(fd)
    return {m.name: message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{fd.package}.{m.name}"))
            for m in fd.message_type}


_inference = _classes(_inference_file())
_eas = _classes(_eas_file())

ServerLiveRequest = _inference["ServerLiveRequest"]
ServerLiveResponse = _inference["ServerLiveResponse"]
ServerReadyRequest = _inference["ServerReadyRequest"]
ServerReadyResponse = _inference["ServerReadyResponse"]
ModelReadyRequest = _inference["ModelReadyRequest"]
ModelReadyResponse = _inference["ModelReadyResponse"]
ServerMetadataRequest = _inference["ServerMetadataRequest"]
ServerMetadataResponse = _inference["ServerMetadataResponse"]
ModelMetadataRequest = _inference["ModelMetadataRequest"]
ModelMetadataResponse = _inference["ModelMetadataResponse"]
ModelInferRequest = _inference["ModelInferRequest"]
ModelInferResponse = _inference["ModelInferResponse"]
InferParameter = _inference["InferParameter"]
InferTensorContents = _inference["InferTensorContents"]
PredictRequest = _eas["PredictRequest"]
PredictReply = _eas["PredictReply"]
