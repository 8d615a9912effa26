"""The gateway's data plane, free of any transport: every predict call enters `Gateway.handle`.

EAS HTTP (eas/gateway/http.py), the Open Inference Protocol over REST (oip_http.py) and
gRPC (grpc_server.py) only translate their transport to a `Call` and the `Answer` back.
Here, once for all of them: the endpoint exists (404), the token or signature is right
(401, decided from the headers before a byte of the body is read; repeated 401s from
one address are slowed down), the body fits (413, counted as it arrives) and matches a
signature's Content-MD5, a backend is picked by weight (503 when none), its rate limit
admits the call (429); then the call waits for an instance while one is coming
(deploy, restart, wake), is forwarded over a pooled keep-alive connection, mirrored
when asked, timed into the metrics and written to the access log.

Streamed answers (chunked or server-sent events from the instance, for a transport that
can pass them on: `Call.streaming`) come back as soon as their head does, their body a
stream the transport sends chunk by chunk; their metrics (time to first byte, total,
bytes) and access-log line are written when the stream ends, however it ends (a client
gone mid-stream is a 499, an instance failing mid-stream a 503).

Instance failures cost no request that can be saved, and are never a 500: a request
that never reached an instance (connection refused, or broken before it was sent
whole) goes to another ready instance, always; one whose instance died while running
it goes once more to another when the service allows it (`Route.retry_in_flight`,
`rpc.retry_in_flight` in the service JSON); all within the keepalive plus a grace (504
past it). The instance that failed leaves this gateway's rotation at once
(route_table.py `mark_down`) until the controller sees it healthy again.

WebSocket upgrades at the predict path (`websocket`) pass the same admission (the
token is checked at the upgrade), then frames are relayed both ways (websocket.py).

On the hot path it does only what must be done per request: route lookups are dict
reads (eas/gateway/route_table.py), never the store or Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, Mapping
from urllib.parse import unquote

from eas.gateway import websocket
from eas.gateway.backflow import Capture
from eas.gateway.metrics import GatewayMetrics
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.gateway.upstream import UpstreamFailed, UpstreamPool, UpstreamRefused, UpstreamTimeout
from eas.protocols import bml
from eas.protocols.auth import AuthError, body_md5, check_body_md5, check_service_head
from eas.protocols.http import CLOSE, ClientGone
from eas.protocols.wire import (
    INSTANCE_HEADER,
    INTERNAL_KEY_HEADER,
    MAX_BODY_BYTES,
    PROCESSOR_TIME_HEADER,
    REQUEST_ID_HEADER,
    TARGET_HEADER,
    Answer,
    BodyStream,
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

#: Reads the request body, at most the given number of bytes (None: it is larger; counted
#: as it arrives, eas/protocols/http.py read_body); raises ClientGone when the client leaves.
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
    """Reads the body when it has not been read yet (HTTP): only once the endpoint and
    the credentials are known good. Still set after `Gateway.handle`: nothing was read."""
    method: str = "POST"
    sub_path: str = ""
    """What follows the service name in an EAS predict path."""
    query: str = ""
    """The query string as sent (EAS predict paths pass it on to the instance)."""
    instance_path: str | None = None
    """Path on the instance (`{name}` becomes the chosen service); None: EAS predict."""
    content_type: str | None = None
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    """Protocol headers sent on to the instance."""
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None
    """The caller's address (access log, and the key of the 401 slow-down)."""
    streaming: bool = False
    """The transport can send an answer on as it arrives (EAS predict over HTTP): a
    streamed instance answer then comes back as a stream, not read whole first."""
    access_token: str | None = None
    """BML's `?access_token=` query parameter: the token, for endpoints in BML mode."""


#: Client headers never passed on to a container service: credentials (checked here) and
#: what describes one hop (the gateway sets its own).
NOT_PASSED = frozenset({"authorization", "host", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length", "content-type", "proxy-authorization", "expect",
                        INTERNAL_KEY_HEADER.lower(), REQUEST_ID_HEADER.lower()})


#: Answer headers of a container service the gateway never passes back: framing, and
#: what only the gateway and its instances exchange.
NOT_RETURNED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "trailer", "upgrade",
                          "date", "server", INTERNAL_KEY_HEADER.lower()})


