"""Streamed answers end to end without Ray: client -> gateway -> instance -> user code that yields.

Everything is real: the gateway (EasHttp behind the predict fast path, under uvicorn with
eas-server's guarded protocol) and the instances listen on 127.0.0.1, the processors are
user code loaded from files. The user code and the test meet through a module the test
registers (`eas_stream_hooks`): events the code waits on and counters it keeps, so every
interleaving is driven by conditions, never by sleeping. The upstream client's own
stream (eas/gateway/upstream.py) is also driven against scripted servers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from eas.gateway import upstream
from eas.gateway.core import Gateway
from eas.gateway.grpc_server import GrpcGateway, name_and_id_of
from eas.gateway.http import EasHttp
from eas.gateway.oip_http import OipHttp
from eas.gateway.route_table import Endpoint, Entry, Route, RouteTable
from eas.gateway.upstream import UpstreamFailed, UpstreamPool, UpstreamTimeout
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.instance.runtime import ServiceRuntime
from eas.protocols import grpc_messages
from eas.protocols.http import ListenerLimits, PredictFastPath, uvicorn_config
from eas.server import gateway_lifespan
from processors import bml
from processors._usercode import StreamedResponse
from processors.base import ModelContext, ProcessorError, Request
from processors.python import PythonProcessor

TOKEN = "a-service-token-123"
WAIT_S = 15.0

HOOKS = types.SimpleNamespace()


def reset_hooks() -> None:
    HOOKS.next = threading.Event()
    HOOKS.closed = threading.Event()
    HOOKS.never = threading.Event()
    HOOKS.produced = 0
    HOOKS.ticks = 0


reset_hooks()
sys.modules["eas_stream_hooks"] = HOOKS  # type: ignore[assignment]

CODE = '''
import asyncio
import eas_stream_hooks as hooks


class Streams:
    def initialize(self):
        pass

    def process(self, data):
        return getattr(self, data.decode().replace("-", "_"))()

    def two(self):
        yield "data: 0\\n\\n"
        # Only a client that already read the first event can release the second: a
        # gateway that buffered would make this wait run out and send "late" instead.
        yield "data: 1\\n\\n" if hooks.next.wait(10) else "data: late\\n\\n"

    async def _async_pieces(self):
        for i in range(3):
            await asyncio.sleep(0)
            yield f"piece {i};".encode()

    def async_gen(self):
        return self._async_pieces()

    def forever(self):
        try:
            while True:
                hooks.ticks += 1
                yield b"tick\\n"
                hooks.never.wait(0.02)
        finally:
            hooks.closed.set()

    def big(self):
        for _ in range(256):  # 64 MiB in 256 KiB pieces
            hooks.produced += 1
            yield b"z" * 262144

    def silent_first(self):
        hooks.never.wait(2)
        yield "too late"

    def gap(self):
        yield "a"
        hooks.never.wait(2)
        yield "b"

    def raise_first(self):
        raise ValueError("no pieces today")
        yield "unreachable"

    def raise_mid(self):
        yield "a"
        raise ValueError("boom")

    def empty(self):
        return (piece for piece in ())

    def nothing(self):
        if False:
            yield "x"

    def with_status(self):
        def pieces():
            yield "made"
        return pieces(), 201

    def whole(self):
        return "not streamed", 200
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(done: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        tick.wait(0.005)


class Served:
    """An ASGI app under uvicorn on 127.0.0.1 in a thread, with eas-server's listener limits."""

    def __init__(self, app: Any, limits: ListenerLimits = ListenerLimits()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, limits, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        wait_until(lambda: self.server.started, "the server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two instances of the streaming code (keepalive 5 s, and 300 ms for the keepalive
    tests), behind a gateway served like eas-server's."""
    code = tmp_path_factory.mktemp("streams")
    (code / "app.py").write_text(CODE)
    cache = str(tmp_path_factory.mktemp("cache"))
    runtimes, servers, routes = {}, {}, RouteTable()
    for name, keepalive in (("streams", 5000), ("quick", 300)):
        spec = {"name": name, "processor_type": "python", "processor_path": str(code),
                "metadata": {"instance": 1, "rpc": {"keepalive": keepalive, "worker_threads": 2}}}
        runtimes[name] = ServiceRuntime(spec, cache)
        servers[name] = InstanceServer(InstanceApp(runtimes[name], f"{name}-1", Credentials(TOKEN, "internal")),
                                       "127.0.0.1")
        servers[name].start()
        routes.set(Route(name, TOKEN, (Endpoint(f"{name}-1", servers[name].host, servers[name].port),), "",
                         keepalive_s=keepalive / 1000))
    routes.set_entries({n: Entry(n, TOKEN, ((n, 100),)) for n in runtimes})
    gateway = Gateway(routes, "internal")
    eas_http = EasHttp(gateway)
    app = Starlette(routes=eas_http.routes(), lifespan=gateway_lifespan(gateway))
    with Served(PredictFastPath(app, eas_http.predict)) as served:
        yield {"url": served.url, "gateway": gateway, "servers": servers}
    for srv in servers.values():
        srv.stop()
    for rt in runtimes.values():
        rt.close()


@pytest.fixture(autouse=True)
def fresh_hooks() -> None:
    reset_hooks()


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(gateway.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def stream(url: str, body: str, service: str = "streams") -> Any:
    return httpx.stream("POST", f"{url}/api/predict/{service}", content=body.encode(),
                        headers={"Authorization": TOKEN}, timeout=WAIT_S)


# ---------------------------------------------------------------- through the gateway


def test_chunks_reach_the_client_one_by_one_through_the_gateway(plane: dict[str, Any], tmp_path: Path) -> None:
    from eas.server import enable_access_log

    gateway = plane["gateway"]
    first_bytes = metric(gateway, "eas_first_byte_seconds_count", service="streams")
    log_path = tmp_path / "access.log"
    enable_access_log(str(log_path))
    try:
        with stream(plane["url"], "two") as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.headers["transfer-encoding"] == "chunked"
            assert answer.headers["x-eas-instance"] == "streams-1" and answer.headers["x-request-id"]
            pieces = answer.iter_raw()
            assert next(pieces) == b"data: 0\n\n"  # while the code still waits for this very read
            HOOKS.next.set()
            assert b"".join(pieces) == b"data: 1\n\n"
        wait_until(lambda: log_path.exists() and log_path.read_text().strip(), "the access log line")
    finally:
        access = logging.getLogger("eas.access")
        for handler in list(access.handlers):
            handler.close()
            access.removeHandler(handler)
        access.setLevel(logging.WARNING)
    line = json.loads(log_path.read_text().splitlines()[-1])
    assert line["request_id"] == answer.headers["x-request-id"]
    assert (line["status"], line["streamed"], line["bytes_out"], line["instance"]) == (200, True, 18, "streams-1")
    assert line["first_byte_ms"] is not None and line["first_byte_ms"] <= line["ms"]
    assert metric(gateway, "eas_first_byte_seconds_count", service="streams") == first_bytes + 1
    assert metric(gateway, "eas_streamed_bytes_total", service="streams") >= 18


def test_async_generators_and_statuses(plane: dict[str, Any]) -> None:
    url = plane["url"]
    auth = {"Authorization": TOKEN}
    got = httpx.post(f"{url}/api/predict/streams", content=b"async-gen", headers=auth)
    assert (got.status_code, got.content) == (200, b"piece 0;piece 1;piece 2;")
    assert got.headers["content-type"] == "application/octet-stream"
    made = httpx.post(f"{url}/api/predict/streams", content=b"with-status", headers=auth)
    assert (made.status_code, made.text, made.headers["content-type"]) == (201, "made", "text/plain; charset=utf-8")
    for empty in (b"empty", b"nothing"):
        none = httpx.post(f"{url}/api/predict/streams", content=empty, headers=auth)
        assert (none.status_code, none.content) == (200, b"")
    whole = httpx.post(f"{url}/api/predict/streams", content=b"whole", headers=auth)
    assert "transfer-encoding" not in whole.headers and whole.text == "not streamed"


def test_a_failure_before_the_first_chunk_is_the_answer_after_it_cuts_the_stream(plane: dict[str, Any]) -> None:
    url, instance = plane["url"], plane["servers"]["streams"].app
    failed = httpx.post(f"{url}/api/predict/streams", content=b"raise-first", headers={"Authorization": TOKEN})
    assert failed.status_code == 400 and "no pieces today" in failed.json()["message"]
    cut_before = instance.codes.get(400, 0)
    with pytest.raises(httpx.RemoteProtocolError):  # chunked answer without its last chunk: incomplete
        with stream(url, "raise-mid") as answer:
            assert answer.status_code == 200
            answer.read()
    wait_until(lambda: instance.codes.get(400, 0) == cut_before + 1 and instance.in_flight == 0,
               "the instance to count the stream cut short")


def test_the_keepalive_bounds_the_first_chunk_and_each_gap(plane: dict[str, Any]) -> None:
    url, instance = plane["url"], plane["servers"]["quick"].app
    late = httpx.post(f"{url}/api/predict/quick", content=b"silent-first", headers={"Authorization": TOKEN})
    assert late.status_code == 408 and "keepalive of 300 ms" in late.json()["message"]
    gaps = instance.codes.get(408, 0)
    with pytest.raises(httpx.RemoteProtocolError):
        with stream(url, "gap", service="quick") as answer:
            pieces = answer.iter_raw()
            assert next(pieces) == b"a"
            b"".join(pieces)
    wait_until(lambda: instance.codes.get(408, 0) == gaps + 1 and instance.in_flight == 0,
               "the instance to count the gap as 408")
    gateway = plane["gateway"]
    wait_until(lambda: metric(gateway, "eas_requests_total", service="quick", code="503") >= 1,
               "the gateway to count the stream the instance cut")


def test_a_client_gone_mid_stream_stops_the_code_and_frees_the_instance(plane: dict[str, Any]) -> None:
    url, gateway, instance = plane["url"], plane["gateway"], plane["servers"]["streams"].app
    gone_before = metric(gateway, "eas_requests_total", service="streams", code="499")
    with stream(url, "forever") as answer:
        assert next(answer.iter_raw()).startswith(b"tick")
    # The client closed its connection: the gateway drops its connection to the instance,
    # the instance closes the generator (its finally runs) and gives its place back.
    assert HOOKS.closed.wait(WAIT_S), "the generator was never closed"
    wait_until(lambda: instance.in_flight == 0 and instance.codes.get(499, 0) >= 1, "the instance's 499")
    wait_until(lambda: metric(gateway, "eas_requests_total", service="streams", code="499") == gone_before + 1,
               "the gateway's 499")
    ticks = HOOKS.ticks
    again = httpx.post(f"{url}/api/predict/streams", content=b"async-gen", headers={"Authorization": TOKEN})
    assert again.status_code == 200
    assert HOOKS.ticks == ticks, "the abandoned generator went on producing"


def test_a_slow_client_slows_the_code_down(plane: dict[str, Any]) -> None:
    """Back-pressure end to end: a client that stops reading stops the generator after
    what the sockets and bounded buffers hold, far from its 64 MiB."""
    with stream(plane["url"], "big") as answer:
        pieces = answer.iter_raw()
        received = len(next(pieces))
        # Nothing more is read: the producer must stall. Wait until it has (its count
        # stops moving), then check how far it got.
        last, still = -1, 0
        deadline = time.monotonic() + WAIT_S
        tick = threading.Event()
        while still < 40 and time.monotonic() < deadline:
            still = still + 1 if HOOKS.produced == last else 0
            last = HOOKS.produced
            tick.wait(0.025)
        assert still >= 40, "the generator never stalled"
        assert HOOKS.produced * 262144 < 40 * 1024 * 1024, f"{HOOKS.produced} pieces made for an idle client"
        received += sum(len(p) for p in pieces)
    assert received == 256 * 262144 and HOOKS.produced == 256


def test_mid_stream_the_gateway_keeps_its_fast_path_for_whole_answers(plane: dict[str, Any]) -> None:
    """A non-streamed answer keeps Content-Length (read whole, passed on whole)."""
    whole = httpx.post(f"{plane['url']}/api/predict/streams", content=b"whole", headers={"Authorization": TOKEN})
    assert whole.headers["content-length"] == str(len(b"not streamed"))


# ---------------------------------------------------------------- the processors


def _python_processor(tmp_path: Path, code: str, cls: str | None = None) -> PythonProcessor:
    (tmp_path / "app.py").write_text(code)
    processor = PythonProcessor(ModelContext(processor_path=str(tmp_path), processor_mainclass=cls))
    processor.load()
    return processor


def test_eas_process_may_return_a_generator(tmp_path: Path) -> None:
    processor = _python_processor(tmp_path, '''
class P:
    def initialize(self):
        pass
    def process(self, data):
        if data == b"bad":
            return (x for x in [{"not": "bytes"}])
        return (piece for piece in ["data: a\\n\\n", b"data: b\\n\\n"])
''')
    response = processor.predict(Request(b"go"))
    assert isinstance(response, StreamedResponse) and response.body == b""
    assert list(response.chunks) == [b"data: a\n\n", b"data: b\n\n"]  # type: ignore[arg-type]
    assert response.content_type == "text/event-stream"
    bad = processor.predict(Request(b"bad"))
    with pytest.raises(ProcessorError, match="yielded dict; yield bytes or str"):
        list(bad.chunks)  # type: ignore[arg-type]


def test_bml_styles_stream_what_they_yield(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text('''
from processors.bml import CustomException

class PyModel:
    def __init__(self, model_path):
        pass
    def predict(self, request_body):
        for row in request_body["rows"]:
            if row < 0:
                raise CustomException(40001, "negative row")
            yield {"row": row, "double": row * 2}
''')
    processor = PythonProcessor(ModelContext(processor_path=str(tmp_path)))
    processor.load()
    response = processor.predict(Request(b'{"rows": [1, 2]}', content_type="application/json"))
    assert list(response.chunks) == [b'{"row":1,"double":2}\n', b'{"row":2,"double":4}\n']  # type: ignore[arg-type]
    assert response.content_type == "application/x-ndjson"
    failing = processor.predict(Request(b'{"rows": [1, -1]}', content_type="application/json"))
    pieces = iter(failing.chunks)  # type: ignore[arg-type]
    assert next(pieces) == b'{"row":1,"double":2}\n'
    with pytest.raises(ProcessorError) as raised:
        next(pieces)
    assert (raised.value.code, raised.value.message) == (40001, "negative row")
    # The PredictWrapper style streams from postprocess; plain values still answer whole.
    assert bml.encode_result({"a": 1}, "x").body == b'{"a":1}'
    streamed = bml.encode_result(((f"{i};" for i in range(2)), 202), "postprocess")
    assert isinstance(streamed, StreamedResponse) and streamed.status == 202
    assert list(streamed.chunks) == [b"0;", b"1;"]  # type: ignore[arg-type]


# ---------------------------------------------------------------- the upstream client's stream


async def _scripted(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_upstream_streams_chunk_by_chunk_and_reuses_the_connection() -> None:
    async def go() -> None:
        release = asyncio.Event()
        connections = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            await _read_request(reader)
            writer.write(CHUNKED_HEAD + chunk(b"one"))
            await writer.drain()
            await release.wait()
            writer.write(chunk(b"two") + b"0\r\n\r\n")
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole")
            await writer.drain()

        server, port = await _scripted(handle)
        pool = UpstreamPool()
        try:
            answer = await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5, stream=True, gap_s=5)
            assert answer.stream is not None and answer.body == b"" and answer.status == 200
            assert await answer.stream.__anext__() == b"one"  # the second is not even written yet
            release.set()
            assert [piece async for piece in answer.stream] == [b"two"]
            assert answer.stream.complete
            again = await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5, stream=True, gap_s=5)
            assert (again.stream, again.body) == (None, b"whole")
            assert len(connections) == 1, "the connection went back to the pool once the stream was read"
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_upstream_stream_failures_and_abandon() -> None:
    async def go() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await _read_request(reader)
            writer.write(CHUNKED_HEAD + chunk(b"first"))
            await writer.drain()
            if b"/die" in request:
                writer.transport.abort()
            elif b"/abandoned" in request:
                try:
                    await reader.read()  # until the client drops the connection
                finally:
                    seen.append("dropped")
            else:
                await asyncio.Event().wait()  # silent: the gap runs out

        seen: list[str] = []
        server, port = await _scripted(handle)
        pool = UpstreamPool()
        try:
            dying = await pool.request("POST", "127.0.0.1", port, "/die", {}, b"", 5, stream=True, gap_s=5)
            assert await dying.stream.__anext__() == b"first"
            with pytest.raises(UpstreamFailed, match="in the middle of its answer"):
                await dying.stream.__anext__()
            silent = await pool.request("POST", "127.0.0.1", port, "/silent", {}, b"", 5, stream=True, gap_s=0.2)
            assert await silent.stream.__anext__() == b"first"
            with pytest.raises(UpstreamTimeout, match="sent nothing"):
                await silent.stream.__anext__()
            left = await pool.request("POST", "127.0.0.1", port, "/abandoned", {}, b"", 5, stream=True, gap_s=5)
            await left.stream.aclose()
            for _ in range(1000):
                if seen:
                    break
                await asyncio.sleep(0.005)
            assert seen == ["dropped"], "closing the stream must drop the connection (the instance's 499)"
            assert not pool._idle
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_upstream_stream_memory_is_bounded_while_the_caller_does_not_read() -> None:
    async def go() -> None:
        blocked = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(CHUNKED_HEAD)
            piece = chunk(b"y" * 65536)
            for _ in range(4096):  # 256 MiB if nothing pushed back
                writer.write(piece)
                if writer.transport.get_write_buffer_size() >= 65536:
                    blocked.set()  # the client stopped taking bytes: TCP pushed back up to here
                await writer.drain()
            writer.write(b"0\r\n\r\n")

        server, port = await _scripted(handle)
        pool = UpstreamPool()
        try:
            answer = await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5, stream=True, gap_s=5)
            await asyncio.wait_for(blocked.wait(), WAIT_S)
            held = answer.stream._size  # what the gateway holds for this stream
            assert held <= upstream.STREAM_HIGH_BYTES + 256 * 1024, held
            total = 0
            async for piece in answer.stream:
                total += len(piece)
                assert answer.stream._size <= upstream.STREAM_HIGH_BYTES + 256 * 1024
            assert total == 4096 * 65536
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_a_large_declared_answer_is_streamed_only_for_callers_that_can() -> None:
    big = b"q" * (upstream.STREAM_ABOVE_BYTES + 1)

    async def go() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
                await writer.drain()

        server, port = await _scripted(handle)
        pool = UpstreamPool()
        try:
            streamed = await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5, stream=True, gap_s=5)
            assert streamed.stream is not None and b"".join([p async for p in streamed.stream]) == big
            whole = await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5)
            assert whole.stream is None and whole.body == big
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


