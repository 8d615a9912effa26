"""Data backflow records of a service (ours: `/api/v2/ext/services/{name}/backflow`, docs/api.md).

Listed oldest first in pages (`After`: the last id seen, `Limit`), one record by id,
and cleared. `eascmd backflow export` pages through them into JSON lines.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from eas.api.base import ApiContext, ApiError, ApiRequest, endpoint
from eas.control import store as st
from eas.control.backflow import stored

MAX_PAGE = 1000


def _int(request: ApiRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "InvalidParameter", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "InvalidParameter", f"{name} must be between {low} and {high}")
    return value


class BackflowApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _service(self, request: ApiRequest) -> str:
        name = request.path_params["name"]
        try:
            self.ctx.store.get(name)
        except st.NotFound:
            raise ApiError(404, "ServiceNotFound", f"service '{name}' does not exist") from None
        return name

    def list_records(self, request: ApiRequest) -> dict[str, Any]:
        name = self._service(request)
        after = _int(request, "After", 0, 0, 2**62)
        limit = _int(request, "Limit", 100, 1, MAX_PAGE)
        rows = [stored(r) for r in self.ctx.store.backflow(name, after, limit)]
        return {"TotalCount": self.ctx.store.backflow_count(name), "Records": rows,
                "NextAfter": rows[-1]["id"] if rows else after}

    def get_record(self, request: ApiRequest) -> dict[str, Any]:
        name = self._service(request)
        try:
            ident = int(request.path_params["id"])
        except ValueError:
            raise ApiError(400, "InvalidParameter", "a record id is an integer") from None
        rows = self.ctx.store.backflow(name, ident - 1, 1)
        if not rows or rows[0]["id"] != ident:
            raise ApiError(404, "RecordNotFound", f"service '{name}' has no backflow record {ident}")
        return stored(rows[0])

    def clear(self, request: ApiRequest) -> dict[str, Any]:
        name = self._service(request)
        count = self.ctx.store.clear_backflow(name)
        return {"Message": f"{count} backflow records of '{name}' deleted"}

    def routes(self) -> list[Route]:
        base = "/api/v2/ext/services/{name}/backflow"
        return [
            Route(base, endpoint(self.ctx, self.list_records), methods=["GET"]),
            Route(base, endpoint(self.ctx, self.clear), methods=["DELETE"]),
            Route(base + "/{id}", endpoint(self.ctx, self.get_record), methods=["GET"]),
        ]