class Gateway:
    def __init__(self, routes: RouteTable, internal_key: str, max_body_bytes: int = MAX_BODY_BYTES,
                 metrics: GatewayMetrics | None = None, auth_failures: AuthFailures | None = None) -> None:
        self.routes = routes
        self.internal_key = internal_key
        self.max_body_bytes = max_body_bytes
        self.upstream = UpstreamPool()
        self._turn = itertools.count()
        self.limiter = RateLimiter()
        self.auth_failures = auth_failures if auth_failures is not None else AuthFailures()
        self.metrics = metrics or GatewayMetrics()
        self._mirror_slots = asyncio.Semaphore(MIRROR_CONCURRENCY)
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        self.mirror_skipped = 0
        self.capture = Capture()
        """Data backflow copies waiting for the control plane (eas/gateway/backflow.py)."""

    async def close(self) -> None:
        self.upstream.close()

    # -- the one path ---------------------------------------------------------------

    async def handle(self, call: Call, guard: Guard | None = None) -> Answer:
        """Admit, forward (and mirror) one call; record it in the metrics and access log
        (a streamed answer: when its stream ends)."""
        started = time.perf_counter()
        answer = await self._serve(call, guard)
        entry = self.routes.entry(call.service)
        if entry is not None and entry.bml:
            answer = bml.to_bml(answer, call.request_id, nest=entry.bml == "framework")
        if answer.stream is None:
            self._backflow(call, answer)
        if answer.stream is not None:
            return Answer(answer.status, b"", answer.headers, _MeteredStream(self, call, answer, started))
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

    def _backflow(self, call: Call, answer: Answer) -> None:
        """A copy of the request and its answer when the service captures a share of them."""
        route = self.routes.get(call.service)
        if route is None or route.backflow is None or call.reader is not None:
            return
        ratio, max_bytes = route.backflow
        try:
            self.capture.offer(call.service, call.request_id, ratio, max_bytes, call.body, call.content_type,
                               answer.status, answer.body, answer.headers.get("Content-Type"))
        except Exception:  # a copy never fails the request it copies
            log.exception("data backflow: copying request %s failed", call.request_id)

    def _streamed(self, call: Call, answer: Answer, status: int, seconds: float, first_byte_s: float | None,
                  sent: int) -> None:
        """A streamed answer ended (`_MeteredStream`): its metrics and access-log line."""
        name = call.service if call.service in self.routes else "_unknown"
        self.metrics.observe(name, status, seconds, answer.headers.get(PROCESSOR_TIME_HEADER))
        self.metrics.observe_stream(name, first_byte_s, sent)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "time": time.time(), "request_id": call.request_id, "service": call.service, "status": status,
                "ms": round(seconds * 1000, 3), "bytes_in": len(call.body), "bytes_out": sent, "streamed": True,
                "first_byte_ms": round(first_byte_s * 1000, 3) if first_byte_s is not None else None,
                "instance": answer.headers.get(INSTANCE_HEADER), "client": call.client,
            }, separators=(",", ":")))

    async def _serve(self, call: Call, guard: Guard | None) -> Answer:
        request_id = call.request_id
        entry = self.routes.entry(call.service)
        if entry is None or entry.closed:
            return self._unknown(call)  # type: ignore[return-value]
        # The credentials before the body: a caller without the token is refused before
        # a byte of its body is read (a signature covers the Content-MD5 header, not the body).
        headers = call.headers
        if entry.bml and call.access_token and not headers.get("authorization"):
            headers = {**{k.lower(): v for k, v in headers.items()}, "authorization": call.access_token}
        try:
            expected_md5 = check_service_head(entry.token, headers, call.path, method=call.method)
        except AuthError as exc:
            return await self.unauthorized(call, str(exc))
        if call.reader is not None:
            try:
                body = await call.reader(self.max_body_bytes)
            except ClientGone:
                return error_answer(499, "client closed the connection while sending the body", request_id)
            if body is None:  # the rest is never read: the connection closes after the answer
                return error_answer(413, f"request body over {self.max_body_bytes} bytes", request_id, CLOSE)
            call.body, call.reader = body, None
        if len(call.body) > self.max_body_bytes:
            return error_answer(413, f"request body over {self.max_body_bytes} bytes", request_id)
        if expected_md5 is not None:
            try:
                check_body_md5(expected_md5, await body_md5(call.body))  # off the loop when large
            except AuthError as exc:
                return await self.unauthorized(call, str(exc))
        admitted = self._pick(entry, call)
        if isinstance(admitted, Answer):
            return admitted
        route = admitted
        try:
            work = self.forward(route, call)
            return await (guard(work) if guard is not None else work)
        except ClientGone:
            log.info("499 client went away: request %s to %s cancelled", call.request_id, call.service)
            return error_answer(499, "client closed the connection", call.request_id)
        except Exception as exc:  # never a 500 for what an instance did (or what this code missed)
            log.exception("request %s to %s failed in the gateway", call.request_id, call.service)
            return error_answer(503, f"'{call.service}' failed: {type(exc).__name__}: {exc}", call.request_id)
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

    async def unauthorized(self, call: Call, why: str) -> Answer:
        """A 401, slowed down when this address keeps failing (`AuthFailures`); also
        what the queue service (eas/queue/http.py) answers a caller without the token."""
        delay = self.auth_failures.failed(call.client)
        if delay is None:
            retry = self.auth_failures.retry_after(call.client)
            return error_answer(429, f"too many failed authentications from this address: {why}",
                                call.request_id, {"Retry-After": str(retry)})
        if delay > 0:
            with self.auth_failures.delaying():
                await asyncio.sleep(delay)
        return error_answer(401, why, call.request_id)

    def _pick(self, entry: Entry, call: Call) -> Route | Answer:
        """For an admitted call: a backend picked by weight (503 when none), admitted by
        its rate limit (429). Returns the chosen backend's route, or the error answer."""
        request_id = call.request_id
        backend = entry.pick(random.random(), call.headers.get(TARGET_HEADER))
        route = self.routes.get(backend) if backend else None
        if route is None:
            return error_answer(503, f"'{call.service}' has no service behind it", request_id)
        wait = self.limiter.admit(route)
        if wait is not None:
            return error_answer(429, f"over the rate limit of {route.rate_limit} requests/s for '{call.service}'",
                                request_id, {"Retry-After": str(max(1, math.ceil(wait)))})
        return route

    # -- forwarding -----------------------------------------------------------------

    async def wait_for_instance(self, route: Route, request_id: str) -> Route | Answer:
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

        Within the keepalive plus `UPSTREAM_GRACE_S` over all attempts (504 past it): a
        request never delivered (`UpstreamRefused`) goes to another ready instance,
        always; one whose instance closed the connection while running it goes to
        another once, when the route allows it (`retry_in_flight`); anything else is a
        503 that says what the instance did. An instance that refused or died leaves the
        rotation (`_take_out`).
        """
        request_id = call.request_id
        self.routes.touch(route.name)
        started = time.monotonic()
        if not route.endpoints:
            ready = await self.wait_for_instance(route, request_id)
            if isinstance(ready, Answer):
                return ready
            route = ready
        own = {k: v for k, v in call.headers.items() if k.lower() not in NOT_PASSED} if route.pass_headers else {}
        sent = {**own, **call.forward_headers, REQUEST_ID_HEADER: request_id,
                INTERNAL_KEY_HEADER: route.internal_key or self.internal_key}
        if call.content_type:
            sent["Content-Type"] = call.content_type
        if call.instance_path is not None:
            path = call.instance_path.format(name=route.name)
        else:
            path = f"/api/predict/{route.name}" + (f"/{call.sub_path}" if call.sub_path else "")
        budget = timeout = route.keepalive_s + UPSTREAM_GRACE_S
        endpoint = route.endpoints[next(self._turn) % len(route.endpoints)]
        tried: list[Endpoint] = []
        retried = False
        while True:
            try:
                up = await self.upstream.request(call.method, endpoint.host, endpoint.port, path, sent, call.body,
                                                 timeout, stream=call.streaming, gap_s=budget, query=call.query)
                shown = passed_headers(up.headers, request_id)
                if route.pass_headers:  # a container's own answer headers (Location, Set-Cookie, ...)
                    own = {k.lower() for k in shown}
                    shown = {**{k: v for k, v in up.headers.items() if k not in NOT_RETURNED and k not in own},
                             **shown}
                return Answer(up.status, up.body, shown, up.stream)
            except UpstreamTimeout:
                return error_answer(504, f"no answer from instance {endpoint.instance} within {timeout:.1f} s",
                                    request_id)
            except UpstreamRefused as exc:
                log.info("request %s: instance %s of %s did not take it (%s): sending it to another",
                         request_id, endpoint.instance, route.name, exc)
                self._take_out(route.name, endpoint, str(exc))
                reason = "undelivered"
            except UpstreamFailed as exc:
                if exc.gone:
                    self._take_out(route.name, endpoint, str(exc))
                if not (exc.in_flight and route.retry_in_flight and not retried):
                    log.warning("request %s to %s failed upstream: %s", request_id, route.name, exc)
                    return error_answer(503, f"instance {endpoint.instance} of '{route.name}' failed: {exc}",
                                        request_id)
                log.info("request %s: instance %s of %s failed while running it (%s): retrying it once on another",
                         request_id, endpoint.instance, route.name, exc)
                retried, reason = True, "in_flight"
            tried.append(endpoint)
            left = budget - (time.monotonic() - started)
            chosen = await self._another(route, tried, request_id, left)
            if isinstance(chosen, Answer):
                return chosen
            endpoint, timeout = chosen, budget - (time.monotonic() - started)
            self.metrics.label(self.metrics.resent, route.name, reason).inc()

    async def _another(self, route: Route, tried: list[Endpoint], request_id: str,
                       left: float) -> Endpoint | Answer:
        """A ready instance of the service not tried yet, from its route as it is now
        (without the ones just taken out); while none is ready but one is coming, wait
        for it within `left` seconds. Else the answer: 503, or 504 when time is up."""
        if left <= 0:
            return error_answer(504, f"no instance of '{route.name}' answered within "
                                f"{route.keepalive_s + UPSTREAM_GRACE_S:.1f} s", request_id)
        current = self.routes.get(route.name) or route
        if not current.endpoints and current.hold_s > 0:
            current = await self.routes.wait_ready(route.name, min(current.hold_s, left)) or current
        done = {(e.host, e.port) for e in tried}
        fresh = [e for e in current.endpoints if (e.host, e.port) not in done]
        if fresh:
            return fresh[next(self._turn) % len(fresh)]
        if not current.endpoints and current.unavailable:
            return error_answer(503, f"service '{route.name}' is not available: {current.unavailable}", request_id)
        return error_answer(503, f"no instance of '{route.name}' accepted the request "
                            f"({len(tried)} tried)", request_id)

    def _take_out(self, name: str, endpoint: Endpoint, why: str) -> None:
        """An instance refused or dropped a connection: out of this gateway's rotation (and
        DIRECT discovery) until the controller sees it healthy (route_table.py)."""
        if self.routes.mark_down(name, endpoint, why):
            self.metrics.label(self.metrics.taken_out, name).inc()
            log.warning("instance %s of %s is out of rotation: %s", endpoint.instance, name, why)

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
                answer = await self.forward(shadow, call)
                if answer.stream is not None:  # read and dropped: the shadow streams as it would
                    try:
                        async for _ in answer.stream:
                            pass
                    finally:
                        await answer.stream.aclose()

        task = asyncio.get_running_loop().create_task(copy())
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    # -- WebSocket pass-through --------------------------------------------------------

    async def websocket(self, call: Call, side: websocket.ClientSide, query: str = "") -> None:
        """A WebSocket upgrade at a service's predict path, relayed to one of its instances.

        Admitted as a request is (404, 401 from the upgrade's headers, 503, 429; the
        same wait for an instance that is coming): a refusal is the HTTP answer to the
        upgrade. Then a WebSocket to an instance (one that refuses the connection is
        taken out of rotation and the next one tried), the client accepted with the
        subprotocol the instance chose, and frames relayed both ways until either side
        closes (websocket.py). Counted: sessions by answer, frames each way, sessions
        open; one access-log line when it ends.
        """
        started = time.perf_counter()
        opened = await self._open_websocket(call, query)
        name = call.service if call.service in self.routes else "_unknown"
        metrics = self.metrics
        if isinstance(opened, Answer):
            metrics.label(metrics.ws_sessions, name, str(opened.status)).inc()
            self._socket_log(call, opened.status, started, None, 0, 0, None)
            await side.refuse(opened)
            return
        upstream, endpoint = opened
        frames = {"in": 0, "out": 0}
        counters = {d: metrics.label(metrics.ws_frames, name, d) for d in frames}

        def on_frame(direction: str) -> None:
            frames[direction] += 1
            counters[direction].inc()

        metrics.label(metrics.ws_sessions, name, "101").inc()
        live = metrics.label(metrics.ws_open, name)
        live.inc()
        ended: websocket.Ended | None = None
        try:
            await side.accept(upstream.subprotocol)
            ended = await websocket.relay(side, upstream, on_frame)
        finally:
            live.dec()
            if ended is None:  # cancelled (the server is stopping) or the accept failed
                upstream.transport.abort()
            self._socket_log(call, 101, started, endpoint, frames["in"], frames["out"], ended)

    async def _open_websocket(self, call: Call, query: str) -> tuple[websocket.ClientConnection, Endpoint] | Answer:
        request_id = call.request_id
        entry = self.routes.entry(call.service)
        if entry is None or entry.closed:
            return self._unknown(call)  # type: ignore[return-value]
        try:
            expected_md5 = check_service_head(entry.token, call.headers, call.path, method="GET")
            if expected_md5 is not None:
                check_body_md5(expected_md5, await body_md5(b""))
        except AuthError as exc:
            return await self.unauthorized(call, str(exc))
        admitted = self._pick(entry, call)
        if isinstance(admitted, Answer):
            return admitted
        route = admitted
        self.routes.touch(route.name)
        if not route.endpoints:
            ready = await self.wait_for_instance(route, request_id)
            if isinstance(ready, Answer):
                return ready
            route = ready
        headers = {REQUEST_ID_HEADER: request_id, INTERNAL_KEY_HEADER: route.internal_key or self.internal_key}
        path = f"/api/predict/{route.name}" + (f"/{call.sub_path}" if call.sub_path else "")
        protocols = [p.strip() for p in call.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        timeout = route.keepalive_s + UPSTREAM_GRACE_S
        started = time.monotonic()
        endpoint = route.endpoints[next(self._turn) % len(route.endpoints)]
        tried: list[Endpoint] = []
        while True:
            try:
                conn = await websocket.connect(endpoint.host, endpoint.port, path, query, headers, protocols,
                                               timeout - (time.monotonic() - started))
                return conn, endpoint
            except websocket.UpgradeRefused as exc:
                return error_answer(exc.status, f"instance {endpoint.instance} of '{route.name}' refused the "
                                    f"WebSocket: {exc.body[:200].decode('utf-8', 'replace')}", request_id)
            except TimeoutError:
                return error_answer(504, f"instance {endpoint.instance} did not open the WebSocket within "
                                    f"{timeout:.1f} s", request_id)
            except UpstreamRefused as exc:
                self._take_out(route.name, endpoint, str(exc))
            tried.append(endpoint)
            chosen = await self._another(route, tried, request_id, timeout - (time.monotonic() - started))
            if isinstance(chosen, Answer):
                return chosen
            endpoint = chosen
            self.metrics.label(self.metrics.resent, route.name, "undelivered").inc()

    def _socket_log(self, call: Call, status: int, started: float, endpoint: Endpoint | None, frames_in: int,
                    frames_out: int, ended: websocket.Ended | None) -> None:
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "time": time.time(), "request_id": call.request_id, "service": call.service, "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3), "websocket": True,
                "frames_in": frames_in, "frames_out": frames_out,
                "closed_by": ended.by if ended else None, "close_code": ended.code if ended else None,
                "instance": endpoint.instance if endpoint else None, "client": call.client,
            }, separators=(",", ":")))

    # -- questions without a model call ------------------------------------------------

    async def ready(self, name: str, headers: Mapping[str, str], path: str,
                    client: str | None = None) -> tuple[int, str]:
        """(200, "") when a backend of `name` has an instance, else the status and why
        (404 unknown, 401 refused, 429 too many refusals, 503 no instance): v2 REST
        ready and gRPC ModelReady."""
        entry = self.routes.entry(name)
        if entry is None:
            return 404, f"model '{name}' does not exist"
        if entry.closed:
            return 404, entry.closed
        try:
            expected_md5 = check_service_head(entry.token, headers, path, method="GET")
            if expected_md5 is not None:
                check_body_md5(expected_md5, await body_md5(b""))
        except AuthError as exc:
            refused = await self.unauthorized(Call(name, headers, path, method="GET", client=client), str(exc))
            return refused.status, str(exc)
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


class _MeteredStream:
    """A streamed answer as the gateway passes it on: each chunk counted, the first timed,
    and the answer recorded once when the stream ends, however it ends: read to its end
    (the status of its head), the instance failing or going silent mid-stream (503, 504),
    or the client leaving (`aclose` before the end: 499, which drops the connection to
    the instance so that it stops too)."""

    def __init__(self, gateway: Gateway, call: Call, answer: Answer, started: float) -> None:
        assert answer.stream is not None
        self._gateway, self._call, self._answer, self._started = gateway, call, answer, started
        self._inner: BodyStream = answer.stream
        self._first: float | None = None
        self._sent = 0
        self._recorded = False

    def __aiter__(self) -> _MeteredStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._record(self._answer.status)
            raise
        except UpstreamTimeout as exc:
            self._record(504, str(exc))
            raise
        except Exception as exc:
            self._record(503, str(exc))
            raise
        if self._first is None:
            self._first = time.perf_counter() - self._started
        self._sent += len(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._recorded:
            log.info("499 client went away mid-stream: request %s to %s cancelled", self._call.request_id,
                     self._call.service)
            self._record(499, "client closed the connection")
        await self._inner.aclose()

    def _record(self, status: int, why: str = "") -> None:
        if self._recorded:
            return
        self._recorded = True
        if why and status != 499:
            log.warning("request %s to %s: streamed answer cut short after %d bytes: %s", self._call.request_id,
                        self._call.service, self._sent, why)
        self._gateway._streamed(self._call, self._answer, status, time.perf_counter() - self._started,
                                self._first, self._sent)


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


def client_address(client: str | None) -> str:
    """The address of a caller, without its port: HTTP hands the host, gRPC a peer such
    as `ipv4:10.0.0.7:51234` or `ipv6:[::1]:51234` (maybe percent-encoded)."""
    if not client:
        return "-"
    if client.startswith(("ipv4:", "ipv6:")):
        rest = unquote(client[5:])
        if rest.startswith("["):
            return rest[1:rest.find("]")] if "]" in rest else rest
        return rest.rsplit(":", 1)[0]
    return client


class AuthFailures:
    """Repeated 401s from one address are slowed down; the right credentials never are.

    Past `allowed` refused requests from one address within `window_s`, each further
    401 to it is answered only after `penalty_s`; while `max_delayed` answers already
    wait, it is answered at once with 429 and Retry-After (the end of the window)
    instead, so the penalty itself holds a bounded number of connections. Only refused
    requests are counted, so a request with the right credentials is never looked up
    or delayed. Memory: at most `max_addresses` addresses, the least recently refused
    forgotten first.
    """

    def __init__(self, allowed: int = 20, window_s: float = 10.0, penalty_s: float = 1.0, max_delayed: int = 256,
                 max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed, self.window_s, self.penalty_s = allowed, window_s, penalty_s
        self.max_delayed, self.max_addresses, self.clock = max_delayed, max_addresses, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (window start, failures)
        self.delayed = 0
        """401s waiting out their penalty right now."""

    def failed(self, client: str | None) -> float | None:
        """Count one refusal; the seconds to wait before answering 401 (0: at once), or
        None: answer 429 now."""
        key = client_address(client)
        now = self.clock()
        start, count = self._seen.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._seen[key] = (start, count + 1)  # most recent last
        if len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        if count < self.allowed:
            return 0.0
        return self.penalty_s if self.delayed < self.max_delayed else None

    def retry_after(self, client: str | None) -> int:
        """Whole seconds until the address's window ends (at least 1)."""
        start, _ = self._seen.get(client_address(client), (self.clock(), 0))
        return max(1, math.ceil(start + self.window_s - self.clock()))

    @contextlib.contextmanager
    def delaying(self) -> Iterator[None]:
        self.delayed += 1
        try:
            yield
        finally:
            self.delayed -= 1

    def __len__(self) -> int:
        return len(self._seen)
