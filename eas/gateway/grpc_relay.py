"""gRPC pass-through to container services (`metadata.enable_grpc`): EAS's "call the
service over gRPC with your own .proto".

The gateway's gRPC listener (grpc_server.py) serves its own services first; every other
method lands here (`RelayHandler`, the last generic handler). The call names its
service by `:authority` (its first DNS label: `mysvc.123.cn-hangzhou.pai-eas.aliyuncs.com`
is `mysvc`) where the gRPC server can read it, or by the metadata key `x-eas-service`;
it carries the token in `authorization` (`Bearer <token>` or the raw token). Once
admitted as any call is (the token, slowed down after repeated failures; the rate
limit; a wait while an instance is coming) it is relayed as raw bytes, one
stream_stream call with identity (de)serializers that carries unary and streaming calls
alike, to the gRPC port of one running instance's serving container, as published on
its node. Nothing is decoded: the user's .proto is never needed here. The client's
metadata goes on (less its credentials and the routing key), the upstream's initial and
trailing metadata, status and details come back as they are, and the client's deadline
and cancellation reach the container. Refusals say what to do: NOT_FOUND (no such
service), UNAUTHENTICATED (no or a wrong token), UNIMPLEMENTED (the service is not a
container with `enable_grpc`). Each call is one observation in the gateway's metrics.

The calls do not pass the instance's HTTP server (its queue limit and keepalive do not
apply; the client's deadline bounds them), so a relayed call is not retried on another
instance: the container may have run it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from eas.gateway.core import Call, Gateway, access_log, new_request_id
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.protocols import grpc_messages
from eas.protocols.auth import AuthError, check_service_head
from eas.protocols.wire import Answer

log = logging.getLogger("eas.grpc")

#: The metadata key that names the service when `:authority` does not.
SERVICE_KEY = "x-eas-service"
#: Client metadata never passed on: its credentials, our routing key, and what gRPC
#: sets for each hop itself.
NOT_PASSED = frozenset({"authorization", SERVICE_KEY, "user-agent", "te", "content-type", "host"})
#: The gateway's own gRPC services (grpc_server.py): a method of theirs it does not
#: serve is relayed only when the call names a service with `x-eas-service`.
OWN_SERVICES = (f"/{grpc_messages.INFERENCE_SERVICE}/", f"/{grpc_messages.PREDICT_SERVICE}/")
#: gRPC status -> the HTTP-like status the gateway's metrics count.
METRIC_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
#: HTTP-like status of a refusal -> the gRPC code the client gets.
REFUSAL_CODES: dict[int, grpc.StatusCode] = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(frozen=True)
class Refusal:
    """Why a call is not relayed: an HTTP-like status (metrics) and what to tell the client."""

    status: int
    message: str

    @property
    def code(self) -> grpc.StatusCode:
        return REFUSAL_CODES.get(self.status, grpc.StatusCode.UNKNOWN)


def authority_label(authority: str) -> str:
    """The first DNS label of `:authority` (its port dropped); "" for an IP address or
    an empty authority, which name no service."""
    host = authority.strip()
    if host.startswith("["):  # [IPv6]:port
        return ""
    host = host.rpartition(":")[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(host)
        return ""
    except ValueError:
        pass
    return host.split(".", 1)[0].lower()


def relays(routes: RouteTable, entry: Entry) -> bool:
    """Whether any service behind the endpoint takes gRPC pass-through."""
    return any((route := routes.get(name)) is not None and route.enable_grpc for name, _ in entry.backends)


def service_name(routes: RouteTable, authority: str, metadata: Mapping[str, str]) -> str | Refusal:
    """Which endpoint a call names: the authority's first label when it names an
    endpoint with gRPC pass-through, else the `x-eas-service` metadata, else the
    authority's label when it names any endpoint (its refusal then says what to set)."""
    label = authority_label(authority)
    entry = routes.entry(label) if label else None
    if entry is not None and relays(routes, entry):
        return label
    named = (metadata.get(SERVICE_KEY) or "").strip()
    if named:
        return named
    if entry is not None:
        return label
    told = f"the authority '{authority}' names none" if authority else "no authority was read"
    return Refusal(404, f"no service named: {told}; send the metadata '{SERVICE_KEY}: <service name>', or call "
                        f"'<service name>.<any domain>' as the channel's authority")


