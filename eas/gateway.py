"""The predict gateway: `POST /api/predict/{service}[/{sub_path}]`.

On the hot path it does only what must be done per request: look the route up in
memory, check the token, hand the bytes to an instance and copy the answer back.
Status codes are the ones EAS clients already act on (contract section 1).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse

from eas.auth import AuthError, check_service_auth
from eas.routes import RouteTable
from processors.base import Request, error_body

log = logging.getLogger("eas.gateway")

REQUEST_ID_HEADER = "X-Request-Id"
#: Largest request body accepted (bytes); larger ones get 413 before reaching a model.
MAX_BODY_BYTES = 64 * 1024 * 1024


class Gateway:
    def __init__(self, routes: RouteTable, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes

    async def predict(self, http: HttpRequest) -> HttpResponse:
        request_id = uuid.uuid4().hex
        name = http.path_params["service"]
        sub_path = http.path_params.get("sub_path", "")
        route = self.routes.get(name)
        if route is None:
            return _error(404, f"service '{name}' does not exist", request_id)
        length = http.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return _error(413, f"request body over {self.max_body_bytes} bytes", request_id)
        body = await http.body()
        if len(body) > self.max_body_bytes:
            return _error(413, f"request body over {self.max_body_bytes} bytes", request_id)
        try:
            check_service_auth(route.token, http.headers, http.url.path, body)
        except AuthError as exc:
            return _error(401, str(exc), request_id)
        if route.handle is None:
            return _error(503, f"service '{name}' is not available: {route.unavailable}", request_id)
        request = Request(
            body=body,
            content_type=http.headers.get("content-type"),
            sub_path=sub_path.lstrip("/"),
            headers={},
            request_id=request_id,
        )
        response = route.handle.remote(request)
        try:
            status, payload, content_type = await asyncio.wait_for(_result(response), route.keepalive_s)
        except asyncio.TimeoutError:
            response.cancel()
            return _error(408, f"request ran longer than the keepalive of {route.keepalive_s * 1000:.0f} ms",
                          request_id)
        except Exception as exc:  # instance died or went away mid-request: clients retry 5xx
            log.warning("request %s to %s failed upstream: %s", request_id, name, exc)
            return _error(503, f"no instance of '{name}' could answer: {type(exc).__name__}", request_id)
        return HttpResponse(payload, status, media_type=content_type, headers={REQUEST_ID_HEADER: request_id})


async def _result(response):  # noqa: ANN001, ANN202 - a Serve DeploymentResponse
    return await response


def _error(status: int, message: str, request_id: str) -> HttpResponse:
    return HttpResponse(
        error_body(status, message, request_id),
        status,
        media_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )
