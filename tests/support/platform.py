"""The real eas-server, without Ray, for component tests of the control plane.

`build_platform` composes the application exactly as `eas-server` does
(`eas.server.compose`): a SQLite store in the test's tmp_path, the controller, the
gateway, the management API, /metrics. The one stand-in is the backend:
MemoryBackend (tests/support/backend.py) instead of Ray Serve. Nothing else is mocked.

Two ways to drive it:

- in-process (`serve=False`): Starlette's TestClient calls the ASGI app, and the
  controller's loop does not run; a test advances state with `reconcile_until`, which
  runs passes by hand until a condition holds (deploy tasks finish on the controller's
  own thread pool, so a condition is awaited, never a fixed delay);
- served (`serve=True`): uvicorn on 127.0.0.1 (a free port) in a background thread,
  optionally with the controller's loop running on a short interval, for real clients
  (ManagementClient, PredictClient, eascmd) that wait for status changes themselves.

Every server, thread and instance started here is stopped by `Harness.close`.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from eas.client import config
from eas.control.controller import Controller
from eas.control.store import Store
from eas.server import Platform, compose
from tests.support.backend import MemoryBackend, MemoryCluster, Script

ACCESS_ID = "test-admin"
ACCESS_KEY = "test-secret-key"
REGION = "local"
#: Controller (and stats scraper) interval when its loop runs: short, so waits are short.
LOOP_INTERVAL_S = 0.05
#: The longest any helper here waits for a condition before failing the test.
WAIT_S = 15.0

#: User code for `processor_type: python`: echoes the body as b"echo:<body>". A number
#: in the file `fail_next` beside it makes that many calls answer 503 first (each call
#: decrements it), so retry paths run against a real instance.
ECHO_CODE = '''
import os

HERE = os.path.dirname(os.path.abspath(__file__))


class Echo:
    def initialize(self):
        pass

    def process(self, data):
        path = os.path.join(HERE, "fail_next")
        if os.path.exists(path):
            with open(path) as f:
                left = int(f.read() or 0)
            if left > 0:
                with open(path, "w") as f:
                    f.write(str(left - 1))
                return "no ready instance", 503
        return b"echo:" + data, 200
'''

#: The management API's request ids: upper-case UUIDs.
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

#: Statuses a service rests in once the controller has nothing left to do for it.
SETTLED = frozenset({"Running", "Stopped", "Failed", "Sleeping"})


def basic_auth(access_id: str = ACCESS_ID, access_key: str = ACCESS_KEY) -> dict[str, str]:
    """The management API's `Authorization` header for these credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{access_id}:{access_key}".encode()).decode()}


def api_error(api: "Harness", method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
              auth: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, Code, Message) of a management call that must fail, after checking that the
    answer is the EAS error envelope (exactly RequestId, Code, Message; docs/api.md)."""
    resp = api.call(method, path, body, params, auth)
    assert resp.status_code >= 400, resp.text
    data = resp.json()
    assert set(data) == {"RequestId", "Code", "Message"}, data
    assert REQUEST_ID.match(data["RequestId"]), data
    return resp.status_code, data["Code"], data["Message"]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page (GET /metrics), by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
                 **labels: str) -> float | None:
    """One sample of `metric_samples(...)`, None when the page does not have it."""
    return page.get((name, tuple(sorted(labels.items()))))


def free_port() -> int:
    """A port nothing listens on (bound then released), for the unreachable-server tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_echo_code(folder: Path) -> Path:
    """The echo processor's code folder (its `processor_path`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(ECHO_CODE)
    return folder


def echo_spec(name: str, code_dir: Path, instance: int = 1, **extra: Any) -> dict[str, Any]:
    """A service JSON for the echo processor (real instances with host_instances)."""
    return {"name": name, "processor_type": "python", "processor_path": str(code_dir),
            "metadata": {"instance": instance}, **extra}


def wait_until(done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Check `done` until it holds, at most `timeout` seconds; then fail saying `what`.

    For state with no notification to wait on (the store, a thread's result); each
    check waits on an Event, so the test never hangs and never sleeps a fixed time.
    """
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        tick.wait(0.005)


