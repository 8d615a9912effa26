"""JSON in and out of numeric processors.

Models answer with numpy types that `json` cannot write; requests arrive in a few
spellings (EAS/TF-serving `instances`, BML `{"features": [...]}` rows, a bare list).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ProcessorError, Request

_INSTANCES_HINT = 'expected {"instances": [[...], ...]} or a JSON list of instances'


def to_jsonable(value: Any) -> Any:
    """numpy arrays/scalars, bytes and nested containers -> plain JSON values."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return value.tolist()
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(to_jsonable(k)): to_jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def instances_of(payload: Any) -> list[Any]:
    """The instance list of a request, with BML `{"features": [...]}` rows unwrapped."""
    if isinstance(payload, dict):
        if "instances" not in payload:
            keys = ", ".join(sorted(map(str, payload))) or "none"
            raise ProcessorError(f'{_INSTANCES_HINT}; the object has keys: {keys}')
        instances = payload["instances"]
    else:
        instances = payload
    if not isinstance(instances, list):
        raise ProcessorError(f"{_INSTANCES_HINT}; got {type(instances).__name__}")
    rows = []
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            if "features" not in row:
                raise ProcessorError(f'instance {i} is an object without a "features" list')
            row = row["features"]
        rows.append(row)
    return rows


def is_json_request(request: Request) -> bool:
    """Bodies that say or look like JSON; everything else is taken for protobuf."""
    if request.content_type and "json" in request.content_type.lower():
        return True
    stripped = request.body.lstrip()
    return stripped[:1] in (b"{", b"[")


def guess_content_type(body: bytes) -> str:
    stripped = body.lstrip()
    return "application/json" if stripped[:1] in (b"{", b"[") else "application/octet-stream"

