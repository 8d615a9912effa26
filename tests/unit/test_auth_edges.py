"""Authentication at its edges: a Date that overflows, an instance without credentials,
the path a signature covers, names matched whole, and repeated 401s slowed down.

The gateway and an instance are real servers on 127.0.0.1 (uvicorn with eas-server's
listener limits, a user-code echo processor); the management API is the real app.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers

from eas.gateway.core import AuthFailures, Call, Gateway, client_address
from eas.gateway.http import EasHttp
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.instance.runtime import ServiceRuntime
from eas.protocols import auth
from eas.protocols.http import ListenerLimits, PredictFastPath, uvicorn_config
from eas.server import gateway_lifespan
from eas.spec import SpecError, parse
from tests.support import rawhttp
from tests.support.platform import Harness, api_fixture  # noqa: F401 - api_fixture registers the fixture
from tests.support.platform import api_error as error

TOKEN = "edges-token-1234567890"
KEY = "edges-internal-key"
ECHO = """
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return data, 200
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceRuntime]:
    code = tmp_path_factory.mktemp("code")
    (code / "app.py").write_text(ECHO)
    rt = ServiceRuntime({"name": "echo", "processor_type": "python", "processor_path": str(code),
                         "metadata": {"instance": 1}}, str(tmp_path_factory.mktemp("cache")))
    yield rt
    rt.close()


