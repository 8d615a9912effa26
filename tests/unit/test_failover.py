"""An instance that dies costs no request that can be saved (issue 23), without Ray.

The gateway (`Gateway.handle`, the path every transport takes) forwards over real
sockets on 127.0.0.1 to scripted instances, each of which answers, dies with the
request (connection and listener gone, as after kill -9), hangs up but lives on, resets
before reading a large body, or never answers; routes are set as the controller would.
The last tests run the composed platform (tests/support/platform.py: the real
controller, gateway and instance servers over MemoryBackend) to show the controller
bringing an instance back only once it answers its health check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from eas.control.routing import retries_in_flight
from eas.gateway import core
from eas.gateway.core import Call, Gateway
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.protocols.oip import INFER_PATH
from eas.spec import ServiceSpec
from tests.support.platform import (
    build_platform,
    echo_spec,
    wait_until,
    write_echo_code,
)

TOKEN = "a-service-token-123"


class Instance:
    """A scripted instance: `behaviour(request) -> answer body`, or one of the ways to fail."""

    def __init__(self, name: str, behaviour: str = "ok") -> None:
        self.name, self.behaviour = name, behaviour
        self.seen: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.endpoint = Endpoint(name, "127.0.0.1", 0)

    async def start(self) -> Instance:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.endpoint = Endpoint(self.name, "127.0.0.1", self.server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                if self.behaviour == "reset-before-body":  # read the head only, then vanish (RST)
                    self.seen.append(b"head only")
                    self.server.close()  # type: ignore[union-attr]
                    writer.transport.abort()
                    return
                body = await reader.readexactly(length)
                self.seen.append(body)
                if self.behaviour == "die":  # with the request: listener and connection gone
                    self.server.close()  # type: ignore[union-attr]
                    writer.transport.abort()
                    return
                if self.behaviour == "hangup":  # closes on it, but lives on
                    writer.close()
                    return
                if self.behaviour == "hang":
                    await asyncio.Event().wait()
                answer = f"from-{self.name}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def dead_endpoint(name: str = "gone") -> Endpoint:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return Endpoint(name, "127.0.0.1", sock.getsockname()[1])


def gateway_for(*endpoints: Endpoint, retry: bool = False, keepalive_s: float = 5.0,
                hold_s: float = 0.0) -> Gateway:
    routes = RouteTable()
    routes.set(Route("svc", TOKEN, tuple(endpoints), "no instance is ready yet", keepalive_s=keepalive_s,
                     hold_s=hold_s, retry_in_flight=retry))
    routes.set_entries({"svc": Entry("svc", TOKEN, (("svc", 100),))})
    return Gateway(routes, "internal")


def call(body: bytes = b"{}", **extra: Any) -> Call:
    return Call("svc", Headers({"authorization": TOKEN}), "/api/predict/svc", body=body, **extra)


def resent(gateway: Gateway, reason: str) -> float:
    return gateway.metrics.resent.labels("svc", reason)._value.get()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


# ---------------------------------------------------------------- never delivered: always re-sent


def test_a_refused_connection_goes_to_another_instance_and_the_dead_one_leaves() -> None:
    async def go() -> None:
        live = await Instance("live").start()
        dead = dead_endpoint()
        gateway = gateway_for(dead, live.endpoint)  # the first request tries the dead one first
        try:
            answers = [await gateway.handle(call(f"{i}".encode())) for i in range(4)]
            assert [(a.status, a.body) for a in answers] == [(200, b"from-live")] * 4
            assert live.seen == [b"0", b"1", b"2", b"3"]
            assert resent(gateway, "undelivered") == 1, "only the first request met the dead instance"
            assert gateway.routes.get("svc").endpoints == (live.endpoint,)
            assert gateway.instances("svc") == [("127.0.0.1", live.endpoint.port)], "DIRECT discovery too"
            assert gateway.metrics.taken_out.labels("svc")._value.get() == 1
        finally:
            live.close()

    run(go)


def test_a_request_reset_before_it_was_sent_whole_goes_to_another_even_without_the_switch() -> None:
    async def go() -> None:
        first, second = await Instance("a", "reset-before-body").start(), await Instance("b").start()
        gateway = gateway_for(first.endpoint, second.endpoint, retry=False)
        body = b"x" * (32 << 20)  # far more than the sockets' buffers: part of it is still ours at the reset
        try:
            answer = await gateway.handle(call(body))
            assert (answer.status, answer.body) == (200, b"from-b")
            assert first.seen == [b"head only"] and second.seen == [body]
            assert resent(gateway, "undelivered") == 1
        finally:
            first.close()
            second.close()

    run(go)


def test_v2_calls_fail_over_the_same_way() -> None:
    async def go() -> None:
        live = await Instance("live").start()
        gateway = gateway_for(dead_endpoint(), live.endpoint)
        try:
            answer = await gateway.handle(call(b"v2", instance_path=INFER_PATH))
            assert (answer.status, answer.body) == (200, b"from-live")
        finally:
            live.close()

    run(go)


# ---------------------------------------------------------------- in flight: retried once when allowed


@pytest.mark.parametrize("retry", [True, False])
def test_a_request_whose_instance_dies_with_it_is_retried_only_when_allowed(retry: bool) -> None:
    async def go() -> None:
        dying, healthy = await Instance("a", "die").start(), await Instance("b").start()
        gateway = gateway_for(dying.endpoint, healthy.endpoint, retry=retry)
        try:
            answer = await gateway.handle(call(b"once"))
            assert dying.seen == [b"once"]
            if retry:
                assert (answer.status, answer.body) == (200, b"from-b") and healthy.seen == [b"once"]
                assert resent(gateway, "in_flight") == 1
            else:
                assert answer.status == 503 and healthy.seen == [], "with the switch off nothing runs twice"
                message = answer.body.decode()
                assert "instance a of 'svc' failed" in message and "is gone" in message
            assert gateway.routes.get("svc").endpoints == (healthy.endpoint,), "the dead one left either way"
            after = await gateway.handle(call(b"next"))
            assert (after.status, after.body) == (200, b"from-b")
        finally:
            dying.close()
            healthy.close()

    run(go)


def test_an_instance_that_hangs_up_but_lives_stays_in_rotation() -> None:
    async def go() -> None:
        rude, other = await Instance("a", "hangup").start(), await Instance("b").start()
        gateway = gateway_for(rude.endpoint, other.endpoint, retry=False)
        try:
            answer = await gateway.handle(call())
            assert answer.status == 503 and "instance a of 'svc' failed" in answer.body.decode()
            assert other.seen == [] and rude.endpoint in gateway.routes.get("svc").endpoints
        finally:
            rude.close()
            other.close()

    run(go)


def test_a_request_is_retried_once_only() -> None:
    async def go() -> None:
        instances = [await Instance(n, "die").start() for n in ("a", "b", "c")]
        gateway = gateway_for(*(i.endpoint for i in instances), retry=True)
        try:
            answer = await gateway.handle(call(b"doomed"))
            assert answer.status == 503 and "failed" in answer.body.decode()
            assert instances[0].seen == [b"doomed"]
            assert sorted(len(i.seen) for i in instances[1:]) == [0, 1], "one retry, on one other instance"
        finally:
            for i in instances:
                i.close()

    run(go)


def test_past_the_keepalive_it_is_504_and_never_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "UPSTREAM_GRACE_S", 0.1)

    async def go() -> None:
        stuck = await Instance("a", "hang").start()
        gateway = gateway_for(stuck.endpoint, keepalive_s=0.2)
        try:
            answer = await gateway.handle(call())
            assert answer.status == 504 and "within 0.3 s" in answer.body.decode()

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("something nobody expected")

            monkeypatch.setattr(gateway.upstream, "request", broken)
            odd = await gateway.handle(call())
            assert odd.status == 503 and "something nobody expected" in odd.body.decode()
        finally:
            stuck.close()

    run(go)


def test_with_every_instance_gone_a_request_waits_for_the_one_coming() -> None:
    async def go() -> None:
        gateway = gateway_for(dead_endpoint(), hold_s=10)
        replacement = await Instance("new").start()
        try:
            pending = asyncio.ensure_future(gateway.handle(call(b"patient")))
            for _ in range(2000):  # until it waits for an instance
                if gateway.routes.waiting("svc"):
                    break
                await asyncio.sleep(0.005)
            assert gateway.routes.waiting("svc") == 1 and not pending.done()
            # The controller sees the replacement (Serve restarted the replica).
            gateway.routes.set(Route("svc", TOKEN, (replacement.endpoint,), "", keepalive_s=5, hold_s=10))
            answer = await asyncio.wait_for(pending, 10)
            assert (answer.status, answer.body) == (200, b"from-new")
        finally:
            replacement.close()

    run(go)


# ---------------------------------------------------------------- the route table's marks


def test_marks_survive_the_controllers_passes_until_it_drops_or_restores_the_instance() -> None:
    routes = RouteTable()
    a, b = Endpoint("s-a", "10.0.0.1", 1), Endpoint("s-b", "10.0.0.2", 2)
    routes.set(Route("s", TOKEN, (a, b), "", keepalive_s=5))
    assert routes.mark_down("s", a, "refused") and not routes.mark_down("s", a, "again")
    assert routes.get("s").endpoints == (b,)
    routes.set(Route("s", TOKEN, (a, b), "", keepalive_s=5))  # the backend still lists it
    assert routes.get("s").endpoints == (b,)
    routes.mark_down("s", b, "reset")
    assert routes.get("s").endpoints == () and routes.get("s").unavailable == "instance s-b failed (reset)"
    routes.restore(b)
    assert routes.get("s").endpoints == (b,)
    routes.set(Route("s", TOKEN, (b,), "", keepalive_s=5))  # the dead replica is gone: its mark too
    assert routes.down() == []
    routes.set(Route("s", TOKEN, (a, b), "", keepalive_s=5))  # a new replica at the same address
    assert routes.get("s").endpoints == (a, b)


def test_which_services_retry_in_flight_requests_by_default() -> None:
    def spec(**fields: Any) -> ServiceSpec:
        return ServiceSpec.model_validate({"name": "s", "metadata": {"instance": 1, **fields.pop("meta", {})},
                                           **fields})

    assert retries_in_flight(spec(processor="sklearn"))
    assert not retries_in_flight(spec(processor_type="python", processor_path="/code"))
    assert not retries_in_flight(spec(processor="onnx", meta={"rpc": {"retry_in_flight": False}}))
    assert retries_in_flight(spec(processor_type="python", processor_path="/code",
                                  meta={"rpc": {"retry_in_flight": True}}))


# ---------------------------------------------------------------- with the controller


def test_the_controller_brings_an_instance_back_only_once_it_is_healthy(tmp_path: Path) -> None:
    api = build_platform(tmp_path, host_instances=True)
    try:
        api.running(echo_spec("echo", write_echo_code(tmp_path / "code"), instance=2))
        token = api.describe("echo")["AccessToken"]
        _, hosted = api.cluster._hosted["echo"]
        routes, controller = api.platform.gateway.routes, api.controller
        survivor, victim = hosted
        victim.server.stop()  # its listener is gone; the backend still says RUNNING, as Serve does for a while
        for _ in range(4):
            answer = api.predict("echo", b"hi", token)
            assert (answer.status_code, answer.content) == (200, b"echo:hi"), answer.text
        assert [d.endpoint.instance for d in routes.down()] == ["echo-r1"]
        listed = api.http.get("/api/v1/servicediscovery/upstreams/echo").json()["endpoints"]["items"]
        assert [item["port"] for item in listed] == [survivor.server.port]
        for _ in range(3):  # passes: each checks its health, which fails
            controller.reconcile()
            wait_until(lambda: not controller._rechecking, "the health check to finish")
        assert [d.endpoint.instance for d in routes.down()] == ["echo-r1"]
        # A live instance taken out (a connection failure that passed) comes back at the next pass.
        live = next(e for e in routes.get("echo").endpoints if e.port == survivor.server.port)
        routes.mark_down("echo", live, "a moment's trouble")
        assert routes.get("echo").endpoints == ()
        controller.reconcile()
        wait_until(lambda: live in routes.get("echo").endpoints, "the healthy instance to come back")
    finally:
        api.close()
