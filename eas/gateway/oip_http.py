"""The Open Inference Protocol (KServe v2) REST face of the gateway, on eas-server's port.

An adapter only: v2 paths in, a `Call` to `Gateway.handle` whose instance path is the
instance's own v2 path, the answer back in v2 form. Tensors are never decoded here.
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eas.gateway.core import Call, Gateway
from eas.protocols.http import close_unread, read_body, signed_path, until_disconnect
from eas.protocols.oip import HEADER_LENGTH, INFER_PATH, METADATA_PATH
from eas.protocols.oip_rest import health_routes, v2_error, v2_response


class OipHttp:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[Route]:
        return [
            Route("/v2/models/{model}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{model}/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{model}", self.metadata, methods=["GET"]),
            *health_routes(),
        ]

    async def ready(self, http: Request) -> Response:
        status, why = await self.gateway.ready(http.path_params["model"], http.headers, signed_path(http),
                                               http.client.host if http.client else None)
        if status != 200:
            return v2_error(status, why)
        return JSONResponse({"name": http.path_params["model"], "ready": True})

    async def metadata(self, http: Request) -> Response:
        call = Call(service=http.path_params["model"], headers=http.headers, path=signed_path(http), method="GET",
                    instance_path=METADATA_PATH, client=http.client.host if http.client else None)
        return v2_response(await self.gateway.handle(call))

    async def infer(self, http: Request) -> Response:
        length = http.headers.get(HEADER_LENGTH)
        call = Call(service=http.path_params["model"], headers=http.headers, path=signed_path(http),
                    reader=functools.partial(read_body, http), instance_path=INFER_PATH,
                    content_type=http.headers.get("content-type"),
                    forward_headers={HEADER_LENGTH: length} if length is not None else {},
                    client=http.client.host if http.client else None)
        response = v2_response(await self.gateway.handle(call, functools.partial(until_disconnect, http)))
        return close_unread(http, response) if call.reader is not None else response
