"""The web console in a real browser: Debian's headless Chromium driven by selenium
(tests/support/browser.py) against the real eas-server with Ray Serve.

One operator's session, end to end: sign in, create a service from pasted JSON (first
refused, with the reason shown under the field), see it go Running, send a request in
the online test panel, move an A/B weight with the slider (keyboard) and see the split
in the live charts once traffic flows, scale to 2 and see both instances, delete.
One screenshot per page lands in .screenshots/console/ (EAS_SCREENSHOTS) for review.

A second test checks the first paint of the services page with 50 services, over the
real app on an in-memory backend (no Ray needed for that).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from eas.client import config
from tests.e2e.harness import EasServer, Load
from tests.support.browser import Browser, require_browser
from tests.support.platform import ACCESS_ID, ACCESS_KEY, build_platform

pytestmark = pytest.mark.e2e

ECHO = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "echo"
#: Ray deploys and scales within this on the 2-core reference machine with room to spare.
DEPLOY_S = 120.0


def echo_service(name: str) -> dict:
    return {"name": name, "processor_type": "python", "processor_path": str(ECHO), "processor_entry": "app.py",
            "metadata": {"instance": 1, "cpu": 0.25}}


@pytest.fixture
def browser():
    require_browser()
    b = Browser()
    yield b
    b.close()


def sign_in(b: Browser, url: str, access_id: str, access_key: str, shot: str | None = None) -> None:
    b.driver.get(url + "/console/")
    b.find("input[name=access_id]").send_keys(access_id)
    if shot:
        b.shot(shot)
    b.find("input[name=access_key]").send_keys(access_key + Keys.ENTER)  # the keyboard submits the form
    b.find("#services")


def set_slider(b: Browser, backend: str, value: int) -> None:
    """Move a weight slider with the keyboard only: Home, then Page Up (+10) and arrows (+1)."""
    slider = b.find(f"input[type=range][data-backend='{backend}']")
    slider.send_keys(Keys.HOME, *([Keys.PAGE_UP] * (value // 10)), *([Keys.ARROW_RIGHT] * (value % 10)))
    b.wait_text(f"output[data-weight-of='{backend}']", str(value))


def share_of(b: Browser, backend: str) -> int | None:
    """The share of the last minute the split chart's legend gives a backend."""
    notes = b.all(f"#chart-split li[data-series='{backend}'] .note")
    text = notes[0].text if notes else ""
    return int(text.split("%")[0].strip(" ·")) if "%" in text else None


def open_tab(b: Browser, tab: str) -> None:
    b.click(f"#tab-{tab}")
    b.wait(lambda: b.find(f"#tab-{tab}").get_attribute("aria-selected") == "true", f"the {tab} tab")


