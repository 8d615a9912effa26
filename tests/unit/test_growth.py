"""Growth is bounded: events per service, metric label sets, repeated tracebacks.

- Events: the last N per service are kept; a deleted service (or group) takes its events
  with it, and no event is written about something that does not exist.
- Metrics: the label sets of a deleted service leave /metrics.
- Tracebacks: a failure that repeats every pass is logged in full once per window,
  the rest counted (eas/ratelog.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eas.control import controller as controller_module
from eas.control import store as st
from eas.gateway.metrics import GatewayMetrics, ServiceCounts
from eas.ratelog import BurstLog
from tests.support.platform import Harness, api_fixture, metric_samples, metric_value  # noqa: F401


def spec(name: str) -> dict:
    return {"name": name, "processor": "sklearn", "metadata": {"instance": 1}}


def test_events_are_pruned_per_service(tmp_path: Path) -> None:
    store = st.Store(tmp_path / "eas.db", max_events=5)
    for name in ("a", "b"):
        store.create_service(name, spec(name), f"tok-{name}-12345")
    for i in range(40):
        store.add_event("a", "Test", f"event {i}")
    store.add_event("b", "Test", "only one")
    events = store.events("a", limit=1000)
    assert [e["message"] for e in events] == [f"event {i}" for i in range(35, 40)]
    assert [e["message"] for e in store.events("b")] == ["service created", "only one"], "b keeps its own"
    with store._tx() as db:
        total = db.execute("SELECT COUNT(*) AS n FROM events").fetchone()["n"]
    assert total == 7
    store.close()


def test_events_leave_with_their_service_and_none_are_written_about_nothing(tmp_path: Path) -> None:
    store = st.Store(tmp_path / "eas.db")
    store.create_service("a", spec("a"), "tok-a-123456")
    store.add_event("a", "Test", "x")
    store.remove("a")
    store.add_event("a", "Test", "about a service that is gone")
    store.add_event("never", "Test", "about a name that never was")
    store.put_traffic(st.TrafficRecord("grp", "group", "group-token-1", [("a", 100)]), "grp", "group created")
    assert [e["message"] for e in store.events("grp")] == ["group created"]
    store.delete_traffic("grp", "grp", "group deleted")
    with store._tx() as db:
        rows = db.execute("SELECT service, message FROM events").fetchall()
    assert [dict(r) for r in rows] == []
    store.close()


def test_deleting_through_the_api_leaves_no_events(api: Harness) -> None:
    for name in ("gone", "stays"):
        api.create(spec(name))
    api.settle()
    api.ok("DELETE", api.svc("gone"))
    api.reconcile_until(lambda: api.status("gone") is None, "gone to be removed")
    with api.store._tx() as db:
        services = {r["service"] for r in db.execute("SELECT DISTINCT service FROM events").fetchall()}
    assert services == {"stays"}


def test_metric_label_sets_of_deleted_services_are_removed(api: Harness) -> None:
    now = [1000.0]
    metrics = api.platform.gateway.metrics
    metrics._clock = lambda: now[0]
    for name in ("gone", "stays"):
        api.create(spec(name))
    api.settle()
    for name in ("gone", "stays"):
        for _ in range(3):
            api.predict(name, b"{}", api.describe(name)["AccessToken"])
    page = metric_samples(api.metrics())
    assert metric_value(page, "eas_requests_total", service="gone", code="503") == 3

    api.ok("DELETE", api.svc("gone"))
    api.reconcile_until(lambda: api.status("gone") is None, "gone to be removed")
    api.controller.reconcile()  # the pass after: "gone" is no longer among the services
    page = metric_samples(api.metrics())
    assert metric_value(page, "eas_requests_total", service="gone", code="503") == 3, "kept for a while"
    now[0] += metrics.forget_after_s + 1
    text = api.metrics()
    assert 'service="gone"' not in text
    page = metric_samples(text)
    assert metric_value(page, "eas_requests_total", service="stays", code="503") == 3, "current services stay"
    assert metric_value(page, "eas_instances", service="gone", kind="desired") is None


def test_metrics_forget_only_names_that_are_gone_and_idle() -> None:
    now = [0.0]
    metrics = GatewayMetrics(forget_after_s=60, clock=lambda: now[0])
    current = {"svc": ServiceCounts(1, 1, 1)}
    metrics.attach(lambda: [], lambda: current)
    for name in ("svc", "grp", "_unknown", "old"):
        metrics.observe(name, 200, 0.01, "5")
    now[0] = 30
    metrics.observe("grp", 200, 0.01, None)  # a group endpoint in use
    now[0] = 61
    assert metrics.forget_gone() == ["old"]
    now[0] = 200
    assert metrics.forget_gone() == ["grp"], "an idle group starts again from zero"
    text = metrics.render().decode()
    assert 'service="svc"' in text and 'service="_unknown"' in text and 'service="old"' not in text


def test_burst_log_logs_the_first_in_full_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    burst = BurstLog(logging.getLogger("eas.test"), window_s=60, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="eas.test")
    for i in range(100):
        try:
            raise RuntimeError(f"boom {i}")
        except RuntimeError:
            burst.exception("k", "it failed")
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    assert burst.left_out("k") == 99
    now[0] = 61
    try:
        raise RuntimeError("again")
    except RuntimeError:
        assert burst.exception("k", "it failed") is True
    assert len(caplog.records) == 2
    assert "99 more like it in the last 60 s were not logged" in caplog.records[1].getMessage()


def test_a_pass_that_fails_every_time_logs_one_traceback(api: Harness, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller_module, "failures", BurstLog(controller_module.log))
    api.create(spec("svc"))
    api.settle()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the backend is confused")

    monkeypatch.setattr(api.controller, "_observe", broken)
    caplog.set_level(logging.ERROR, logger="eas.controller")
    for _ in range(50):
        api.controller.reconcile()
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1 and "reconciling svc failed" in tracebacks[0].getMessage()
    assert controller_module.failures.left_out("reconcile:svc") == 49
