"""One shape for every data-plane error body, wherever it is raised."""

from __future__ import annotations

import json
from typing import Any


def error_body(status: int, message: str, request_id: str = "", code: Any = None) -> bytes:
    """`{"code", "message", "request_id"}`: what clients and BML users parse on a non-200."""
    payload = {"code": code if code is not None else status, "message": message, "request_id": request_id}
    return json.dumps(payload, ensure_ascii=False).encode()
