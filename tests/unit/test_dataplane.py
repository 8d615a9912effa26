"""The data plane without Ray: gateway -> instance HTTP server -> runtime -> user processor.

Everything here is real (the instance server listens on 127.0.0.1, the processor is
user code loaded from a file); only Ray Serve, which places instances, is left out.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from eas.protocols.auth import sign_headers
from eas.gateway.core import Gateway
from eas.gateway.http import EasHttp
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.instance.runtime import ServiceRuntime
from eas.server import gateway_lifespan

TOKEN = "a-service-token-123"
CODE = """
import json, time
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        req = json.loads(data)
        time.sleep(req.get("sleep", 0))
        return json.dumps({"echo": req}), 200
"""


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    code = tmp_path_factory.mktemp("code")
    (code / "app.py").write_text(CODE)
    spec = {"name": "echo", "processor_type": "python", "processor_path": str(code),
            "metadata": {"instance": 1, "rpc": {"keepalive": 300}}}
    runtime = ServiceRuntime(spec, str(tmp_path_factory.mktemp("cache")))
    server = InstanceServer(InstanceApp(runtime, "echo-abc", Credentials(TOKEN, "internal")), "127.0.0.1")
    server.start()
    yield server
    server.stop()
    runtime.close()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway(instance):
    routes = RouteTable()
    gw = Gateway(routes, internal_key="internal", max_body_bytes=1024)
    app = Starlette(routes=EasHttp(gw).routes(), lifespan=gateway_lifespan(gw))
    live = Endpoint("echo-abc", instance.host, instance.port)
    dead = Endpoint("echo-gone", "127.0.0.1", _dead_port())
    routes.set(Route("echo", TOKEN, (dead, live), "", keepalive_s=0.3))
    routes.set(Route("down", TOKEN, (), "service is stopped", keepalive_s=0.3))
    routes.set(Route("limited", TOKEN, (), "no instance", keepalive_s=0.3, rate_limit=1))
    routes.set_entries({name: Entry(name, TOKEN, ((name, 100),)) for name in ("echo", "down", "limited")})
    with TestClient(app) as client:
        client.routes = routes  # tests change routes while the gateway runs
        yield client


def test_gateway_status_paths(gateway):
    auth = {"Authorization": TOKEN}
    for _ in range(2):  # round robin starts on the dead instance once: it must fall through
        ok = gateway.post("/api/predict/echo/v1", content=b'{"x": 1}', headers=auth)
        assert ok.status_code == 200 and ok.json() == {"echo": {"x": 1}}
        assert ok.headers["x-eas-instance"] == "echo-abc" and len(ok.headers["x-request-id"]) == 32

    signed = sign_headers(TOKEN, "/api/predict/echo", b'{"y": 2}')
    assert gateway.post("/api/predict/echo", content=b'{"y": 2}', headers=signed).json() == {"echo": {"y": 2}}

    cases = [
        (gateway.post("/api/predict/nope", content=b"{}", headers=auth), 404, "does not exist"),
        (gateway.post("/api/predict/echo", content=b"{}"), 401, "missing"),
        (gateway.post("/api/predict/echo", content=b"{}", headers={"Authorization": "bad"}), 401, "wrong token"),
        (gateway.post("/api/predict/echo", content=b"x" * 2048, headers=auth), 413, "over"),
        (gateway.post("/api/predict/down", content=b"{}", headers=auth), 503, "stopped"),
        (gateway.post("/api/predict/echo", content=b'{"sleep": 1}', headers=auth), 408, "keepalive"),
        (gateway.post("/api/predict/echo", content=b"not json", headers=auth), 400, "processor raised"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["code"] == status and words in body["message"], body
        assert body["request_id"] == resp.headers["x-request-id"]


def test_held_requests_are_bounded(gateway):
    import threading
    import time

    from eas.gateway.route_table import Route as R

    routes = gateway.routes
    up = routes.get("echo")
    routes.set(R("echo", TOKEN, (), "service is waking up", keepalive_s=0.3, hold_s=5, max_held=2))
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(gateway.post("/api/predict/echo", content=b"{}", headers={"Authorization": TOKEN}))

    held = [threading.Thread(target=call) for _ in range(2)]
    for t in held:
        t.start()
    deadline = time.monotonic() + 5
    while routes.waiting("echo") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    extra = gateway.post("/api/predict/echo", content=b"{}", headers={"Authorization": TOKEN})
    assert extra.status_code == 503 and "2 requests already wait" in extra.json()["message"], extra.text
    routes.set(up)  # an instance is ready: the held requests go through
    for t in held:
        t.join(10)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]


def test_rate_limit_answers_429_with_retry_after(gateway):
    auth = {"Authorization": TOKEN}
    codes = [gateway.post("/api/predict/limited", content=b"{}", headers=auth) for _ in range(3)]
    assert codes[0].status_code == 503, "the first request is admitted (and finds no instance)"
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    assert "rate limit" in limited[0].json()["message"]


def test_discovery_lists_instances(gateway, instance):
    items = gateway.get("/api/v1/servicediscovery/upstreams/echo").json()["endpoints"]["items"]
    assert {"ip": instance.host, "port": instance.port, "weight": 100} in items
    assert gateway.get("/api/v1/servicediscovery/upstreams/nope").status_code == 404


def test_instance_checks_the_token_itself(instance):
    url = f"http://{instance.host}:{instance.port}/api/predict/echo"
    assert httpx.post(url, content=b'{"a": 1}').status_code == 401
    assert httpx.post(url, content=b'{"a": 1}', headers={"X-Eas-Internal-Key": "guess"}).status_code == 401
    assert httpx.post(url, content=b'{"a": 1}', headers={"Authorization": TOKEN}).json() == {"echo": {"a": 1}}
    body = json.dumps({"b": 2}).encode()
    signed = sign_headers(TOKEN, "/api/predict/echo", body)
    assert httpx.post(url, content=body, headers=signed).status_code == 200
    wrong_service = httpx.post(url.replace("/echo", "/other"), content=body, headers={"Authorization": TOKEN})
    assert wrong_service.status_code == 404


def test_access_log_lines_carry_the_request_id(gateway, tmp_path):
    import logging

    from eas.server import enable_access_log

    path = tmp_path / "access.log"
    enable_access_log(str(path))
    try:
        resp = gateway.post("/api/predict/echo", content=b'{"z": 1}', headers={"Authorization": TOKEN})
        missing = gateway.post("/api/predict/nope", content=b"{}", headers={"Authorization": TOKEN})
    finally:
        access = logging.getLogger("eas.access")
        for handler in list(access.handlers):
            handler.close()
            access.removeHandler(handler)
        access.setLevel(logging.WARNING)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["request_id"] == resp.headers["x-request-id"] and lines[0]["status"] == 200
    assert lines[0]["service"] == "echo" and lines[0]["instance"] == "echo-abc"
    assert lines[1]["status"] == 404 and lines[1]["request_id"] == missing.headers["x-request-id"]
