"""AccessKey signatures and pairs of the management API (eas/api/signature.py,
eas/api/accesskeys.py) on the real app: SQLite store, MemoryBackend, in-process calls.

Requests are signed here by eas/protocols/acs.py, the code our own client signs with;
that it computes what Alibaba's SDKs compute is proven by driving the official SDKs
against a real server (tests/sdk/test_mgmt_sdk.py). Here: what the server refuses, and
what each role may do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from eas.protocols import acs
from eascmd.cli import cli
from tests.support.platform import (  # noqa: F401 - the *_fixture names register the fixtures
    ACCESS_ID,
    ACCESS_KEY,
    REQUEST_ID,
    Harness,
    api_fixture,
    conf_file_fixture,
    served_fixture,
)

HOST = "testserver"


def signed(api: Harness, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
           key: tuple[str, str] = (ACCESS_ID, ACCESS_KEY), scheme: str = "acs3", now: float | None = None,
           tamper: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> httpx.Response:
    """One call signed like the SDKs (with `extra` headers signed too); `tamper` changes
    the request after signing (`body`, `params`, `path`, or headers by name) to see the
    server notice."""
    content = json.dumps(body).encode() if body is not None else b""
    base = {"host": HOST, "x-acs-version": acs.API_VERSION, "accept": "application/json", **(extra or {})}
    if body is not None:
        base["content-type"] = "application/json; charset=utf-8"
    when = time.time() if now is None else now
    query = params or {}
    if scheme == "acs3":
        headers = acs.sign_acs3(method, path, query, base, content, *key, when)
    else:
        headers = acs.sign_roa(method, path, query, base, *key, when)
    tamper = dict(tamper or {})
    content = tamper.pop("body", content)
    query = tamper.pop("params", query)
    path = tamper.pop("path", path)
    method = tamper.pop("method", method)
    headers.update(tamper)
    return api.http.request(method, path, params=query, content=content or None, headers=headers)


def envelope(resp: httpx.Response) -> tuple[int, str, str]:
    data = resp.json()
    assert set(data) == {"RequestId", "Code", "Message"} and REQUEST_ID.match(data["RequestId"]), data
    return resp.status_code, data["Code"], data["Message"]


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "processor": "sklearn", "metadata": {"instance": 1}}


# -- the signature schemes --------------------------------------------------------------------------


def test_both_schemes_are_accepted_and_bind_method_path_query_and_body(api: Harness) -> None:
    for scheme in ("acs3", "roa"):
        name = f"svc_{scheme}"
        created = signed(api, "POST", "/api/v2/services", spec(name), scheme=scheme)
        assert created.status_code == 200, created.text
        listed = signed(api, "GET", "/api/v2/services", params={"ServiceName": name, "PageSize": "5"}, scheme=scheme)
        assert [s["ServiceName"] for s in listed.json()["Services"]] == [name]
        # The query is signed: another one under the same signature is refused.
        moved = signed(api, "GET", "/api/v2/services", params={"ServiceName": name}, scheme=scheme,
                       tamper={"params": {"ServiceName": "other"}})
        assert envelope(moved)[:2] == (401, "SignatureDoesNotMatch")
        # So are the path and the method.
        moved = signed(api, "GET", api.svc(name), scheme=scheme, tamper={"path": api.svc("other")})
        assert envelope(moved)[:2] == (401, "SignatureDoesNotMatch")
        stopped = signed(api, "PUT", api.svc(name, "/start"), scheme=scheme, tamper={"path": api.svc(name, "/stop")})
        assert envelope(stopped)[:2] == (401, "SignatureDoesNotMatch")
        deleted = signed(api, "GET", api.svc(name), scheme=scheme, tamper={"method": "DELETE"})
        assert envelope(deleted)[:2] == (401, "SignatureDoesNotMatch")
        assert api.describe(name)["Status"] == "Creating", "nothing was changed"

    # ACS3 binds the body through x-acs-content-sha256: one changed byte is refused.
    changed = signed(api, "PUT", api.svc("svc_acs3"), {"metadata": {"instance": 2}},
                     tamper={"body": json.dumps({"metadata": {"instance": 3}}).encode()})
    status, code, message = envelope(changed)
    assert (status, code) == (401, "SignatureDoesNotMatch") and "x-acs-content-sha256" in message
    assert api.describe("svc_acs3")["TotalInstance"] == 1, "nothing changed"
    # ROA binds a body when a Content-MD5 is signed (the SDKs send none).
    patch = {"metadata": {"instance": 2}}
    md5 = base64.b64encode(hashlib.md5(json.dumps(patch).encode()).digest()).decode()
    wrong_body = signed(api, "PUT", api.svc("svc_roa"), patch, scheme="roa", extra={"content-md5": md5},
                        tamper={"body": json.dumps({"metadata": {"instance": 5}}).encode()})
    status, code, message = envelope(wrong_body)
    assert (status, code) == (401, "SignatureDoesNotMatch") and "Content-MD5" in message
    assert signed(api, "PUT", api.svc("svc_roa"), patch, scheme="roa", extra={"content-md5": md5}).status_code == 200


def test_bad_stale_and_replayed_signatures_are_401(api: Harness) -> None:
    for scheme in ("acs3", "roa"):
        wrong = signed(api, "GET", "/api/v2/services", key=(ACCESS_ID, "not-the-secret"), scheme=scheme)
        status, code, message = envelope(wrong)
        assert (status, code) == (401, "SignatureDoesNotMatch") and "check the AccessKey secret" in message
        unknown = signed(api, "GET", "/api/v2/services", key=("LTAI-nobody", ACCESS_KEY), scheme=scheme)
        assert envelope(unknown)[:2] == (401, "InvalidAccessKeyId.NotFound")
        for offset in (-1000, 1000):
            stale = signed(api, "GET", "/api/v2/services", scheme=scheme, now=time.time() + offset)
            status, code, message = envelope(stale)
            assert (status, code) == (401, "InvalidTimeStamp.Expired") and "900 s" in message, message
        assert signed(api, "GET", "/api/v2/services", scheme=scheme, now=time.time() - 800).status_code == 200

    # The same signed request twice: the second is a replay.
    content = b""
    headers = acs.sign_acs3("GET", "/api/v2/services", {}, {"host": HOST}, content, ACCESS_ID, ACCESS_KEY,
                            time.time())
    assert api.http.get("/api/v2/services", headers=headers).status_code == 200
    status, code, _ = envelope(api.http.get("/api/v2/services", headers=headers))
    assert (status, code) == (401, "SignatureNonceUsed")

    # What must be signed, is.
    bare = acs.sign_acs3("GET", "/api/v2/services", {}, {"host": HOST}, b"", ACCESS_ID, ACCESS_KEY, time.time())
    unsigned_date = {**bare, "authorization": bare["authorization"].replace("x-acs-date;", "")}
    assert envelope(api.http.get("/api/v2/services", headers=unsigned_date))[:2] == (401, "InvalidAuthorization")
    for broken in ("ACS3-HMAC-SHA256 Credential=x", "acs nocolon", "acs :sig"):
        assert envelope(api.http.get("/api/v2/services", headers={"Authorization": broken}))[:2] == (
            401, "InvalidAuthorization"), broken


# -- pairs and roles -------------------------------------------------------------------------------


def test_read_only_pairs_read_and_revoked_pairs_are_gone(api: Harness) -> None:
    api.create(spec("iris"))
    created = api.ok("POST", "/api/v2/ext/accesskeys", {"Role": "readonly", "Description": "dashboards"})
    key = (created["AccessKeyId"], created["AccessKeySecret"])
    assert created["Role"] == "readonly" and created["AccessKeyId"].startswith("EAS")

    for scheme in ("acs3", "roa"):
        assert signed(api, "GET", api.svc("iris"), key=key, scheme=scheme).json()["ServiceName"] == "iris"
        for method, path, body in [("PUT", api.svc("iris", "/stop"), None), ("DELETE", api.svc("iris"), None),
                                   ("POST", "/api/v2/services", spec("x")),
                                   ("POST", "/api/v2/ext/accesskeys", {"Role": "admin"})]:
            status, code, message = envelope(signed(api, method, path, body, key=key, scheme=scheme))
            assert (status, code) == (403, "Forbidden") and "read-only" in message, (method, path)
    basic = "Basic " + base64.b64encode(f"{key[0]}:{key[1]}".encode()).decode()
    assert api.http.get("/api/v2/services", headers={"Authorization": basic}).status_code == 200
    assert api.http.put(api.svc("iris", "/stop"), headers={"Authorization": basic}).status_code == 403
    assert api.describe("iris")["Status"] == "Creating", "nothing was changed"

    admin = api.ok("POST", "/api/v2/ext/accesskeys", {})
    assert admin["Role"] == "admin"
    assert signed(api, "PUT", api.svc("iris", "/stop"), key=(admin["AccessKeyId"], admin["AccessKeySecret"]),
                  ).status_code == 200

    listed = api.ok("GET", "/api/v2/ext/accesskeys")["AccessKeys"]
    assert [(k["AccessKeyId"], k["Role"], k["Builtin"]) for k in listed] == [
        (ACCESS_ID, "admin", True), (key[0], "readonly", False), (admin["AccessKeyId"], "admin", False)]
    assert not any("Secret" in field for k in listed for field in k), "no secret is ever listed"

    assert api.ok("DELETE", f"/api/v2/ext/accesskeys/{key[0]}")["Message"] == f"AccessKey {key[0]} revoked"
    assert envelope(signed(api, "GET", "/api/v2/services", key=key))[:2] == (401, "InvalidAccessKeyId.NotFound")
    status, code, message = envelope(api.call("DELETE", f"/api/v2/ext/accesskeys/{ACCESS_ID}"))
    assert (status, code) == (400, "InvalidParameter") and "EAS_ACCESS_KEY" in message
    assert envelope(api.call("DELETE", "/api/v2/ext/accesskeys/EASNOPE"))[:2] == (404, "AccessKeyNotFound")
    for body in ({"Role": "owner"}, {"Description": 3}):
        assert envelope(api.call("POST", "/api/v2/ext/accesskeys", body))[:2] == (400, "InvalidParameter")


def test_eascmd_manages_pairs_and_signs_with_them(conf_file: str, served: Harness, tmp_path: Path) -> None:
    def run(conf: str, *args: str, input: str | None = None):  # noqa: ANN202
        return CliRunner().invoke(cli, ["-c", conf, *args], input=input)

    created = run(conf_file, "accesskey", "create", "--role", "readonly", "-d", "ci", "--json")
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    reader = str(tmp_path / "reader.conf")
    assert run(reader, "config", "-i", key["AccessKeyId"], "-k", key["AccessKeySecret"], "-e",
               served.url.removeprefix("http://")).exit_code == 0
    assert run(reader, "ls").exit_code == 0
    refused = run(reader, "stop", "nope")
    assert refused.exit_code == 1 and "[HTTP 403, Forbidden" in refused.stderr and "read-only" in refused.stderr

    listed = run(conf_file, "accesskey", "ls")
    assert key["AccessKeyId"] in listed.output and "readonly" in listed.output and "(eascmd.conf)" in listed.output
    assert key["AccessKeySecret"] not in listed.output
    revoked = run(conf_file, "accesskey", "rm", key["AccessKeyId"], input="y\n")
    assert revoked.exit_code == 0 and f"[OK] AccessKey {key['AccessKeyId']} revoked" in revoked.output
    gone = run(reader, "ls")
    assert gone.exit_code == 1 and "InvalidAccessKeyId.NotFound" in gone.stderr
