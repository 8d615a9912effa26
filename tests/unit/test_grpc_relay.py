"""gRPC pass-through (`metadata.enable_grpc`, eas/gateway/grpc_relay.py) without Ray or
containers: the routing and auth decisions, then real calls through the gateway's gRPC
listener to a real grpc.aio server standing in for a container."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from eas.gateway.core import Gateway
from eas.gateway.grpc_relay import (
    SERVICE_KEY,
    Refusal,
    admit,
    authority_label,
    passed_metadata,
    service_name,
)
from eas.gateway.grpc_server import GrpcGateway
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable

TOKEN = "relay-token-0123456789"


def table(upstream: tuple[str, int] = ("127.0.0.1", 1)) -> RouteTable:
    routes = RouteTable()
    routes.set(Route("grpcsvc", TOKEN, (Endpoint("grpcsvc-1", "127.0.0.1", 2, grpc=upstream),), "", 5.0,
                     pass_headers=True, enable_grpc=True))
    routes.set(Route("websvc", TOKEN, (Endpoint("websvc-1", "127.0.0.1", 3),), "", 5.0, pass_headers=True))
    routes.set(Route("procsvc", TOKEN, (Endpoint("procsvc-1", "127.0.0.1", 4),), "", 5.0))
    routes.set_entries({n: Entry(n, TOKEN, ((n, 100),)) for n in ("grpcsvc", "websvc", "procsvc")})
    return routes


@pytest.mark.parametrize("authority, label", [
    ("grpcsvc.123456.cn-hangzhou.pai-eas.aliyuncs.com:80", "grpcsvc"), ("GrpcSvc:8081", "grpcsvc"),
    ("127.0.0.1:8081", ""), ("[::1]:8081", ""), ("", ""), ("svc.example.com", "svc"),
])
def test_the_authority_names_a_service_by_its_first_label(authority: str, label: str) -> None:
    assert authority_label(authority) == label


def test_which_service_a_call_names() -> None:
    routes = table()
    assert service_name(routes, "grpcsvc.1.cn-hangzhou.pai-eas.aliyuncs.com:80", {}) == "grpcsvc"
    # The authority wins when it names a service with pass-through; else the metadata key.
    assert service_name(routes, "grpcsvc.x:80", {SERVICE_KEY: "websvc"}) == "grpcsvc"
    assert service_name(routes, "127.0.0.1:8081", {SERVICE_KEY: "grpcsvc"}) == "grpcsvc"
    assert service_name(routes, "websvc.x:80", {SERVICE_KEY: "grpcsvc"}) == "grpcsvc"
    assert service_name(routes, "websvc.x:80", {}) == "websvc"  # refused later with what to set
    none = service_name(routes, "127.0.0.1:8081", {})
    assert isinstance(none, Refusal) and none.code == grpc.StatusCode.NOT_FOUND and SERVICE_KEY in none.message


def test_admission_decisions() -> None:
    routes = table()
    ok = admit(routes, "grpcsvc", {"authorization": f"Bearer {TOKEN}"}, "/a.B/C", 0.5)
    assert not isinstance(ok, Refusal) and ok[1].name == "grpcsvc"
    assert not isinstance(admit(routes, "grpcsvc", {"authorization": TOKEN}, "/a.B/C", 0.5), Refusal)
    cases = [
        ("nosuch", {"authorization": TOKEN}, grpc.StatusCode.NOT_FOUND, "does not exist"),
        ("grpcsvc", {}, grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization'"),
        ("grpcsvc", {"authorization": "Bearer wrong"}, grpc.StatusCode.UNAUTHENTICATED, "wrong token"),
        ("websvc", {"authorization": TOKEN}, grpc.StatusCode.UNIMPLEMENTED, '"enable_grpc": true'),
        ("procsvc", {"authorization": TOKEN}, grpc.StatusCode.UNIMPLEMENTED, "runs a processor"),
    ]
    for name, metadata, code, words in cases:
        refused = admit(routes, name, metadata, "/a.B/C", 0.5)
        assert isinstance(refused, Refusal) and refused.code == code and words in refused.message, (name, refused)


def test_credentials_and_routing_key_are_not_passed_on() -> None:
    items = [("authorization", "Bearer x"), (SERVICE_KEY, "s"), ("x-custom", "1"), ("user-agent", "u"),
             ("x-bin", b"\x00"), ("grpc-accept-encoding", "gzip")]
    assert passed_metadata(items) == (("x-custom", "1"), ("x-bin", b"\x00"))


# -- real calls through the gateway's gRPC listener ---------------------------------------

class Upstream(grpc.GenericRpcHandler):
    """A container's gRPC server as bytes: Say (unary), Count (server stream), Wait (until cancelled)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.waits_ended = asyncio.Event()
        self.waiting = asyncio.Event()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return {
            "/t.Echo/Say": grpc.unary_unary_rpc_method_handler(self.say),
            "/t.Echo/Count": grpc.unary_stream_rpc_method_handler(self.count),
            "/t.Echo/Wait": grpc.unary_unary_rpc_method_handler(self.wait),
            "/t.Echo/Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        }.get(details.method)

    async def chat(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield b"re: " + request

    async def say(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.seen.append(dict(context.invocation_metadata() or ()))
        await context.send_initial_metadata((("x-app-header", "hello"),))
        context.set_trailing_metadata((("x-app-trailer", "bye"),))
        if request == b"fail":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "told to fail", (("x-why", "asked"),))
        return b"echo: " + request

    async def count(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(1, int(request) + 1):
            yield str(i).encode()

    async def wait(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.waits_ended.set()
        return b""


def test_calls_are_relayed_with_metadata_status_streams_and_cancellation() -> None:
    asyncio.run(_relayed())


async def _relayed() -> None:
    upstream_handler = Upstream()
    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers((upstream_handler,))
    port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    gateway = Gateway(table(("127.0.0.1", port)), "internal")
    front = GrpcGateway(gateway, "127.0.0.1", 0)
    gw_port = await front.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw_port}") as channel:
            say = channel.unary_unary("/t.Echo/Say")
            named = ((SERVICE_KEY, "grpcsvc"), ("authorization", f"Bearer {TOKEN}"))
            call = say(b"hi", metadata=(*named, ("x-custom", "yes")), timeout=30)
            assert await call == b"echo: hi"
            assert ("x-app-header", "hello") in tuple(await call.initial_metadata())
            assert ("x-app-trailer", "bye") in tuple(await call.trailing_metadata())
            seen = upstream_handler.seen[-1]
            assert seen.get("x-custom") == "yes" and "authorization" not in seen and SERVICE_KEY not in seen

            with pytest.raises(grpc.aio.AioRpcError) as failed:  # the app's status, details, trailers
                await say(b"fail", metadata=named, timeout=30)
            assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert failed.value.details() == "told to fail"
            assert ("x-why", "asked") in tuple(failed.value.trailing_metadata())

            counted = [m async for m in channel.unary_stream("/t.Echo/Count")(b"3", metadata=named, timeout=30)]
            assert counted == [b"1", b"2", b"3"]
            chat = channel.stream_stream("/t.Echo/Chat")(metadata=named, timeout=30)
            for word in (b"a", b"b"):  # one answer per message, each before the next is sent
                await chat.write(word)
                assert await chat.read() == b"re: " + word
            await chat.done_writing()
            assert await chat.read() == grpc.aio.EOF and await chat.code() == grpc.StatusCode.OK
            assert await say(b"no deadline", metadata=named) == b"echo: no deadline"

            for metadata, code in [
                (((SERVICE_KEY, "grpcsvc"),), grpc.StatusCode.UNAUTHENTICATED),
                (((SERVICE_KEY, "grpcsvc"), ("authorization", "wrong")), grpc.StatusCode.UNAUTHENTICATED),
                (((SERVICE_KEY, "nosuch"), ("authorization", TOKEN)), grpc.StatusCode.NOT_FOUND),
                ((("authorization", TOKEN),), grpc.StatusCode.NOT_FOUND),
                (((SERVICE_KEY, "websvc"), ("authorization", TOKEN)), grpc.StatusCode.UNIMPLEMENTED),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await say(b"x", metadata=metadata, timeout=30)
                assert refused.value.code() == code, (metadata, refused.value)
                assert refused.value.details()

            # The client's deadline reaches the container: its call ends when the client's does.
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await channel.unary_unary("/t.Echo/Wait")(b"", metadata=named, timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(upstream_handler.waits_ended.wait(), 30)
            # ... and so does a cancellation.
            upstream_handler.waits_ended.clear()
            upstream_handler.waiting.clear()
            waiting = channel.unary_unary("/t.Echo/Wait")(b"", metadata=named, timeout=60)
            await asyncio.wait_for(upstream_handler.waiting.wait(), 30)  # the container runs it
            waiting.cancel()
            await asyncio.wait_for(upstream_handler.waits_ended.wait(), 30)
        text = gateway.metrics.render().decode()
        assert 'service="grpcsvc"' in text
    finally:
        await front.stop(0)
        await upstream.stop(0)


# -- how a container's gRPC port reaches the route ------------------------------------------

def test_an_instance_publishes_its_container_grpc_port_with_its_endpoint() -> None:
    from eas.backend.replica import endpoint_value, parse_endpoint_value

    assert parse_endpoint_value(endpoint_value(("10.0.0.5", 8080))) == (("10.0.0.5", 8080), None)
    both = endpoint_value(("10.0.0.5", 8080), ("10.0.0.5", 40123))
    assert parse_endpoint_value(both) == (("10.0.0.5", 8080), ("10.0.0.5", 40123))
    assert parse_endpoint_value(b"10.0.0.5:8080") == (("10.0.0.5", 8080), None)  # as older instances publish


def test_routes_relay_grpc_only_for_container_services_with_enable_grpc() -> None:
    from eas.control.backend import AppState, Replica
    from eas.control.routing import service_route
    from eas.control.store import ServiceRecord
    from eas.spec import ServiceSpec

    replica = Replica("r1", "actor", "RUNNING", "10.0.0.5", 1, 0.0, ("10.0.0.5", 8080), grpc=("10.0.0.5", 40123))
    app = AppState("RUNNING", "", 1, [replica])
    image = {"image": "localhost/app:v1", "port": 50051}
    specs = {
        "on": {"metadata": {"instance": 1, "enable_grpc": True}, "containers": [image]},
        "off": {"metadata": {"instance": 1}, "containers": [image]},
        "proc": {"metadata": {"instance": 1, "enable_grpc": True}, "processor": "sklearn", "model_path": "/m"},
    }
    routes = {}
    for name, raw in specs.items():
        spec = ServiceSpec.model_validate({"name": name, **raw})
        routes[name] = service_route(ServiceRecord(name, name, raw, "t", "Running", "Running"), spec, app, "")
    assert routes["on"].enable_grpc and routes["on"].endpoints[0].grpc == ("10.0.0.5", 40123)
    assert not routes["off"].enable_grpc and not routes["proc"].enable_grpc


def test_methods_the_gateway_lacks_of_its_own_services_stay_unimplemented() -> None:
    async def call() -> None:
        front = GrpcGateway(Gateway(table(), "internal"), "127.0.0.1", 0)
        port = await front.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")(b"", timeout=30)
                assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await front.stop(0)

    asyncio.run(call())