def test_operator_session_in_the_browser(server: EasServer, browser: Browser) -> None:
    started = time.monotonic()
    b = browser
    cfg = config.read(server.conf)
    with server.admin() as admin:  # the B side of the A/B test boots while the browser works
        assert admin.post("/api/v2/services", json=echo_service("con_b")).status_code == 200

        # Sign in with the AccessKey pair of eascmd.conf.
        sign_in(b, server.url, cfg.access_id, cfg.access_key, shot="01-sign-in")
        b.wait(lambda: b.all("#services-body tr[data-service='con_b']"), "con_b in the table")
        b.shot("02-services")

        # Create from pasted JSON: first refused, the reason under the field; then accepted.
        b.click("#create-button")
        text = b.find("#create-json")
        bad = echo_service("con_a")
        bad["metadata"] = {**bad["metadata"], "instance": "two"}
        text.clear()
        text.send_keys(json.dumps(bad, indent=2))
        b.click("#create-submit")
        b.wait_text("#create-errors li[data-field='metadata.instance']", "valid integer")
        assert "metadata.instance" in b.text(".annotated .msg[data-field='metadata.instance']")
        assert b.find("#create-json").get_attribute("aria-invalid") == "true"
        b.shot("03-create-error")
        text.clear()
        text.send_keys(json.dumps(echo_service("con_a"), indent=2))
        b.click("#create-submit")
        b.wait(lambda: "#/service/con_a" in b.driver.current_url, "the service page")
        b.wait_text("#service-title .badge", "Running", DEPLOY_S)
        b.shot("04-service")

        # The online test: a text body through the real gateway, with the service token.
        open_tab(b, "test")
        Select(b.find("#test-kind")).select_by_value("text")
        body = b.find("#test-body")
        body.clear()
        body.send_keys("hello console")
        b.click("#test-send")
        b.wait_text("#test-status", "200")
        answer = json.loads(b.text("#test-answer"))
        assert answer["upper"] == "HELLO CONSOLE" and answer["length"] == 13
        assert "X-Request-Id" in b.text("#test-headers") and "ms" in b.text("#test-time")
        b.shot("05-online-test")

        # A/B: con_b joins con_a's endpoint; the sliders set 50/50 with the keyboard.
        server.wait_status("con_b", "Running", DEPLOY_S)
        open_tab(b, "traffic")
        Select(b.find("#add-backend")).select_by_value("con_b")
        b.click("#add-backend-button")
        set_slider(b, "con_a", 50)
        set_slider(b, "con_b", 50)
        assert b.text("[data-share-of='con_b']") == "50%"
        b.click("#apply-weights")
        b.wait_text("#toast", "traffic of 'con_a'")
        b.shot("06-traffic")
        row = admin.get("/api/v2/services/local/con_a").json()
        assert row["Weight"] == 50

        # Traffic to the endpoint, then the split shows in the charts.
        open_tab(b, "overview")
        token = row["AccessToken"]
        with Load(f"{server.url}/api/predict/con_a", b"split", token, concurrency=2, max_seconds=90):
            b.wait(lambda: all(20 <= (share_of(b, s) or 0) <= 80 for s in ("con_a", "con_b")),
                   "both backends in the split chart", 60)
            assert "200:" in b.text("#chart-requests"), "requests by status code"
            b.wait(lambda: "–" not in b.text("#chart-latency li[data-series='p99']"), "a p99 latency")
            b.shot("07-charts")

        # Scale to 2 from the service's header; both instances show.
        b.click("#action-scale")
        count = b.find("#dialog-body input[type=number]")
        count.send_keys(Keys.CONTROL, "a")
        count.send_keys("2", Keys.ENTER)
        b.wait(lambda: not b.find("#dialog").get_attribute("open"), "the dialog to close")
        open_tab(b, "instances")
        b.wait(lambda: [e.text for e in b.all("#instances-body .badge")] == ["Running", "Running"],
               "two Running instances", DEPLOY_S)
        b.shot("08-instances")
        open_tab(b, "events")
        b.wait_text("#events", "scaled from 1 to 2 instances")
        # The API serves instance logs (DescribeServiceLog): the tab shows them, no stand-in notice.
        b.wait(lambda: b.all("#logs pre"), "the instances' recent log lines")
        assert not b.all("#logs-missing") and not b.all("#logs .error"), b.text("#logs")
        b.shot("09-events")
        open_tab(b, "config")
        assert json.loads(b.text("#config-json"))["metadata"]["instance"] == 2
        b.shot("10-config")

        # Delete from the table, confirmed by typing the name.
        b.click("#nav-services")
        for name in ("con_a", "con_b"):
            b.click(f"#services-body tr[data-service='{name}'] button[aria-label='Delete {name}']")
            b.find("#dialog-body input").send_keys(name, Keys.ENTER)
        b.wait(lambda: not b.all("#services-body tr[data-service]"), "both services to be gone", DEPLOY_S)
        b.shot("11-deleted")
        assert admin.get("/api/v2/services").json()["TotalCount"] == 0
    assert b.problems() == ""
    print(f"\nconsole browser session: {time.monotonic() - started:.1f} s")


def test_services_page_paints_within_a_second_with_50_services(tmp_path: Path, browser: Browser) -> None:
    h = build_platform(tmp_path, serve=True)
    try:
        for i in range(50):
            h.create({"name": f"svc_{i:02d}", "processor": "sklearn", "metadata": {"instance": 1}})
        h.settle()
        b = browser
        sign_in(b, h.url, ACCESS_ID, ACCESS_KEY)
        b.driver.get(h.url + "/console/")  # a fresh load of the page, signed in
        b.wait(lambda: len(b.all("#services-body tr[data-service]")) == 50, "50 rows")
        timing = b.driver.execute_script("""
            const fcp = performance.getEntriesByName('first-contentful-paint')[0];
            const rows = performance.getEntriesByName('services-rendered')[0];
            return {fcp: fcp && fcp.startTime, rows: rows && rows.startTime};""")
        print(f"\nfirst contentful paint {timing['fcp']:.0f} ms; table of 50 services rendered at {timing['rows']:.0f} ms")
        assert timing["fcp"] < 1000 and timing["rows"] < 1000, timing
        b.shot("00-services-50")
        # Filtering by name is instant and keeps the table.
        b.find("#filter-name").send_keys("svc_4")
        b.wait(lambda: len(b.all("#services-body tr[data-service]")) == 10, "10 rows match svc_4")
        assert b.text("#count") == "10 of 50 services"
        assert b.problems() == ""
        assert httpx.get(h.url + "/console/static/console.js").status_code == 200
    finally:
        h.close()
