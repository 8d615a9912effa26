"""EAS PyTorch-style request/response messages (package `pytorch.eas`, contract section 2).

Same ArrayShape/ArrayProto as the TF flavour minus `bool_val`; inputs are positional
(plus an optional name map). Schema: protos/torch_predict.proto.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _protoschema as _schema

F = _schema.F
PACKAGE = "pytorch.eas"

_fd = _schema.new_tensor_file("eas_serving/pytorch_predict.proto", package=PACKAGE, with_bool=False)

_req = _fd.message_type.add(name="PredictRequest")
_schema.add_field(_req, "inputs", 1, F.TYPE_MESSAGE, repeated=True, message="ArrayProto", package=PACKAGE)
_schema.add_field(_req, "output_filter", 2, F.TYPE_INT32, repeated=True)
_schema.add_map_field(_req, "map_inputs", 3, "ArrayProto", package=PACKAGE)
_schema.add_field(_req, "debug_level", 100, F.TYPE_INT32)

_resp = _fd.message_type.add(name="PredictResponse")
_schema.add_field(_resp, "outputs", 1, F.TYPE_MESSAGE, repeated=True, message="ArrayProto", package=PACKAGE)
_schema.add_map_field(_resp, "map_outputs", 2, "ArrayProto", package=PACKAGE)

_classes = _schema.build(_fd)
ArrayShape: Any = _classes["ArrayShape"]
ArrayProto: Any = _classes["ArrayProto"]
PredictRequest: Any = _classes["PredictRequest"]
PredictResponse: Any = _classes["PredictResponse"]
ArrayDataType: Any = _classes["ArrayDataType"]


def array_from_proto(proto: Any, name: str = "array") -> np.ndarray:
    """Torch ArrayProto -> numpy (ProcessorError 400 on a bad array)."""
    return _schema.array_from_proto(proto, name)


def array_to_proto(array: Any) -> Any:
    """numpy -> Torch ArrayProto; bool arrays travel as DT_UINT8 0/1 (no bool_val here)."""
    return _schema.array_to_proto(array, ArrayProto)
