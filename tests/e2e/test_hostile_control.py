"""Secrets stay secret and rotate, against the real eas-server and its own Ray.

- Token rotation after a mirror was set: through the gateway the new token answers 200
  and the old one 401 (the traffic row used to keep a copy of the old token).
- The data dir (0700) and the files holding secrets (0600) are the server user's only.
- Each service's instances hold their own internal key: the key of service A does not
  open an instance of service B (a direct call with it is 401).
- Serve's own view of the apps (the Serve controller's details, what `serve status`
  and the Serve API read) holds no token and no key: a digest only.
- A model URL's credentials are used to fetch, never shown in desc, events or the log.

One server for the module; every wait is bounded, none is a fixed sleep.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from eas.protocols.wire import INTERNAL_KEY_HEADER
from tests.e2e.harness import REPO, EasServer, write_json
from tests.support.raycluster import cmdline, descendants

pytestmark = pytest.mark.e2e

OLD, NEW = "front-old-token-1", "front-new-token-2"
ECHO = """
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return b"echo:" + data, 200
"""
SECRETS = ("pa55word", "s1gn4ture", "AKIDSECRET")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EasServer]:
    """A data dir created the usual way (0755 under the default umask): the server
    itself must make it private."""
    data = tmp_path_factory.mktemp("hostile") / "eas-data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    srv = EasServer(data).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def running(server: EasServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two echo services, `front` (mirrored to `shadow`) and `shadow`; their tokens."""
    code = tmp_path_factory.mktemp("echo")
    (code / "app.py").write_text(ECHO)
    tokens = {"front": OLD, "shadow": "shadow-token-12"}
    with server.admin() as admin:
        for name, token in tokens.items():
            spec = {"name": name, "processor_type": "python", "processor_path": str(code), "token": token,
                    "metadata": {"instance": 1, "cpu": 0.25}}
            assert admin.post("/api/v2/services", json=spec).status_code == 200
    for name in tokens:
        server.wait_status(name, "Running", timeout=90)
    return tokens


def ray_view(server: EasServer) -> dict[str, Any]:
    """What a Ray driver attached to the server's Ray sees: the Serve controller's app
    details, and the secrets and endpoints in the internal KV."""
    assert server.proc is not None
    # The server's raylet is started with the GCS address (its port is chosen at start).
    raylets = [pid for pid in descendants(server.proc.pid) if "/raylet " in cmdline(pid)]
    assert raylets, "the server's raylet was not found"
    addresses = [arg.split("=", 1)[1] for arg in cmdline(raylets[0]).split() if arg.startswith("--gcs-address=")]
    script = """
import json, sys
import ray
from ray.experimental import internal_kv
ray.init(address=sys.argv[1], namespace="eas", _node_ip_address="127.0.0.1", log_to_driver=False,
         logging_level="ERROR")
controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
details = ray.get(controller.get_serve_instance_details.remote(), timeout=30)
def kv(prefix):
    return {k.decode(): internal_kv._internal_kv_get(k, namespace="eas").decode()
            for k in internal_kv._internal_kv_list(prefix, namespace="eas")}
print("VIEW " + json.dumps({"details": details, "secrets": kv(b"secrets/"), "endpoints": kv(b"endpoint/")},
                           default=str))
ray.shutdown()
"""
    # The local Ray's token lives in the environment of the server's processes, not in a file.
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{raylets[0]}/environ").read_text().split("\0") if "=" in item)
    assert environ.get("RAY_AUTH_MODE") == "token" and len(environ.get("RAY_AUTH_TOKEN", "")) == 64
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": environ["RAY_AUTH_TOKEN"]}
    done = subprocess.run([sys.executable, "-c", script, addresses[0]], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("VIEW ")), None)
    assert line is not None, f"driver failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(line[5:])


