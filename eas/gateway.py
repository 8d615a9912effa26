"""The predict gateway: `POST /api/predict/{service}[/{sub_path}]`.

On the hot path it does only what must be done per request: look the route up in
memory, check the token, forward the bytes to one instance's own HTTP server over a
pooled keep-alive connection and copy the answer back. Status codes are the ones EAS
clients already act on (contract section 1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response as HttpResponse

from eas.auth import AuthError, check_service_auth
from eas.instance import (
    INSTANCE_HEADER,
    INTERNAL_KEY_HEADER,
    MAX_BODY_BYTES,
    PROCESSOR_TIME_HEADER,
    REQUEST_ID_HEADER,
    ClientGone,
    until_disconnect,
)
from eas.metrics import GatewayMetrics
from eas.routes import Entry, Route, RouteTable
from eas.upstream import UpstreamFailed, UpstreamPool, UpstreamRefused, UpstreamTimeout
from processors.base import error_body

log = logging.getLogger("eas.gateway")
#: One JSON line per predict request; off unless eas-server --access-log turns it on.
access_log = logging.getLogger("eas.access")
access_log.setLevel(logging.WARNING)
access_log.propagate = False

#: Extra time the gateway waits beyond the instance's own keepalive before a 504.
UPSTREAM_GRACE_S = 2.0
#: Header that pins a request to one service behind a shared or group endpoint (debugging).
TARGET_HEADER = "X-Eas-Target"
#: Mirror copies in flight per gateway; beyond it copies are skipped, never queued.
MIRROR_CONCURRENCY = 64


class Gateway:
    def __init__(self, routes: RouteTable, internal_key: str, max_body_bytes: int = MAX_BODY_BYTES,
                 metrics: GatewayMetrics | None = None) -> None:
        self.routes = routes
        self.internal_key = internal_key
        self.max_body_bytes = max_body_bytes
        self.upstream = UpstreamPool()
        self._turn = itertools.count()
        self.limiter = RateLimiter()
        self.metrics = metrics or GatewayMetrics()
        self._mirror_slots = asyncio.Semaphore(MIRROR_CONCURRENCY)
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        self.mirror_skipped = 0

    async def close(self) -> None:
        self.upstream.close()

    async def upstreams(self, http: HttpRequest) -> JSONResponse:
        """Service discovery for SDKs in DIRECT mode: the instances to call themselves.

        Open like EAS's (the SDKs send no credentials here); every instance still
        checks the service token on each request.
        """
        name = http.path_params["service"]
        entry = self.routes.entry(name)
        if entry is None or entry.closed:
            return JSONResponse({"code": 404, "message": f"service '{name}' does not exist"}, 404)
        # Only the service's own instances: partners behind a shared endpoint check their
        # own name and token, so a direct caller could not reach them with this one.
        route = self.routes.get(name)
        items = [{"ip": e.host, "port": e.port, "weight": 100} for e in (route.endpoints if route else ())]
        return JSONResponse({"endpoints": {"items": items}})

    async def predict(self, http: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = await self._predict(http)
        name = http.path_params["service"]
        seconds = time.perf_counter() - started
        self.metrics.observe(name if name in self.routes else "_unknown", response.status_code, seconds,
                             response.headers.get(PROCESSOR_TIME_HEADER))
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "time": time.time(), "request_id": response.headers.get(REQUEST_ID_HEADER),
                "service": name, "status": response.status_code, "ms": round(seconds * 1000, 3),
                "bytes_in": int(http.headers.get("content-length") or 0), "bytes_out": len(response.body),
                "instance": response.headers.get(INSTANCE_HEADER), "client": http.client.host if http.client else None,
            }, separators=(",", ":")))
        return response

    async def _predict(self, http: HttpRequest) -> HttpResponse:
        request_id = uuid.uuid4().hex
        name = http.path_params["service"]
        entry = self.routes.entry(name)
        if entry is None:
            return _error(404, f"service '{name}' does not exist", request_id)
        if entry.closed:
            return _error(404, entry.closed, request_id)
        length = http.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return _error(413, f"request body over {self.max_body_bytes} bytes", request_id)
        body = await http.body()
        admitted = self.admit(name, http.headers, http.url.path, body, request_id)
        if isinstance(admitted, Answer):
            return HttpResponse(admitted.body, admitted.status, headers=admitted.headers)
        entry, route = admitted
        sub_path = http.path_params.get("sub_path", "")
        content_type = http.headers.get("content-type")
        try:
            answer = await until_disconnect(http, self.dispatch(entry, route, sub_path, body, content_type,
                                                                request_id))
        except ClientGone:
            log.info("499 client went away: request %s to %s cancelled", request_id, name)
            return _error(499, "client closed the connection", request_id)
        return HttpResponse(answer.body, answer.status, headers=answer.headers)

    async def dispatch(self, entry: Entry, route: Route, sub_path: str, body: bytes, content_type: str | None,
                       request_id: str) -> Answer:
        """Forward an admitted EAS predict request, then copy it to the mirror, if any."""
        try:
            return await self.forward(route, sub_path, body, content_type, request_id)
        finally:
            # The copy starts once the primary has its answer: the task first runs after
            # the caller writes the response, so the shadow's work never sits in front of it.
            if entry.mirror is not None:
                self._mirror(entry.mirror, sub_path, body, content_type, request_id)

    def admit(self, name: str, headers: Mapping[str, str], path: str, body: bytes, request_id: str,
              method: str = "POST") -> tuple[Entry, Route] | Answer:
        """The checks every transport makes before forwarding (HTTP predict, v2 REST, gRPC):
        the endpoint exists (404), the body fits (413), the token or signature is right
        (401), a backend is picked by weight (503 when none) and admitted by its rate limit
        (429). Returns the entry and the chosen backend's route, or the error answer.
        `headers` must be case-insensitive (Starlette's are)."""
        entry = self.routes.entry(name)
        if entry is None:
            return _error_answer(404, f"service '{name}' does not exist", request_id)
        if entry.closed:
            return _error_answer(404, entry.closed, request_id)
        if len(body) > self.max_body_bytes:
            return _error_answer(413, f"request body over {self.max_body_bytes} bytes", request_id)
        try:
            check_service_auth(entry.token, headers, path, body, method=method)
        except AuthError as exc:
            return _error_answer(401, str(exc), request_id)
        backend = entry.pick(random.random(), headers.get(TARGET_HEADER))
        route = self.routes.get(backend) if backend else None
        if route is None:
            return _error_answer(503, f"'{name}' has no service behind it", request_id)
        wait = self.limiter.admit(route)
        if wait is not None:
            return _error_answer(429, f"over the rate limit of {route.rate_limit} requests/s for '{name}'",
                                 request_id, {"Retry-After": str(max(1, math.ceil(wait)))})
        return entry, route

    def _mirror(self, mirror: tuple[str, int], sub_path: str, body: bytes, content_type: str | None,
                request_id: str) -> None:
        """Copy the request to the shadow service; its answer is dropped.

        Fire and forget, bounded: when the shadow lags, copies are skipped rather than
        queued, so a mirror can never slow the primary or grow memory.
        """
        shadow_name, percent = mirror
        shadow = self.routes.get(shadow_name)
        if shadow is None or not shadow.endpoints or random.random() * 100 >= percent:
            return
        if self._mirror_slots.locked():
            self.mirror_skipped += 1
            return

        async def copy() -> None:
            async with self._mirror_slots:
                await self.forward(shadow, sub_path, body, content_type, request_id)

        task = asyncio.get_running_loop().create_task(copy())
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    async def forward(self, route: Route, sub_path: str, body: bytes, content_type: str | None,
                      request_id: str, *, path: str | None = None, headers: Mapping[str, str] | None = None,
                      method: str = "POST") -> Answer:
        """Send an authenticated request to one of the service's instances; return its answer.

        Every transport (HTTP here, gRPC and the v2 protocol elsewhere) calls this after
        its own auth, so routing, failover and upstream errors behave the same on all.
        While no instance is ready but one is coming, the request waits up to the
        route's hold time instead of failing. `path` replaces the instance path
        `/api/predict/{name}[/sub_path]` (`{name}` becomes the backend's name); `headers`
        are sent on to the instance.
        """
        self.routes.last_seen[route.name] = time.monotonic()
        if not route.endpoints and route.wake_on_demand:
            self.routes.on_demand(route.name)
        if not route.endpoints and route.hold_s > 0:
            held = self.routes.waiting(route.name)
            if held >= route.max_held:
                return _error_answer(503, f"service '{route.name}' is not available: {route.unavailable}, and "
                                     f"{held} requests already wait for it; retry later", request_id)
            route = await self.routes.wait_ready(route.name, route.hold_s) or route
            self.routes.last_seen[route.name] = time.monotonic()  # idle counts from the wake, not the arrival
        if not route.endpoints:
            return _error_answer(503, f"service '{route.name}' is not available: {route.unavailable}", request_id)
        sent = {**(headers or {}), REQUEST_ID_HEADER: request_id, INTERNAL_KEY_HEADER: self.internal_key}
        if content_type:
            sent["Content-Type"] = content_type
        path = (path.format(name=route.name) if path
                else f"/api/predict/{route.name}" + (f"/{sub_path}" if sub_path else ""))
        timeout = route.keepalive_s + UPSTREAM_GRACE_S
        start = next(self._turn)
        # Try each instance at most once: a refused connection (an instance that just
        # went away) moves on to the next; anything after the request was sent does not.
        for attempt in range(len(route.endpoints)):
            endpoint = route.endpoints[(start + attempt) % len(route.endpoints)]
            try:
                up = await self.upstream.request(method, endpoint.host, endpoint.port, path, sent, body, timeout)
                return Answer(up.status, up.body, _answer_headers(up.headers, request_id))
            except UpstreamRefused as exc:
                log.info("instance %s of %s refused the connection: %s", endpoint.instance, route.name, exc)
                continue
            except UpstreamTimeout:
                return _error_answer(504, f"no answer from instance {endpoint.instance} within "
                                     f"{timeout:.1f} s", request_id)
            except UpstreamFailed as exc:
                log.warning("request %s to %s failed upstream: %s", request_id, route.name, exc)
                return _error_answer(503, f"instance {endpoint.instance} of '{route.name}' failed: {exc}",
                                     request_id)
        return _error_answer(503, f"no instance of '{route.name}' accepted the request", request_id)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class RateLimiter:
    """Per-service token buckets for `rpc.rate_limit` (QPS), with one second of burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[int, float, float]] = {}  # name -> (rate, tokens, at)

    def admit(self, route: Route) -> float | None:
        """None when the request may pass, else the seconds until it would."""
        rate = route.rate_limit
        if not rate:
            return None
        now = self.clock()
        old_rate, tokens, at = self._buckets.get(route.name, (rate, float(rate), now))
        tokens = min(float(rate), tokens + (now - at) * rate) if old_rate == rate else float(rate)
        if tokens >= 1:
            self._buckets[route.name] = (rate, tokens - 1, now)
            return None
        self._buckets[route.name] = (rate, tokens, now)
        return (1 - tokens) / rate


_PASSED_HEADERS = ("Content-Type", INSTANCE_HEADER, PROCESSOR_TIME_HEADER, "Inference-Header-Content-Length")
"""Instance answer headers a caller sees (the rest are the instance server's own)."""


def _answer_headers(received: Mapping[str, str], request_id: str) -> dict[str, str]:
    headers = {REQUEST_ID_HEADER: request_id}
    for key in _PASSED_HEADERS:
        value = received.get(key.lower())
        if value is not None:
            headers[key] = value
    return headers


def _error_answer(status: int, message: str, request_id: str, extra: dict[str, str] | None = None) -> Answer:
    headers = {REQUEST_ID_HEADER: request_id, "Content-Type": "application/json", **(extra or {})}
    return Answer(status, error_body(status, message, request_id), headers)


def _error(status: int, message: str, request_id: str, extra: dict[str, str] | None = None) -> HttpResponse:
    answer = _error_answer(status, message, request_id, extra)
    return HttpResponse(answer.body, answer.status, headers=answer.headers)
