"""WebSocket pass-through: a client's session relayed by the real gateway to an instance.

The gateway is eas-server's (EasHttp under uvicorn with the guarded protocol, on
127.0.0.1, with short head and body timeouts, which must not cut an upgraded
connection). The instance is a small WebSocket echo server (the `websockets` library's)
standing in for what container services (web UIs) and the queue watch will run: it
checks the gateway's internal key, negotiates a subprotocol, echoes, closes with a code
of its own on request, or drops dead. Real sockets throughout; the client is the
`websockets` sync client. What this leaves for the container e2e (issue 15): a real
container image behind the relay.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from eas.gateway.core import Gateway
from eas.gateway.http import EasHttp
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.gateway.websocket import sendable
from eas.protocols.http import ListenerLimits, PredictFastPath
from eas.server import gateway_lifespan
from tests.unit.test_streaming import Served, free_port, wait_until

TOKEN = "a-service-token-123"
KEY = "the-internal-key"
WAIT_S = 15.0


class StandIn:
    """A WebSocket instance on its own thread and loop: echo, close on "bye", die on "die",
    a message of its own after "later" (3x the gateway's body timeout)."""

    def __init__(self, later_s: float) -> None:
        self.later_s = later_s
        self.events: list[tuple[Any, ...]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "StandIn":
        self._thread.start()
        assert self._ready.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(timeout=WAIT_S)

    @staticmethod
    def _check_key(connection: ServerConnection, request: Any) -> Any:
        if request.headers.get("X-Eas-Internal-Key") != KEY:
            return connection.respond(HTTPStatus.FORBIDDEN, "no internal key\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.events.append(("open", ws.request.path, ws.subprotocol))
        try:
            async for message in ws:
                if message == "bye":
                    await ws.close(4001, "bye from the instance")
                    break
                if message == "die":
                    ws.transport.abort()
                    return
                if message == "later":
                    await asyncio.sleep(self.later_s)
                    await ws.send("late hello")
                    continue
                await ws.send("echo:" + message if isinstance(message, str) else b"echo:" + message)
        except ConnectionClosed:
            pass  # a close code other than 1000/1001: recorded below all the same
        self.events.append(("closed", ws.close_code, ws.close_reason))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._check_key,
                         select_subprotocol=lambda _, offered: "chat.v1" if "chat.v1" in offered else None,
                         ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop


@pytest.fixture(scope="module")
def relay() -> Iterator[dict[str, Any]]:
    limits = ListenerLimits(head_timeout_s=0.2, body_timeout_s=0.2)
    with StandIn(later_s=3 * limits.body_timeout_s) as instance:
        routes = RouteTable()
        live = Endpoint("web-1", "127.0.0.1", instance.port)
        routes.set(Route("web", TOKEN, (live,), "", keepalive_s=5, internal_key=KEY))
        routes.set_entries({"web": Entry("web", TOKEN, (("web", 100),))})
        gateway = Gateway(routes, "unused")
        eas_http = EasHttp(gateway)
        app = Starlette(routes=eas_http.routes(), lifespan=gateway_lifespan(gateway))
        with Served(PredictFastPath(app, eas_http.predict), limits) as served:
            yield {"ws": served.url.replace("http://", "ws://"), "gateway": gateway, "instance": instance,
                   "routes": routes, "live": live}


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(gateway.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_frames_are_relayed_both_ways_with_the_token(relay: dict[str, Any]) -> None:
    gateway, instance = relay["gateway"], relay["instance"]
    sessions = metric(gateway, "eas_websocket_sessions_total", service="web", code="101")
    frames_in = metric(gateway, "eas_websocket_frames_total", service="web", direction="in")
    url = f"{relay['ws']}/api/predict/web/ui/socket?session=7"
    with connect(url, additional_headers={"Authorization": TOKEN}, subprotocols=["chat.v1"],  # type: ignore[list-item]
                 proxy=None, open_timeout=WAIT_S) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("hello")
        assert ws.recv(timeout=WAIT_S) == "echo:hello"
        ws.send(b"\x00\xffbytes")
        assert ws.recv(timeout=WAIT_S) == b"echo:\x00\xffbytes"
        # A message the instance sends well past the gateway's body timeout still arrives:
        # an upgraded connection is the WebSocket's, no HTTP timer may close it.
        ws.send("later")
        assert ws.recv(timeout=WAIT_S) == "late hello"
        assert metric(gateway, "eas_websocket_open", service="web") == 1
        ws.close(4000, "done here")
    wait_until(lambda: ("closed", 4000, "done here") in instance.events, "the client's close at the instance")
    assert ("open", "/api/predict/web/ui/socket?session=7", "chat.v1") in instance.events
    wait_until(lambda: metric(gateway, "eas_websocket_open", service="web") == 0, "the session to end")
    assert metric(gateway, "eas_websocket_sessions_total", service="web", code="101") == sessions + 1
    assert metric(gateway, "eas_websocket_frames_total", service="web", direction="in") == frames_in + 3


def test_the_upgrade_is_refused_without_the_token(relay: dict[str, Any]) -> None:
    gateway = relay["gateway"]
    for headers, status in (({}, 401), ({"Authorization": "wrong-token-99"}, 401)):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{relay['ws']}/api/predict/web", additional_headers=headers, proxy=None, open_timeout=WAIT_S)
        assert refused.value.response.status_code == status
    with pytest.raises(InvalidStatus) as unknown:
        connect(f"{relay['ws']}/api/predict/nothing", additional_headers={"Authorization": TOKEN}, proxy=None,
                open_timeout=WAIT_S)
    assert unknown.value.response.status_code == 404
    assert metric(gateway, "eas_websocket_sessions_total", service="web", code="401") >= 2
    assert not any(event[0] == "open" and event[1] == "/api/predict/web" for event in relay["instance"].events)


def test_a_close_from_the_instance_reaches_the_client_with_its_code(relay: dict[str, Any]) -> None:
    with connect(f"{relay['ws']}/api/predict/web", additional_headers={"Authorization": TOKEN}, proxy=None,
                 open_timeout=WAIT_S) as ws:
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT_S)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye from the instance")  # type: ignore[union-attr]


def test_an_instance_that_dies_closes_the_client_with_1011(relay: dict[str, Any]) -> None:
    with connect(f"{relay['ws']}/api/predict/web", additional_headers={"Authorization": TOKEN}, proxy=None,
                 open_timeout=WAIT_S) as ws:
        ws.send("die")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT_S)
    assert closed.value.rcvd.code == 1011  # type: ignore[union-attr]


def test_an_instance_that_refuses_the_connection_is_skipped_and_taken_out(relay: dict[str, Any]) -> None:
    routes, live = relay["routes"], relay["live"]
    dead = Endpoint("web-dead", "127.0.0.1", free_port())
    routes.set(Route("web", TOKEN, (dead, live, dead), "", keepalive_s=5, internal_key=KEY))
    try:
        for _ in range(2):
            with connect(f"{relay['ws']}/api/predict/web", additional_headers={"Authorization": TOKEN}, proxy=None,
                         open_timeout=WAIT_S) as ws:
                ws.send("x")
                assert ws.recv(timeout=WAIT_S) == "echo:x"
        assert routes.get("web").endpoints == (live,)
        assert [d.endpoint for d in routes.down()] == [dead]
    finally:
        routes.set(Route("web", TOKEN, (live,), "", keepalive_s=5, internal_key=KEY))


def test_close_codes_that_cannot_be_sent_are_replaced() -> None:
    assert [sendable(code, 1000) for code in (None, 1005, 1006, 1015, 999, 2000, 1001, 4001)] == \
        [1000, 1000, 1000, 1000, 1000, 1000, 1001, 4001]
