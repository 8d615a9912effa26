"""The Open Inference Protocol (KServe v2) codec: pure functions over bytes and numpy.

Wire forms the instance decodes (the gateway never decodes tensors):

- v2 JSON (`{"inputs": [{"name", "shape", "datatype", "data"}], "outputs"?}`), with the
  binary tensor extension: an `Inference-Header-Content-Length` header says where the
  JSON ends; inputs with `parameters.binary_data_size` take their bytes from what follows,
  in order. Outputs go binary when asked (`parameters.binary_data` per output, or
  `binary_data_output` for the request), as tritonclient asks by default.
- a serialized `inference.ModelInferRequest` (Content-Type `application/x-protobuf`),
  which is how the gRPC gateway hands a ModelInfer call on; the answer is then a
  serialized `ModelInferResponse` with every output in `raw_output_contents`.

Errors are the data plane's one error body `{"code", "message", "request_id"}` plus the
`"error"` field v2 clients read; every message names the input or output at fault.
The REST adapters live in eas/gateway/oip_http.py and eas/instance/http.py (docs/protocols.md).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eas.protocols import grpc_messages
from eas.protocols.wire import OIP_HEADER_LENGTH as HEADER_LENGTH
from processors.base import (
    MAX_RANK,
    STRING_ITEM_BYTES,
    Budget,
    DecodeLimits,
    Processor,
    ProcessorError,
    nested_shape,
)

#: Content type of a serialized ModelInferRequest/ModelInferResponse on the HTTP leg.
PROTOBUF_TYPE = "application/x-protobuf"
INFER_REQUEST_TYPE = f"{PROTOBUF_TYPE}; messageType=inference.ModelInferRequest"
INFER_RESPONSE_TYPE = f"{PROTOBUF_TYPE}; messageType=inference.ModelInferResponse"
#: Instance path the gateway forwards v2 calls to (`{name}` is the backend service).
INFER_PATH = "/v2/models/{name}/infer"
METADATA_PATH = "/v2/models/{name}"
SERVER_NAME = "eas-serving"
EXTENSIONS = ["binary_tensor_data"]

# ------------------------------------------------------------------------ datatypes

#: v2 datatype -> numpy dtype (little-endian on the wire). BYTES is an object array of bytes.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}

#: v2 datatype -> the InferTensorContents field that carries it (FP16 travels raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


class V2Error(ProcessorError):
    """A v2 request that cannot be decoded (always the client's 400)."""


def datatype_of(dtype: np.dtype, what: str = "tensor") -> str:
    """The v2 datatype of a numpy dtype; strings and objects are BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    name = _BY_DTYPE.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)
    if name is None:
        raise V2Error(f"{what} has numpy dtype {dtype}, which has no Open Inference Protocol datatype")
    return name


def _numpy_type(datatype: Any, what: str) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise V2Error(f"{what}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    return DATATYPES[datatype]


def _shape(shape: Any, what: str) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise V2Error(f"{what}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise V2Error(f"{what}: shape {list(shape)} has a negative dimension")
    if len(shape) > MAX_RANK:
        raise V2Error(f"{what}: shape has {len(shape)} dimensions; at most {MAX_RANK} are taken")
    return [int(d) for d in shape]


def _count(shape: list[int]) -> int:
    return math.prod(shape)  # exact: numpy's int64 product wraps around for huge shapes


def _take(budget: Budget, what: str, datatype: str, shape: list[int], data_bytes: int = 0) -> None:
    """Count a declared tensor against the request's budget before it is decoded (413 past it)."""
    if datatype == "BYTES":
        budget.take(what, shape, STRING_ITEM_BYTES, extra_bytes=data_bytes)
    else:
        budget.take(what, shape, DATATYPES[datatype].itemsize)


# ------------------------------------------------------------------------ tensors <-> bytes

def tensor_from_raw(raw: bytes | memoryview, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """Decode one tensor in the binary layout: little-endian, row-major; BYTES elements as
    a 4-byte little-endian length followed by the bytes.

    Sizes are checked against the declared shape before anything is copied: numeric
    data must be exactly shape x item size; BYTES data is read up to the declared
    element count and no further."""
    dtype = _numpy_type(datatype, what)
    need = _count(shape)
    if datatype == "BYTES":
        items, offset, view = [], 0, memoryview(raw)
        while offset < len(raw):
            if len(items) == need:
                raise V2Error(f"{what}: shape {shape} needs {need} BYTES elements, the data holds more")
            if offset + 4 > len(raw):
                raise V2Error(f"{what}: BYTES data ends inside an element's 4-byte length prefix")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise V2Error(f"{what}: BYTES element {len(items)} says {length} bytes, "
                              f"only {len(raw) - offset} left")
            items.append(bytes(view[offset:offset + length]))
            offset += length
        if len(items) != need:
            raise V2Error(f"{what}: shape {shape} needs {need} BYTES elements, received {len(items)}")
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    if len(raw) != need * dtype.itemsize:
        raise V2Error(f"{what}: {datatype} with shape {shape} needs {need * dtype.itemsize} bytes of "
                      f"data, received {len(raw)}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def tensor_to_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.ravel():
            item = _as_bytes(value)
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.generic):
        value = value.item()
    return (value if isinstance(value, str) else str(value)).encode("utf-8")


def tensor_from_json(data: Any, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """Decode `data` (flat or nested, row-major) of a JSON input, checking every value fits.

    How many values the lists hold is checked against the shape before numpy reads them."""
    dtype = _numpy_type(datatype, what)
    try:
        implied = _count(nested_shape(data, what))
    except ProcessorError as exc:
        raise V2Error(exc.message) from None
    if implied != _count(shape):
        raise V2Error(f"{what}: shape {shape} needs {_count(shape)} values, received {implied}")
    try:
        values = np.asarray(data, dtype=object).ravel() if datatype == "BYTES" else np.asarray(data)
    except ValueError as exc:
        raise V2Error(f"{what}: data is not an evenly nested list ({exc})") from None
    need = _count(shape)
    if values.size != need:
        raise V2Error(f"{what}: shape {shape} needs {need} values, received {values.size}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise V2Error(f"{what}: BYTES data must be strings")
        out = np.empty(need, dtype=object)
        out[:] = [v.encode("utf-8") for v in values]
        return out.reshape(shape)
    kind = values.dtype.kind
    if need == 0:
        return np.zeros(shape, dtype=dtype)
    if datatype == "BOOL":
        if kind != "b":
            raise V2Error(f"{what}: BOOL data must be true/false, received {_kind_name(values)}")
    elif dtype.kind in "iu":
        if kind not in "iu":
            # numpy reads integers past int64 (UINT64's upper half) as floats: check the values.
            exact = np.asarray(data, dtype=object).ravel()
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in exact):
                raise V2Error(f"{what}: {datatype} data must be integers, received {_kind_name(values)}")
            values = exact
        info = np.iinfo(dtype)
        if int(values.min()) < info.min or int(values.max()) > info.max:
            raise V2Error(f"{what}: a value is out of range for {datatype} ({info.min}..{info.max})")
    elif kind not in "iuf":
        raise V2Error(f"{what}: {datatype} data must be numbers, received {_kind_name(values)}")
    return values.astype(dtype).reshape(shape)


def _kind_name(values: np.ndarray) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "floating-point numbers",
            "U": "strings", "O": "mixed values"}.get(values.dtype.kind, str(values.dtype))


def tensor_to_json(array: np.ndarray, datatype: str, what: str) -> list[Any]:
    flat = array.ravel()
    if datatype != "BYTES":
        return flat.tolist()
    out = []
    for value in flat:
        try:
            out.append(_as_bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            raise V2Error(f"{what} holds bytes that are not UTF-8 text: ask for it with "
                          'parameters {"binary_data": true}') from None
    return out


# ------------------------------------------------------------------------ requests

@dataclass
class InferRequest:
    """A decoded v2 inference request, whatever its wire form."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    """Requested output names; None = the model's default outputs."""
    id: str = ""
    binary: dict[str, bool] = field(default_factory=dict)
    """Per requested output: answer it in binary (REST only)."""
    binary_default: bool = False
    """For outputs not named in the request (REST `binary_data_output`)."""


def _params(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"{what}: parameters must be an object, got {type(value).__name__}")
    return value


def decode_rest(body: bytes, header_length: str | None = None, limits: DecodeLimits | None = None) -> InferRequest:
    """Decode a v2 JSON body, with the binary extension when `header_length` is given.

    Every input's declared shape is counted against `limits` (per request, over all
    inputs; the environment's defaults when None) before its data is decoded.
    """
    budget = (limits or DecodeLimits.from_config()).budget()
    binary: bytes | memoryview = b""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise V2Error(f"{HEADER_LENGTH} must be a number, got {header_length!r}") from None
        if not 0 < split <= len(body):
            raise V2Error(f"{HEADER_LENGTH} is {split} but the body has {len(body)} bytes")
        body, binary = body[:split], memoryview(body)[split:]  # tensors are read in place
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        hint = f" (binary body? send {HEADER_LENGTH})" if header_length is None and b"\x00" in body else ""
        raise V2Error(f"request is not valid JSON: {exc}{hint}") from None
    except RecursionError:
        raise V2Error("request JSON nests too deeply to decode") from None
    except Exception as exc:  # MemoryError and whatever else a hostile body provokes
        raise V2Error(f"request is not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise V2Error('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    params = _params(payload.get("parameters"), "request")
    request = InferRequest({}, id=str(payload.get("id", "")),
                           binary_default=bool(params.get("binary_data_output", False)))
    offset = 0
    for i, spec in enumerate(payload["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise V2Error(f"inputs[{i}] must be an object with a string name")
        name = spec["name"]
        what = f"input {name!r}"
        if name in request.inputs:
            raise V2Error(f"{what} is given twice")
        datatype = spec.get("datatype")
        _numpy_type(datatype, what)
        shape = _shape(spec.get("shape"), what)
        size = _params(spec.get("parameters"), what).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise V2Error(f"{what}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(binary):
                raise V2Error(f"{what}: binary_data_size {size} runs past the end of the body's "
                              f"{len(binary)} binary bytes")
            _take(budget, what, datatype, shape, size)
            request.inputs[name] = tensor_from_raw(binary[offset:offset + size], datatype, shape, what)
            offset += size
        elif "data" in spec:
            _take(budget, what, datatype, shape)
            request.inputs[name] = tensor_from_json(spec["data"], datatype, shape, what)
        else:
            raise V2Error(f"{what} has neither data nor parameters.binary_data_size")
    if offset != len(binary):
        raise V2Error(f"the body has {len(binary) - offset} binary bytes no input claims")
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise V2Error('"outputs" must be a list of {"name": ...}')
        request.outputs = []
        for i, spec in enumerate(outputs):
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise V2Error(f"outputs[{i}] must be an object with a string name")
            request.outputs.append(spec["name"])
            flag = _params(spec.get("parameters"), f"output {spec['name']!r}").get("binary_data")
            request.binary[spec["name"]] = request.binary_default if flag is None else bool(flag)
        if len(set(request.outputs)) != len(request.outputs):
            raise V2Error("an output is requested twice")
    return request


def encode_rest(model: str, request: InferRequest, results: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The v2 JSON answer; with binary outputs, the JSON then the bytes and the JSON's length."""
    outputs, chunks = [], []
    for name, array in results.items():
        array = np.asarray(array)
        what = f"output {name!r}"
        datatype = datatype_of(array.dtype, what)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.binary.get(name, request.binary_default):
            raw = tensor_to_raw(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = tensor_to_json(array, datatype, what)
        outputs.append(tensor)
    answer: dict[str, Any] = {"model_name": model, "model_version": "", "outputs": outputs}
    if request.id:
        answer["id"] = request.id
    head = json.dumps(answer, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def decode_grpc(body: bytes, limits: DecodeLimits | None = None) -> InferRequest:
    """Decode a serialized `ModelInferRequest` (tensors in `contents` or `raw_input_contents`),
    each input's declared shape counted against `limits` first (as in `decode_rest`)."""
    budget = (limits or DecodeLimits.from_config()).budget()
    try:
        message = grpc_messages.ModelInferRequest.FromString(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise V2Error(f"body is not a serialized inference.ModelInferRequest: {exc}") from None
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise V2Error(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs: "
                      "send every input raw or none")
    if not message.inputs:
        raise V2Error("the request has no inputs")
    request = InferRequest({}, id=message.id)
    for i, tensor in enumerate(message.inputs):
        what = f"input {tensor.name!r}"
        if tensor.name in request.inputs:
            raise V2Error(f"{what} is given twice")
        _numpy_type(tensor.datatype, what)
        shape = _shape(list(tensor.shape), what)
        _take(budget, what, tensor.datatype, shape, len(raw[i]) if raw else 0)
        if raw:
            request.inputs[tensor.name] = tensor_from_raw(raw[i], tensor.datatype, shape, what)
        else:
            request.inputs[tensor.name] = _from_contents(tensor, shape, what)
    if message.outputs:
        request.outputs = [o.name for o in message.outputs]
        if len(set(request.outputs)) != len(request.outputs):
            raise V2Error("an output is requested twice")
    return request


def _from_contents(tensor: Any, shape: list[int], what: str) -> np.ndarray:
    datatype = tensor.datatype
    field_name = CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise V2Error(f"{what}: {datatype} has no contents field; send it in raw_input_contents")
    values = getattr(tensor.contents, field_name)
    need = _count(shape)
    if len(values) != need:
        raise V2Error(f"{what}: shape {shape} needs {need} values in contents.{field_name}, "
                      f"received {len(values)}")
    if datatype == "BYTES":
        out = np.empty(need, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    dtype = DATATYPES[datatype]
    wide = np.array(values, dtype=np.uint64 if datatype == "UINT64" else
                    (np.int64 if dtype.kind in "iu" else dtype))
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise V2Error(f"{what}: a value is out of range for {datatype}")
    return wide.astype(dtype).reshape(shape)


def encode_grpc(model: str, request: InferRequest, results: dict[str, np.ndarray]) -> bytes:
    """A serialized `ModelInferResponse`, outputs in `raw_output_contents` as Triton answers."""
    message = grpc_messages.ModelInferResponse(model_name=model, id=request.id)
    for name, array in results.items():
        array = np.asarray(array)
        datatype = datatype_of(array.dtype, f"output {name!r}")
        message.outputs.add(name=name, datatype=datatype, shape=[int(d) for d in array.shape])
        message.raw_output_contents.append(tensor_to_raw(array, datatype))
    return message.SerializeToString()


# ------------------------------------------------------------------------ the processor side

def supports_v2(processor: Processor) -> bool:
    return type(processor).infer_v2 is not Processor.infer_v2


def model_metadata(model: str, processor: Processor) -> dict[str, Any]:
    """The v2 metadata answer, from the processor's `metadata_v2()` (numpy dtypes in it)."""
    meta = processor.metadata_v2()

    def tensors(items: Any, kind: str) -> list[dict[str, Any]]:
        return [{"name": t["name"], "datatype": datatype_of(t["dtype"], f"{kind} {t['name']!r}"),
                 "shape": [int(d) for d in t["shape"]]} for t in items]

    return {"name": model, "versions": [], "platform": meta.get("platform", ""),
            "inputs": tensors(meta.get("inputs", []), "input"),
            "outputs": tensors(meta.get("outputs", []), "output")}


def with_error_field(body: bytes) -> bytes:
    """Add the `"error"` field v2 clients read to our error body (keeps the others)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return json.dumps({"error": body.decode("utf-8", "replace")}).encode()
    if isinstance(payload, dict) and "error" not in payload:
        payload["error"] = payload.get("message", "")
        return json.dumps(payload, ensure_ascii=False).encode()
    return body
