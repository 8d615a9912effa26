"""Hostile clients against the real eas-server (issue 13): nothing an outsider sends may
take the platform down.

One server for the module, started with its management API apart (`--admin-port`) and
a 2 s header timeout (so the slow-header case takes seconds, not the default 10), with
one sklearn service whose instance is also called directly (DIRECT discovery). Each
case checks the status, the time to answer (generous bounds: CI has 2 cores) and,
where a body streams, the server's resident memory. Clients speak HTTP by hand
(tests/support/rawhttp.py): no library sends what an attacker sends.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from eas.client import config
from eas.protocols.auth import sign_headers
from eas.protocols.wire import MAX_BODY_BYTES
from tests.e2e.harness import EasServer, free_port, sklearn_service, write_json
from tests.support import rawhttp

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 2
#: How much the server's resident memory may grow while a 1 GiB body streams at it: the
#: body limit (64 MiB, buffered as a legitimate body would be) and room for the rest.
RSS_GROWTH_BOUND = MAX_BODY_BYTES + 36 * 1024 * 1024
GIB = 1 << 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EasServer]:
    admin_port = free_port()
    srv = EasServer(tmp_path_factory.mktemp("eas-data"), extra_args=(
        "--admin-port", str(admin_port), "--header-timeout", str(HEADER_TIMEOUT_S)))
    srv.admin_url = f"http://127.0.0.1:{admin_port}"  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def iris_svc(server: EasServer, iris: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = write_json(tmp_path_factory.mktemp("spec") / "iris.json", sklearn_service("iris", iris["path"]))
    server.eascmd("create", str(spec))  # eascmd.conf points at the admin listener: this is its first test
    token = server.desc("iris")["AccessToken"]
    body = json.dumps({"instances": iris["rows"]}).encode()
    deadline = time.monotonic() + 30
    while True:
        items = httpx.get(f"{server.url}/api/v1/servicediscovery/upstreams/iris").json()["endpoints"]["items"]
        if items:
            break
        assert time.monotonic() < deadline, "the instance was never listed for DIRECT callers"
        time.sleep(0.2)
    return {"token": token, "body": body, "expected": iris["expected"],
            "instance": (items[0]["ip"], int(items[0]["port"]))}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (the Ray worker hosting an instance)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """Samples a process's resident memory on a thread while a case runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.before, self.peak = pid, _rss(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, _rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _stream_gib(port: int, token: str) -> tuple[rawhttp.Answer | None, PeakRss | None, float]:
    pid = _listener_pid(port)
    head = rawhttp.head("POST", "/api/predict/iris", {"Authorization": token, "Transfer-Encoding": "chunked"})
    started = time.monotonic()
    with rawhttp.connect(port) as sock, (PeakRss(pid) if pid else _null()) as memory:
        # 1 GiB announced by nothing but a chunked stream, sent in 64 KiB pieces with a pause.
        answer = rawhttp.stream_until_answer(sock, head, max_bytes=GIB, timeout=40, pause_s=0.0005)
    return answer, memory, time.monotonic() - started


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- the management API apart ---------------------------------------------------------------------------


def test_the_management_api_listens_apart(server: EasServer, iris_svc: dict[str, Any]) -> None:
    cfg = config.read(server.conf)
    assert cfg.endpoint == server.admin_url, "eascmd.conf must point at the admin listener"  # type: ignore[attr-defined]
    auth = (cfg.access_id, cfg.access_key)
    assert httpx.get(f"{server.admin_url}/api/v2/services", auth=auth).status_code == 200  # type: ignore[attr-defined]
    on_predict_port = httpx.get(f"{server.url}/api/v2/services", auth=auth)
    assert on_predict_port.status_code == 404, "the predict port must not serve the management API"
    assert httpx.post(f"{server.url}/api/v2/services", auth=auth, json={}).status_code == 404
    # Predict traffic stays on the predict port, and only there.
    ok = httpx.post(f"{server.url}/api/predict/iris", content=iris_svc["body"],
                    headers={"Authorization": iris_svc["token"]})
    assert ok.status_code == 200 and ok.json()["predictions"] == iris_svc["expected"]
    assert httpx.post(f"{server.admin_url}/api/predict/iris", content=iris_svc["body"],  # type: ignore[attr-defined]
                      headers={"Authorization": iris_svc["token"]}).status_code == 404


# -- bodies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["gateway", "instance"])
def test_a_chunked_gib_is_refused_at_the_limit_with_bounded_memory(server: EasServer, iris_svc: dict[str, Any],
                                                                    where: str) -> None:
    port = _port(server.url) if where == "gateway" else iris_svc["instance"][1]
    answer, memory, seconds = _stream_gib(port, iris_svc["token"])
    assert answer is not None, "no answer while 1 GiB streamed: the body was being buffered"
    assert answer.status == 413 and answer.closed, answer
    assert answer.sent < 256 * 1024 * 1024, f"{answer.sent} bytes went out before the 413"
    assert seconds < 20, seconds
    if where == "gateway":  # the eas-server process itself
        assert memory is not None and memory.pid == server.proc.pid  # type: ignore[union-attr]
    if memory is not None:
        assert memory.growth < RSS_GROWTH_BOUND, f"RSS grew by {memory.growth / 2**20:.0f} MiB"
    # The server is fine afterwards.
    ok = httpx.post(f"{server.url}/api/predict/iris", content=iris_svc["body"],
                    headers={"Authorization": iris_svc["token"]}, timeout=10)
    assert ok.status_code == 200


