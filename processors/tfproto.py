"""EAS TensorFlow-style request/response messages (no package).

The official `eas-prediction` SDK's `TFRequest` serialises these; the ONNX and
TensorFlow processors parse them. Schema: protos/tf_predict.proto, loaded from the
descriptor set `make protos` compiles beside it (processors/protobuf.py).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from . import _arrayproto, protobuf

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")
ArrayShape: Any = _defs["ArrayShape"]
ArrayProto: Any = _defs["ArrayProto"]
PredictRequest: Any = _defs["PredictRequest"]
PredictResponse: Any = _defs["PredictResponse"]
ArrayDataType: Any = _defs["ArrayDataType"]

DT_INVALID: int = ArrayDataType.DT_INVALID
DT_FLOAT: int = ArrayDataType.DT_FLOAT
DT_DOUBLE: int = ArrayDataType.DT_DOUBLE
DT_INT32: int = ArrayDataType.DT_INT32
DT_UINT8: int = ArrayDataType.DT_UINT8
DT_INT16: int = ArrayDataType.DT_INT16
DT_INT8: int = ArrayDataType.DT_INT8
DT_STRING: int = ArrayDataType.DT_STRING
DT_INT64: int = ArrayDataType.DT_INT64
DT_BOOL: int = ArrayDataType.DT_BOOL
DT_UINT16: int = ArrayDataType.DT_UINT16
DT_HALF: int = ArrayDataType.DT_HALF


def array_from_proto(proto: Any, name: str = "array", *, spec: Any = None, budget: Any = None) -> np.ndarray:
    """ArrayProto -> numpy. Strings come back as an object array of bytes.

    Raises ProcessorError (400) for an unsupported dtype or a shape/value-count mismatch,
    or a declared shape the model input `spec` (a `_tensors.TensorSpec`) does not take;
    LimitError (413) for a shape over the request's `budget` (`base.Budget`), before
    allocating anything.
    """
    return _arrayproto.array_from_proto(proto, name, spec=spec, budget=budget)


def array_to_proto(array: Any) -> Any:
    """numpy (or anything np.asarray takes) -> ArrayProto; str/bytes go to string_val."""
    return _arrayproto.array_to_proto(array, ArrayProto)
