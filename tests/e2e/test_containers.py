"""Custom images: a service JSON in EAS's current form (`metadata.name`, `containers`,
`cloud`) runs real containers under podman, behind the real gateway.

The image is built in the test, offline: a static Go web app (tests/e2e/fixtures/webapp)
in a `FROM scratch` image (`podman build` needs no registry for it). Nothing is mocked.
Needs podman and Go on the machine (`make container-deps` sets podman up).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from eas.instance import container
from tests.e2e.harness import EasServer, Load, write_json

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("go") is None,
                       reason="needs podman (make container-deps) and go"),
]

APP = Path(__file__).parent / "fixtures" / "webapp"
IMAGE = "localhost/eas-e2e-webapp"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two tags of the web app (VERSION v1 and v2), built here from source."""
    build = tmp_path_factory.mktemp("webapp")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    subprocess.run(["go", "build", "-o", str(build / "webapp"), "."], cwd=APP, env=env, check=True, timeout=300)
    tags = {}
    for version in ("v1", "v2"):
        tag = f"{IMAGE}:{version}"
        # A literal ENV per tag: podman 4.3's layer cache ignores build-arg values.
        (build / "Containerfile").write_text(f"FROM scratch\nENV VERSION={version}\nCOPY webapp /webapp\n"
                                             'ENTRYPOINT ["/webapp"]\n')
        subprocess.run(["podman", "build", "-q", "-t", tag, str(build)], check=True, timeout=300, capture_output=True)
        tags[version] = tag
    return tags


#: What a Python image needs from this machine's own Python (a Debian python3.11): the
#: interpreter, a shell, their shared libraries and the standard library.
HOST_PYTHON = Path("/usr/bin/python3.11")
STDLIB_SKIP = shutil.ignore_patterns("test", "tests", "__pycache__", "idlelib", "tkinter", "ensurepip", "lib2to3",
                                     "pydoc_data", "turtledemo", "dist-packages", "site-packages")


@pytest.fixture(scope="module")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python image built offline from a root file system made here out of the host's
    python3.11 (no registry, no base image): `FROM scratch` + that tree."""
    if not HOST_PYTHON.exists() or not Path("/usr/lib/python3.11").is_dir():
        pytest.skip("needs the system python3.11 (Debian's python3.11 package) to build a Python image")
    build = tmp_path_factory.mktemp("pyimage")
    root = build / "rootfs"
    binaries = {HOST_PYTHON: root / "usr/bin/python3", Path("/bin/dash"): root / "bin/sh"}
    for source, target in binaries.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        for line in subprocess.run(["ldd", str(source)], capture_output=True, text=True, check=True).stdout.splitlines():
            lib = line.split("=>")[-1].split("(")[0].strip()
            if lib.startswith("/"):
                (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib, root / lib.lstrip("/"))
    shutil.copytree("/usr/lib/python3.11", root / "usr/lib/python3.11", ignore=STDLIB_SKIP, symlinks=True)
    (build / "Containerfile").write_text('FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\n')
    tag = "localhost/eas-e2e-python:3.11"
    subprocess.run(["podman", "build", "-q", "-t", tag, str(build)], check=True, timeout=600, capture_output=True)
    return tag


PY_APP = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class App(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"lang": "python", "path": self.path, "greeting": os.environ["GREETING"],
                           "note": open("/app/note.txt").read()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("python app up", flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), App).serve_forever()
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = EasServer(tmp_path_factory.mktemp("eas-data")).start()
    yield server
    server.stop()
    container.reap(owner(server))  # whatever a failed test left behind


def owner(server: EasServer) -> str:
    return container.owner_of(str(server.data_dir.resolve() / "cache"))


def containers(server: EasServer, service: str | None = None) -> list[dict[str, str]]:
    rows = container.managed(owner(server))
    return [r for r in rows if service is None or r["service"] == service]


def monitors(service: str) -> list[str]:
    """Names of the service's containers that still have a podman monitor (conmon), read
    from /proc: a container podman has forgotten while it runs (`podman ps` no longer lists
    it) shows up only here."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon") and b"-n" in argv:
            name = argv[argv.index(b"-n") + 1].decode(errors="replace") if argv.index(b"-n") + 1 < len(argv) else ""
            if name.startswith(f"eas-{service}-"):
                found.append(name)
    return found


