"""The HTTP face of one instance: EAS predict, the Open Inference Protocol (v2 REST),
and what the server asks of it (health, stats, drain).

Each route only translates HTTP to a `Call` for the transport-free core
(eas/instance/core.py) and its `Answer` back; `InstanceServer` runs it on its own
thread and event loop, on a port picked by the OS, within `ListenerLimits`.
The caller is checked from the request head before the body is read, and the body is
counted as it arrives (413 at the limit, the connection closed).
"""

from __future__ import annotations

import functools
import socket
import threading
import uuid
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from eas.instance.core import Call, InstanceApp
from eas.protocols.http import (
    CLOSE,
    ClientGone,
    ListenerLimits,
    PredictFastPath,
    close_unread,
    read_body,
    signed_path,
    to_response,
    until_disconnect,
    uvicorn_config,
)
from eas.protocols.oip import HEADER_LENGTH, model_metadata
from eas.protocols.oip_rest import health_routes, v2_error, v2_response
from eas.protocols.websocket import (
    MAX_FRAME_BYTES,
    MAX_QUEUED_FRAMES,
    StarletteSide,
    relay,
)
from eas.protocols.wire import (
    INSTANCE_KEEPALIVE_S,
    INTERNAL_KEY_HEADER,
    REQUEST_ID_HEADER,
    Answer,
)
from processors.base import ProcessorError

