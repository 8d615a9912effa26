"""EAS TensorFlow-style request/response messages (contract section 2).

The official `eas-prediction` SDK's `TFRequest` serialises these; our ONNX (and
later TensorFlow) processors parse them. Schema: protos/tf_predict.proto.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _protoschema as _schema

F = _schema.F

_fd = _schema.new_tensor_file("eas_serving/tf_predict.proto", package="", with_bool=True)

_req = _fd.message_type.add(name="PredictRequest")
_schema.add_field(_req, "signature_name", 1, F.TYPE_STRING)
_schema.add_map_field(_req, "inputs", 2, "ArrayProto", package="")
_schema.add_field(_req, "output_filter", 3, F.TYPE_STRING, repeated=True)
# Not in the contract's table; the SDK's newer tf_predict.proto carries it. Declaring it
# keeps the schema a superset of both SDK variants.
_schema.add_field(_req, "debug_level", 100, F.TYPE_INT32)

_resp = _fd.message_type.add(name="PredictResponse")
_schema.add_map_field(_resp, "outputs", 1, "ArrayProto", package="")

_classes = _schema.build(_fd)
ArrayShape: Any = _classes["ArrayShape"]
ArrayProto: Any = _classes["ArrayProto"]
PredictRequest: Any = _classes["PredictRequest"]
PredictResponse: Any = _classes["PredictResponse"]
ArrayDataType: Any = _classes["ArrayDataType"]

DT_INVALID, DT_FLOAT, DT_DOUBLE, DT_INT32 = 0, 1, 2, 3
DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT16, DT_HALF = 9, 10, 17, 19


def array_from_proto(proto: Any, name: str = "array") -> np.ndarray:
    """ArrayProto -> numpy. Strings come back as an object array of bytes.

    Raises ProcessorError (400) for an unsupported dtype or a shape/value-count mismatch.
    """
    return _schema.array_from_proto(proto, name)


def array_to_proto(array: Any) -> Any:
    """numpy (or anything np.asarray takes) -> ArrayProto; str/bytes go to string_val."""
    return _schema.array_to_proto(array, ArrayProto)
