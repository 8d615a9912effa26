"""The console's server side over the real app (eas.server.compose over SQLite and
MemoryBackend, python services as real instances in this process): the page and its
assets, sign-in and the session cookie, the management API reached with the session,
the metrics history, the traffic rows and the online test through the real gateway.

The controller is driven by hand (`settle`), the scraper and the history sampler are
run one round at a time: nothing here waits on a clock.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route

from eas.console.app import STATIC, Console
from eas.console.session import COOKIE, Sessions
from tests.support.platform import (
    ACCESS_ID,
    ACCESS_KEY,
    REQUEST_ID,
    Harness,
    basic_auth,
    build_platform,
    echo_spec,
    write_echo_code,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-echo-12345"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Harness]:
    harness = build_platform(tmp_path, host_instances=True)
    yield harness
    harness.close()


def sign_in(h: Harness) -> dict[str, str]:
    """Sign in; the headers every later console call needs (the cookie rides in the client's jar)."""
    resp = h.http.post("/console/session", json={"AccessId": ACCESS_ID, "AccessKey": ACCESS_KEY})
    assert resp.status_code == 200, resp.text
    return {"X-CSRF-Token": resp.json()["Csrf"]}


def echo(h: Harness, tmp_path: Path, name: str = "echo", **extra: object) -> None:
    h.create(echo_spec(name, write_echo_code(tmp_path / f"code-{name}"), token=TOKEN, **extra))
    h.settle()


# -- the page ----------------------------------------------------------------------------------


def test_the_page_and_its_assets_are_served_with_a_strict_policy(platform: Harness) -> None:
    resp = platform.http.get("/console", follow_redirects=False)
    assert resp.status_code in (302, 307) and resp.headers["location"].endswith("/console/")
    page = platform.http.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every asset the page names is ours, relative, and served: no CDN, nothing inline.
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert assets and all(a.startswith("static/") for a in assets), assets
    assert "<script>" not in page.text and "style=" not in page.text
    for asset in assets + ["static/charts.js"]:
        resp = platform.http.get(f"/console/{asset}")
        assert resp.status_code == 200, asset
        text = resp.text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
        assert "http://" not in text and "https://" not in text, asset


def test_every_static_file_is_package_data() -> None:
    """The wheel must carry the whole console: each file under static/ matches a glob."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["eas.console"]
    files = sorted(p.relative_to(STATIC.parent) for p in STATIC.rglob("*") if p.is_file())
    assert files
    assert all(any(f.match(glob) for glob in data) for f in files), (files, data)


# -- sessions -------------------------------------------------------------------------------------


def test_sign_in_sets_a_signed_http_only_cookie_and_never_echoes_the_key(platform: Harness) -> None:
    wrong = platform.http.post("/console/session", json={"AccessId": ACCESS_ID, "AccessKey": "nope"})
    assert wrong.status_code == 401 and wrong.json()["Code"] == "Unauthorized" and COOKIE not in wrong.headers.get(
        "set-cookie", "")
    form = platform.http.post("/console/session", data={"AccessId": ACCESS_ID, "AccessKey": ACCESS_KEY})
    assert form.status_code == 415, "only JSON: a cross-site form cannot sign anybody in"

    resp = platform.http.post("/console/session", json={"AccessId": ACCESS_ID, "AccessKey": ACCESS_KEY})
    assert resp.status_code == 200
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age="):
        assert attribute.lower() in cookie.lower(), cookie
    assert ACCESS_KEY not in cookie and ACCESS_KEY not in resp.text
    info = resp.json()
    assert info["AccessId"] == ACCESS_ID and info["Region"] == "local" and info["Csrf"]
    assert info["Features"] == {"logs": True, "queue": False, "labels": False}, "the API serves instance logs"

    again = platform.http.get("/console/session")  # a reloaded page: same session, same CSRF token
    assert again.status_code == 200 and again.json()["Csrf"] == info["Csrf"]


def test_the_api_is_reached_with_the_session_and_its_answers_are_the_apis(platform: Harness, tmp_path: Path) -> None:
    platform.create({"name": "plain", "processor": "sklearn", "metadata": {"instance": 1}})
    assert platform.http.get("/console/api/v2/services").status_code == 401, "no session"
    csrf = sign_in(platform)
    no_csrf = platform.http.get("/console/api/v2/services")
    assert no_csrf.status_code == 403 and no_csrf.json()["Code"] == "Forbidden"

    via_console = platform.http.get("/console/api/v2/services", headers=csrf)
    direct = platform.http.get("/api/v2/services", headers=basic_auth())
    assert via_console.status_code == 200
    strip = lambda d: {**d, "RequestId": None}
    assert strip(via_console.json()) == strip(direct.json())

    # Errors are the API's own, naming the field.
    bad = platform.http.post("/console/api/v2/services", headers=csrf,
                             json={"name": "bad", "processor": "sklearn", "metadata": {"instance": "two"}})
    assert bad.status_code == 400 and bad.json()["Message"].startswith("metadata.instance: ")
    assert REQUEST_ID.match(bad.json()["RequestId"])

    # Writes go through the same handlers: create, scale, delete.
    made = platform.http.post("/console/api/v2/services", headers=csrf,
                              json={"name": "made", "processor": "sklearn", "metadata": {"instance": 1}})
    assert made.status_code == 200 and made.json()["ServiceName"] == "made"
    scaled = platform.http.put("/console/api/v2/services/local/made", headers=csrf, json={"metadata": {"instance": 2}})
    assert scaled.status_code == 200 and "scaled from 1 to 2" in scaled.json()["Message"]
    gone = platform.http.delete("/console/api/v2/services/local/made", headers=csrf)
    assert gone.status_code == 200 and platform.status("made") == "Deleting"

    # Only the management API is reachable this way, and the API itself ignores the cookie.
    assert platform.http.post("/console/api/predict/plain", headers=csrf, content=b"x").status_code == 404
    assert platform.http.get("/api/v2/services").status_code == 401


def test_sign_out_revokes_the_session_and_forged_cookies_are_refused(platform: Harness) -> None:
    csrf = sign_in(platform)
    cookie = platform.http.cookies.get(COOKIE)
    assert cookie
    payload, sig = cookie.split(".")
    forged = f"{payload[:-2]}xx.{sig}"
    for bad in (forged, f"{payload}.{sig[::-1]}", "garbage", ""):
        resp = platform.http.get("/console/session", headers={"Cookie": f"{COOKIE}={bad}"})
        assert resp.status_code == 401, bad

    out = platform.http.delete("/console/session", headers=csrf)
    assert out.status_code == 200 and 'eas_console=""' in out.headers["set-cookie"]
    replayed = platform.http.get("/console/session", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert replayed.status_code == 401, "a signed-out session stays out even if its cookie is replayed"


def test_sessions_expire_and_end_when_the_access_key_changes() -> None:
    now = [1000.0]
    sessions = Sessions("id", "key", "secret", ttl_s=60, clock=lambda: now[0])
    cookie, session = sessions.issue()
    assert sessions.verify(cookie) == session
    assert not sessions.csrf_ok(session, None) and not sessions.csrf_ok(session, "x")
    assert sessions.csrf_ok(session, sessions.csrf(session))
    assert Sessions("id", "other-key", "secret", clock=lambda: now[0]).verify(cookie) is None
    assert Sessions("other-id", "key", "secret", clock=lambda: now[0]).verify(cookie) is None
    now[0] += 61
    assert sessions.verify(cookie) is None
    assert not sessions.credentials_ok("id", "wrong") and sessions.credentials_ok("id", "key")


# -- what the console adds: traffic rows, metrics history, online test ----------------------------


def test_traffic_rows_of_an_endpoint(platform: Harness, tmp_path: Path) -> None:
    for name in ("a", "b"):
        platform.create({"name": name, "processor": "sklearn", "metadata": {"instance": 1}})
    csrf = sign_in(platform)
    empty = platform.http.get("/console/traffic/a", headers=csrf).json()
    assert empty["Endpoint"] is None and empty["SharedIn"] == [] and empty["Groups"] == []
    platform.ok("PUT", "/api/v2/ext/services/local/a/traffic", {"Backends": [{"Service": "a", "Weight": 70},
                                                                            {"Service": "b", "Weight": 30}]})
    platform.ok("PUT", platform.svc("a", "/mirror"), {"Target": ["b"], "Ratio": 10})
    row = platform.http.get("/console/traffic/a", headers=csrf).json()["Endpoint"]
    assert row == {"Name": "a", "Kind": "service", "Backends": [{"Service": "a", "Weight": 70},
                                                                {"Service": "b", "Weight": 30}],
                   "Mirror": {"Target": "b", "Ratio": 10}}
    assert [r["Name"] for r in platform.http.get("/console/traffic/b", headers=csrf).json()["SharedIn"]] == ["a"]
    assert platform.http.get("/console/traffic/a").status_code == 403, "no CSRF token"
    platform.http.cookies.clear()
    assert platform.http.get("/console/traffic/a", headers=csrf).status_code == 401, "no session"


def test_online_test_goes_through_the_gateway_with_the_service_token(platform: Harness, tmp_path: Path) -> None:
    echo(platform, tmp_path)
    csrf = sign_in(platform)
    resp = platform.http.post("/console/test/echo", headers={**csrf, "Content-Type": "text/plain"}, content=b"hello")
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["Status"] == 200 and out["Body"] == "echo:hello" and out["Encoding"] == "text"
    assert out["Bytes"] == len(b"echo:hello") and not out["Truncated"] and out["TimeMs"] > 0
    assert out["Headers"]["X-Request-Id"] == out["RequestId"] and out["Headers"]["X-Eas-Instance"] == "echo-r0"
    assert out["Path"] == "/api/predict/echo"

    # A binary answer comes back as base64; a sub-path is passed on.
    binary = platform.http.post("/console/test/echo?path=v1/x", headers=csrf, content=b"\xff\xfe").json()
    assert binary["Status"] == 200 and binary["Encoding"] == "base64" and binary["Path"] == "/api/predict/echo/v1/x"

    # It is the gateway's answer: a wrong token is 401, an unknown service 404, a large body 413.
    wrong = platform.http.post("/console/test/echo", headers={**csrf, "X-Test-Token": "wrong"}, content=b"x").json()
    assert wrong["Status"] == 401
    assert platform.http.post("/console/test/nope", headers=csrf, content=b"x").json()["Status"] == 404
    platform.platform.gateway.max_body_bytes = 8
    assert platform.http.post("/console/test/echo", headers=csrf, content=b"0123456789").json()["Status"] == 413

    # Counted like any request; and only for a signed-in admin who sends the CSRF token.
    page = platform.metrics()
    assert 'eas_requests_total{code="200",service="echo"} 2.0' in page
    assert platform.http.post("/console/test/echo", content=b"x").status_code == 403
    platform.http.cookies.clear()
    assert platform.http.post("/console/test/echo", headers=csrf, content=b"x").status_code == 401


def test_metrics_history_of_a_service_over_the_real_app(platform: Harness, tmp_path: Path) -> None:
    echo(platform, tmp_path, "a")
    echo(platform, tmp_path, "b")
    platform.ok("PUT", "/api/v2/ext/services/local/a/traffic", {"Backends": [{"Service": "a", "Weight": 50},
                                                                            {"Service": "b", "Weight": 50}]})
    platform.settle()
    history = platform.platform.console.history
    history.sample(now=1000.0)  # the baseline
    for target in ("a", "b", "a"):  # pinned, so the split is known
        assert platform.http.post("/api/predict/a", content=b"x",
                                  headers={"Authorization": TOKEN, "X-Eas-Target": target}).status_code == 200
    assert platform.predict("a", b"x", "wrong").status_code == 401
    platform.controller.scraper.scrape()
    history.sample(now=1002.0)

    csrf = sign_in(platform)
    out = platform.http.get("/console/metrics/a", headers=csrf).json()
    assert out["Tracked"] and out["Interval"] == 2.0 and len(out["Samples"]) == 2
    last = out["Samples"][-1]
    assert last["requests"] == {"200": 1.5, "401": 0.5}, "the endpoint's answers at the gateway, per second"
    assert last["served"] == {"200": 1.0}, "answers from a's own instances"
    assert last["p50_ms"] is not None and last["p99_ms"] >= last["p50_ms"]
    assert (last["desired"], last["current"], last["ready"]) == (1, 1, 1)
    assert out["Backends"] == {"a": [[1000.0, 0.0], [1002.0, 1.0]], "b": [[1000.0, 0.0], [1002.0, 0.5]]}

    newer = platform.http.get("/console/metrics/a?since=1000", headers=csrf).json()
    assert [s["t"] for s in newer["Samples"]] == [1002.0]
    latest = platform.http.get("/console/metrics", headers=csrf).json()["Services"]
    assert set(latest) == {"a", "b"} and latest["b"]["served"] == {"200": 0.5}
    assert platform.http.get("/console/metrics/a?since=x", headers=csrf).status_code == 400

    # A deleted service leaves the history.
    platform.ok("DELETE", platform.svc("b"))
    platform.reconcile_until(lambda: "b" not in platform.controller.service_counts(), "b to leave the counts")
    history.sample(now=1004.0)
    assert history.tracked() == ["a"]
    gone = platform.http.get("/console/metrics/b", headers=csrf).json()
    assert gone["Tracked"] is False and gone["Samples"] == []


def test_features_follow_the_api_routes(platform: Harness) -> None:
    """The hooks: the page shows logs, queue and labels once the API has such routes."""
    console: Console = platform.platform.console
    async def nothing(request):
        return None

    console.routes([Route("/api/v2/services/{region}/{name}/logs", nothing),
                    Route("/api/v2/services/{region}/{name}/queue", nothing)])
    assert console.features == {"logs": True, "queue": True, "labels": False}