#: Methods only a container service answers (a web app's own API); processors answer 405.
OTHER_METHODS = ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
#: Headers between the server and its instances, never shown to a container.
PRIVATE_HEADERS = frozenset({INTERNAL_KEY_HEADER.lower(), "authorization"})
#: Upgrade headers the WebSocket client to a container sets itself.
WS_OWN_HEADERS = frozenset({"host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                            "sec-websocket-extensions", "sec-websocket-protocol", "content-length"})
PATH_SAFE = "/:@!$&'()*+,;=-._~"



class InstanceHttp:
    def __init__(self, core: InstanceApp) -> None:
        self.core = core
        self.app = Starlette(routes=[
            Route("/api/predict/{service}", self.predict, methods=["POST", *OTHER_METHODS]),
            Route("/api/predict/{service}", self.signature, methods=["GET"]),
            Route("/api/predict/{service}/{sub_path:path}", self.predict, methods=["POST", "GET", *OTHER_METHODS]),
            Route("/v2/models/{service}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{service}/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{service}", self.metadata, methods=["GET"]),
            *health_routes(),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/stats", self.stats, methods=["GET"]),
            Route("/drain", self.drain, methods=["POST"]),
            WebSocketRoute("/api/predict/{service}", self.websocket),
            WebSocketRoute("/api/predict/{service}/{sub_path:path}", self.websocket),
        ])

    async def _answer(self, http: Request, kind: str, passed: dict[str, str] | None = None) -> tuple[Answer, bool]:
        """The answer, and whether the body was read (else the connection may have to close)."""
        request_id = http.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        path = signed_path(http)
        refused = self.core.refusal(http.path_params["service"], http.headers, path, method=http.method)
        if refused is not None:  # no byte of the body is read for a caller refused by its head
            return self.core.reject(*refused, request_id), False
        try:
            body = await read_body(http, self.core.max_body_bytes)
        except ClientGone:
            return self.core.reject(499, "client closed the connection while sending the body", request_id), True
        if body is None:  # the rest is never read: the connection closes after the answer
            answer = self.core.reject(413, f"request body over {self.core.max_body_bytes} bytes", request_id)
            answer.headers.update(CLOSE)
            return answer, False
        if kind == "predict" and http.method != "POST" and not self.core.runtime.forwards_everything:
            return self.core.reject(405, f"{http.method} is not served here: a predict call is a POST",
                                    request_id), True
        if self.core.runtime.forwards_everything:  # a container serves: the request goes on as sent
            kind = "predict"
            passed = {k: v for k, v in http.headers.items() if k.lower() not in PRIVATE_HEADERS}
        call = Call(http.path_params["service"], kind, body, http.headers, path,  # type: ignore[arg-type]
                    request_id, http.headers.get("content-type"), http.path_params.get("sub_path", ""),
                    passed or {}, http.method, http.scope.get("query_string", b"").decode("latin-1"))
        return await self.core.handle(call, functools.partial(until_disconnect, http)), True

    async def predict(self, http: Request) -> Response:
        """`POST /api/predict/{service}[/{sub_path}]`: the EAS predict call."""
        answer, read = await self._answer(http, "predict")
        return to_response(answer) if read else close_unread(http, to_response(answer))

    async def signature(self, http: Request) -> Response:
        """`GET /api/predict/{service}`: the model's signature, as EAS answers it."""
        answer, read = await self._answer(http, "signature")
        return to_response(answer) if read else close_unread(http, to_response(answer))

    async def infer(self, http: Request) -> Response:
        """`POST /v2/models/{service}/infer`: v2 JSON, binary, or a serialized ModelInferRequest."""
        length = http.headers.get(HEADER_LENGTH)
        passed = {HEADER_LENGTH.lower(): length} if length is not None else {}
        answer, read = await self._answer(http, "infer_v2", passed)
        return v2_response(answer) if read else close_unread(http, v2_response(answer))

    def _refused(self, http: Request) -> Response | None:
        refused = self.core.refusal(http.path_params["service"], http.headers, signed_path(http), method=http.method)
        return v2_error(*refused) if refused else None

    async def metadata(self, http: Request) -> Response:
        refused = self._refused(http)
        if refused is not None:
            return refused
        try:
            return JSONResponse(model_metadata(self.core.service, self.core.runtime.processor))
        except ProcessorError as exc:
            return v2_error(exc.status, exc.message)

    async def ready(self, http: Request) -> Response:
        return self._refused(http) or JSONResponse({"name": self.core.service, "ready": True})

    async def websocket(self, ws: WebSocket) -> None:
        """A WebSocket to a container service: checked like any call (the gateway's key or
        the token, from the upgrade's headers), then relayed to the container's port at
        the same sub-path and query. Processors speak no WebSocket: 404."""
        side = StarletteSide(ws)
        request_id = ws.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        refused = self.core.refusal(ws.path_params["service"], ws.headers, signed_path(ws),  # type: ignore[arg-type]
                                    method="GET")
        target = self.core.runtime.container_endpoint
        if refused is None and target is None:
            refused = 404, "this service's instances speak no WebSocket (only container services do)"
        if refused is not None:
            await side.refuse(self.core.reject(*refused, request_id))
            return
        assert target is not None
        query = ws.scope.get("query_string", b"").decode("latin-1")
        url = f"ws://{target[0]}:{target[1]}/{quote(ws.path_params.get('sub_path', ''), safe=PATH_SAFE)}"
        headers = {k: v for k, v in ws.headers.items() if k.lower() not in PRIVATE_HEADERS
                   and k.lower() not in WS_OWN_HEADERS}
        protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        try:
            upstream = await ws_connect(url + (f"?{query}" if query else ""), additional_headers=headers,
                                        subprotocols=protocols or None, open_timeout=self.core.keepalive_s,  # type: ignore[arg-type]
                                        max_size=MAX_FRAME_BYTES, max_queue=MAX_QUEUED_FRAMES, compression=None,
                                        proxy=None, user_agent_header=None)
        except InvalidStatus as exc:
            await side.refuse(self.core.reject(exc.response.status_code, "the container refused the WebSocket",
                                               request_id))
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            await side.refuse(self.core.reject(502, f"no WebSocket to the container: {exc}", request_id))
            return
        await side.accept(upstream.subprotocol)
        self.core.in_flight += 1  # an open session holds a place, as a request does
        try:
            await relay(side, upstream, lambda direction: None)
        finally:
            self.core.in_flight -= 1

    async def healthz(self, http: Request) -> JSONResponse:
        return JSONResponse(self.core.health())

    async def stats(self, http: Request) -> JSONResponse:
        return JSONResponse(self.core.stats())

    async def drain(self, http: Request) -> JSONResponse:
        """Only the server (holding the internal key) may ask; it then waits for routes to
        refresh and `in_flight` to reach zero before stopping the instance."""
        if not self.core.from_gateway(http.headers):
            return JSONResponse({"message": "drain needs the server's internal key"}, 401)
        return JSONResponse(self.core.drain())


#: An instance's listener: keep-alive well past the gateway's pool idle time
#: (eas/gateway/upstream.py IDLE_S), the other bounds as eas-server's defaults.
INSTANCE_LIMITS = ListenerLimits(keep_alive_s=INSTANCE_KEEPALIVE_S)


class InstanceServer:
    """Runs an instance's HTTP face on its own thread and event loop, on a port picked by the OS."""

    def __init__(self, app: InstanceApp, host: str, limits: ListenerLimits = INSTANCE_LIMITS) -> None:
        self.app = app
        self.http = InstanceHttp(app)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn_config(
            PredictFastPath(self.http.app, self.http.predict), limits, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=5,
        ))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"eas-instance-{app.instance}", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self.server.started:
                return
            if not self.thread.is_alive():
                break
            deadline.wait(0.01)
        raise RuntimeError(f"instance server for {self.app.instance} did not start")

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.server.should_exit

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
