"""A queue client for Async services, speaking the official SDKs' queue protocol
(eas/protocols/queue_wire.py); `eascmd queue` is built on it.

`QueueClient(url, token)` where `url` is the queue's address: the service's predict URL
(its input queue) or that URL plus `/sink`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from eas.client.management import error_fields
from eas.protocols import queue_wire as wire


class QueueError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} [HTTP {status}]")
        self.status = status
        self.message = message


@dataclass
class Frame:
    index: int
    tags: dict[str, str]
    data: bytes
    message: str


class QueueClient:
    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": token})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, params: dict[str, str], body: bytes | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        resp = self._http.request(method, self.url, params=params, content=body, headers=headers)
        if resp.status_code // 100 != 2:
            _, message, _ = error_fields(resp)
            raise QueueError(resp.status_code, message or resp.text[:300])
        return resp

    def attributes(self) -> dict[str, str]:
        return dict(self._call("GET", {"_attrs_": "true"}).json())

    def put(self, data: bytes, tags: dict[str, str] | None = None, priority: int = 0) -> tuple[int, str]:
        """Returns the entry's index and request id."""
        headers = {wire.PRIORITY_HEADER: str(priority)} if priority else None
        resp = self._call("POST", dict(tags or {}), data, headers)
        return int(resp.text), resp.headers.get(wire.REQUEST_ID_HEADER, "")

    def get(self, index: int = 0, length: int = 1, request_id: str | None = None, delete: bool = False,
            timeout_s: float = 0) -> list[Frame]:
        params = {"_index_": str(index), "_length_": str(length), "_timeout_": f"{timeout_s:g}s",
                  "_auto_delete_": str(delete).lower(), "_raw_": "false"}
        if request_id:
            params[wire.REQUEST_ID_TAG] = request_id
        resp = self._call("GET", params, headers={"Accept": wire.PROTOBUF})
        frames = wire.DataFrameListProto.FromString(resp.content).index
        return [Frame(int(f.index), dict(f.tags), bytes(f.data), f.message) for f in frames]

    def truncate(self, below: int) -> None:
        """Remove every entry with an index under `below`."""
        self._call("DELETE", {"_index_": str(below), "_trunc_": "true"})

    def delete(self, indexes: list[int]) -> None:
        self._call("DELETE", {"_indexes_": ",".join(map(str, indexes))})


def queue_url(service: dict[str, Any], sink: bool) -> str:
    """A queue's address from a described service (its predict URL, `/sink` for the sink)."""
    url = str(service.get("IntranetEndpoint") or service.get("InternetEndpoint") or "")
    return url.rstrip("/") + ("/sink" if sink else "")
