"""Secrets stay secret: at rest, between the gateway and instances, in what the server shows.

- The store (SQLite and its -wal/-shm), server-id and eascmd.conf are the server user's
  only (0600).
- Each service's instances get their own internal key, derived from the master key: a
  key that leaks from one service's instance calls no other service's instance.
- Serve's config carries a digest of the secrets, never the secrets (they wait in Ray's
  internal KV).
- Credentials inside model URLs are used to fetch but never shown: desc, versions,
  events, status messages and logs show *** instead.
- eascmd strips terminal escapes and control characters from what the server says.

The real app over SQLite with MemoryBackend (tests/support/platform.py), real echo
instances where a call must reach one.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from click.testing import CliRunner

from eas.client import config
from eas.control import store as st
from eas.control.keys import service_key
from eas.control.leader import server_identity
from eas.protocols.wire import INTERNAL_KEY_HEADER
from eas.sources import redact_text, redact_url
from eascmd.cli import cli
from tests.support.platform import (Harness, api_fixture, conf_file_fixture, echo_code_fixture, echo_spec,  # noqa: F401
                                    served_fixture)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- at rest ------------------------------------------------------------------------------------


def test_store_files_are_private_and_old_ones_are_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "eas.db"
    store = st.Store(path)
    store.create_service("svc", {"name": "svc", "metadata": {"instance": 1}}, "tok-secret-1")
    store.set_setting("internal_key", "master")
    for suffix in ("", "-wal", "-shm"):
        assert mode(Path(f"{path}{suffix}")) == 0o600, suffix
    store.close()

    for suffix in ("", "-wal", "-shm"):  # what an older server left behind
        target = Path(f"{path}{suffix}")
        if target.exists():
            os.chmod(target, 0o644)
    again = st.Store(path)
    assert mode(path) == 0o600
    again.close()


def test_server_id_and_eascmd_conf_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ident = server_identity(data)
    assert mode(data / "server-id") == 0o600
    os.chmod(data / "server-id", 0o644)
    assert server_identity(data) == ident and mode(data / "server-id") == 0o600

    conf = tmp_path / "home" / ".eascmd" / "eascmd.conf"
    conf.parent.parent.mkdir()
    (conf.parent).mkdir(mode=0o755)
    leftover = conf.with_suffix(".tmp")
    leftover.write_text("stale")
    os.chmod(leftover, 0o644)
    config.write(conf, config.ClientConfig("http://h", "id", "key"))
    assert mode(conf) == 0o600
    fresh = tmp_path / "fresh" / "eascmd.conf"
    config.write(fresh, config.ClientConfig("http://h", "id", "key"))
    assert mode(fresh) == 0o600 and mode(fresh.parent) == 0o700


# -- in transit: one internal key per service -----------------------------------------------------


def test_each_service_has_its_own_internal_key(served: Harness, echo_code: Path) -> None:
    for name in ("alpha", "beta"):
        served.running(echo_spec(name, echo_code, token=f"{name}-token-1"))
    hosted = {name: served.cluster._hosted[name][1][0] for name in ("alpha", "beta")}
    master = served.store.setting("internal_key")
    keys = {name: h.creds.internal_key for name, h in hosted.items()}
    assert keys == {name: service_key(master, name) for name in keys}
    assert len(set(keys.values())) == 2 and master not in keys.values(), "instances never get the master key"
    # Routes carry each service's own key, so the gateway still reaches both.
    for name in ("alpha", "beta"):
        assert served.controller.routes.get(name).internal_key == keys[name]
        assert served.predict(name, b"x", f"{name}-token-1").content == b"echo:x"

    beta = hosted["beta"].server
    url = f"http://{beta.host}:{beta.port}/api/predict/beta"
    stolen = httpx.post(url, content=b"x", headers={INTERNAL_KEY_HEADER: keys["alpha"]})
    assert stolen.status_code == 401, "alpha's key does not open beta's instance"
    drain = httpx.post(f"http://{beta.host}:{beta.port}/drain", headers={INTERNAL_KEY_HEADER: keys["alpha"]})
    assert drain.status_code == 401, "nor drain it"
    master_call = httpx.post(url, content=b"x", headers={INTERNAL_KEY_HEADER: master})
    assert master_call.status_code == 401, "the master key is no instance's key"
    own = httpx.post(url, content=b"x", headers={INTERNAL_KEY_HEADER: keys["beta"]})
    assert own.status_code == 200 and own.content == b"echo:x"


def test_serve_sees_a_digest_and_replicas_read_the_secrets_from_the_kv(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Ray backend hands Serve as user_config: no token, no key, but a value that
    changes whenever they do (so Serve reconfigures the replicas, which read the KV)."""
    from ray.experimental import internal_kv

    from eas.backend import ray_serve
    from eas.backend.replica import KV_NAMESPACE, secrets_key

    kv: dict[tuple[bytes, str], bytes] = {}
    monkeypatch.setattr(internal_kv, "_internal_kv_put",
                        lambda key, value, overwrite=True, namespace=None: kv.__setitem__((key, namespace), value))
    secrets = {"token": "tok-secret-1", "internal_key": service_key("master", "svc")}
    shown = ray_serve.publish_secrets("svc", secrets)
    text = json.dumps(shown)
    assert "tok-secret-1" not in text and secrets["internal_key"] not in text
    assert json.loads(kv[(secrets_key("svc"), KV_NAMESPACE)]) == secrets
    rotated = ray_serve.publish_secrets("svc", {**secrets, "token": "tok-secret-2"})
    assert rotated != shown, "a new token reconfigures the replicas"
    assert ray_serve.publish_secrets("svc", secrets) == shown