class Harness:
    """One composed platform and what a test needs around it."""

    def __init__(self, platform: Platform, cluster: MemoryCluster, store: Store, data_dir: Path,
                 endpoint: str, closed_port: socket.socket) -> None:
        self.platform = platform
        self.cluster = cluster
        self.store = store
        self.data_dir = data_dir
        self.endpoint = endpoint
        self.url = endpoint
        self._closed_port = closed_port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: TestClient | None = None
        self.looping = False
        """The controller's own loop runs (else tests call reconcile by hand)."""
        self.http: httpx.Client | TestClient
        """TestClient in-process, or an httpx client of the served URL (no credentials)."""

    @property
    def controller(self) -> Controller:
        return self.platform.controller

    # -- the management API, as a client would call it -----------------------------------

    def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
             auth: dict[str, str] | None = None) -> httpx.Response:
        """One management API call with the admin credentials (or `auth` headers)."""
        headers = basic_auth() if auth is None else auth
        return self.http.request(method, path, json=body, params=params, headers=headers)

    def ok(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> dict[str, Any]:
        """A call that must answer 200; its JSON."""
        resp = self.call(method, path, body, params)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    @staticmethod
    def svc(name: str, suffix: str = "", region: str = REGION) -> str:
        return f"/api/v2/services/{region}/{name}{suffix}"

    def create(self, spec: dict[str, Any], blue_green: bool = False) -> dict[str, Any]:
        """CreateService; with blue_green, a partner of the service the JSON names (ours, under /api/v2/ext/)."""
        if blue_green:
            return self.ok("POST", f"/api/v2/ext/services/{REGION}/{spec['name']}/partners", spec)
        return self.ok("POST", "/api/v2/services", spec)

    def describe(self, name: str) -> dict[str, Any]:
        return self.ok("GET", self.svc(name))

    def predict(self, name: str, body: bytes, token: str | None, sub_path: str = "") -> httpx.Response:
        headers = {"Authorization": token} if token is not None else {}
        path = f"/api/predict/{name}" + (f"/{sub_path}" if sub_path else "")
        return self.http.post(path, content=body, headers=headers)

    # -- advancing state ----------------------------------------------------------------------

    def status(self, name: str) -> str | None:
        """The stored status of `name`, None once the service is gone."""
        return next((r.status for r in self.store.list() if r.name == name), None)

    def reconcile_until(self, done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        """Controller passes by hand until `done()` holds (the loop must not be running).

        Between passes it waits for the cluster to change (a deploy finishing on the
        controller's pool notifies it), bounded by a short tick and the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.controller.reconcile()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            with self.cluster.changed:
                self.cluster.changed.wait(0.01)

    def settle(self, timeout: float = WAIT_S) -> None:
        """Passes until no deploy is pending and every service rests (Running, Stopped, ...)."""
        def rested() -> bool:
            return not self.controller._preparing and all(r.status in SETTLED for r in self.store.list())

        self.reconcile_until(rested, "every service to settle", timeout)

    def wait_status(self, name: str, statuses: set[str], timeout: float = WAIT_S) -> None:
        """With the controller's loop running: wait until the stored status is one of these."""
        wait_until(lambda: self.status(name) in statuses, f"{name} to be {' or '.join(sorted(statuses))}", timeout)

    def running(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a service and see it Running (by hand or with the loop); its description."""
        self.create(spec)
        if self.looping:
            self.wait_status(spec["name"], {"Running"})
        else:
            self.reconcile_until(lambda: self.status(spec["name"]) == "Running", f"{spec['name']} to run")
        return self.describe(spec["name"])

    def metrics(self) -> str:
        resp = self.http.get("/metrics")
        assert resp.status_code == 200, resp.text
        return resp.text

    def conf(self, path: Path, access_key: str = ACCESS_KEY) -> str:
        """An eascmd.conf for this server (the served URL), as eas-server writes it."""
        config.write(path, config.ClientConfig(self.url, ACCESS_ID, access_key, REGION))
        return str(path)

    # -- lifecycle ----------------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        self._server = uvicorn.Server(uvicorn.Config(self.platform.asgi, log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="eas-test-server", daemon=True)
        self._thread.start()
        server, thread = self._server, self._thread
        wait_until(lambda: server.started or not thread.is_alive(), "the test server to start", 10)
        assert server.started, "the test server did not start"
        self.http = httpx.Client(base_url=self.url, timeout=WAIT_S)

    def close(self) -> None:
        """Stop the server, the controller, deploys in flight, hosted instances, the store.

        Each step runs even if an earlier one failed; the first failure is raised at the end.
        """
        steps: list[Callable[[], None]] = []
        client = self._client
        if client is not None:
            steps.append(lambda: client.__exit__(None, None, None))
        if self._server is not None and self._thread is not None:
            steps.append(self._stop_server)
        steps += [self.controller.stop, self._finish_deploys, self.cluster.close, self.store.close,
                  self._closed_port.close]
        failures: list[BaseException] = []
        for step in steps:
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - keep cleaning up, report afterwards
                failures.append(exc)
        if failures:
            raise failures[0]

    def _stop_server(self) -> None:
        assert self._server is not None and self._thread is not None
        http = getattr(self, "http", None)
        if http is not None:
            http.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the test server did not stop"

    def _finish_deploys(self) -> None:
        """A deploy already running finishes (it may be starting instances); queued ones
        were cancelled by Controller.stop."""
        with self.controller._lock:
            pending = list(self.controller._preparing.values())
        wait_until(lambda: all(f.done() for f in pending), "deploys in flight to finish")


def build_platform(tmp_path: Path, *, serve: bool = False, run_controller: bool = False,
                   host_instances: bool = False, script: Script | None = None,
                   store: Store | None = None) -> Harness:
    """Compose the real app over SQLite in tmp_path and MemoryBackend; see the module doc.

    Made-up replicas point at a port this harness keeps bound but never listens on, so
    a request forwarded to them is refused at once (the gateway answers 503).
    """
    data_dir = tmp_path / "eas-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    cluster = MemoryCluster(script=script, host_instances=host_instances, replica_port=closed.getsockname()[1])
    store = store if store is not None else Store(data_dir / "eas.db")
    sock = None
    if serve:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    else:
        endpoint = "http://testserver"
    platform = compose(store, MemoryBackend(cluster, "server"), data_dir, endpoint, region=REGION,
                       access_id=ACCESS_ID, access_key=ACCESS_KEY, interval_s=LOOP_INTERVAL_S)
    harness = Harness(platform, cluster, store, data_dir, endpoint, closed)
    try:
        if sock is not None:
            harness._serve(sock)
        else:
            harness._client = TestClient(platform.asgi, base_url=endpoint)
            harness.http = harness._client.__enter__()
        if run_controller:
            platform.controller.start()
            harness.looping = True
    except BaseException:
        harness.close()
        raise
    return harness


# -- fixtures (import them by name into a test module) ------------------------------------------


@pytest.fixture(name="api")
def api_fixture(tmp_path: Path) -> Iterator[Harness]:
    """The real app in-process (TestClient), the controller driven by hand."""
    harness = build_platform(tmp_path)
    yield harness
    harness.close()


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path) -> Iterator[Harness]:
    """The real app served by uvicorn on 127.0.0.1, its controller looping every 50 ms,
    real instances for python services; set `served.cluster.script` to script deploys."""
    harness = build_platform(tmp_path, serve=True, run_controller=True, host_instances=True)
    yield harness
    harness.close()


@pytest.fixture(name="echo_code")
def echo_code_fixture(tmp_path: Path) -> Path:
    return write_echo_code(tmp_path / "echo-code")


@pytest.fixture(name="conf_file")
def conf_file_fixture(served: Harness, tmp_path: Path) -> str:
    """An eascmd.conf pointing at the served platform with the right credentials."""
    return served.conf(tmp_path / "eascmd.conf")
