"""Plumbing every management endpoint shares: context, auth, errors, path and body parsing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from eas import spec as specs
from eas import store as st
from eas.auth import AuthError, check_admin_auth
from eas.controller import Controller

Handler = Callable[[Request], Awaitable[JSONResponse]]


@dataclass
class ApiContext:
    store: st.Store
    controller: Controller
    access_id: str
    access_key: str
    region: str
    endpoint: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ok(payload: dict[str, Any], request_id: str) -> JSONResponse:
    return JSONResponse({"RequestId": request_id, **payload})


def endpoint(ctx: ApiContext, fn: Callable[[Request, str], Awaitable[dict[str, Any]]]) -> Handler:
    """Wrap an API function: admin auth, request id, and every error as EAS JSON."""

    async def handler(request: Request) -> JSONResponse:
        request_id = str(uuid.uuid4()).upper()
        try:
            check_admin_auth(request.headers.get("authorization"), ctx.access_id, ctx.access_key)
            return _ok(await fn(request, request_id), request_id)
        except AuthError as exc:
            return _error(401, "Unauthorized", str(exc), request_id)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message, request_id)
        except specs.SpecError as exc:
            return _error(400, "InvalidParameter", str(exc), request_id)
        except st.NotFound as exc:
            return _error(404, "ServiceNotFound", f"service '{exc.args[0]}' does not exist in region "
                          f"{ctx.region}: list services with 'eascmd ls'", request_id)

    return handler


def path_name(ctx: ApiContext, request: Request) -> str:
    """The `{name}` of a `/{region}/{name}` path, after checking the region is ours."""
    region = request.path_params["region"]
    if region != ctx.region:
        raise ApiError(404, "RegionNotFound", f"this server serves region '{ctx.region}', not '{region}'")
    return request.path_params["name"]


async def body_json(request: Request, what: str = "the service JSON") -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "InvalidParameter", f"request body is empty: send {what}")
    return specs.load_text(raw.decode("utf-8", errors="replace"), "request body")


def _error(status: int, code: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse({"RequestId": request_id, "Code": code, "Message": message}, status_code=status)
