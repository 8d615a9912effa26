"""Plumbing every management endpoint shares: context, auth, errors, path and body parsing.

Handlers are plain synchronous functions over an `ApiRequest` (the body already read).
They talk to the store, which may be a PostgreSQL server across a network, so the
wrapper runs them on a worker thread: the event loop that also forwards every predict
call never waits for the database.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from eas import spec as specs
from eas.api.signature import Authenticator, Principal, SignatureError
from eas.control.controller import Controller
from eas.control.store import NotFound, Store
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
    """The predict endpoint's base URL (`http://host:port`): answers name full URLs under it."""
    auth: Authenticator = field(init=False)
    """AccessKey signatures and Basic (eas/api/signature.py); the admin pair is the first key."""

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.store, self.access_id, self.access_key)

    def predict_url(self, name: str) -> str:
        """A service's (or group's) endpoint as EAS answers it: a full URL to POST to."""
        return f"{self.endpoint.rstrip('/')}/api/predict/{name}"

    @property
    def port(self) -> int:
        """The predict port, as DescribeServiceEndpoints reports it."""
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class ApiRequest:
    """What a handler sees of an HTTP request: no socket, no event loop."""

    path_params: Mapping[str, str]
    query_params: Mapping[str, str]
    body: bytes
    principal: Principal | None = None
    """Who calls (the AccessKey and its role); None only for handlers called directly."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


Handler = Callable[[ApiRequest], dict[str, Any]]


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint(ctx: ApiContext, fn: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
    """Wrap a handler: credentials checked before the body is read (an AccessKey
    signature or Basic, eas/api/signature.py; a read-only key may only GET), the body
    read on the loop and counted as it arrives (413 past MAX_API_BODY_BYTES, the
    connection closed) then checked against its signed hash, the handler on a worker
    thread, a request id, and every error as EAS JSON."""

    async def handler(request: Request) -> JSONResponse:
        request_id = str(uuid.uuid4()).upper()
        try:
            principal, body_check = await ctx.auth.authenticate(request.scope)
            ctx.auth.allowed(principal, request.method)
            try:
                body = await read_body(request, MAX_API_BODY_BYTES)
            except ClientGone:
                return _error(499, "ClientClosedRequest", "the client closed the connection", request_id)
            if body is None:  # the rest is never read: the connection closes after the answer
                response = _error(413, "RequestTooLarge", f"request body over {MAX_API_BODY_BYTES} bytes",
                                  request_id)
                response.headers.update(CLOSE)
                return response
            body_check(body)
            call = ApiRequest(dict(request.path_params), dict(request.query_params), body, principal)
            return JSONResponse({"RequestId": request_id, **await run_in_threadpool(fn, call)})
        except SignatureError as exc:
            return close_unread(request, _error(exc.status, exc.code, exc.message, request_id))
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


def query_int(request: ApiRequest, key: str, default: int, low: int = 1, high: int = 10_000) -> int:
    """An integer query parameter (EAS sends them as text), `default` when absent."""
    text = request.query_params.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "InvalidParameter", f"{key}: an integer from {low} to {high}")
    return value


def query_bool(request: ApiRequest, key: str) -> bool:
    """`true` in any case (the Python SDK writes `True`), `1` or `yes`."""
    return request.query_params.get(key, "").strip().lower() in ("true", "1", "yes")


def query_time(request: ApiRequest, key: str) -> float | None:
    """A time filter: ISO 8601 (`2026-11-23T09:00:00Z`) or EAS's `2026-11-23 09:00:00`,
    UTC when no zone is given; None when absent."""
    text = request.query_params.get(key, "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "InvalidParameter", f"{key}: a time like 2026-11-23T09:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def page(items: list[Any], number: int, size: int) -> list[Any]:
    """Page `number` (from 1) of `size` items; empty past the end."""
    return items[(number - 1) * size:number * size]


def pages(total: int, size: int) -> int:
    return (total + size - 1) // size


def body_json(request: ApiRequest, what: str = "the service JSON") -> dict[str, Any]:
    if not request.body.strip():
        raise ApiError(400, "InvalidParameter", f"request body is empty: send {what}")
    return specs.load_text(request.body.decode("utf-8", errors="replace"), "request body")


def _error(status: int, code: str, message: str, request_id: str) -> JSONResponse:
    return JSONResponse({"RequestId": request_id, "Code": code, "Message": message}, status_code=status)
