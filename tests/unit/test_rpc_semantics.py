"""EAS rpc semantics at one instance, for real over loopback HTTP: 450, batching, 499, 429."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import joblib
import numpy as np
import pytest

from eas.gateway.core import RateLimiter
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.gateway.route_table import Route
from eas.instance.runtime import ServiceRuntime

TOKEN = "rpc-token-12345"
SLEEPY = """
import json, time
class Sleepy:
    def initialize(self):
        pass
    def process(self, data):
        time.sleep(json.loads(data).get("sleep", 0))
        return b'{"ok": true}', 200
"""


def start(spec: dict, tmp_path) -> tuple[InstanceServer, ServiceRuntime, str]:  # noqa: ANN001
    runtime = ServiceRuntime(spec, str(tmp_path / "cache"))
    server = InstanceServer(InstanceApp(runtime, f"{spec['name']}-1", Credentials(TOKEN, "k")), "127.0.0.1")
    server.start()
    return server, runtime, f"http://127.0.0.1:{server.port}/api/predict/{spec['name']}"


@pytest.fixture
def sleepy(tmp_path):
    (tmp_path / "app.py").write_text(SLEEPY)
    spec = {"name": "sleepy", "processor_type": "python", "processor_path": str(tmp_path / "app.py"),
            "metadata": {"instance": 1, "rpc": {"worker_threads": 1, "max_queue_size": 2, "keepalive": 5000}}}
    server, runtime, url = start(spec, tmp_path)
    yield server, url
    server.stop()
    runtime.close()


async def _fire(url: str, n: int, body: bytes) -> list[tuple[int, float]]:
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": TOKEN}) as client:
        async def one() -> tuple[int, float]:
            t0 = time.perf_counter()
            resp = await client.post(url, content=body)
            return resp.status_code, time.perf_counter() - t0
        return await asyncio.gather(*(one() for _ in range(n)))


def test_full_queue_sheds_450_without_waiting(sleepy):
    server, url = sleepy
    results = asyncio.run(_fire(url, 8, json.dumps({"sleep": 0.6}).encode()))
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 3, codes  # 1 running + max_queue_size 2 waiting
    assert codes.count(450) == 5, codes
    shed = [elapsed for code, elapsed in results if code == 450]
    admitted = [elapsed for code, elapsed in results if code == 200]
    assert max(shed) < min(admitted), "a 450 must not wait for the queue"


def test_client_disconnect_cancels_and_frees_the_slot(sleepy):
    server, url = sleepy
    body = json.dumps({"sleep": 1.5}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /api/predict/sleepy HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        deadline = time.monotonic() + 2
        while server.app.in_flight == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # The client is gone: the slot frees long before the 1.5 s of work would end.
    deadline = time.monotonic() + 0.7
    while server.app.in_flight:
        assert time.monotonic() < deadline, "request of a gone client still counted"
        time.sleep(0.01)


def test_batching_forms_real_batches(tmp_path):
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(50, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(model, tmp_path / "m.joblib")
    spec = {"name": "batched", "processor": "sklearn", "model_path": str(tmp_path / "m.joblib"),
            "metadata": {"instance": 1, "rpc": {"batching": True, "max_batch_size": 8,
                                                 "max_batch_timeout": 20, "worker_threads": 1}}}
    server, runtime, url = start(spec, tmp_path)
    try:
        rows = x[:24].round(3)

        async def go() -> list:
            async with httpx.AsyncClient(timeout=10, headers={"Authorization": TOKEN}) as client:
                return await asyncio.gather(*(
                    client.post(url, content=json.dumps({"instances": [row.tolist()]})) for row in rows))

        answers = asyncio.run(go())
        got = [a.json()["predictions"][0] for a in answers]
        assert got == model.predict(rows).tolist(), "each caller gets its own row's answer"
        sizes = runtime.batcher.size_counts
        assert sum(size * n for size, n in sizes.items()) == 24 and 1 < max(sizes) <= 8, sizes
        stats = httpx.get(url.replace("/api/predict/batched", "/stats")).json()
        assert stats["codes"] == {"200": 24} and stats["batches"] == {str(k): v for k, v in sizes.items()}
        bad = httpx.post(url, content=b'{"instances": [[1]]}', headers={"Authorization": TOKEN})
        assert bad.status_code == 400 and "features" in bad.json()["message"]
    finally:
        server.stop()
        runtime.close()


def test_cheap_builtin_model_runs_on_the_event_loop_and_user_code_never_does(tmp_path, sleepy):
    import threading

    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(1).normal(size=(40, 3))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "m.joblib")
    spec = {"name": "cheap", "processor": "sklearn", "model_path": str(tmp_path / "m.joblib"),
            "metadata": {"instance": 1}}
    server, runtime, url = start(spec, tmp_path)
    threads: list[str] = []
    real_predict = runtime.processor.predict

    def spy(request):  # noqa: ANN001, ANN202 - records where the real predict runs
        threads.append(threading.current_thread().name)
        return real_predict(request)

    runtime.processor.predict = spy
    try:
        with httpx.Client(timeout=10, headers={"Authorization": TOKEN}) as client:
            for row in np.tile(x.round(3), (8, 1)):  # 320 calls: a slow first call is averaged out
                assert client.post(url, content=json.dumps({"instances": [row.tolist()]})).status_code == 200
        pool = "eas-cheap_"  # the worker pool's thread names
        assert threads[0].startswith(pool), "the first call, with no cost known yet, goes to the pool"
        inline = [name for name in threads[-100:] if not name.startswith(pool)]
        assert len(inline) > 80, f"only {len(inline)} of the last 100 calls ran on the loop"
    finally:
        server.stop()
        runtime.close()
    assert sleepy[0].app.runtime.inline is None, "user code may block: always on the worker pool"


def test_inline_policy_sends_a_slow_model_back_to_the_pool():
    from eas.instance.runtime import InlinePolicy

    policy = InlinePolicy(limit_s=0.001)
    assert not policy.now(), "nothing measured yet"
    policy.pooled(0.0002)
    assert policy.now()
    policy.inlined(0.02)  # one slow call on the loop
    assert not policy.now()
    for _ in range(20):
        policy.pooled(0.0002)
    assert not policy.now(), "a model that was slow on the loop is not retried after a few cheap calls"
    for _ in range(200):
        policy.pooled(0.0002)
    assert policy.now(), "a long run of cheap calls brings it back"
    for _ in range(200):
        policy.pooled(0.005)
    assert not policy.now(), "a model that got slower in the pool stays there"


def test_rate_limiter_token_bucket():
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    route = Route("svc", TOKEN, (), "", 5.0, rate_limit=2)
    assert limiter.admit(route) is None and limiter.admit(route) is None
    wait = limiter.admit(route)
    assert wait is not None and 0 < wait <= 0.5
    now[0] += 0.5
    assert limiter.admit(route) is None
    assert limiter.admit(Route("free", TOKEN, (), "", 5.0)) is None
