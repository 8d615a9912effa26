"""The control plane never blocks predict traffic (eas/api/base.py runs handlers off the loop).

One uvicorn event loop serves both the management API and the predict gateway. Here the
store hangs (a real SQLite Store whose reads wait on an Event the test holds, as a
PostgreSQL server that stops answering would) while management calls are in flight;
predict calls through the same server's gateway to a real instance must still answer,
and so must /metrics and /healthz. Only the order of events is asserted, never a
duration; every wait is bounded, so a regression fails instead of hanging.

The app is `eas.server.compose(...)` served by uvicorn on 127.0.0.1, with MemoryBackend
in place of Ray Serve (the only stand-in), hosting the echo service as a real instance
(runtime, core and HTTP server of eas/instance) that the controller routes to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eas.control.store import ServiceRecord, Store
from tests.support.platform import (
    WAIT_S,
    Harness,
    basic_auth,
    build_platform,
    echo_spec,
    metric_samples,
    metric_value,
    wait_until,
    write_echo_code,
)

TOKEN = "tok-echo-12345"


class BlockingStore(Store):
    """A real SQLite store whose reads of services wait while `gate` is closed.

    Each read waits at most WAIT_S (then goes on), so a broken test cannot hang.
    """

    def __init__(self, target: Path) -> None:
        super().__init__(target)
        self.gate = threading.Event()
        self.gate.set()
        self._held: list[str] = []
        self._held_lock = threading.Lock()

    def held(self, but: str = "eas-controller") -> int:
        """Reads held at the gate now, leaving out those of thread `but` (the controller's loop)."""
        with self._held_lock:
            return sum(1 for name in self._held if name != but)

    def _pass_gate(self) -> None:
        if self.gate.is_set():
            return
        me = threading.current_thread().name
        with self._held_lock:
            self._held.append(me)
        try:
            self.gate.wait(WAIT_S)
        finally:
            with self._held_lock:
                self._held.remove(me)

    def get(self, name: str) -> ServiceRecord:
        self._pass_gate()
        return super().get(name)

    def list(self) -> list[ServiceRecord]:
        self._pass_gate()
        return super().list()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Harness, BlockingStore]]:
    store = BlockingStore(tmp_path / "blocking.db")
    harness = build_platform(tmp_path, serve=True, run_controller=True, host_instances=True, store=store)
    try:
        yield harness, store
    finally:
        store.gate.set()  # never leave a request or the controller held at teardown
        harness.close()


def test_predict_and_metrics_answer_while_the_store_hangs(platform: tuple[Harness, BlockingStore],
                                                          tmp_path: Path) -> None:
    harness, store = platform
    harness.running(echo_spec("echo", write_echo_code(tmp_path / "code"), token=TOKEN))
    assert harness.predict("echo", b"before", TOKEN).content == b"echo:before"

    # Close the gate, then start management calls that read the store: a describe
    # (Store.get) and a list (Store.list), each on its own client thread.
    store.gate.clear()
    results: dict[str, httpx.Response] = {}

    def call(key: str, path: str) -> None:
        with httpx.Client(base_url=harness.url, timeout=2 * WAIT_S) as c:
            results[key] = c.get(path, headers=basic_auth())

    callers = [threading.Thread(target=call, args=(key, path), name=f"api-{key}", daemon=True)
               for key, path in (("describe", harness.svc("echo")), ("list", "/api/v2/services"))]
    for t in callers:
        t.start()
    # Both handlers are now inside the store, on the API's worker threads (the
    # controller's loop may be held there too: it reads the store every pass).
    wait_until(lambda: store.held() == 2, "both API calls to be held in the store (only one: the event loop itself waits)")

    # The same server's event loop still forwards predict calls to the instance...
    with httpx.Client(base_url=harness.url, timeout=WAIT_S) as c:
        for i in range(3):
            answer = c.post("/api/predict/echo", content=f"during-{i}".encode(), headers={"Authorization": TOKEN})
            assert (answer.status_code, answer.content) == (200, f"echo:during-{i}".encode())
        # ...and answers /metrics (memory only) and /healthz.
        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        assert metric_value(metric_samples(metrics.text), "eas_requests_total", service="echo", code="200") == 4
        assert c.get("/healthz").json()["status"] == "ok"
    assert results == {} and all(t.is_alive() for t in callers), "the API calls were still held meanwhile"

    # Open the gate: the held calls complete with their real answers.
    store.gate.set()
    for t in callers:
        t.join(timeout=WAIT_S)
        assert not t.is_alive(), f"{t.name} did not complete once the store answered"
    assert results["describe"].status_code == 200 and results["describe"].json()["ServiceName"] == "echo"
    assert results["list"].status_code == 200 and results["list"].json()["TotalCount"] == 1