@pytest.mark.parametrize("where", ["gateway", "instance"])
def test_a_huge_content_length_is_refused_unread(server: EasServer, iris_svc: dict[str, Any], where: str) -> None:
    port = _port(server.url) if where == "gateway" else iris_svc["instance"][1]
    with rawhttp.connect(port) as sock:
        started = time.monotonic()
        sock.sendall(rawhttp.head("POST", "/api/predict/iris", {"Authorization": iris_svc["token"],
                                                                "Content-Length": str(10**15)}))
        answer = rawhttp.read_answer(sock, 10)
    assert answer is not None and answer.status == 413 and answer.closed, answer
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("where", ["gateway", "instance"])
def test_a_wrong_token_is_refused_before_its_big_body(server: EasServer, iris_svc: dict[str, Any], where: str) -> None:
    """48 MiB announced (under the limit), not a byte of it sent: the 401 comes from the head."""
    port = _port(server.url) if where == "gateway" else iris_svc["instance"][1]
    with rawhttp.connect(port) as sock:
        started = time.monotonic()
        sock.sendall(rawhttp.head("POST", "/api/predict/iris", {"Authorization": "not-the-token",
                                                                "Content-Length": str(48 << 20)}))
        answer = rawhttp.read_answer(sock, 10)
    assert answer is not None, "no answer: the server waited for the body of an unauthenticated client"
    assert answer.status == 401 and answer.closed and time.monotonic() - started < 2, answer


# -- auth edges -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("date", ["Mon, 01 Jan 99999 00:00:00 GMT", "Mon, 01 Jan 9999999999999999999999 00:00:00 GMT"])
def test_an_overflowing_date_is_401(server: EasServer, iris_svc: dict[str, Any], date: str) -> None:
    host, port = iris_svc["instance"]
    body = iris_svc["body"]
    headers = {**sign_headers(iris_svc["token"], "/api/predict/iris", body), "Date": date}
    for base in (server.url, f"http://{host}:{port}"):
        resp = httpx.post(f"{base}/api/predict/iris", content=body, headers=headers, timeout=10)
        assert resp.status_code == 401 and "Date" in resp.json()["message"], (base, resp.text)


# -- connections ----------------------------------------------------------------------------------------


def test_slow_headers_neither_block_requests_nor_hold_connections(server: EasServer,
                                                                  iris_svc: dict[str, Any]) -> None:
    slow = [rawhttp.connect(_port(server.url)) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(b"POST /api/predict/iris HTTP/1.1\r\nHost: x\r\nX-Dribble: ")
        opened = time.monotonic()
        for _ in range(3):
            started = time.monotonic()
            ok = httpx.post(f"{server.url}/api/predict/iris", content=iris_svc["body"],
                            headers={"Authorization": iris_svc["token"]}, timeout=10)
            assert ok.status_code == 200 and time.monotonic() - started < 2
        for sock in slow:  # one more byte each: a dribble never extends the head's deadline
            sock.sendall(b"x")
        closed = [rawhttp.closed_within(sock, max(0.1, opened + HEADER_TIMEOUT_S + 5 - time.monotonic()))
                  for sock in slow]
        assert all(c for c, _ in closed), f"{sum(not c for c, _ in closed)} slow heads still held"
        assert all(got.startswith(b"HTTP/1.1 408 ") for _, got in closed)
        assert time.monotonic() - opened < HEADER_TIMEOUT_S + 5
    finally:
        for sock in slow:
            sock.close()


# -- last: it leaves 127.0.0.1 penalized for a while ----------------------------------------------------


def test_repeated_401s_from_one_address_are_slowed(server: EasServer, iris_svc: dict[str, Any]) -> None:
    url = f"{server.url}/api/predict/iris"
    with httpx.Client(timeout=10) as client:
        timings = []
        for _ in range(30):  # 20 failures in 10 s are answered at once, the next ones after 1 s
            started = time.monotonic()
            resp = client.post(url, content=b"{}", headers={"Authorization": "not-the-token"})
            timings.append(time.monotonic() - started)
            assert resp.status_code in (401, 429), resp.text
            if timings[-1] >= 0.9:
                break
        assert timings[-1] >= 0.9, f"no 401 was slowed down: {timings}"
        assert len(timings) <= 21
        started = time.monotonic()
        ok = client.post(url, content=iris_svc["body"], headers={"Authorization": iris_svc["token"]})
        assert ok.status_code == 200 and time.monotonic() - started < 0.5, "right tokens are never slowed"
