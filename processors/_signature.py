"""A model's signature as EAS shows it: the answer to a GET on the predict path.

EAS's TensorFlow processor answers `GET /api/predict/{service}` with the signature the
SDK's TFRequest is built from: `{"signature_name", "inputs": [{"name", "shape",
"type"}], "outputs": [...]}`, types in TensorFlow's `DT_*` spelling and -1 for a
dimension of any size. Every tensor processor answers in that one form here.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ._tensors import TensorSpec
from .base import Processor, ProcessorError

#: numpy dtype kind+size -> TensorFlow DataType name (what EAS clients read).
_DT_NAMES = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "int8": "DT_INT8", "int16": "DT_INT16",
    "int32": "DT_INT32", "int64": "DT_INT64", "uint8": "DT_UINT8", "uint16": "DT_UINT16", "uint32": "DT_UINT32",
    "uint64": "DT_UINT64", "bool": "DT_BOOL", "complex64": "DT_COMPLEX64", "complex128": "DT_COMPLEX128",
}


def dt_name(dtype: Any) -> str:
    """The `DT_*` name of a numpy dtype (strings are DT_STRING; unknown: DT_INVALID)."""
    if dtype is None:
        return "DT_INVALID"
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "DT_STRING"
    return _DT_NAMES.get(dtype.name, "DT_INVALID")


def shape_list(shape: Sequence[Any] | None) -> list[int] | None:
    """Fixed dimensions as they are, any other as -1; None when even the rank is open."""
    if shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else -1 for d in shape]


def tensor(name: str, dtype: Any, shape: Sequence[Any] | None) -> dict[str, Any]:
    return {"name": name, "shape": shape_list(shape), "type": dt_name(dtype)}


def of_specs(specs: Iterable[TensorSpec]) -> list[dict[str, Any]]:
    return [tensor(s.name, s.dtype, s.shape) for s in specs]


def signature(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
              **extra: Any) -> dict[str, Any]:
    return {"signature_name": name, "inputs": inputs, "outputs": outputs, **extra}


def signature_of(processor: Processor) -> dict[str, Any]:
    """What a GET on the predict path answers: the processor's own `signature()`, else
    one built from its Open Inference Protocol metadata; a ProcessorError when it has neither."""
    try:
        return processor.signature()
    except ProcessorError as missing:
        try:
            meta = processor.metadata_v2()
        except ProcessorError:
            raise missing from None

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [tensor(t["name"], t.get("dtype"), t.get("shape")) for t in items]

    return signature("serving_default", tensors(meta.get("inputs", [])), tensors(meta.get("outputs", [])))