def admit(routes: RouteTable, name: str, metadata: Mapping[str, str], method: str,
          draw: float) -> tuple[Entry, Route] | Refusal:
    """The endpoint and the service picked behind it (by weight, `draw` in [0, 1)) for
    a call whose token is right; or why not. The token itself: `check_token`."""
    entry = routes.entry(name)
    if entry is None:
        return Refusal(404, f"service '{name}' does not exist")
    if entry.closed:
        return Refusal(404, entry.closed)
    problem = check_token(entry, metadata)
    if problem is not None:
        return Refusal(401, problem)
    backend = entry.pick(draw)
    route = routes.get(backend) if backend else None
    if route is None:
        return Refusal(503, f"'{name}' has no service behind it")
    if not route.enable_grpc:
        if route.pass_headers:
            why = (f"service '{route.name}' does not take gRPC calls: set \"metadata\": {{\"enable_grpc\": true}} "
                   f"in its service JSON (containers[0].port must be a gRPC server) to call {method}")
        else:
            why = (f"service '{route.name}' runs a processor, which answers only inference.GRPCInferenceService and "
                   f"eas.Predict over gRPC; {method} needs a container service (containers[0].port a gRPC server) "
                   "with \"metadata\": {\"enable_grpc\": true}")
        return Refusal(501, why)
    return entry, route


def check_token(entry: Entry, metadata: Mapping[str, str]) -> str | None:
    """Why the call's `authorization` is refused (None: it is the endpoint's token).
    `Bearer <token>`, as EAS's gRPC examples send it, and the raw token are accepted."""
    auth = (metadata.get("authorization") or "").strip()
    if auth[:7].lower() == "bearer ":
        auth = auth[7:].strip()
    if not auth:
        return f"missing 'authorization' metadata: send 'Bearer <token>' (the token of '{entry.name}')"
    try:
        check_service_head(entry.token, {"authorization": auth}, "", method="POST")
    except AuthError as exc:
        return str(exc)
    return None


def passed_metadata(items: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Metadata passed on (to the container, or back to the client): all but credentials,
    the routing key, gRPC's reserved `grpc-*` keys and per-hop keys."""
    return tuple((k, v) for k, v in items if k.lower() not in NOT_PASSED and not k.lower().startswith(("grpc-", ":")))


def authority_of(context: grpc.aio.ServicerContext) -> str:
    """The call's `:authority`, where this grpcio can tell it. grpcio's Python server does
    not expose it yet (grpc/grpc#38906; a proposed `experimental_authority`), so today
    this is "" and calls name their service with `x-eas-service`."""
    read = getattr(context, "experimental_authority", None)
    try:
        value = read() if callable(read) else ""
    except Exception:  # an accessor that fails names nothing
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value or "")


class _Channels:
    """One channel per container gRPC address, shared by the calls to it; a channel no
    route lists any more is closed once no call uses it."""

    def __init__(self, options: list[tuple[str, Any]]) -> None:
        self.options = options
        self._open: dict[tuple[str, int], grpc.aio.Channel] = {}
        self._users: dict[tuple[str, int], int] = {}

    def take(self, address: tuple[str, int]) -> grpc.aio.Channel:
        channel = self._open.get(address)
        if channel is None:
            channel = self._open[address] = grpc.aio.insecure_channel(f"{address[0]}:{address[1]}",
                                                                      options=self.options)
        self._users[address] = self._users.get(address, 0) + 1
        return channel

    def give_back(self, address: tuple[str, int], live: Callable[[], set[tuple[str, int]]]) -> None:
        self._users[address] -= 1
        if self._users[address] > 0:
            return
        del self._users[address]
        if address not in live():
            channel = self._open.pop(address, None)
            if channel is not None:
                asyncio.get_running_loop().create_task(channel.close())

    async def close(self) -> None:
        channels, self._open = list(self._open.values()), {}
        for channel in channels:
            await channel.close()