def test_the_data_dir_and_its_secrets_are_private(server: EasServer) -> None:
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("eas.db", "eas.db-wal", "eas.db-shm", "eascmd.conf", "server-id"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_token_rotation_after_a_mirror_through_the_gateway(server: EasServer, running: dict[str, str]) -> None:
    with server.admin() as admin:
        resp = admin.put("/api/v2/services/local/front/mirror", json={"Target": ["shadow"], "Ratio": 100})
        assert resp.status_code == 200, resp.text
    assert server.predict("front", b"x", OLD).status_code == 200
    server.eascmd("modify", "front", f"-Dtoken={NEW}")
    deadline = time.monotonic() + 30
    while (status := server.predict("front", b"x", NEW).status_code) != 200:
        assert time.monotonic() < deadline, f"the new token still answers {status}\n{server.log_tail()}"
        time.sleep(0.1)
    answer = server.predict("front", b"x", NEW)
    assert (answer.status_code, answer.content) == (200, b"echo:x")
    assert server.predict("front", b"x", OLD).status_code == 401
    assert server.desc("front")["AccessToken"] == NEW
    running["front"] = NEW


def test_keys_per_service_and_no_secret_in_serves_config(server: EasServer, running: dict[str, str]) -> None:
    view = ray_view(server)
    secrets = {k.split("/", 1)[1]: json.loads(v) for k, v in view["secrets"].items()}
    assert set(secrets) >= {"front", "shadow"}
    front_key, shadow_key = secrets["front"]["internal_key"], secrets["shadow"]["internal_key"]
    assert front_key != shadow_key

    # Serve's config of each app: a digest, never the token or a key.
    apps = view["details"]["applications"]
    text = json.dumps(apps)
    for name, token in running.items():
        user_config = apps[name]["deployments"]["ServiceReplica"]["deployment_config"]["user_config"]
        assert set(user_config) == {"service", "secrets_digest"}, user_config
        assert token not in text and secrets[name]["internal_key"] not in text
    assert OLD not in text

    shadow = next(v for k, v in view["endpoints"].items() if k.startswith("endpoint/shadow/"))
    url = f"http://{shadow}/api/predict/shadow"
    assert httpx.post(url, content=b"x", headers={INTERNAL_KEY_HEADER: front_key}, timeout=10).status_code == 401, \
        "front's key does not open shadow's instance"
    assert httpx.post(f"http://{shadow}/drain", headers={INTERNAL_KEY_HEADER: front_key},
                      timeout=10).status_code == 401, "nor drain it"
    own = httpx.post(url, content=b"x", headers={INTERNAL_KEY_HEADER: shadow_key}, timeout=10)
    assert (own.status_code, own.content) == (200, b"echo:x")


class _Refusing(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Refusing.seen.append(self.headers.get("Authorization") or "")
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_model_url_credentials_are_redacted(server: EasServer, tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = (f"http://alice:pa55word@127.0.0.1:{httpd.server_address[1]}/m.joblib"
               "?X-Amz-Signature=s1gn4ture&X-Amz-Credential=AKIDSECRET")
        spec = {"name": "creds", "processor": "sklearn", "model_path": url, "metadata": {"instance": 1}}
        server.eascmd("create", str(write_json(tmp_path / "creds.json", spec)), check=False)
        desc = server.wait_status("creds", "Failed", timeout=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert _Refusing.seen and _Refusing.seen[0].startswith("Basic "), "the credentials were used to fetch"
    shown = json.loads(desc["ServiceConfig"])["model_path"]
    assert shown.startswith("http://***@127.0.0.1:") and "X-Amz-Signature=***" in shown
    assert "HTTP 403" in desc["Message"]
    events = server.eascmd("events", "creds", "--json").stdout
    described = server.eascmd("desc", "creds", "--json").stdout
    for where, text in (("desc", described), ("events", events), ("log", server.log_path.read_text())):
        assert not any(s in text for s in SECRETS), f"{where} shows a credential"
    server.eascmd("delete", "creds", "-y")