@contextlib.contextmanager
def gateway_in_front_of(instance: InstanceServer, failures: AuthFailures | None = None) -> Iterator[str]:
    routes = RouteTable()
    routes.set(Route("echo", TOKEN, (Endpoint("echo-1", instance.host, instance.port),), "", keepalive_s=5,
                     internal_key=KEY))
    routes.set_entries({"echo": Entry("echo", TOKEN, (("echo", 100),))})
    gateway = Gateway(routes, KEY, auth_failures=failures)
    app = Starlette(routes=EasHttp(gateway).routes(), lifespan=gateway_lifespan(gateway))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(PredictFastPath(app, EasHttp(gateway).predict), ListenerLimits(),
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def instance(runtime: ServiceRuntime) -> Iterator[InstanceServer]:
    server = InstanceServer(InstanceApp(runtime, "echo-1", Credentials(TOKEN, KEY)), "127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_url(instance: InstanceServer) -> Iterator[str]:
    with gateway_in_front_of(instance) as url:
        yield url


# -- Date -----------------------------------------------------------------------------------------------

OVERFLOWING_DATES = [
    "Mon, 01 Jan 99999 00:00:00 GMT",
    "Mon, 01 Jan 9999999999999999999999 00:00:00 GMT",
    "Mon, 99999999999999999999 Jan 2024 00:00:00 GMT",
    "Mon, 01 Jan 2024 99999999999999999999:00:00 GMT",
    "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
    "Mon, 01 Jan 0001 00:00:00 +2359",
]


@pytest.mark.parametrize("date", OVERFLOWING_DATES)
def test_an_overflowing_date_is_an_auth_error(date: str) -> None:
    headers = auth.sign_headers(TOKEN, "/api/predict/echo", b"x")
    headers["Date"] = date
    with pytest.raises(auth.AuthError, match="Date"):
        auth.check_service_auth(TOKEN, Headers(headers), "/api/predict/echo", b"x")


def test_an_overflowing_date_is_401_not_500(gateway_url: str, instance: InstanceServer) -> None:
    """Before: OverflowError escaped the Date parse, and the client got a 500."""
    for base in (gateway_url, f"http://{instance.host}:{instance.port}"):
        for date in OVERFLOWING_DATES[:3]:
            headers = {**auth.sign_headers(TOKEN, "/api/predict/echo", b"x"), "Date": date}
            resp = httpx.post(f"{base}/api/predict/echo", content=b"x", headers=headers)
            assert resp.status_code == 401 and "Date" in resp.json()["message"], (base, date, resp.text)


# -- an instance before its credentials -----------------------------------------------------------------


def test_an_instance_serves_nothing_until_its_credentials_are_set(runtime: ServiceRuntime) -> None:
    """Before: Credentials(token="", internal_key="") accepted an empty internal key header
    (and signatures keyed with the empty token) until Serve called reconfigure."""
    creds = Credentials()
    app = InstanceApp(runtime, "echo-2", creds)
    assert not app.from_gateway({"X-Eas-Internal-Key": ""})
    server = InstanceServer(app, "127.0.0.1")
    server.start()
    try:
        url = f"http://{server.host}:{server.port}/api/predict/echo"
        for headers in ({"X-Eas-Internal-Key": ""}, {"Authorization": ""},
                        auth.sign_headers("", "/api/predict/echo", b"hi"), {"Authorization": TOKEN}):
            resp = httpx.post(url, content=b"hi", headers=headers)
            assert resp.status_code == 503 and "credentials are not set yet" in resp.json()["message"], resp.text
        assert httpx.post(f"http://{server.host}:{server.port}/drain").status_code == 401
        creds.token, creds.internal_key = TOKEN, KEY  # what reconfigure does
        assert httpx.post(url, content=b"hi", headers={"X-Eas-Internal-Key": KEY}).content == b"hi"
        assert httpx.post(url, content=b"hi", headers={"X-Eas-Internal-Key": ""}).status_code == 401
        assert httpx.post(url, content=b"hi", headers={"Authorization": TOKEN}).content == b"hi"
    finally:
        server.stop()


def test_an_empty_secret_never_matches() -> None:
    for headers in ({"Authorization": ""}, {"Authorization": " "}, auth.sign_headers("", "/p", b"")):
        with pytest.raises(auth.AuthError):
            auth.check_service_auth("", Headers(headers), "/p", b"")


# -- the path a signature covers -------------------------------------------------------------------------


@pytest.mark.parametrize("sub_path", ["a%2Fb", "x%20y/z", "caf%C3%A9"])
def test_the_signed_path_is_the_raw_path_as_sent(gateway_url: str, instance: InstanceServer, sub_path: str) -> None:
    """The official SDKs sign the path string they send (eas-prediction: '/api/predict/%s'
    % service_name, sent as is by urllib3; the Java SDK likewise builds the URL from the
    string it signs). Before: the gateway checked the decoded path, so an encoded sub-path
    (or any escape) failed with 401 for a correctly signing client."""
    sent = f"/api/predict/echo/{sub_path}"
    for base in (gateway_url, f"http://{instance.host}:{instance.port}"):
        port = int(base.rsplit(":", 1)[1])
        with rawhttp.connect(port) as sock:
            body = b"signed"
            headers = auth.sign_headers(TOKEN, sent, body)
            sock.sendall(rawhttp.head("POST", sent, {**headers, "Content-Length": str(len(body))}) + body)
            answer = rawhttp.read_answer(sock, 5)
        assert answer is not None and answer.status == 200 and answer.body == body, (base, answer)
        # Signing the decoded path instead is refused: the signature binds the bytes sent.
        with rawhttp.connect(port) as sock:
            from urllib.parse import unquote

            headers = auth.sign_headers(TOKEN, unquote(sent), body)
            sock.sendall(rawhttp.head("POST", sent, {**headers, "Content-Length": str(len(body))}) + body)
            answer = rawhttp.read_answer(sock, 5)
        assert answer is not None and answer.status == 401, (base, answer)


def test_the_host_header_does_not_change_the_signed_path(gateway_url: str) -> None:
    body = b"h"
    headers = auth.sign_headers(TOKEN, "/api/predict/echo", body)
    for host in ("evil.example:1", "127.0.0.1/api/predict/other"):
        resp = httpx.post(f"{gateway_url}/api/predict/echo", content=body, headers={**headers, "Host": host})
        assert resp.status_code == 200, resp.text
    # An absolute-form request target: the path inside it is what counts.
    port = int(gateway_url.rsplit(":", 1)[1])
    with rawhttp.connect(port) as sock:
        sock.sendall(rawhttp.head("POST", "http://evil.example/api/predict/echo",
                                  {**headers, "Content-Length": "1"}) + body)
        answer = rawhttp.read_answer(sock, 5)
    assert answer is not None and answer.status == 200


def test_our_client_signs_what_it_sends(gateway_url: str) -> None:
    from eas.client.predict import PredictClient

    with PredictClient(gateway_url, "echo", TOKEN, signed=True) as client:
        assert client.predict(b"q", sub_path="a b/c%2Fd") == b"q"


# -- names matched whole -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["svc\n", "svc\r\n", "\nsvc", "svc ", "Svc"])
def test_a_service_name_is_matched_whole(name: str) -> None:
    """Before: NAME_RE ended in `$`, which also matches before a trailing newline."""
    with pytest.raises(SpecError):
        parse({"name": name, "processor": "sklearn", "metadata": {"instance": 1}})


def test_a_group_name_follows_the_same_rule(api: Harness) -> None:
    api.create({"name": "member", "processor": "sklearn", "metadata": {"instance": 1}})
    for name in ("grp\n", "grp\r\n", "Grp"):
        status, code, _ = error(api, "POST", "/api/v2/ext/groups", {"Name": name, "Members": [{"Service": "member"}]})
        assert (status, code) == (400, "InvalidParameter"), name
    assert api.ok("POST", "/api/v2/ext/groups", {"Name": "grp", "Members": [{"Service": "member"}]})


# -- repeated 401s ----------------------------------------------------------------------------------------


def test_repeated_401s_from_one_address_are_slowed_and_right_tokens_are_not(instance: InstanceServer) -> None:
    failures = AuthFailures(allowed=3, window_s=30, penalty_s=0.4, max_delayed=2)
    with gateway_in_front_of(instance, failures) as url, httpx.Client(base_url=url, timeout=10) as client:
        def timed(token: str) -> tuple[int, float, httpx.Response]:
            started = time.monotonic()
            resp = client.post("/api/predict/echo", content=b"x", headers={"Authorization": token})
            return resp.status_code, time.monotonic() - started, resp

        fast = [timed("wrong") for _ in range(3)]
        assert all(code == 401 and seconds < 0.3 for code, seconds, _ in fast), fast
        code, seconds, _ = timed("wrong")
        assert code == 401 and seconds >= 0.4, "the 4th failure in the window waits out the penalty"
        code, seconds, resp = timed(TOKEN)
        assert code == 200 and seconds < 0.3 and resp.content == b"x", "right credentials are never slowed"

        # Penalties wait at most `max_delayed` at once: beyond, 429 with Retry-After at once.
        async def burst() -> list[tuple[int, float, str | None]]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as aclient:
                async def one() -> tuple[int, float, str | None]:
                    started = time.monotonic()
                    r = await aclient.post("/api/predict/echo", content=b"x", headers={"Authorization": "wrong"})
                    return r.status_code, time.monotonic() - started, r.headers.get("retry-after")
                return await asyncio.gather(*(one() for _ in range(6)))

        answers = asyncio.run(burst())
        assert sorted(code for code, _, _ in answers) == [401, 401, 429, 429, 429, 429], answers
        assert all(seconds < 0.3 and int(retry) >= 1 for code, seconds, retry in answers if code == 429), answers


def test_the_penalty_is_bounded_and_per_address() -> None:
    now = [0.0]
    failures = AuthFailures(allowed=2, window_s=10, penalty_s=1, max_addresses=5, clock=lambda: now[0])
    assert [failures.failed("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 1]
    assert failures.failed("10.0.0.2") == 0.0, "another address has its own count"
    for i in range(20):
        failures.failed(f"10.0.1.{i}")
    assert len(failures) == 5, "at most max_addresses are remembered"
    now[0] = 11.0
    assert failures.failed("10.0.1.19") == 0.0, "a new window starts clean"
    # gRPC peers carry a port (and a scheme): one address whatever the port.
    assert client_address("ipv4:10.1.2.3:5555") == client_address("ipv4:10.1.2.3:6666") == "10.1.2.3"
    assert client_address("ipv6:[::1]:5555") == client_address("ipv6:%5B::1%5D:7") == "::1"
    assert client_address(None) == "-"


def test_the_gateway_counts_grpc_and_ready_refusals_too(instance: InstanceServer) -> None:
    routes = RouteTable()
    routes.set(Route("echo", TOKEN, (Endpoint("echo-1", instance.host, instance.port),), "", keepalive_s=5,
                     internal_key=KEY))
    routes.set_entries({"echo": Entry("echo", TOKEN, (("echo", 100),))})
    gateway = Gateway(routes, KEY, auth_failures=AuthFailures(allowed=1, penalty_s=0.2))

    async def go() -> None:
        call = Call("echo", Headers({"authorization": "wrong"}), "/api/predict/echo", body=b"x",
                    client="ipv4:10.9.9.9:1234")
        assert (await gateway.handle(call)).status == 401
        started = time.monotonic()
        assert (await gateway.ready("echo", Headers({"authorization": "wrong"}), "/v2/models/echo/ready",
                                    "ipv4:10.9.9.9:999"))[0] == 401
        assert time.monotonic() - started >= 0.2
        await gateway.close()

    asyncio.run(go())


def test_a_signed_query_string_is_checked_as_sent(gateway_url: str, instance: InstanceServer) -> None:
    """The Java SDK 2.0.x signs `/api/predict/{svc}?{query}` (CallConfig.setQueryParams); the
    other SDKs sign the path alone. Both pass, through the gateway and on an instance, and a
    query changed after signing is refused."""
    target = "/api/predict/echo?uid=1168XXXX&note=a%20b"
    body = b"queried"
    for base in (gateway_url, f"http://{instance.host}:{instance.port}"):
        port = int(base.rsplit(":", 1)[1])
        for signed, sent, status in ((target, target, 200), ("/api/predict/echo", target, 200),
                                     (target, target.replace("1168", "1169"), 401)):
            with rawhttp.connect(port) as sock:
                headers = auth.sign_headers(TOKEN, signed, body)
                sock.sendall(rawhttp.head("POST", sent, {**headers, "Content-Length": str(len(body))}) + body)
                answer = rawhttp.read_answer(sock, 5)
            assert answer is not None and answer.status == status, (base, signed, sent, answer)
