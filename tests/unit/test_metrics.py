"""GET /metrics of the real app after real predict calls.

The app is `eas.server.compose(...)` over SQLite with MemoryBackend in place of Ray
Serve (the only stand-in); its python services run as real instances in this process
(the echo processor behind eas/instance's HTTP server on 127.0.0.1), so the gateway's
request counters, the controller's instance counts and the instances' own /stats all
come from the code that runs in production. The controller is driven by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.platform import Harness, build_platform, echo_spec, write_echo_code
from tests.support.platform import metric_samples as samples
from tests.support.platform import metric_value as value

TOKEN = "tok-echo-12345"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Harness]:
    harness = build_platform(tmp_path, host_instances=True)
    yield harness
    harness.close()


def test_metrics_count_requests_by_service_and_code(platform: Harness, tmp_path: Path) -> None:
    code = write_echo_code(tmp_path / "code")
    platform.create(echo_spec("echo", code, token=TOKEN))
    platform.create({"name": "plain", "processor": "sklearn", "token": TOKEN, "metadata": {"instance": 2}})
    platform.settle()

    answers = [
        platform.predict("echo", b"one", TOKEN),
        platform.predict("echo", b"two", TOKEN),
        platform.predict("echo", b"x", "wrong-token"),
        platform.predict("nope", b"x", TOKEN),
        platform.predict("plain", b"x", TOKEN),  # routed; nothing listens behind MemoryBackend's replicas
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 503]
    assert answers[0].content == b"echo:one"

    resp = platform.http.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    page = samples(resp.text)
    assert value(page, "eas_requests_total", service="echo", code="200") == 2
    assert value(page, "eas_requests_total", service="echo", code="401") == 1
    assert value(page, "eas_requests_total", service="_unknown", code="404") == 1, "unknown names share one label"
    assert value(page, "eas_requests_total", service="plain", code="503") == 1
    assert value(page, "eas_requests_total", service="nope", code="404") is None
    assert value(page, "eas_request_seconds_count", service="echo") == 3
    assert value(page, "eas_processor_seconds_count", service="echo") == 2, "only answers from an instance"

    # Instance counts are the controller's, from its last pass.
    for service, n in (("echo", 1), ("plain", 2)):
        for kind in ("desired", "current", "ready"):
            assert value(page, "eas_instances", service=service, kind=kind) == n, (service, kind)


def test_instance_gauges_follow_the_controller(platform: Harness) -> None:
    platform.create({"name": "plain", "processor": "sklearn", "token": TOKEN, "metadata": {"instance": 2}})
    page = samples(platform.metrics())
    assert value(page, "eas_instances", service="plain", kind="desired") is None, "nothing before a pass"
    platform.settle()
    platform.ok("PUT", platform.svc("plain"), {"metadata": {"instance": 3}})
    platform.settle()
    page = samples(platform.metrics())
    assert [value(page, "eas_instances", service="plain", kind=k) for k in ("desired", "current", "ready")] == [
        3, 3, 3]
    platform.ok("PUT", platform.svc("plain", "/stop"))
    platform.reconcile_until(lambda: platform.status("plain") == "Stopped", "plain to stop")
    page = samples(platform.metrics())
    assert [value(page, "eas_instances", service="plain", kind=k) for k in ("desired", "current", "ready")] == [
        0, 0, 0]


def test_instance_stats_are_scraped_from_the_instances(platform: Harness, tmp_path: Path) -> None:
    """eas_instance_requests comes from each instance's own /stats, read by the scraper."""
    code = write_echo_code(tmp_path / "code")
    platform.create(echo_spec("echo", code, token=TOKEN))
    platform.settle()
    for body in (b"a", b"b", b"c"):
        assert platform.predict("echo", body, TOKEN).status_code == 200
    (code / "fail_next").write_text("1")
    assert platform.predict("echo", b"d", TOKEN).status_code == 503
    platform.controller.scraper.scrape()  # one round of the scraper's loop, by hand
    page = samples(platform.metrics())
    assert value(page, "eas_instance_requests_total", service="echo", instance="echo-r0", code="200") == 3
    assert value(page, "eas_instance_requests_total", service="echo", instance="echo-r0", code="503") == 1
    assert value(page, "eas_instance_in_flight", service="echo", instance="echo-r0") == 0
    assert value(page, "eas_requests_total", service="echo", code="503") == 1, "the instance's 503 passes through"