# ---------------------------------------------------------------- gRPC ModelStreamInfer


@pytest.fixture(scope="module")
def grpc_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    directory = tmp_path_factory.mktemp("iris")
    joblib.dump(model, directory / "model.joblib")
    runtime = ServiceRuntime({"name": "iris", "processor": "sklearn", "model_path": str(directory),
                              "metadata": {"instance": 1}}, str(tmp_path_factory.mktemp("cache")))
    server = InstanceServer(InstanceApp(runtime, "iris-1", Credentials(TOKEN, "internal")), "127.0.0.1")
    server.start()
    routes = RouteTable()
    routes.set(Route("iris", TOKEN, (Endpoint("iris-1", server.host, server.port),), "", keepalive_s=5))
    routes.set_entries({"iris": Entry("iris", TOKEN, (("iris", 100),))})
    gateway = Gateway(routes, "internal")
    grpc_gateway = GrpcGateway(gateway, "127.0.0.1", free_port())
    app = Starlette(routes=OipHttp(gateway).routes(), lifespan=gateway_lifespan(gateway, grpc_gateway))
    with Served(app):
        yield {"target": f"127.0.0.1:{grpc_gateway.port}", "model": model, "rows": x[:6], "server": server}
    server.stop()
    runtime.close()


def _infer_request(rows: np.ndarray, request_id: str, model: str = "iris") -> Any:
    request = grpc_messages.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f8").tobytes())
    return request


