"""The gateway's data plane, free of any transport: every predict call enters `Gateway.handle`.

EAS HTTP (eas/gateway/http.py), the Open Inference Protocol over REST (oip_http.py) and
gRPC (grpc_server.py) only translate their transport to a `Call` and the `Answer` back.
Here, once for all of them: the endpoint exists (404), the body fits (413), the token
or signature is right (401), a backend is picked by weight (503 when none), its rate
limit admits the call (429); then the call waits for an instance while one is coming
(deploy, restart, wake), is forwarded over a pooled keep-alive connection, mirrored
when asked, timed into the metrics and written to the access log.

On the hot path it does only what must be done per request: route lookups are dict
reads (eas/gateway/route_table.py), never the store or Ray.
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
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

from eas.gateway.metrics import GatewayMetrics
from eas.gateway.route_table import Entry, Route, RouteTable
from eas.gateway.upstream import UpstreamFailed, UpstreamPool, UpstreamRefused, UpstreamTimeout
from eas.protocols.auth import AuthError, check_service_auth
from eas.protocols.http import ClientGone
from eas.protocols.wire import (
    INSTANCE_HEADER,
    INTERNAL_KEY_HEADER,
    MAX_BODY_BYTES,
    PROCESSOR_TIME_HEADER,
    REQUEST_ID_HEADER,
    TARGET_HEADER,
    Answer,
    error_answer,
    passed_headers,
)

log = logging.getLogger("eas.gateway")
#: One JSON line per predict request; off unless eas-server --access-log turns it on.
access_log = logging.getLogger("eas.access")
access_log.setLevel(logging.WARNING)
access_log.propagate = False

#: Extra time the gateway waits beyond the instance's own keepalive before a 504.
UPSTREAM_GRACE_S = 2.0
#: Mirror copies in flight per gateway; beyond it copies are skipped, never queued.
MIRROR_CONCURRENCY = 64

#: Reads the request body, at most the given number of bytes (None: it is larger).
BodyReader = Callable[[int], Awaitable["bytes | None"]]
#: Wraps the forwarding of one call so the transport can cancel it (HTTP: the client left).
Guard = Callable[[Awaitable[Answer]], Awaitable[Answer]]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Call:
    """One predict call as every transport hands it to the gateway."""

    service: str
    """The endpoint name the client called (a service, a shared or a group endpoint)."""
    headers: Mapping[str, str]
    """Case-insensitive (what the token and signature checks read)."""
    path: str
    """The path the client signed."""
    body: bytes = b""
    reader: BodyReader | None = None
    """Reads the body when it has not been read yet (HTTP); its size is checked first."""
    method: str = "POST"
    sub_path: str = ""
    """What follows the service name in an EAS predict path."""
    instance_path: str | None = None
    """Path on the instance (`{name}` becomes the chosen service); None: EAS predict."""
    content_type: str | None = None
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    """Protocol headers sent on to the instance."""
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None
    """The caller's address (access log)."""


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

    # -- the one path ---------------------------------------------------------------

    async def handle(self, call: Call, guard: Guard | None = None) -> Answer:
        """Admit, forward (and mirror) one call; record it in the metrics and access log."""
        started = time.perf_counter()
        answer = await self._serve(call, guard)
        seconds = time.perf_counter() - started
        name = call.service
        self.metrics.observe(name if name in self.routes else "_unknown", answer.status, seconds,
                             answer.headers.get(PROCESSOR_TIME_HEADER))
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "time": time.time(), "request_id": call.request_id, "service": name, "status": answer.status,
                "ms": round(seconds * 1000, 3), "bytes_in": len(call.body), "bytes_out": len(answer.body),
                "instance": answer.headers.get(INSTANCE_HEADER), "client": call.client,
            }, separators=(",", ":")))
        return answer

    async def _serve(self, call: Call, guard: Guard | None) -> Answer:
        if call.reader is not None:
            unknown = self._unknown(call)
            if unknown is not None:  # no body is read for a name that does not exist
                return unknown
            body = await call.reader(self.max_body_bytes)
            call.reader = None
            if body is None:
                return error_answer(413, f"request body over {self.max_body_bytes} bytes", call.request_id)
            call.body = body
        admitted = self.admit(call)
        if isinstance(admitted, Answer):
            return admitted
        entry, route = admitted
        try:
            work = self.forward(route, call)
            return await (guard(work) if guard is not None else work)
        except ClientGone:
            log.info("499 client went away: request %s to %s cancelled", call.request_id, call.service)
            return error_answer(499, "client closed the connection", call.request_id)
        finally:
            # The copy starts once the primary has its answer: the task first runs after
            # the caller writes the response, so the shadow's work never sits in front of it.
            if entry.mirror is not None and call.method == "POST":
                self._mirror(entry.mirror, call)

    def _unknown(self, call: Call) -> Answer | None:
        entry = self.routes.entry(call.service)
        if entry is None:
            return error_answer(404, f"service '{call.service}' does not exist", call.request_id)
        if entry.closed:
            return error_answer(404, entry.closed, call.request_id)
        return None

    def admit(self, call: Call) -> tuple[Entry, Route] | Answer:
        """The checks before forwarding a call whose body was read: the endpoint exists
        (404), the body fits (413), the token or signature is right (401), a backend is
        picked by weight (503 when none) and admitted by its rate limit (429). Returns
        the entry and the chosen backend's route, or the error answer."""
        request_id = call.request_id
        entry = self.routes.entry(call.service)
        if entry is None or entry.closed:
            return self._unknown(call)  # type: ignore[return-value]
        if len(call.body) > self.max_body_bytes:
            return error_answer(413, f"request body over {self.max_body_bytes} bytes", request_id)
        try:
            check_service_auth(entry.token, call.headers, call.path, call.body, method=call.method)
        except AuthError as exc:
            return error_answer(401, str(exc), request_id)
        backend = entry.pick(random.random(), call.headers.get(TARGET_HEADER))
        route = self.routes.get(backend) if backend else None
        if route is None:
            return error_answer(503, f"'{call.service}' has no service behind it", request_id)
        wait = self.limiter.admit(route)
        if wait is not None:
            return error_answer(429, f"over the rate limit of {route.rate_limit} requests/s for '{call.service}'",
                                request_id, {"Retry-After": str(max(1, math.ceil(wait)))})
        return entry, route

    # -- forwarding -----------------------------------------------------------------

    async def _wait_for_instance(self, route: Route, request_id: str) -> Route | Answer:
        """A route with no instance: while one is coming (deploying, restarting, waking),
        the call waits up to the route's hold time for it."""
        if route.wake_on_demand:
            self.routes.request_wake(route.name)
        if route.hold_s > 0:
            held = self.routes.waiting(route.name)
            if held >= route.max_held:
                return error_answer(503, f"service '{route.name}' is not available: {route.unavailable}, and "
                                    f"{held} requests already wait for it; retry later", request_id)
            route = await self.routes.wait_ready(route.name, route.hold_s) or route
            self.routes.touch(route.name)  # idle counts from the wake, not the arrival
        if not route.endpoints:
            return error_answer(503, f"service '{route.name}' is not available: {route.unavailable}", request_id)
        return route

    async def forward(self, route: Route, call: Call) -> Answer:
        """Send an admitted call to one of the service's instances; return its answer.

        A refused connection (an instance that just went away) moves on to the next
        instance; anything after the request was sent does not.
        """
        request_id = call.request_id
        self.routes.touch(route.name)
        if not route.endpoints:
            ready = await self._wait_for_instance(route, request_id)
            if isinstance(ready, Answer):
                return ready
            route = ready
        sent = {**call.forward_headers, REQUEST_ID_HEADER: request_id, INTERNAL_KEY_HEADER: self.internal_key}
        if call.content_type:
            sent["Content-Type"] = call.content_type
        if call.instance_path is not None:
            path = call.instance_path.format(name=route.name)
        else:
            path = f"/api/predict/{route.name}" + (f"/{call.sub_path}" if call.sub_path else "")
        timeout = route.keepalive_s + UPSTREAM_GRACE_S
        start = next(self._turn)
        for attempt in range(len(route.endpoints)):
            endpoint = route.endpoints[(start + attempt) % len(route.endpoints)]
            try:
                up = await self.upstream.request(call.method, endpoint.host, endpoint.port, path, sent, call.body,
                                                 timeout)
                return Answer(up.status, up.body, passed_headers(up.headers, request_id))
            except UpstreamRefused as exc:
                log.info("instance %s of %s refused the connection: %s", endpoint.instance, route.name, exc)
                continue
            except UpstreamTimeout:
                return error_answer(504, f"no answer from instance {endpoint.instance} within {timeout:.1f} s",
                                    request_id)
            except UpstreamFailed as exc:
                log.warning("request %s to %s failed upstream: %s", request_id, route.name, exc)
                return error_answer(503, f"instance {endpoint.instance} of '{route.name}' failed: {exc}", request_id)
        return error_answer(503, f"no instance of '{route.name}' accepted the request", request_id)

    def _mirror(self, mirror: tuple[str, int], call: Call) -> None:
        """Copy the call to the shadow service; its answer is dropped.

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
                await self.forward(shadow, call)

        task = asyncio.get_running_loop().create_task(copy())
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    # -- questions without a model call ------------------------------------------------

    def ready(self, name: str, headers: Mapping[str, str], path: str) -> tuple[int, str]:
        """(200, "") when a backend of `name` has an instance, else the status and why
        (404 unknown, 401 refused, 503 no instance): v2 REST ready and gRPC ModelReady."""
        entry = self.routes.entry(name)
        if entry is None:
            return 404, f"model '{name}' does not exist"
        if entry.closed:
            return 404, entry.closed
        try:
            check_service_auth(entry.token, headers, path, b"", method="GET")
        except AuthError as exc:
            return 401, str(exc)
        for backend, _ in entry.backends:
            route = self.routes.get(backend)
            if route is not None and route.endpoints:
                return 200, ""
        route = self.routes.get(entry.backends[0][0]) if entry.backends else None
        return 503, f"model '{name}' has no ready instance: {route.unavailable if route else 'no service behind it'}"

    def instances(self, name: str) -> list[tuple[str, int]] | None:
        """The service's own instances for DIRECT callers; None when the endpoint is unknown.

        Only the service's own: partners behind a shared endpoint check their own name
        and token, so a direct caller could not reach them with this one.
        """
        entry = self.routes.entry(name)
        if entry is None or entry.closed:
            return None
        route = self.routes.get(name)
        return [(e.host, e.port) for e in (route.endpoints if route else ())]


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
