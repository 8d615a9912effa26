"""EAS PyTorch-style request/response messages (package `pytorch.eas`).

Same ArrayShape/ArrayProto as the TF flavour minus `bool_val`; inputs are positional
(plus an optional name map). Schema: protos/torch_predict.proto, loaded from the
descriptor set `make protos` compiles beside it (processors/protobuf.py).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from . import _arrayproto, protobuf

PACKAGE = "pytorch.eas"

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")
ArrayShape: Any = _defs[f"{PACKAGE}.ArrayShape"]
ArrayProto: Any = _defs[f"{PACKAGE}.ArrayProto"]
PredictRequest: Any = _defs[f"{PACKAGE}.PredictRequest"]
PredictResponse: Any = _defs[f"{PACKAGE}.PredictResponse"]
ArrayDataType: Any = _defs[f"{PACKAGE}.ArrayDataType"]


def array_from_proto(proto: Any, name: str = "array", *, spec: Any = None, budget: Any = None) -> np.ndarray:
    """Torch ArrayProto -> numpy (ProcessorError 400 on a bad array, LimitError 413 over
    the request's `budget`; `spec` and `budget` as for tfproto.array_from_proto)."""
    return _arrayproto.array_from_proto(proto, name, spec=spec, budget=budget)


def array_to_proto(array: Any) -> Any:
    """numpy -> Torch ArrayProto; bool arrays travel as DT_UINT8 0/1 (no bool_val here)."""
    return _arrayproto.array_to_proto(array, ArrayProto)
