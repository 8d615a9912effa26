"""The spine, end to end: eascmd against a real eas-server and Ray Serve, over HTTP."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import httpx
import pytest

from eas.protocols.auth import sign_headers
from tests.e2e.harness import sklearn_service, write_json

pytestmark = pytest.mark.e2e


def _predictions(resp) -> list:  # noqa: ANN001
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("x-request-id")
    return resp.json()["predictions"]


def test_create_predict_stop_start_scale_delete(server, iris, tmp_path):
    spec = write_json(tmp_path / "iris.json", sklearn_service("iris", iris["path"]))
    out = server.eascmd("create", str(spec)).stdout
    assert "[OK] Service is running" in out
    assert "Waiting [Total: 1" in out

    info = server.desc("iris")
    assert info["Status"] == "Running" and info["RunningInstance"] == 1
    token = info["AccessToken"]
    body = json.dumps({"instances": iris["rows"]})
    assert _predictions(server.predict("iris", body, token)) == iris["expected"]

    listing = server.eascmd("ls").stdout
    assert "SERVICENAME" in listing and "iris" in listing and "/api/predict/iris" in listing

    server.eascmd("stop", "iris")
    assert server.desc("iris")["Status"] == "Stopped"
    resp = server.predict("iris", body, token)
    assert resp.status_code == 503 and "stopped" in resp.json()["message"]

    server.eascmd("start", "iris")
    assert _predictions(server.predict("iris", body, token)) == iris["expected"]

    # Scale 1 -> 2 -> 1 without a rollout: the first instance keeps running throughout.
    first = json.loads(server.eascmd("w", "iris", "--json").stdout)
    first_names = {i["InstanceName"] for i in first}
    server.eascmd("modify", "iris", "-Dmetadata.instance=2")
    two = json.loads(server.eascmd("w", "iris", "--json").stdout)
    assert len(two) == 2 and all(i["Status"] == "Running" for i in two)
    assert first_names <= {i["InstanceName"] for i in two}, "scaling up must not restart instances"
    assert "READY" in server.eascmd("w", "iris").stdout
    # DIRECT mode: discovery lists both instances and each answers the token itself.
    deadline = time.monotonic() + 10
    while True:
        items = httpx.get(f"{server.url}/api/v1/servicediscovery/upstreams/iris").json()["endpoints"]["items"]
        if len(items) == 2:
            break
        assert time.monotonic() < deadline, items
        time.sleep(0.2)
    answered_by = set()
    for item in items:
        direct = httpx.post(f"http://{item['ip']}:{item['port']}/api/predict/iris", content=body,
                            headers={"Authorization": token})
        assert _predictions(direct) == iris["expected"]
        answered_by.add(direct.headers["x-eas-instance"])
    assert answered_by == {i["InstanceName"] for i in two}
    go_path = f"{server.url}/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/iris?internal=false"
    assert len(httpx.get(go_path).json()["endpoints"]["items"]) == 2
    server.eascmd("modify", "iris", "-Dmetadata.instance=1")
    deadline = time.monotonic() + 60
    while len(json.loads(server.eascmd("w", "iris", "--json").stdout)) != 1:
        assert time.monotonic() < deadline, "scale down to 1 did not finish"
        time.sleep(0.5)
    assert server.desc("iris")["TotalInstance"] == 1
    assert server.desc("iris")["CurrentVersion"] == 1, "instance-only changes make no new version"
    assert _predictions(server.predict("iris", body, token)) == iris["expected"]

    res = server.eascmd("delete", "iris", input="n\n", check=False)
    assert res.returncode != 0
    assert server.desc("iris")["Status"] == "Running"
    server.eascmd("delete", "iris", "-y")
    assert server.predict("iris", body, token).status_code == 404
    assert "iris" not in server.eascmd("ls").stdout


def test_auth_raw_token_signature_and_tampering(server, iris, tmp_path):
    server.eascmd("create", str(write_json(tmp_path / "a.json",
                                           sklearn_service("auth_svc", iris["path"]))))
    token = server.desc("auth_svc")["AccessToken"]
    body = json.dumps({"instances": iris["rows"]}).encode()
    path = "/api/predict/auth_svc"

    assert server.predict("auth_svc", body, None).status_code == 401
    wrong = server.predict("auth_svc", body, "not-the-token")
    assert wrong.status_code == 401 and "token" in wrong.json()["message"]
    assert _predictions(server.predict("auth_svc", body, token)) == iris["expected"]

    signed = sign_headers(token, path, body)
    assert _predictions(server.predict("auth_svc", body, None, **signed)) == iris["expected"]
    signed_json = sign_headers(token, path, body, content_type="application/json")
    assert _predictions(server.predict("auth_svc", body, None, **signed_json)) == iris["expected"]

    tampered = bytearray(body)
    tampered[-3] ^= 1
    assert server.predict("auth_svc", bytes(tampered), None, **signed).status_code == 401
    stale = sign_headers(token, path, body)
    from eas.protocols.auth import content_md5, date_window, signature

    # Older than any time zone's local time can be (the window spans UTC-12..UTC+14).
    stale_date = formatdate(date_window(time.time())[0] - 3600, usegmt=True)

    stale["Date"] = stale_date
    stale["Authorization"] = "EAS " + signature(token, "POST", content_md5(body), stale["Content-Type"],
                                                stale_date, path)
    resp = server.predict("auth_svc", body, None, **stale)
    assert resp.status_code == 401 and "Date" in resp.json()["message"]

    missing = server.predict("no_such_service", body, token)
    assert missing.status_code == 404 and missing.headers.get("x-request-id")

    # Metrics saw exactly what happened: three 200s through the gateway, 401s, one ready instance.
    time.sleep(1.5)  # one controller pass reads the instances' own counters
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'eas_requests_total{code="200",service="auth_svc"} 3.0' in metrics
    assert 'eas_requests_total{code="401",service="auth_svc"} 4.0' in metrics
    assert 'eas_instances{kind="ready",service="auth_svc"} 1.0' in metrics
    assert 'eas_request_seconds_count{service="auth_svc"}' in metrics
    assert 'eas_processor_seconds_count{service="auth_svc"} 3.0' in metrics
    assert 'code="200",instance="auth_svc-' in metrics and "eas_instance_cold_start_seconds" in metrics
    server.eascmd("delete", "auth_svc", "-y")


def test_management_api_needs_credentials(server):
    import httpx

    assert httpx.get(f"{server.url}/api/v2/services").status_code == 401
    bad = httpx.get(f"{server.url}/api/v2/services", auth=("eas-admin", "wrong"))
    assert bad.status_code == 401 and bad.json()["Code"] == "Unauthorized"
    with server.admin() as client:
        assert client.get("/api/v2/services").status_code == 200


def test_invalid_specs_name_the_field(server, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "metadata": {"instance": 1,}')
    res = server.eascmd("create", str(broken), check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout
    assert "line 1" in (res.stderr + res.stdout)

    with server.admin() as client:
        cases = {
            "metdata": {"name": "bad", "processor": "sklearn", "metdata": {}, "metadata": {"instance": 1}},
            "metadata.instance": {"name": "bad", "processor": "sklearn", "metadata": {"instance": "many"}},
            "processor": {"name": "bad", "processor": "no_such_framework", "metadata": {"instance": 1}},
            "name": {"name": "Bad-Name", "processor": "sklearn", "metadata": {"instance": 1}},
        }
        for field, body in cases.items():
            resp = client.post("/api/v2/services", content=json.dumps(body))
            assert resp.status_code == 400, (field, resp.text)
            assert field in resp.json()["Message"], (field, resp.json())
        assert client.post("/api/v2/services", content=b"{not json").status_code == 400
        assert client.get("/api/v2/services/local/ghost").status_code == 404


def test_modify_with_a_new_model_makes_a_version_and_dw_restarts(server, iris, tmp_path):
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    server.eascmd("create", str(write_json(tmp_path / "v.json", sklearn_service("versioned", iris["path"]))))
    token = server.desc("versioned")["AccessToken"]
    rows = iris["rows"]
    # A second model that answers differently from the first: the constant 1 - y.
    flipped = DecisionTreeClassifier().fit(rows, [1 - p for p in iris["expected"]])
    new_path = tmp_path / "flipped.joblib"
    joblib.dump(flipped, new_path)

    patch = write_json(tmp_path / "patch.json", {"model_path": str(new_path)})
    server.eascmd("modify", "versioned", "-s", str(patch))
    info = server.desc("versioned")
    assert (info["LatestVersion"], info["CurrentVersion"]) == (2, 2)
    assert json.loads(info["ServiceConfig"])["model_path"] == str(new_path)
    resp = server.predict("versioned", json.dumps({"instances": rows}), token)
    assert resp.json()["predictions"] == [1 - p for p in iris["expected"]]
    assert info["AccessToken"] == token, "a new version keeps the token"

    before = json.loads(server.eascmd("w", "versioned", "--json").stdout)
    assert len(before) == 1
    server.eascmd("dw", "versioned", before[0]["InstanceName"], "-y")
    deadline = time.monotonic() + 90
    while True:
        now = json.loads(server.eascmd("w", "versioned", "--json").stdout)
        names = {i["InstanceName"] for i in now if i["Status"] == "Running"}
        if names and before[0]["InstanceName"] not in names:
            break
        assert time.monotonic() < deadline, f"instance was not replaced: {now}"
        time.sleep(0.5)
    resp = server.predict("versioned", json.dumps({"instances": rows}), token)
    assert resp.status_code == 200

    events = json.loads(server.eascmd("events", "versioned", "--json").stdout)
    kinds = [e["Reason"] for e in events]
    assert "Created" in kinds and "Restart" in kinds and "Updated" in kinds
    assert "MESSAGE" in server.eascmd("events", "versioned").stdout
    res = server.eascmd("dw", "versioned", "versioned-nosuch", "-y", check=False)
    assert res.returncode != 0 and "no such instance" in res.stdout + res.stderr
    server.eascmd("delete", "versioned", "-y")
