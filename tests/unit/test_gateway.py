"""Gateway status paths over real HTTP (Starlette's test client), without Ray.

The instance handle is a stand-in object with Serve's `remote()`/`cancel()` shape,
because a Ray Serve replica cannot be started in a unit test; the e2e tests drive the
same gateway against real replicas.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.routing import Route as HttpRoute
from starlette.testclient import TestClient

from eas.auth import sign_headers
from eas.gateway import Gateway
from eas.routes import Route, RouteTable

TOKEN = "a-service-token-123"


class StandInResponse:
    def __init__(self, coro) -> None:  # noqa: ANN001
        self.coro = coro
        self.cancelled = False

    def __await__(self):  # noqa: ANN204
        return self.coro.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class StandInHandle:
    """Echoes the request back as the processor would, optionally slowly."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list = []
        self.responses: list[StandInResponse] = []

    def remote(self, request):  # noqa: ANN001, ANN201
        self.calls.append(request)

        async def run():  # noqa: ANN202
            await asyncio.sleep(self.delay)
            return 200, json.dumps({"echo": request.body.decode(), "sub": request.sub_path}).encode(), "application/json"

        resp = StandInResponse(run())
        self.responses.append(resp)
        return resp


@pytest.fixture
def setup():
    routes = RouteTable()
    gateway = Gateway(routes, max_body_bytes=1024)
    app = Starlette(routes=[
        HttpRoute("/api/predict/{service}", gateway.predict, methods=["POST"]),
        HttpRoute("/api/predict/{service}/{sub_path:path}", gateway.predict, methods=["POST"]),
    ])
    with TestClient(app) as client:
        yield routes, client


def test_status_paths(setup):
    routes, client = setup
    fast = StandInHandle()
    routes.set(Route("svc", TOKEN, fast, "", keepalive_s=0.5))
    routes.set(Route("down", TOKEN, None, "service is stopped", keepalive_s=0.5))
    routes.set(Route("slow", TOKEN, StandInHandle(delay=2), "", keepalive_s=0.2))

    ok = client.post("/api/predict/svc/v1/run", content=b"hi", headers={"Authorization": TOKEN})
    assert ok.status_code == 200 and ok.json() == {"echo": "hi", "sub": "v1/run"}
    assert len(ok.headers["x-request-id"]) == 32
    assert fast.calls[0].request_id == ok.headers["x-request-id"]

    signed = sign_headers(TOKEN, "/api/predict/svc", b"body")
    assert client.post("/api/predict/svc", content=b"body", headers=signed).status_code == 200

    cases = [
        (client.post("/api/predict/nope", content=b"x", headers={"Authorization": TOKEN}), 404, "does not exist"),
        (client.post("/api/predict/svc", content=b"x"), 401, "missing"),
        (client.post("/api/predict/svc", content=b"x", headers={"Authorization": "bad"}), 401, "wrong token"),
        (client.post("/api/predict/svc", content=b"x" * 2048, headers={"Authorization": TOKEN}), 413, "over"),
        (client.post("/api/predict/down", content=b"x", headers={"Authorization": TOKEN}), 503, "stopped"),
        (client.post("/api/predict/slow", content=b"x", headers={"Authorization": TOKEN}), 408, "keepalive"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["code"] == status and words in body["message"]
        assert body["request_id"] == resp.headers["x-request-id"]
    assert len(fast.calls) == 2, "rejected requests never reach an instance"
