"""The HTTP face of one instance: `POST /api/predict/{service}` served by the instance itself.

Every request reaches a model through here: the gateway forwards to it, and SDKs in
DIRECT mode call it straight from the upstream list. So per-instance rules (keepalive,
and later the queue limit and batching) live in one place whatever the path.
Requests from the gateway carry the server's internal key (the gateway already
checked the client); direct callers must present the service token or signature.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response as HttpResponse
from starlette.routing import Route

from eas import v2
from eas.asgi import PredictFastPath
from eas.auth import AuthError, check_service_auth
from eas.runtime import ServiceRuntime
from eas.upstream import INSTANCE_KEEPALIVE_S
from processors.base import Request, Response, error_body

log = logging.getLogger("eas.instance")

REQUEST_ID_HEADER = "X-Request-Id"
INSTANCE_HEADER = "X-Eas-Instance"
INTERNAL_KEY_HEADER = "X-Eas-Internal-Key"
PROCESSOR_TIME_HEADER = "X-Eas-Processor-Ms"
MAX_BODY_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


@dataclass
class Credentials:
    """Mutable so a token change reaches a running instance without a restart."""

    token: str
    internal_key: str


class InstanceApp:
    def __init__(self, runtime: ServiceRuntime, instance: str, creds: Credentials,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.runtime = runtime
        self.service = runtime.spec.name
        self.instance = instance
        self.creds = creds
        self.max_body_bytes = max_body_bytes
        meta = runtime.spec.metadata
        self.keepalive_s = meta.rpc.keepalive / 1000
        self.workers = meta.concurrency
        self.max_queue = meta.rpc.max_queue_size
        self.in_flight = 0
        """Requests running or queued here; past workers + max_queue_size we shed with 450."""
        self.codes: dict[int, int] = {}
        """Answers by status code since start (cumulative, scraped by the controller)."""
        self.processor_seconds = 0.0
        self.app = Starlette(routes=[
            Route("/api/predict/{service}", self.predict, methods=["POST"]),
            Route("/api/predict/{service}/{sub_path:path}", self.predict, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/stats", self.stats, methods=["GET"]),
            Route("/drain", self.drain, methods=["POST"]),
            *v2.instance_routes(self),  # the Open Inference Protocol (eas/v2.py)
        ])
        self.on_drain: Callable[[], None] = lambda: None
        """Set by the host (ray_backend) to take this instance out of discovery."""

    async def healthz(self, http: HttpRequest) -> JSONResponse:
        return JSONResponse({"service": self.service, "instance": self.instance, "in_flight": self.in_flight})

    async def stats(self, http: HttpRequest) -> JSONResponse:
        """Cumulative counters for metrics and autoscaling (the controller polls them)."""
        batcher = self.runtime.batcher
        return JSONResponse({
            "instance": self.instance,
            "in_flight": self.in_flight,
            "queued": max(0, self.in_flight - self.workers),
            "codes": self.codes,
            "processor_seconds": self.processor_seconds,
            "load_seconds": self.runtime.load_seconds,
            "warm_up_seconds": self.runtime.warm_up_seconds,
            "cpu_seconds": time.process_time(),
            "batches": dict(batcher.size_counts) if batcher else {},
        })

    async def drain(self, http: HttpRequest) -> JSONResponse:
        """Stop taking new work before a restart: leave discovery, report what is in flight.

        Only the server (holding the internal key) may ask; the caller then waits for
        routes to refresh and `in_flight` to reach zero before stopping the instance.
        """
        key = http.headers.get(INTERNAL_KEY_HEADER, "")
        if not hmac.compare_digest(key.encode(), self.creds.internal_key.encode()):
            return JSONResponse({"message": "drain needs the server's internal key"}, 401)
        self.on_drain()
        return JSONResponse({"instance": self.instance, "in_flight": self.in_flight})

    def _error(self, status: int, message: str, request_id: str) -> HttpResponse:
        self.codes[status] = self.codes.get(status, 0) + 1
        return HttpResponse(error_body(status, message, request_id), status, media_type="application/json",
                            headers={REQUEST_ID_HEADER: request_id, INSTANCE_HEADER: self.instance})

    async def predict(self, http: HttpRequest,
                      call: Callable[[Request], Awaitable[Response]] | None = None) -> HttpResponse:
        """An EAS predict call; `call` replaces `runtime.handle` for other protocols (eas/v2.py)."""
        request_id = http.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        if http.path_params["service"] != self.service:
            return self._error(404, f"this instance serves '{self.service}', not "
                               f"'{http.path_params['service']}'", request_id)
        body = await http.body()
        if len(body) > self.max_body_bytes:
            return self._error(413, f"request body over {self.max_body_bytes} bytes", request_id)
        internal = http.headers.get(INTERNAL_KEY_HEADER)
        if internal is None or not hmac.compare_digest(internal.encode(), self.creds.internal_key.encode()):
            try:
                check_service_auth(self.creds.token, http.headers, http.url.path, body)
            except AuthError as exc:
                return self._error(401, str(exc), request_id)
        request = Request(
            body=body,
            content_type=http.headers.get("content-type"),
            sub_path=http.path_params.get("sub_path", "").lstrip("/"),
            headers={},
            request_id=request_id,
        )
        if self.in_flight >= self.workers + self.max_queue:
            return self._error(450, f"instance queue is full ({self.max_queue} waiting, "
                               f"{self.workers} running): retry later or add instances", request_id)
        self.in_flight += 1
        started = time.perf_counter()
        try:
            response = await until_disconnect(
                http, asyncio.wait_for((call or self.runtime.handle)(request), self.keepalive_s))
        except asyncio.TimeoutError:
            return self._error(408, f"request ran longer than the keepalive of {self.keepalive_s * 1000:.0f} ms",
                               request_id)
        except ClientGone:
            log.info("499 client went away: request %s to %s cancelled", request_id, self.instance)
            return self._error(499, "client closed the connection", request_id)
        finally:
            self.in_flight -= 1
        spent = time.perf_counter() - started
        self.processor_seconds += spent
        self.codes[response.status] = self.codes.get(response.status, 0) + 1
        return HttpResponse(response.body, response.status, media_type=response.content_type,
                            headers={REQUEST_ID_HEADER: request_id, INSTANCE_HEADER: self.instance,
                                     PROCESSOR_TIME_HEADER: f"{spent * 1000:.3f}"})


class ClientGone(Exception):
    """The caller closed the connection before the answer (logged as 499)."""


#: A request still running after this long starts watching for its client going away.
DISCONNECT_WATCH_AFTER_S = 0.05


async def until_disconnect(http: HttpRequest, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (raises ClientGone).

    Most requests finish in a few milliseconds, so the watcher is only started for
    requests still running after DISCONNECT_WATCH_AFTER_S: the fast path costs one
    timer, not two extra tasks. The watcher cancels this very task when the client
    leaves. Call after the body was read: from then on the ASGI `receive` only ever
    returns the disconnect message.
    """
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    state: dict[str, Any] = {"gone": False, "watch": None}

    def on_disconnect(watch: asyncio.Task[None]) -> None:
        if not watch.cancelled() and watch.exception() is None and me is not None:
            state["gone"] = True
            me.cancel()

    def start_watch() -> None:
        watch = loop.create_task(_disconnected(http))
        watch.add_done_callback(on_disconnect)
        state["watch"] = watch

    timer = loop.call_later(DISCONNECT_WATCH_AFTER_S, start_watch)
    try:
        return await work
    except asyncio.CancelledError:
        if state["gone"]:
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if state["watch"] is not None:
            state["watch"].cancel()


async def _disconnected(http: HttpRequest) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


class InstanceServer:
    """Runs an InstanceApp on its own thread and event loop, on a port picked by the OS."""

    def __init__(self, app: InstanceApp, host: str) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn.Config(
            PredictFastPath(app.app, app.predict), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5, timeout_keep_alive=INSTANCE_KEEPALIVE_S,
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
