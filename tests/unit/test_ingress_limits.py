"""What an outsider can make a listener hold: bodies are counted as they stream (413 at
the limit, the connection closed), credentials are checked before a body is read, and
a connection's head, body pauses and count are bounded below the application.

Real servers on 127.0.0.1: a gateway (uvicorn with eas-server's listener limits) in
front of a real instance server (user code echo), the management API of the real
app, and bare listeners with short limits; clients speak HTTP by hand
(tests/support/rawhttp.py) because no library sends what an attacker sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from eas.gateway.core import Gateway
from eas.gateway.grpc_server import GrpcGateway
from eas.gateway.http import EasHttp
from eas.gateway.oip_http import OipHttp
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.instance.runtime import ServiceRuntime
from eas.protocols import auth, grpc_messages
from eas.protocols.http import ListenerLimits, PredictFastPath, read_body, uvicorn_config
from eas.server import build_admin_app, build_app, gateway_lifespan
from tests.support import rawhttp
from tests.support.platform import basic_auth, build_platform

TOKEN = "ingress-token-1234567890"
KEY = "internal-key-for-tests"
LIMIT = 1024 * 1024  # the gateway's and the instance's body limit here
ECHO = """
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return b"%d" % len(data), 200
"""
#: Short bounds so each timing test takes about a second.
SHORT = ListenerLimits(concurrency=100, keep_alive_s=5, head_timeout_s=0.5, body_timeout_s=0.5,
                       max_head_bytes=16 * 1024)


@contextlib.contextmanager
def listening(app: Any, limits: ListenerLimits, lifespan: str = "auto") -> Iterator[tuple[int, uvicorn.Server]]:
    """`app` served on 127.0.0.1 within `limits` (as eas-server serves), on its own thread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, limits, log_level="warning", access_log=False, lifespan=lifespan,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    server.thread = thread  # type: ignore[attr-defined]  # the thread of its event loop
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    code = tmp_path_factory.mktemp("code")
    (code / "app.py").write_text(ECHO)
    runtime = ServiceRuntime({"name": "echo", "processor_type": "python", "processor_path": str(code),
                              "metadata": {"instance": 1}}, str(tmp_path_factory.mktemp("cache")))
    instance = InstanceServer(InstanceApp(runtime, "echo-1", Credentials(TOKEN, KEY), max_body_bytes=LIMIT),
                              "127.0.0.1")
    instance.start()
    routes = RouteTable()
    routes.set(Route("echo", TOKEN, (Endpoint("echo-1", instance.host, instance.port),), "", keepalive_s=5,
                     internal_key=KEY))
    routes.set_entries({"echo": Entry("echo", TOKEN, (("echo", 100),))})
    gateway = Gateway(routes, KEY, max_body_bytes=LIMIT)
    app = Starlette(routes=[*EasHttp(gateway).routes(), *OipHttp(gateway).routes()],
                    lifespan=gateway_lifespan(gateway))
    with listening(PredictFastPath(app, EasHttp(gateway).predict), ListenerLimits()) as (port, server):
        yield {"port": port, "instance": instance, "gateway": gateway, "server": server}
    instance.stop()
    runtime.close()


def _predict_head(token: str | None = TOKEN, chunked: bool = True, length: int | None = None,
                  path: str = "/api/predict/echo", **extra: str) -> bytes:
    headers = dict(extra)
    if token is not None:
        headers["Authorization"] = token
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    if length is not None:
        headers["Content-Length"] = str(length)
    return rawhttp.head("POST", path, headers)


# -- bodies: counted as they stream ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["gateway", "instance"])
def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(stack: dict[str, Any], where: str) -> None:
    """Before: the whole body was buffered before any check, so a chunked body without
    end never got an answer (and grew the server without bound)."""
    port = stack["port"] if where == "gateway" else stack["instance"].port
    with rawhttp.connect(port) as sock:
        answer = rawhttp.stream_until_answer(sock, _predict_head(), max_bytes=64 * LIMIT, timeout=20)
    assert answer is not None, "no answer: the body was being buffered"
    assert answer.status == 413 and b"over 1048576 bytes" in answer.body, answer
    assert answer.headers["connection"] == "close" and answer.closed
    # The server read up to the limit, then stopped: what was sent beyond sits in buffers.
    assert answer.sent < 24 * LIMIT, answer.sent


