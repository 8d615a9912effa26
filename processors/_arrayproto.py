"""numpy <-> `ArrayProto`, the array message of the EAS TF and Torch requests.

Both request formats (protos/tf_predict.proto, protos/torch_predict.proto) carry the
same `ArrayShape`/`ArrayProto` pair, except that the Torch flavour has no `bool_val`;
the conversion here serves both and checks which value fields the message has.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._tensors import TensorSpec, check_declared
from .base import STRING_ITEM_BYTES, Budget, ProcessorError, check_rank

#: TensorFlow's DataType numbering, which EAS reuses for `ArrayDataType` (the enum of
#: both .proto files; tests/unit/test_protos.py checks they agree with this table).
DATA_TYPES: tuple[tuple[str, int], ...] = (
    ("DT_INVALID", 0), ("DT_FLOAT", 1), ("DT_DOUBLE", 2), ("DT_INT32", 3),
    ("DT_UINT8", 4), ("DT_INT16", 5), ("DT_INT8", 6), ("DT_STRING", 7),
    ("DT_COMPLEX64", 8), ("DT_INT64", 9), ("DT_BOOL", 10), ("DT_QINT8", 11),
    ("DT_QUINT8", 12), ("DT_QINT32", 13), ("DT_BFLOAT16", 14), ("DT_QINT16", 15),
    ("DT_QUINT16", 16), ("DT_UINT16", 17), ("DT_COMPLEX128", 18), ("DT_HALF", 19),
    ("DT_RESOURCE", 20), ("DT_VARIANT", 21),
)
DT = dict(DATA_TYPES)

#: dtype code -> (numpy dtype, ArrayProto field holding the values).
_DECODE: dict[int, tuple[Any, str]] = {
    DT["DT_FLOAT"]: (np.float32, "float_val"),
    DT["DT_DOUBLE"]: (np.float64, "double_val"),
    DT["DT_INT32"]: (np.int32, "int_val"),
    DT["DT_UINT8"]: (np.uint8, "int_val"),
    DT["DT_INT16"]: (np.int16, "int_val"),
    DT["DT_INT8"]: (np.int8, "int_val"),
    DT["DT_UINT16"]: (np.uint16, "int_val"),
    DT["DT_INT64"]: (np.int64, "int64_val"),
    DT["DT_STRING"]: (object, "string_val"),
    DT["DT_BOOL"]: (np.bool_, "bool_val"),
}
_DT_NAMES = {number: name for name, number in DATA_TYPES}

#: numpy dtype -> (dtype code, field). Types without a field of their own are widened
#: losslessly (float16 -> float, uint32 -> int64) so any model output can be sent.
_ENCODE: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (DT["DT_FLOAT"], "float_val"),
    np.dtype(np.float16): (DT["DT_FLOAT"], "float_val"),
    np.dtype(np.float64): (DT["DT_DOUBLE"], "double_val"),
    np.dtype(np.int32): (DT["DT_INT32"], "int_val"),
    np.dtype(np.int16): (DT["DT_INT16"], "int_val"),
    np.dtype(np.int8): (DT["DT_INT8"], "int_val"),
    np.dtype(np.uint8): (DT["DT_UINT8"], "int_val"),
    np.dtype(np.uint16): (DT["DT_UINT16"], "int_val"),
    np.dtype(np.int64): (DT["DT_INT64"], "int64_val"),
    np.dtype(np.uint32): (DT["DT_INT64"], "int64_val"),
    np.dtype(np.bool_): (DT["DT_BOOL"], "bool_val"),
}


def _has_field(proto: Any, name: str) -> bool:
    return name in proto.DESCRIPTOR.fields_by_name


def _infer_dtype_code(proto: Any) -> int:
    """Clients that leave `dtype` unset (DT_INVALID) still filled exactly one value field."""
    for code in (DT["DT_FLOAT"], DT["DT_DOUBLE"], DT["DT_INT32"], DT["DT_INT64"],
                 DT["DT_STRING"], DT["DT_BOOL"]):
        field = _DECODE[code][1]
        if _has_field(proto, field) and len(getattr(proto, field)):
            return code
    return DT["DT_FLOAT"]


def array_from_proto(proto: Any, name: str = "array", *, spec: TensorSpec | None = None,
                     budget: Budget | None = None) -> np.ndarray:
    """Decode an `ArrayProto` (TF or Torch flavour) to numpy; bad ones are the client's 400.

    One value fills the whole declared shape (TensorFlow's convention), so the shape is
    checked before anything is allocated: against the model's input `spec` (rank, fixed
    dimensions: 400) and against the request's `budget` (elements and bytes: 413).
    """
    code = proto.dtype or _infer_dtype_code(proto)
    if code not in _DECODE:
        raise ProcessorError(
            f"{name}: dtype {_DT_NAMES.get(code, code)} is not supported; "
            f"use one of {', '.join(_DT_NAMES[c] for c in sorted(_DECODE))}")
    np_dtype, field = _DECODE[code]
    if not _has_field(proto, field):
        raise ProcessorError(f"{name}: dtype {_DT_NAMES[code]} cannot be sent in this request format")
    values = getattr(proto, field)
    dims = list(proto.array_shape.dim)
    if any(d < 0 for d in dims):
        raise ProcessorError(f"{name}: negative dimension in shape {dims}")
    check_rank(name, dims)
    sent = len(values)
    need = math.prod(dims) if dims else sent
    if dims and sent not in (need, 1):
        raise ProcessorError(f"{name}: shape {dims} needs {need} values, received {sent}")
    declared = dims if dims else ([] if sent == 1 else [sent])
    if spec is not None:
        check_declared(spec, declared, np.dtype(np_dtype))
    budget = budget if budget is not None else Budget()
    if np_dtype is object:
        text = need * len(values[0]) if sent == 1 else sum(len(v) for v in values)
        budget.take(name, declared, STRING_ITEM_BYTES, extra_bytes=text)
    else:
        budget.take(name, declared, np.dtype(np_dtype).itemsize)
    if np_dtype is object:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    else:
        flat = np.array(values, dtype=np_dtype if field != "int_val" else np.int64)
        if field == "int_val" and flat.size:
            info = np.iinfo(np_dtype)
            if flat.min() < info.min or flat.max() > info.max:
                raise ProcessorError(f"{name}: a value is out of range for {_DT_NAMES[code]}")
        flat = flat.astype(np_dtype, copy=False)

    if not dims:
        return flat.reshape(()) if flat.size == 1 else flat
    if flat.size == need:
        return flat.reshape(dims)
    # TensorFlow's convention: one value fills the whole shape (checked above).
    return np.full(dims, flat[0], dtype=flat.dtype)


def array_to_proto(array: Any, message_cls: type) -> Any:
    """Encode numpy data as `message_cls` (an ArrayProto class of either flavour)."""
    arr = np.asarray(array)
    proto = message_cls()
    proto.array_shape.dim.extend(int(d) for d in arr.shape)
    flat = arr.ravel()
    if arr.dtype.kind in "OUS":
        proto.dtype = DT["DT_STRING"]
        proto.string_val.extend(_to_bytes(v) for v in flat)
        return proto
    if arr.dtype == np.bool_ and not _has_field(proto, "bool_val"):
        # The Torch flavour has no bool_val: bools travel as 0/1 bytes.
        arr, flat = arr.astype(np.uint8), flat.astype(np.uint8)
    encoded = _ENCODE.get(arr.dtype)
    if encoded is None:
        if arr.dtype == np.uint64 and (flat.size == 0 or int(flat.max()) <= np.iinfo(np.int64).max):
            encoded = _ENCODE[np.dtype(np.int64)]
        else:
            raise ValueError(f"numpy dtype {arr.dtype} has no ArrayProto encoding")
    proto.dtype, field = encoded
    getattr(proto, field).extend(flat.tolist())
    return proto


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")