class RelayHandler(grpc.GenericRpcHandler):
    """Every method the gateway's own services do not have: relayed to a container."""

    def __init__(self, gateway: Gateway, max_message_bytes: int) -> None:
        self.gateway = gateway
        self.channels = _Channels([("grpc.max_receive_message_length", max_message_bytes),
                                   ("grpc.max_send_message_length", max_message_bytes)])
        self._turn = itertools.count()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        if method.startswith(OWN_SERVICES) and not any(
                k.lower() == SERVICE_KEY for k, _ in handler_call_details.invocation_metadata or ()):
            return None  # a method of the gateway's own services it lacks: UNIMPLEMENTED, as before
        # A partial of the async generator: grpc.aio tells streaming handlers by their kind.
        return grpc.stream_stream_rpc_method_handler(functools.partial(self.relay, method))

    async def close(self) -> None:
        await self.channels.close()

    def _live(self) -> set[tuple[str, int]]:
        return {e.grpc for _, route in self.gateway.routes.items() for e in route.endpoints if e.grpc}

    async def relay(self, method: str, requests: AsyncIterator[bytes],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """One call: admitted, relayed, its status mirrored; one metrics observation."""
        started = time.perf_counter()
        request_id = new_request_id()
        raw = context.invocation_metadata() or ()
        metadata = {k.lower(): v for k, v in raw if isinstance(v, str)}
        name: str = "_unknown"
        status, instance = 499, None  # a call cancelled before it ends is the client's doing
        try:
            chosen = await self._admit(method, metadata, context, request_id)
            if isinstance(chosen, Refusal):
                status = chosen.status
                await context.abort(chosen.code, chosen.message, (("eas-status", str(chosen.status)),))
                return
            entry, route, endpoint = chosen
            name, instance = entry.name, endpoint.instance
            async for message in self._call(route, endpoint, method, requests, raw, context):
                yield message
            status = 200
        except _Upstream as ended:
            status = METRIC_STATUS.get(ended.code, 500)
            await context.abort(ended.code, ended.details, ended.trailing)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # never a traceback for the client: what failed, in a word
            log.exception("gRPC call %s to %s failed in the gateway", method, name)
            status = 503
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"'{name}' failed in the gateway: {type(exc).__name__}: {exc}")
        finally:
            self._record(name, method, status, started, request_id, instance, context.peer())

    async def _admit(self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext,
                     request_id: str) -> tuple[Entry, Route, Endpoint] | Refusal:
        routes = self.gateway.routes
        name = service_name(routes, authority_of(context), metadata)
        if isinstance(name, Refusal):
            return name
        admitted = admit(routes, name, metadata, method, random.random())
        if isinstance(admitted, Refusal):
            if admitted.status == 401:  # slowed down, then 429, for an address that keeps failing
                answer = await self.gateway.unauthorized(Call(name, {}, method, client=context.peer()),
                                                         admitted.message)
                return Refusal(answer.status, _message(answer) if answer.status != 401 else admitted.message)
            return admitted
        entry, route = admitted
        wait = self.gateway.limiter.admit(route)
        if wait is not None:
            return Refusal(429, f"over the rate limit of {route.rate_limit} requests/s for '{name}'")
        self.gateway.routes.touch(route.name)
        if not route.endpoints:
            ready = await self.gateway.wait_for_instance(route, request_id)
            if isinstance(ready, Answer):
                return Refusal(503, _message(ready))
            route = ready
        serving = [e for e in route.endpoints if e.grpc]
        if not serving:
            return Refusal(503, f"no instance of '{route.name}' publishes a gRPC port yet (instances started "
                                "before enable_grpc was set are being replaced): retry in a moment")
        return entry, route, serving[next(self._turn) % len(serving)]

    async def _call(self, route: Route, endpoint: Endpoint, method: str, requests: AsyncIterator[bytes],
                    raw: Iterable[tuple[str, Any]], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """The upstream call, its answers yielded as they come; `_Upstream` when it ends
        other than OK. Cancelled (the client went, or its deadline passed): cancelled."""
        assert endpoint.grpc is not None
        channel = self.channels.take(endpoint.grpc)
        upstream = channel.stream_stream(method)(requests, metadata=passed_metadata(raw),
                                                 timeout=context.time_remaining())
        try:
            try:
                head = await upstream.initial_metadata()
                if head:
                    await context.send_initial_metadata(passed_metadata(head))
                async for message in upstream:
                    yield message
                trailing = passed_metadata(await upstream.trailing_metadata() or ())
            except grpc.aio.AioRpcError as exc:
                raise _Upstream(exc.code(), exc.details() or "",
                                passed_metadata(exc.trailing_metadata() or ())) from None
            context.set_trailing_metadata(trailing)
        finally:
            if not upstream.done():
                upstream.cancel()
            self.channels.give_back(endpoint.grpc, self._live)

    def _record(self, name: str, method: str, status: int, started: float, request_id: str,
                instance: str | None, client: str) -> None:
        seconds = time.perf_counter() - started
        self.gateway.metrics.observe(name if name in self.gateway.routes else "_unknown", status, seconds, None)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "time": time.time(), "request_id": request_id, "service": name, "status": status,
                "ms": round(seconds * 1000, 3), "grpc": method, "instance": instance, "client": client,
            }, separators=(",", ":")))


class _Upstream(Exception):
    """The container ended the call other than OK: its code, details and trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing


def _message(answer: Answer) -> str:
    try:
        return str(json.loads(answer.body).get("error") or "")
    except (ValueError, AttributeError):
        return answer.body.decode("utf-8", "replace")[:1000]