@pytest.mark.parametrize("where", ["gateway", "instance"])
def test_a_huge_content_length_is_refused_unread(stack: dict[str, Any], where: str) -> None:
    port = stack["port"] if where == "gateway" else stack["instance"].port
    with rawhttp.connect(port) as sock:
        sock.sendall(_predict_head(chunked=False, length=10**15))
        answer = rawhttp.read_answer(sock, 5)
    assert answer is not None and answer.status == 413 and answer.closed


@pytest.mark.parametrize("where", ["gateway", "instance"])
@pytest.mark.parametrize("kind", ["raw", "signed", "none"])
def test_a_caller_without_the_token_is_refused_before_its_body_is_read(stack: dict[str, Any], where: str,
                                                                      kind: str) -> None:
    """Half a MiB announced, not a byte sent: the answer comes from the head alone, and
    the connection closes (its body is never read). Before: the server waited for the body."""
    port = stack["port"] if where == "gateway" else stack["instance"].port
    headers: dict[str, str] = {}
    if kind == "raw":
        headers["Authorization"] = "not-the-token"
    elif kind == "signed":
        headers = auth.sign_headers("not-the-token", "/api/predict/echo", b"y" * (LIMIT // 2))
    with rawhttp.connect(port) as sock:
        sock.sendall(rawhttp.head("POST", "/api/predict/echo", {**headers, "Content-Length": str(LIMIT // 2)}))
        answer = rawhttp.read_answer(sock, 5)
    assert answer is not None, "no answer before the body: it was waited for"
    assert answer.status == 401 and answer.closed, answer


def test_a_signed_large_body_is_hashed_off_the_event_loop(stack: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = auth.content_md5

    def spy(body: bytes) -> str:
        threads.append(threading.get_ident())
        return real(body)

    monkeypatch.setattr(auth, "content_md5", spy)
    body = b"z" * (auth.MD5_THREAD_BYTES + 1)
    signed = auth.sign_headers(TOKEN, "/api/predict/echo", body)
    threads.clear()  # sign_headers hashed here, on the test's thread
    resp = httpx.post(f"http://127.0.0.1:{stack['port']}/api/predict/echo", content=body, headers=signed, timeout=10)
    assert resp.status_code == 200 and resp.text == str(len(body))
    loop_thread = stack["server"].thread
    assert threads and threads[0] not in (loop_thread.ident, threading.get_ident()), "hashed on the event loop"
    # A small body is hashed inline (a thread hop would cost more than the hash).
    threads.clear()
    small = auth.sign_headers(TOKEN, "/api/predict/echo", b"small")
    threads.clear()
    assert httpx.post(f"http://127.0.0.1:{stack['port']}/api/predict/echo", content=b"small", headers=small).text == "5"
    assert threads == [loop_thread.ident]
    # Tampered in transit (signature fine, body not the signed one): 401, read and hashed.
    resp = httpx.post(f"http://127.0.0.1:{stack['port']}/api/predict/echo", content=body[:-1] + b"!",
                      headers=signed, timeout=10)
    assert resp.status_code == 401 and "Content-MD5 does not match" in resp.json()["message"]


def test_bodies_within_the_limit_still_pass(stack: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{stack['port']}/api/predict/echo"

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b"c" * 1000

    assert httpx.post(url, content=chunks(), headers={"Authorization": TOKEN}).text == "16000"
    assert httpx.post(url, content=b"x" * LIMIT, headers={"Authorization": TOKEN}).text == str(LIMIT)
    direct = f"http://127.0.0.1:{stack['instance'].port}/api/predict/echo"
    assert httpx.post(direct, content=chunks(), headers={"Authorization": TOKEN}).text == "16000"


def test_the_management_api_counts_its_body_too(tmp_path: Path) -> None:
    harness = build_platform(tmp_path, serve=True)
    try:
        port = int(harness.url.rsplit(":", 1)[1])
        with rawhttp.connect(port) as sock:
            answer = rawhttp.stream_until_answer(sock, rawhttp.head("POST", "/api/v2/services", {
                **basic_auth(), "Transfer-Encoding": "chunked"}), max_bytes=64 << 20, timeout=20)
        assert answer is not None, "no answer: the management API buffered the body"
        assert answer.status == 413 and b"RequestTooLarge" in answer.body and answer.closed
        assert answer.sent < 24 << 20
        # Without credentials: 401 from the head, the announced body never read.
        with rawhttp.connect(port) as sock:
            sock.sendall(rawhttp.head("POST", "/api/v2/services", {"Content-Length": str(512 * 1024)}))
            answer = rawhttp.read_answer(sock, 5)
        assert answer is not None and answer.status == 401 and answer.closed
    finally:
        harness.close()


def test_read_body_reports_a_client_that_leaves() -> None:
    from starlette.requests import Request

    from eas.protocols.http import ClientGone

    messages = iter([{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    request = Request({"type": "http", "method": "POST", "headers": [], "path": "/"}, receive)
    with pytest.raises(ClientGone):
        asyncio.run(read_body(request, 100))

    parts = iter([{"type": "http.request", "body": b"ab", "more_body": True},
                  {"type": "http.request", "body": b"cd", "more_body": False}])

    async def receive_all() -> dict[str, Any]:
        return next(parts)

    async def read_twice() -> tuple[bytes | None, bytes]:
        request = Request({"type": "http", "method": "POST", "headers": [], "path": "/"}, receive_all)
        return await read_body(request, 100), await request.body()  # Starlette's body() still answers

    assert asyncio.run(read_twice()) == (b"abcd", b"abcd")


# -- connections: heads, pauses, counts -------------------------------------------------------------


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    from starlette.requests import Request

    body = await read_body(Request(scope, receive), 1 << 20)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok" if body is not None else b"no"})


def test_a_slow_head_is_cut_off() -> None:
    """A slowloris client: before, uvicorn held its connection as long as it dribbled."""
    with listening(_ok_app, SHORT, "off") as (port, _), rawhttp.connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        closed = False
        while time.monotonic() - started < 3 and not closed:
            try:
                sock.sendall(b"X")
            except OSError:
                break
            closed, got = rawhttp.closed_within(sock, 0.05)
        closed, got = closed or rawhttp.closed_within(sock, 1)[0], got
        elapsed = time.monotonic() - started
    assert closed and 0.4 <= elapsed < 2.5, elapsed
    assert got.startswith(b"HTTP/1.1 408 ") and b"connection: close" in got, got


def test_a_silent_connection_is_closed_quietly() -> None:
    with listening(_ok_app, SHORT, "off") as (port, _), rawhttp.connect(port) as sock:
        started = time.monotonic()
        closed, got = rawhttp.closed_within(sock, 3)
    assert closed and got == b"" and time.monotonic() - started < 2.5


def test_a_head_that_never_ends_is_431() -> None:
    """Before: uvicorn's parser kept the growing header in memory (hundreds of MB)."""
    with listening(_ok_app, SHORT, "off") as (port, _), rawhttp.connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 4096)
        except OSError:
            pass
        closed, got = rawhttp.closed_within(sock, 3)
    assert closed and got.startswith(b"HTTP/1.1 431 "), got[:80]


def test_a_stalled_body_is_408() -> None:
    with listening(_ok_app, SHORT, "off") as (port, _), rawhttp.connect(port) as sock:
        started = time.monotonic()
        sock.sendall(rawhttp.head("POST", "/", {"Content-Length": "100"}) + b"0123456789")
        closed, got = rawhttp.closed_within(sock, 3)
    assert closed and got.startswith(b"HTTP/1.1 408 ") and b"body stalled" in got, got
    assert time.monotonic() - started < 2.5


def test_the_next_head_on_a_kept_alive_connection_is_timed_too() -> None:
    with listening(_ok_app, SHORT, "off") as (port, _), rawhttp.connect(port) as sock:
        sock.sendall(rawhttp.head("GET", "/", {}))
        answer = rawhttp.read_answer(sock, 5)
        assert answer is not None and answer.status == 200 and not answer.closed
        sock.sendall(b"G")  # the first byte of the next request, then nothing
        closed, got = rawhttp.closed_within(sock, 3)
    assert closed and got.startswith(b"HTTP/1.1 408 "), got


def test_connections_are_limited_per_listener_and_slow_heads_are_let_go() -> None:
    """At the limit a new request gets uvicorn's 503; the slow heads that fill it are
    closed at the head timeout, so the listener serves again without anyone's help."""
    limits = ListenerLimits(concurrency=5, head_timeout_s=0.8, body_timeout_s=1, keep_alive_s=5)
    with listening(_ok_app, limits, "off") as (port, _):
        slow = [rawhttp.connect(port) for _ in range(5)]
        try:
            for sock in slow:
                sock.sendall(b"GET / HTTP/1.1\r\n")
            with rawhttp.connect(port) as sock:
                sock.sendall(rawhttp.head("GET", "/", {}))
                answer = rawhttp.read_answer(sock, 5)
            assert answer is not None and answer.status == 503 and answer.closed
            assert all(rawhttp.closed_within(sock, 3)[0] for sock in slow), "slow heads were never let go"
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        finally:
            for sock in slow:
                sock.close()


def test_many_slow_heads_do_not_stop_a_normal_request() -> None:
    with listening(_ok_app, ListenerLimits(head_timeout_s=5), "off") as (port, _):
        slow = [rawhttp.connect(port) for _ in range(200)]
        try:
            for sock in slow:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            resp = httpx.post(f"http://127.0.0.1:{port}/", content=b"hi", timeout=5)
            assert resp.status_code == 200 and time.monotonic() - started < 2
        finally:
            for sock in slow:
                sock.close()


# -- gRPC: the message size is bounded as it arrives -------------------------------------------------


def test_grpc_refuses_a_message_over_the_limit_and_keeps_serving() -> None:
    async def go() -> None:
        routes = RouteTable()
        gateway = Gateway(routes, KEY, max_body_bytes=64 * 1024)
        server = GrpcGateway(gateway, "127.0.0.1", 0, max_concurrent_rpcs=8)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                    ("grpc.max_send_message_length", 64 << 20)]) as channel:
                infer = channel.unary_unary(f"/{grpc_messages.INFERENCE_SERVICE}/ModelInfer")
                big = grpc_messages.ModelInferRequest(model_name="nope", raw_input_contents=[b"x" * (8 << 20)])
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await infer(big.SerializeToString(), timeout=10)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                small = grpc_messages.ModelInferRequest(model_name="nope")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await infer(small.SerializeToString(), timeout=10)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND  # still serving
        finally:
            await server.stop(0)
            await gateway.close()

    asyncio.run(go())


# -- the management API on a listener of its own ------------------------------------------------------


def test_the_management_api_apart_is_not_on_the_predict_port(tmp_path: Path) -> None:
    harness = build_platform(tmp_path)
    try:
        api, gateway = harness.platform.api, harness.platform.gateway
        predict = TestClient(build_app(api, gateway, admin_apart=True))
        admin = TestClient(build_admin_app(api))
        refused = predict.get("/api/v2/services", headers=basic_auth())
        assert refused.status_code == 404 and refused.json()["Code"] == "NotFound"
        assert predict.post("/api/v2/services", json={}, headers=basic_auth()).status_code == 404
        assert predict.get("/healthz").status_code == 200
        assert admin.get("/api/v2/services", headers=basic_auth()).status_code == 200
        assert admin.get("/api/v2/services").status_code == 401
        assert admin.post("/api/predict/echo", content=b"{}").status_code == 404
        # Without --admin-port, one port serves both (today's behaviour).
        both = TestClient(build_app(api, gateway))
        assert both.get("/api/v2/services", headers=basic_auth()).status_code == 200
    finally:
        harness.close()