def test_model_stream_infer_answers_each_request_on_one_stream(grpc_plane: dict[str, Any]) -> None:
    rows, model = grpc_plane["rows"], grpc_plane["model"]
    requests = [_infer_request(rows[i:i + 1], f"r{i}") for i in range(5)]
    requests.insert(2, _infer_request(rows[:1], "lost", model="nope"))
    with grpc.insecure_channel(grpc_plane["target"]) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=grpc_messages.ModelInferRequest.SerializeToString,
            response_deserializer=grpc_messages.ModelStreamInferResponse.FromString)
        answers = list(call(iter(requests), metadata=(("authorization", TOKEN),), timeout=WAIT_S))
        refused = list(call(iter(requests[:2]), metadata=(("authorization", "wrong-token-1"),), timeout=WAIT_S))
    by_id = {a.infer_response.id: a for a in answers}
    assert set(by_id) == {"r0", "r1", "r2", "r3", "r4", "lost"}
    for i in range(5):
        answer = by_id[f"r{i}"]
        assert answer.error_message == ""
        got = np.frombuffer(answer.infer_response.raw_output_contents[0], "<i8")
        assert got.tolist() == model.predict(rows[i:i + 1]).tolist()
    assert "does not exist" in by_id["lost"].error_message and by_id["lost"].infer_response.model_name == "nope"
    assert len(refused) == 2 and all(a.error_message and a.infer_response.id in ("r0", "r1") for a in refused)


def test_the_stream_reads_name_and_id_without_decoding() -> None:
    request = _infer_request(np.zeros((1, 4)), "abc", model="iris")
    assert name_and_id_of(request.SerializeToString()) == ("iris", "abc")
    assert name_and_id_of(b"") == ("", "")
    with pytest.raises(ValueError):
        name_and_id_of(b"\x1a\x09short")
