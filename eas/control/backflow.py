"""Data backflow's writer: the gateway's captured copies (eas/gateway/backflow.py) into
the store, off the request path, as one JSON record each (the export format).

A record, one line of an export: `{"id", "time", "service", "request_id", "status",
"request": {...}, "answer": {...}}`, each side `{"content_type", "bytes", "truncated",
"body"}` (UTF-8 text) or `"body_base64"` (anything else).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any

from eas.control.store import NotFound, Store
from eas.gateway.backflow import Capture, Sample

log = logging.getLogger("eas.backflow")

FLUSH_S = 0.5


def _side(body: bytes, size: int, content_type: str, limit: int) -> dict[str, Any]:
    side: dict[str, Any] = {"content_type": content_type, "bytes": size, "truncated": size > limit}
    try:
        side["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        side["body_base64"] = base64.b64encode(body).decode()
    return side


def record_of(sample: Sample) -> dict[str, Any]:
    return {"time": sample.at, "service": sample.service, "request_id": sample.request_id, "status": sample.status,
            "request": _side(sample.request, sample.request_bytes, sample.request_type, sample.max_body_bytes),
            "answer": _side(sample.answer, sample.answer_bytes, sample.answer_type, sample.max_body_bytes)}


def stored(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as its record, with its id."""
    return {"id": row["id"], **json.loads(row["record"])}


class BackflowWriter:
    """Every `FLUSH_S`, the waiting copies written in one transaction; each service keeps
    its newest `backflow.keep` records."""

    def __init__(self, store: Store, capture: Capture) -> None:
        self.store, self.capture = store, capture
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eas-backflow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self.flush()
            except Exception:
                log.exception("data backflow: writing captured records failed")

    def flush(self) -> int:
        samples = self.capture.drain()
        if not samples:
            return 0
        keep: dict[str, int] = {}
        for name in {s.service for s in samples}:
            try:
                keep[name] = int((self.store.get(name).spec.get("backflow") or {}).get("keep", 100_000))
            except NotFound:
                keep[name] = 0
        rows = [(s.service, s.at, json.dumps(record_of(s), ensure_ascii=False, separators=(",", ":")))
                for s in samples if keep.get(s.service)]
        self.store.add_backflow(rows, keep)
        self.written += len(rows)
        return len(rows)
