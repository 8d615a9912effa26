"""The EAS face of the gateway: `POST /api/predict/{service}[/{sub_path}]`, WebSockets at
the same paths, and DIRECT discovery.

An adapter only: HTTP in, a `Call` to `Gateway.handle` (eas/gateway/core.py), the
`Answer` back out (a streamed one chunk by chunk). The body is read by the core, once
the endpoint and the credentials are known good; an answer given without reading it
closes the connection (`close_unread`). A WebSocket upgrade goes to `Gateway.websocket`
with this transport's side of the session (`StarletteSide`).
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from eas.gateway.core import Call, Gateway
from eas.protocols.http import close_unread, read_body, signed_path, to_response, until_disconnect
from eas.protocols.websocket import StarletteSide


METHODS = ["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


class EasHttp:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[Route]:
        return [
            # GET: the model's signature (what EAS's TensorFlow processor answers), token checked like POST.
            # Any method and sub-path: a container service's web app has its own (instances
            # of processors answer 405 to what is not a predict call).
            Route("/api/predict/{service}", self.predict, methods=METHODS),
            Route("/api/predict/{service}/{sub_path:path}", self.predict, methods=METHODS),
            WebSocketRoute("/api/predict/{service}", self.websocket),
            WebSocketRoute("/api/predict/{service}/{sub_path:path}", self.websocket),
            # DIRECT-mode discovery, at the paths the Python and Go SDKs ask.
            Route("/api/v1/servicediscovery/upstreams/{service}", self.upstreams, methods=["GET"]),
            Route("/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}", self.upstreams,
                  methods=["GET"]),
        ]

    async def predict(self, http: Request) -> Response:
        call = Call(
            service=http.path_params["service"], headers=http.headers, path=signed_path(http),
            reader=functools.partial(read_body, http), sub_path=http.path_params.get("sub_path", ""),
            content_type=http.headers.get("content-type"), client=http.client.host if http.client else None,
            streaming=True, method=http.method, access_token=http.query_params.get("access_token"),
            query=http.scope.get("query_string", b"").decode("latin-1"),
        )
        response = to_response(await self.gateway.handle(call, functools.partial(until_disconnect, http)))
        return close_unread(http, response) if call.reader is not None else response

    async def websocket(self, ws: WebSocket) -> None:
        """A WebSocket at a predict path: the token from the upgrade's headers, then relayed."""
        call = Call(service=ws.path_params["service"], headers=ws.headers, path=signed_path(ws),  # type: ignore[arg-type]
                    method="GET", sub_path=ws.path_params.get("sub_path", ""),
                    client=ws.client.host if ws.client else None)
        await self.gateway.websocket(call, StarletteSide(ws), ws.scope.get("query_string", b"").decode("latin-1"))

    async def upstreams(self, http: Request) -> JSONResponse:
        """Service discovery for SDKs in DIRECT mode: the instances to call themselves.

        Open like EAS's (the SDKs send no credentials here); every instance still
        checks the service token on each request.
        """
        name = http.path_params["service"]
        instances = self.gateway.instances(name)
        if instances is None:
            return JSONResponse({"code": 404, "message": f"service '{name}' does not exist"}, 404)
        return JSONResponse({"endpoints": {"items": [{"ip": host, "port": port, "weight": 100}
                                                     for host, port in instances]}})