# -- credentials inside model URLs ----------------------------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """An HTTP server that records what it was asked for and refuses it (403)."""

    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:  # noqa: N802
        _Refusing.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    _Refusing.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


SECRETS = ("pa55word", "s1gn4ture", "AKIDSECRET", "0ss-s1g")


def test_redaction_rules() -> None:
    url = ("https://alice:pa55word@bucket.example/m.tar.gz?X-Amz-Signature=s1gn4ture"
           "&X-Amz-Credential=AKIDSECRET&X-Amz-Expires=60&versionId=3")
    shown = redact_url(url)
    assert shown == ("https://***@bucket.example/m.tar.gz?X-Amz-Signature=***&X-Amz-Credential=***"
                     "&X-Amz-Expires=60&versionId=3")
    oss = "https://b.oss-cn-hangzhou.aliyuncs.com/m.pkl?OSSAccessKeyId=AKIDSECRET&Expires=1&Signature=0ss-s1g"
    assert redact_url(oss) == "https://b.oss-cn-hangzhou.aliyuncs.com/m.pkl?OSSAccessKeyId=***&Expires=1&Signature=***"
    text = f"download of {url} failed; also see ({oss})"
    assert not any(s in redact_text(text) for s in SECRETS)
    assert redact_url("https://host/plain.pkl") == "https://host/plain.pkl"
    assert redact_url("https://ghp_tokenonly@host/m") == "https://***@host/m"


def test_model_url_credentials_are_used_but_never_shown(api: Harness, refusing_server: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = (f"http://alice:pa55word@{refusing_server}/m.joblib?X-Amz-Signature=s1gn4ture"
           "&X-Amz-Credential=AKIDSECRET&Expires=99")
    api.create({"name": "creds", "processor": "sklearn", "model_path": url, "metadata": {"instance": 1}})
    api.reconcile_until(lambda: api.status("creds") == "Failed", "the download to fail")

    # Fetched with them: basic auth from the user info, the signature in the query.
    assert _Refusing.seen and _Refusing.seen[0]["authorization"] == "Basic " + base64.b64encode(
        b"alice:pa55word").decode()
    assert "X-Amz-Signature=s1gn4ture" in _Refusing.seen[0]["path"]

    desc = api.describe("creds")
    shown = json.dumps(desc)
    events = json.dumps(api.ok("GET", api.svc("creds", "/events")))
    versions = json.dumps(api.ok("GET", api.svc("creds", "/versions")))
    listing = json.dumps(api.ok("GET", "/api/v2/services"))
    for where, text in [("desc", shown), ("events", events), ("versions", versions), ("ls", listing),
                        ("logs", caplog.text)]:
        assert not any(s in text for s in SECRETS), f"{where} shows a credential: {text[:2000]}"
    config_shown = json.loads(desc["ServiceConfig"])["model_path"]
    assert config_shown == (f"http://***@{refusing_server}/m.joblib?X-Amz-Signature=***&X-Amz-Credential=***"
                            "&Expires=99")
    assert "HTTP 403" in desc["Message"] and "***" in desc["Message"]

    # desc's ServiceConfig fed back to modify leaves the real URL in place.
    answer = api.ok("PUT", api.svc("creds"), {"model_path": config_shown})
    assert "unchanged" in answer["Message"]
    assert api.store.get("creds").spec["model_path"] == url


def test_plain_http_sources_need_the_servers_opt_in(api: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"name": "plain", "processor": "sklearn", "model_path": "http://models.example/m.joblib",
            "metadata": {"instance": 1}}
    resp = api.call("POST", "/api/v2/services", spec)
    assert resp.status_code == 400 and "model_path: plain http:// sources are off" in resp.json()["Message"]
    assert api.call("POST", "/api/v2/services", {**spec, "model_path": "https://models.example/m.joblib"}
                    ).status_code == 200
    monkeypatch.setenv("EAS_ALLOW_HTTP_SOURCES", "1")
    assert api.call("POST", "/api/v2/services", {**spec, "name": "plain2"}).status_code == 200


# -- what eascmd prints -----------------------------------------------------------------------------


def test_eascmd_strips_terminal_escapes_from_server_text(served: Harness, conf_file: str, tmp_path: Path) -> None:
    evil = str(tmp_path / "\x1b[2J\x1b]0;pwned\x07\rmodel\x9b31m\u202egnp.joblib")
    served.create({"name": "esc", "processor": "sklearn", "model_path": evil, "metadata": {"instance": 1}})
    served.wait_status("esc", {"Failed"})
    runner = CliRunner()
    for args in (["events", "esc"], ["desc", "esc"], ["desc", "esc", "--json"], ["ls"], ["events", "esc", "--json"]):
        out = runner.invoke(cli, ["-c", conf_file, *args])
        assert out.exit_code == 0, out.output
        assert "model" in out.output and "does not exist" in out.output or args[0] == "ls", out.output
        for bad in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
            assert bad not in out.output, (args, bad, out.output)
    failed = runner.invoke(cli, ["-c", conf_file, "start", "esc", "--timeout", "5"])
    for bad in ("\x1b", "\x07", "\r", "\x9b"):
        assert bad not in failed.output
