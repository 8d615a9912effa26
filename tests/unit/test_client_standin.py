"""A stand-in for eas-server, shared by test_client.py and test_eascmd.py.

It is a test double: a small Starlette app with in-memory state that implements the
few calls of docs/api.md the client and eascmd use, served for real by uvicorn on
127.0.0.1 in a background thread, so the client's HTTP, auth and error handling run
unmocked. It is NOT the server: the real eas-server is tested end to end in tests/e2e.

Services move through scripted phases, one step per describe call, so waits are
deterministic: create/modify/start go Waiting -> ... -> Running (or Failed when the
spec's processor is "broken"), stop goes to Stopped, delete to gone (404).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eas import auth, config

ACCESS_ID = "test-admin"
ACCESS_KEY = "test-secret"
REGION = "local"
FAIL_REASON = "processor 'broken' is not a known processor: use one of sklearn, onnx, pytorch"


@dataclass
class Phase:
    status: str
    pending: int
    running: int
    message: str = ""


@dataclass
class FakeService:
    spec: dict[str, Any]
    token: str
    phases: list[Phase]
    created: str = "2026-11-23T09:00:00Z"
    events: list[dict[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def instances(self) -> int:
        return int(self.spec.get("metadata", {}).get("instance", 1))


def _deploy_phases(spec: dict[str, Any]) -> list[Phase]:
    n = int(spec.get("metadata", {}).get("instance", 1))
    phases = [Phase("Waiting", n, 0, "loading the model"), Phase("Waiting", n, 0, "loading the model")]
    if n > 1:
        phases.append(Phase("Waiting", n - 1, 1, "loading the model"))
    if spec.get("processor") == "broken":
        phases.append(Phase("Failed", n, 0, FAIL_REASON))
    else:
        phases.append(Phase("Running", 0, n, ""))
    return phases


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


class StandIn:
    """In-memory state plus the Starlette app; `url` is set once it serves."""

    def __init__(self) -> None:
        self.url = ""
        self.lock = threading.Lock()
        self.reset()
        routes = [
            Route("/api/v2/services", self.create, methods=["POST"]),
            Route("/api/v2/services", self.list, methods=["GET"]),
            Route("/api/v2/services/{region}/{name}", self.describe, methods=["GET"]),
            Route("/api/v2/services/{region}/{name}", self.update, methods=["PUT"]),
            Route("/api/v2/services/{region}/{name}", self.delete, methods=["DELETE"]),
            Route("/api/v2/services/{region}/{name}/start", self.start, methods=["PUT"]),
            Route("/api/v2/services/{region}/{name}/stop", self.stop, methods=["PUT"]),
            Route("/api/v2/services/{region}/{name}/instances", self.instances, methods=["GET"]),
            Route("/api/v2/services/{region}/{name}/instances", self.restart, methods=["DELETE"]),
            Route("/api/v2/services/{region}/{name}/events", self.events, methods=["GET"]),
            Route("/api/predict/{name}", self.predict, methods=["POST"]),
            Route("/api/predict/{name}/{sub:path}", self.predict, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    def reset(self) -> None:
        with self.lock:
            self.services: dict[str, FakeService] = {}
            self.updates: list[dict[str, Any]] = []
            self.restarted: list[str] = []
            self.predict_failures = 0  # answer the next N predicts with 503
            self.predict_calls = 0
            self.describe_failures = 0  # answer the next N describes with 500
            self.auth_schemes: list[str] = []

    # -- helpers for tests --------------------------------------------------------------

    def add_running(self, name: str, instance: int = 1, **spec: Any) -> FakeService:
        full = {"name": name, "processor": "sklearn", "metadata": {"instance": instance}, **spec}
        svc = FakeService(full, token=f"token-{name}", phases=[Phase("Running", 0, instance)])
        with self.lock:
            self.services[name] = svc
        return svc

    # -- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"RequestId": uuid.uuid4().hex, "Code": code, "Message": message}, status)

    def _guard(self, request: Request) -> JSONResponse | None:
        try:
            auth.check_admin_auth(request.headers.get("authorization"), ACCESS_ID, ACCESS_KEY)
        except auth.AuthError as exc:
            return self._error(401, "Unauthorized", str(exc))
        return None

    def _find(self, request: Request) -> FakeService | JSONResponse:
        denied = self._guard(request)
        if denied:
            return denied
        name = request.path_params["name"]
        if request.path_params["region"] != REGION or name not in self.services:
            return self._error(404, "ServiceNotFound", f"service {name} does not exist in region {REGION}")
        return self.services[name]

    def _view(self, svc: FakeService) -> dict[str, Any]:
        phase = svc.phases[0]
        return {
            "ServiceName": svc.name, "ServiceId": f"eas-m-{svc.name}", "Region": REGION,
            "Status": phase.status, "Message": phase.message, "AccessToken": svc.token,
            "TotalInstance": svc.instances, "RunningInstance": phase.running, "PendingInstance": phase.pending,
            "CPU": 1, "GPU": 0, "Memory": 1000, "Weight": 100, "LatestVersion": 1, "CurrentVersion": 1,
            "CreateTime": svc.created, "UpdateTime": svc.created,
            "IntranetEndpoint": self.url, "InternetEndpoint": self.url,
            "ServicePath": f"/api/predict/{svc.name}", "ServiceConfig": json.dumps(svc.spec),
        }  # fmt: skip

    @staticmethod
    def _ok(message: str) -> JSONResponse:
        return JSONResponse({"RequestId": uuid.uuid4().hex, "Message": message})

    # -- management API -----------------------------------------------------------------

    async def create(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied:
            return denied
        try:
            spec = json.loads(await request.body())
        except ValueError:
            return self._error(400, "InvalidJSON", "the body is not valid JSON")
        if not isinstance(spec, dict) or not spec.get("name"):
            return self._error(400, "InvalidSpec", "field 'name' is required")
        with self.lock:
            if spec["name"] in self.services:
                return self._error(409, "ServiceExists", f"service {spec['name']} already exists")
            svc = FakeService(spec, token=spec.get("token") or auth.generate_token(), phases=_deploy_phases(spec))
            self.services[svc.name] = svc
        return JSONResponse({
            "RequestId": uuid.uuid4().hex, "ServiceId": f"eas-m-{svc.name}", "ServiceName": svc.name,
            "Region": REGION, "Status": "Creating", "InternetEndpoint": self.url, "IntranetEndpoint": self.url,
        })  # fmt: skip

    async def list(self, request: Request) -> JSONResponse:
        denied = self._guard(request)
        if denied:
            return denied
        with self.lock:
            services = [self._view(s) for s in self.services.values()]
        return JSONResponse({"RequestId": uuid.uuid4().hex, "TotalCount": len(services), "Services": services})

    async def describe(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            if self.describe_failures > 0:
                self.describe_failures -= 1
                return self._error(500, "InternalError", "the server is restarting")
            if svc.phases[0].status == "Deleted":
                del self.services[svc.name]
                return self._error(404, "ServiceNotFound", f"service {svc.name} does not exist in region {REGION}")
            view = self._view(svc)
            if len(svc.phases) > 1:  # one scripted step per poll
                svc.phases.pop(0)
            return JSONResponse(view)

    async def update(self, request: Request) -> JSONResponse:
        partial = json.loads(await request.body())
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            self.updates.append(partial)
            _deep_merge(svc.spec, partial)
            if svc.phases[0].status != "Stopped":  # a stopped service stays stopped, as on eas-server
                svc.phases = _deploy_phases(svc.spec)
        return self._ok(f"service {svc.name} is updating")

    async def delete(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            svc.phases = [Phase("Deleting", 0, svc.instances), Phase("Deleted", 0, 0)]
        return self._ok(f"service {svc.name} is deleting")

    async def start(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            svc.phases = _deploy_phases(svc.spec)
        return self._ok(f"service {svc.name} is starting")

    async def stop(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            svc.phases = [Phase("Stopping", 0, svc.instances), Phase("Stopped", 0, 0)]
        return self._ok(f"service {svc.name} is stopping")

    async def instances(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            items = [
                {"InstanceName": f"{svc.name}-{i}", "InstanceIp": "127.0.0.1", "HostIp": "10.0.0.1",
                 "StartAt": "2026-11-23T09:00:03Z", "Restarts": i, "Status": "Running",
                 "ReadyProcesses": 1, "TotalProcesses": 2, "Reason": "", "LastState": ""}
                for i in range(svc.instances)
            ]  # fmt: skip
        return JSONResponse({"RequestId": uuid.uuid4().hex, "TotalCount": len(items), "Instances": items})

    async def restart(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            self.restarted.extend(request.query_params.get("InstanceList", "").split(","))
        return self._ok("instances are restarting")

    async def events(self, request: Request) -> JSONResponse:
        with self.lock:
            svc = self._find(request)
            if isinstance(svc, JSONResponse):
                return svc
            events = [{"Time": svc.created, "Type": "Normal", "Message": f"service {svc.name} created"}]
        return JSONResponse({"RequestId": uuid.uuid4().hex, "Events": events})

    # -- predict gateway ----------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        body = await request.body()
        name = request.path_params["name"]
        request_id = uuid.uuid4().hex
        with self.lock:
            self.predict_calls += 1
            svc = self.services.get(name)
            if svc is None:
                return JSONResponse({"code": 404, "message": f"no service {name}", "request_id": request_id}, 404)
            self.auth_schemes.append(request.headers.get("authorization", "").split(" ")[0])
            if self.predict_failures > 0:
                self.predict_failures -= 1
                return JSONResponse({"code": 503, "message": "no ready instance", "request_id": request_id}, 503)
        try:
            auth.check_service_auth(svc.token, request.headers, request.url.path, body)
        except auth.AuthError as exc:
            return JSONResponse({"code": 401, "message": str(exc), "request_id": request_id}, 401)
        return Response(b"echo:" + body, headers={"X-Request-Id": request_id})


def free_port() -> int:
    """A port nothing listens on (bound then released), for the unreachable-server tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="standin_server", scope="session")
def standin_server_fixture() -> Iterator[StandIn]:
    standin = StandIn()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    standin.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(standin.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "stand-in server did not start"
        time.sleep(0.01)
    yield standin
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture(name="standin")
def standin_fixture(standin_server: StandIn) -> StandIn:
    """The shared stand-in, emptied for each test."""
    standin_server.reset()
    return standin_server


@pytest.fixture(name="conf_file")
def conf_file_fixture(standin: StandIn, tmp_path: Path) -> str:
    """An eascmd.conf pointing at the stand-in with the right credentials."""
    path = tmp_path / "eascmd.conf"
    config.write(path, config.ClientConfig(standin.url, ACCESS_ID, ACCESS_KEY, REGION))
    return str(path)
