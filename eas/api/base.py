"""Plumbing every management endpoint shares: context, auth, errors, path and body parsing.

Handlers are plain synchronous functions over an `ApiRequest` (the body already read).
They talk to the store, which may be a PostgreSQL server across a network, so the
wrapper runs them on a worker thread: the event loop that also forwards every predict
call never waits for the database.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from eas import spec as specs
from eas.control.controller import Controller
from eas.control.store import NotFound, Store
from eas.protocols.auth import AuthError, check_admin_auth
from eas.protocols.http import CLOSE, ClientGone, close_unread, read_body

log = logging.getLogger("eas.api")

#: Largest management request body (a service JSON is a few KB).
MAX_API_BODY_BYTES = 1024 * 1024


@dataclass
class ApiContext:
    store: Store
    controller: Controller
    access_id: str
    access_key: str
    region: str
    endpoint: str


@dataclass(frozen=True)
class ApiRequest:
    """What a handler sees of an HTTP request: no socket, no event loop."""

    path_params: Mapping[str, str]
    query_params: Mapping[str, str]
    body: bytes


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


Handler = Callable[[ApiRequest], dict[str, Any]]


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint(ctx: ApiContext, fn: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
    """Wrap a handler: admin auth (before the body is read), the body read on the loop
    and counted as it arrives (413 past MAX_API_BODY_BYTES, the connection closed), the
    handler on a worker thread, a request id, and every error as EAS JSON."""

    async def handler(request: Request) -> JSONResponse:
        request_id = str(uuid.uuid4()).upper()
        try:
            check_admin_auth(request.headers.get("authorization"), ctx.access_id, ctx.access_key)
            try:
                body = await read_body(request, MAX_API_BODY_BYTES)
            except ClientGone:
                return _error(499, "ClientClosedRequest", "the client closed the connection", request_id)
            if body is None:  # the rest is never read: the connection closes after the answer
                response = _error(413, "RequestTooLarge", f"request body over {MAX_API_BODY_BYTES} bytes",
                                  request_id)
                response.headers.update(CLOSE)
                return response
            call = ApiRequest(dict(request.path_params), dict(request.query_params), body)
            return JSONResponse({"RequestId": request_id, **await run_in_threadpool(fn, call)})
        except AuthError as exc:
            return close_unread(request, _error(401, "Unauthorized", str(exc), request_id))
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message, request_id)
        except specs.SpecError as exc:
            return _error(400, "InvalidParameter", str(exc), request_id)
        except NotFound as exc:
            return _error(404, "ServiceNotFound", f"service '{exc.args[0]}' does not exist in region "
                          f"{ctx.region}: list services with 'eascmd ls'", request_id)
        except Exception as exc:  # the store failing, or a bug: still EAS JSON, findable in the log
            log.exception("request %s (%s %s) failed", request_id, request.method, request.url.path)
            return _error(500, "InternalError", f"the server failed on this request ({type(exc).__name__}): "
                          f"retry, or look for RequestId {request_id} in its log", request_id)

    return handler


def path_name(ctx: ApiContext, request: ApiRequest) -> str:
    """The `{name}` of a `/{region}/{name}` path, after checking the region is ours."""
    region = request.path_params["region"]
    if region != ctx.region:
        raise ApiError(404, "RegionNotFound", f"this server serves region '{ctx.region}', not '{region}'")
    return request.path_params["name"]


def body_json(request: ApiRequest, what: str = "the service JSON") -> dict[str, Any]:
    if not request.body.strip():
        raise ApiError(400, "InvalidParameter", f"request body is empty: send {what}")
    return specs.load_text(request.body.decode("utf-8", errors="replace"), "request body")


def _error(status: int, code: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse({"RequestId": request_id, "Code": code, "Message": message}, status_code=status)