def gone(server: EasServer, service: str) -> bool:
    """No container of the service is listed, and none runs unlisted."""
    return not containers(server, service) and not monitors(service)


def wait_until(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not true within {timeout} s: {what}")


def replaced(rows: list[dict[str, str]], key: str, gone: str) -> bool:
    """Two containers running again, none of them the one whose `key` is `gone`."""
    return len(rows) == 2 and gone not in {r[key] for r in rows} and all(r["state"] == "running" for r in rows)


def webapp(name: str, image: str, **env: str) -> dict[str, Any]:
    """The service JSON as EAS's console writes it for a custom image."""
    return {
        "metadata": {"name": name, "instance": 1, "cpu": 1, "memory": 256},
        "containers": [{
            "image": image, "command": ["/webapp"], "port": 8000,
            "env": [{"name": "READY_AFTER", "value": "2"}, *({"name": k, "value": v} for k, v in env.items())],
            "health_check": {"http_get": {"path": "/ready"}, "period_seconds": 1},
        }],
        "cloud": {"computing": {"instance_type": "ecs.c6.large"}},
    }


def get(server: EasServer, name: str, sub: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": token} if token else {}
    return httpx.request(kw.pop("method", "GET"), f"{server.url}/api/predict/{name}{sub}", headers={**headers, **kw.pop(
        "headers", {})}, timeout=30, **kw)


def test_container_service_lifecycle(srv: EasServer, images: dict[str, str], tmp_path: Path) -> None:
    srv.eascmd("create", str(write_json(tmp_path / "web.json", webapp("web", images["v1"]))))
    info = srv.wait_status("web", "Running", timeout=180)
    token = info["AccessToken"]

    # Running only once the health check passed: the app refused its first 2 probes.
    first = get(srv, "web", "/", token)
    assert first.status_code == 200, first.text
    assert first.json()["probes"] >= 3
    assert get(srv, "web", "/", None).status_code == 401
    assert get(srv, "web", "/", "wrong-token-123").status_code == 401

    # Any method, sub-path, query and the client's own headers reach the app; the token does not.
    page = get(srv, "web", "/static/app.js", token, params={"v": "3", "q": "a b"}, headers={"X-Custom": "yes"}).json()
    assert (page["method"], page["path"], page["query"], page["x_custom"]) == ("GET", "/static/app.js", "v=3&q=a+b",
                                                                             "yes")
    assert page["authorization"] == "" and page["version"] == "v1"
    posted = get(srv, "web", "/api/items", token, method="POST", content=b'{"a":1}').json()
    assert (posted["method"], posted["path"], posted["body"]) == ("POST", "/api/items", '{"a":1}')
    assert get(srv, "web", "/api/items/7", token, method="DELETE").json()["method"] == "DELETE"
    assert srv.predict("web", b"hello", token).json()["body"] == "hello"  # EAS predict form: POST to the service
    # WebSockets (web UIs hold them): the token checked at the upgrade, frames relayed both ways.
    ws_url = f"ws://127.0.0.1:{srv.port}/api/predict/web/ws"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url, open_timeout=10).close()
    assert refused.value.response.status_code == 401
    with ws_connect(ws_url, additional_headers={"Authorization": token}, open_timeout=30) as session:
        session.send("hi")
        assert session.recv(timeout=30) == "echo: hi"
        session.send("again")
        assert session.recv(timeout=30) == "echo: again"
    login = get(srv, "web", "/login", token)  # not followed: the client sees the app's redirect and cookie
    assert login.status_code == 302 and login.headers["location"] == "/home", login.headers
    assert login.cookies["session"] == "abc123" and login.cookies["theme"] == "dark"  # two Set-Cookie lines
    with httpx.stream("GET", f"{srv.url}/api/predict/web/stream", headers={"Authorization": token}, timeout=30) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert "".join(sse.iter_text()) == "data: token1\n\ndata: token2\n\ndata: token3\n\n"
    # An LLM-style stream: 20 events 100 ms apart reach the client as they are made.
    started, arrivals = time.perf_counter(), []
    with httpx.stream("GET", f"{srv.url}/api/predict/web/stream?n=20&gap_ms=100", headers={"Authorization": token},
                      timeout=30) as sse:
        for line in sse.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.perf_counter() - started, line[6:]))
    assert [event for _, event in arrivals] == [f"token{i}" for i in range(1, 21)]
    assert arrivals[0][0] < 0.3, f"first event after {arrivals[0][0]:.3f} s"
    assert arrivals[-1][0] - arrivals[0][0] > 1.5, "the events came together: the answer was buffered somewhere"

    # DIRECT mode: the SDKs call the instance itself (token checked there), which forwards.
    upstreams = httpx.get(f"{srv.url}/api/v1/servicediscovery/upstreams/web", timeout=10).json()
    item = upstreams["endpoints"]["items"][0]
    direct = f"http://{item['ip']}:{item['port']}/api/predict/web/direct"
    assert httpx.post(direct, content=b"x", timeout=10).status_code == 401
    assert httpx.post(direct, content=b"x", headers={"Authorization": token}, timeout=10).json()["path"] == "/direct"

    # One container per instance, labelled with its service and instance.
    rows = containers(srv, "web")
    assert len(rows) == 1 and rows[0]["state"] == "running"
    # ... with the service's CPU and memory as its limits (metadata.cpu 1, memory 256 MB).
    limits = subprocess.run(["podman", "inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
                             rows[0]["id"]], capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert limits == [str(10**9), str(256 * 1024 * 1024)], limits

    # Scale 1 -> 2: both containers serve.
    srv.eascmd("modify", "web", "-Dmetadata.instance=2")
    wait_until("2 running containers", lambda: len([r for r in containers(srv, "web") if r["state"] == "running"]) == 2)
    wait_until("answers from both containers",
               lambda: len({get(srv, "web", "/", token).json()["host"] for _ in range(20)}) == 2)
    assert srv.desc("web")["RunningInstance"] == 2
    wait_until("eascmd w shows both containers running", lambda: [
        i["Ext"].get("ContainerState") for i in json.loads(srv.eascmd("w", "web", "--json").stdout)] == ["running"] * 2)
    assert "CONTAINER" in srv.eascmd("w", "web").stdout

    # A container that dies takes its instance with it: a new instance, a new container.
    victim = containers(srv, "web")[0]
    subprocess.run(["podman", "kill", victim["id"]], check=True, capture_output=True, timeout=60)
    wait_until("the dead container replaced", lambda: replaced(containers(srv, "web"), "id", victim["id"]), timeout=180)
    srv.wait_status("web", "Running")

    # kill -9 of a replica: it cannot remove its container; the server does (an orphan by label).
    instances = json.loads(srv.eascmd("w", "web", "--json").stdout)
    doomed = next(i for i in instances if i["Ext"]["Pid"])
    doomed_id = doomed["InstanceName"].removeprefix("web-")
    os.kill(doomed["Ext"]["Pid"], signal.SIGKILL)
    wait_until("the killed replica's container removed, a new one running",
               lambda: replaced(containers(srv, "web"), "instance", doomed_id), timeout=180)
    srv.wait_status("web", "Running")

    # Rolling update to a new image tag under load: no request fails.
    patch = write_json(tmp_path / "v2.json", {"containers": webapp("web", images["v2"])["containers"]})
    with Load(f"{srv.url}/api/predict/web", b"load", token, concurrency=4) as load:
        wait_until("some answers", lambda: load.mark() > 20)
        srv.eascmd("modify", "web", "-s", str(patch))
        wait_until("v2 answering", lambda: get(srv, "web", "/", token).json()["version"] == "v2", timeout=240)
        wait_until("only v2 containers", lambda: len(containers(srv, "web")) == 2
                   and all(get(srv, "web", "/", token).json()["version"] == "v2" for _ in range(10)), timeout=240)
        srv.wait_status("web", "Running")
    failed = [(status, body[:200]) for status, _, body in load.results if status != 200]
    assert load.results and not failed, f"{len(failed)} of {len(load.results)} failed: {failed[:5]}"

    # kill -9 of eas-server and restart: serving again, no orphan container.
    srv.kill9()
    srv.start()
    srv.wait_status("web", "Running", timeout=180)
    wait_until("serving after restart", lambda: get(srv, "web", "/", token).status_code == 200)
    wait_until("exactly the 2 new containers", lambda: len(containers(srv, "web")) == 2, timeout=60)
    assert get(srv, "web", "/", token).json()["version"] == "v2"

    # Delete: no container left.
    srv.eascmd("delete", "web", "-y")
    wait_until("no containers after delete", lambda: gone(srv, "web"), timeout=120)


def test_container_exiting_at_start_is_failed_with_its_last_log_lines(srv: EasServer, images: dict[str, str],
                                                                       tmp_path: Path) -> None:
    created = srv.eascmd("create", str(write_json(tmp_path / "crash.json", webapp("crasher", images["v1"], CRASH="1"))),
                         check=False)
    assert created.returncode != 0 and "exit code 3" in created.stderr, created.stderr
    info = srv.wait_status("crasher", "Failed", timeout=180)
    assert "exit code 3" in info["Message"], info["Message"]
    assert "fatal: no config file at /etc/webapp.conf" in info["Message"]
    assert "Traceback" not in info["Message"]
    srv.eascmd("delete", "crasher", "-y")
    wait_until("no containers after delete", lambda: gone(srv, "crasher"), timeout=120)


def test_bad_container_spec_names_the_field(srv: EasServer, tmp_path: Path) -> None:
    bad = webapp("badspec", "localhost/x:v1")
    bad["containers"][0]["health_check"] = {"http_get": {"path": "ready"}}
    res = srv.eascmd("create", str(write_json(tmp_path / "bad.json", bad)), check=False)
    assert res.returncode != 0
    assert "containers.0.health_check.http_get.path" in res.stdout + res.stderr


def test_python_image_with_a_script_and_a_storage_mount(srv: EasServer, python_image: str, tmp_path: Path) -> None:
    """`script` runs in the image's shell; the app's code comes from a storage mount."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "server.py").write_text(PY_APP)
    (app / "note.txt").write_text("from the mount")
    spec = {
        "metadata": {"name": "pyweb", "instance": 1, "cpu": 1, "memory": 256},
        "containers": [{"image": python_image, "script": "exec python3 /app/server.py", "port": 9000,
                        "env": [{"name": "PORT", "value": 9000}, {"name": "GREETING", "value": "hello"}],
                        "health_check": {"tcp_socket": {"port": 9000}, "period_seconds": 1}}],
        "storage": [{"mount_path": "/app", "nfs": {"path": str(app), "readOnly": True}}],
    }
    srv.eascmd("create", str(write_json(tmp_path / "py.json", spec)))
    token = srv.wait_status("pyweb", "Running", timeout=180)["AccessToken"]
    answer = get(srv, "pyweb", "/hello?x=1", token)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"lang": "python", "path": "/hello?x=1", "greeting": "hello", "note": "from the mount"}
    assert get(srv, "pyweb", "/hello", None).status_code == 401
    srv.eascmd("delete", "pyweb", "-y")
    wait_until("no containers after delete", lambda: gone(srv, "pyweb"), timeout=120)


SIDECAR_CODE = '''
import urllib.request


class Front:
    def initialize(self):
        pass

    def process(self, data):
        with urllib.request.urlopen("http://127.0.0.1:%d/from-processor", data=data, timeout=5) as answer:
            return answer.read(), 200
'''


def test_processor_with_a_sidecar_container(images: dict[str, str], tmp_path: Path) -> None:
    """EAS's processor + containers form, in one instance (the runtime as a replica runs
    it, without Ray): the sidecar starts first and passes its check, the user code calls
    it on localhost, and closing the instance removes it."""
    import asyncio

    from eas.instance.runtime import ContainerHost, ServiceRuntime
    from processors.base import Request

    port = free_port()
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(SIDECAR_CODE % port)
    spec = {"metadata": {"name": "front", "instance": 1}, "processor_type": "python", "processor_path": str(code),
            "containers": [{"image": images["v1"], "command": ["/webapp"], "port": port,
                            "env": [{"name": "PORT", "value": port}]}]}
    host = ContainerHost("sidecar1", "test-sidecar-owner")
    runtime = ServiceRuntime(spec, str(tmp_path / "cache"), host=host)
    try:  # the sidecar was up before the processor loaded (a TCP check on its port)
        answer = asyncio.run(runtime.run("predict", Request(b"ping")))
        assert answer.status == 200, answer.body
        assert json.loads(answer.body)["path"] == "/from-processor" and json.loads(answer.body)["body"] == "ping"
        runtime.check()
    finally:
        runtime.close()
    assert not container.managed("test-sidecar-owner")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
