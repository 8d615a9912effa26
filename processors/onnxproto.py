"""The EAS ONNX request/response (`hie.processor.DataProto`), as the SDKs' OnnxRequest sends it.

eas-prediction's `OnnxRequest` holds named tensors whose values are raw little-endian
bytes (`raw_data`) of an ONNX element type (`data_type`); its `OnnxResponse` reads the
answer as the same message. The onnx processor accepts it beside JSON and the TF
PredictRequest. Schema: protos/onnx_processor_data.proto, loaded from the descriptor
set `make protos` compiles beside it (processors/protobuf.py).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Mapping

import numpy as np

from . import protobuf
from ._tensors import TensorSpec, check_declared
from .base import Budget, ProcessorError, check_rank

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")
TensorProto: Any = _defs["hie.processor.TensorProto"]
DataProto: Any = _defs["hie.processor.DataProto"]

#: ONNX element type numbers (TensorProto.DataType) and their little-endian numpy types.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("u1"), 3: np.dtype("i1"), 4: np.dtype("<u2"), 5: np.dtype("<i2"),
    6: np.dtype("<i4"), 7: np.dtype("<i8"), 10: np.dtype("<f2"), 11: np.dtype("<f8"), 12: np.dtype("<u4"),
    13: np.dtype("<u8"),
}
_NAMES = {v.number: v.name for v in TensorProto.DESCRIPTOR.enum_types_by_name["DataType"].values}


def parse(body: bytes) -> Any | None:
    """The DataProto `body` holds, or None when it is not one: a DataProto is told from
    the TF PredictRequest by its tensors, each with a name and a known element type."""
    message = DataProto()
    try:
        message.ParseFromString(body)
    except Exception:
        return None
    if not message.tensors or any(not t.name or t.data_type not in DTYPES for t in message.tensors):
        return None
    return message


def array_from_tensor(tensor: Any, what: str, *, spec: TensorSpec | None = None,
                      budget: Budget | None = None) -> np.ndarray:
    """One TensorProto as numpy: dims and byte count checked (400), and the shape
    counted against the request's budget (413), before the array is made."""
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None:
        known = ", ".join(f"{_NAMES[n]} ({n})" for n in sorted(DTYPES))
        raise ProcessorError(f"{what}: data_type {_NAMES.get(tensor.data_type, tensor.data_type)} is not "
                             f"supported; use one of {known}")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise ProcessorError(f"{what}: negative dimension in dims {dims}")
    check_rank(what, dims)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if len(tensor.raw_data) != count * dtype.itemsize:
        raise ProcessorError(f"{what}: dims {dims} of {_NAMES[tensor.data_type]} need "
                             f"{count * dtype.itemsize} bytes of raw_data, received {len(tensor.raw_data)}")
    if spec is not None:
        check_declared(spec, dims, dtype)
    (budget if budget is not None else Budget()).take(what, dims, dtype.itemsize)
    return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def to_proto(outputs: Mapping[str, Any]) -> Any:
    """Named arrays as a DataProto, as OnnxResponse reads it (numeric types only)."""
    message = DataProto()
    codes = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        code = codes.get(array.dtype)
        if code is None:
            raise ProcessorError(f"output {name!r} is {array.dtype}, which an OnnxResponse cannot carry: "
                                 "ask for it with a JSON request")
        tensor = message.tensors.add()
        tensor.name = name
        tensor.dims.extend(array.shape)
        tensor.data_type = code
        tensor.raw_data = array.astype(DTYPES[code], copy=False).tobytes()
    return message
