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

from eas.gateway.metrics import GatewayMetrics
from eas.gateway.route_table import Entry, Route, RouteTable
from eas.gateway.upstream import UpstreamFailed, UpstreamPool, UpstreamRefused, UpstreamTimeout
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
    instance_path: str | None = None
    """Path on the instance (`{name}` becomes the chosen service); None: EAS predict."""
    content_type: str | None = None
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    """Protocol headers sent on to the instance."""
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None
    """The caller's address (access log, and the key of the 401 slow-down)."""


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
        request_id = call.request_id
        entry = self.routes.entry(call.service)
        if entry is None or entry.closed:
            return self._unknown(call)  # type: ignore[return-value]
        # The credentials before the body: a caller without the token is refused before
        # a byte of its body is read (a signature covers the Content-MD5 header, not the body).
        try:
            expected_md5 = check_service_head(entry.token, call.headers, call.path, method=call.method)
        except AuthError as exc:
            return await self._unauthorized(call, str(exc))
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
                return await self._unauthorized(call, str(exc))
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

    async def _unauthorized(self, call: Call, why: str) -> Answer:
        """A 401, slowed down when this address keeps failing (`AuthFailures`)."""
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
        sent = {**call.forward_headers, REQUEST_ID_HEADER: request_id,
                INTERNAL_KEY_HEADER: route.internal_key or self.internal_key}
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
            refused = await self._unauthorized(Call(name, headers, path, method="GET", client=client), str(exc))
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
