"""The store on both dialects, and leader election between two controllers on one database.

PostgreSQL here is a real server (tests/support/postgres.py) on 127.0.0.1; SQLite is a file two
connections share. The controllers drive a small in-memory backend (the Backend
protocol without Ray), so the test is about who acts, not about Serve.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from eas.control import store as st
from eas.control.controller import Controller
from eas.control.leader import LeaderLease
from eas.gateway.route_table import RouteTable
from tests.support.backend import MemoryBackend, MemoryCluster
from tests.support.postgres import pg_fixture, target_fixture  # noqa: F401 - fixtures


def test_services_versions_events_settings_on_both_dialects(target: str) -> None:
    s = st.Store(target)
    assert s.kind == ("postgresql" if target.startswith("postgresql") else "sqlite")
    s.create_service("a", {"name": "a", "metadata": {"instance": 1}}, "tok-aaaaaaaa")
    with pytest.raises(st.AlreadyExists):
        s.create_service("a", {}, "x")
    s.update_spec("a", {"name": "a", "model_path": "/new", "metadata": {"instance": 2}}, new_version=True,
                  event="model", token="tok-bbbbbbbb")
    s.set_desired("a", st.STOPPED, "stop")
    assert s.set_status("a", "Stopped") is True
    assert s.set_status("a", "Stopped") is False
    s.put_traffic(st.TrafficRecord("a", "service", "tok", [("a", 50), ("b", 50)]), "a", "split")
    s.put_traffic(st.TrafficRecord("a", "service", "tok", [("a", 100)]), "a", "all to a")
    s.set_setting("k", "1")
    s.set_setting("k", "2")
    assert s.init_setting("k", "3") == "2" and s.init_setting("fresh", "x") == "x"
    s.close()

    again = st.Store(target)  # reopened: the schema is created only once
    rec = again.get("a")
    assert (rec.version, rec.token, rec.desired, rec.status) == (2, "tok-bbbbbbbb", st.STOPPED, "Stopped")
    assert again.latest_version("a") == 2 and [v["version"] for v in again.versions("a")] == [1, 2]
    assert again.traffic()["a"].backends == [("a", 100)]
    events = again.events("a")
    assert events[0]["type"] == "Created" and [e["type"] for e in events].count("Traffic") == 2
    assert events == sorted(events, key=lambda e: e["at"])
    assert again.setting("k") == "2"
    again.remove("a")
    with pytest.raises(st.NotFound):
        again.get("a")
    again.close()


def test_backflow_and_jobs_on_both_dialects(target: str) -> None:
    s = st.Store(target)
    s.create_service("a", {"name": "a"}, "tok-aaaaaaaa")
    s.add_backflow([("a", 1.5, '{"n": 1}'), ("a", 2.5, '{"n": 2}'), ("a", 3.5, '{"n": 3}'), ("gone", 1.0, "{}")],
                   {"a": 2, "gone": 5})
    rows = s.backflow("a")
    assert [r["record"] for r in rows] == ['{"n": 2}', '{"n": 3}'] and s.backflow_count("a") == 2
    assert s.backflow("a", after=rows[0]["id"]) == rows[1:] and s.backflow("gone") == []
    s.create_job("j", {"Name": "j", "Service": "a"}, "Scheduled", 10.0)
    with pytest.raises(st.AlreadyExists):
        s.create_job("j", {}, "Pending", None)
    s.update_job("j", state="Running", run=1, total=3, next_run=None)
    s.finish_items("j", 1, [("0", True, ""), ("1", False, "400: bad")])
    s.finish_items("j", 1, [("1", True, "")])  # a resumed item recorded again: the last word wins
    job = s.job("j")
    assert (job["state"], job["run"], job["total"], job["next_run"], job["spec"]["Service"]) == \
        ("Running", 1, 3, None, "a")
    assert s.job_items("j", 1) == {"0": (True, ""), "1": (True, "")} and [j["name"] for j in s.jobs()] == ["j"]
    s.delete_job("j")
    with pytest.raises(st.NotFound):
        s.job("j")
    assert s.job_items("j", 1) == {} and s.clear_backflow("a") == 2
    s.close()


def test_two_servers_create_the_same_name_once(target: str) -> None:
    """Concurrent creates through two connections: exactly one wins, the other is told."""
    stores = [st.Store(target), st.Store(target)]
    outcomes: list[str] = []

    def create(s: st.Store) -> None:
        try:
            s.create_service("dup", {"name": "dup", "metadata": {"instance": 1}}, "tok-dupdupdup")
            outcomes.append("created")
        except st.AlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["created", "exists"]
    for s in stores:
        s.close()


def test_lease_is_exclusive_renewable_and_taken_over_after_expiry(target: str) -> None:
    a, b = st.Store(target), st.Store(target)
    assert a.acquire_lease("ctl", "server-a", 0.8) == (True, 1)
    assert b.acquire_lease("ctl", "server-b", 0.8) == (False, 1)
    assert a.acquire_lease("ctl", "server-a", 0.8) == (True, 1)  # renewal keeps the term
    time.sleep(1.0)
    assert b.acquire_lease("ctl", "server-b", 5) == (True, 2)  # expired: taken, term grows
    assert a.acquire_lease("ctl", "server-a", 5) == (False, 2)
    b.release_lease("ctl", "server-b")
    assert a.acquire_lease("ctl", "server-a", 5) == (True, 3)  # released: no wait
    assert a.lease("ctl")["holder"] == "server-a"
    a.close()
    b.close()


def _controller(store: st.Store, cluster: MemoryCluster, who: str, ttl: float, cache: Path) -> Controller:
    return Controller(store, MemoryBackend(cluster, who), RouteTable(), str(cache), internal_key="k",
                      leader=LeaderLease(store, who, ttl_s=ttl))


def _settle(*controllers: Controller, passes: int = 3) -> None:
    """Run reconcile passes until deploy tasks finish (bounded)."""
    for _ in range(passes):
        for c in controllers:
            c.reconcile()
        deadline = time.monotonic() + 10
        while any(c._preparing for c in controllers) and time.monotonic() < deadline:
            time.sleep(0.02)


def test_two_controllers_one_leader_and_takeover_when_the_lease_expires(target: str, tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"not loaded by the memory backend")
    backend = MemoryCluster()
    store_a, store_b = st.Store(target), st.Store(target)
    ttl = 1.5
    a = _controller(store_a, backend, "server-a", ttl, tmp_path / "cache-a")
    b = _controller(store_b, backend, "server-b", ttl, tmp_path / "cache-b")
    try:
        store_a.create_service("svc", {"name": "svc", "processor": "sklearn", "model_path": str(model),
                                       "metadata": {"instance": 2}}, "tok-svcsvcsvc")
        _settle(a, b)
        assert (a.leading, b.leading) == (True, False)
        assert backend.calls == [("deploy", "svc", "server-a")], "only the leader deploys"
        assert store_a.get("svc").status == "Running"
        # The follower serves too: it routes to the running instances without acting.
        route_b = b.routes.get("svc")
        assert route_b is not None and len(route_b.endpoints) == 2

        # A change written through the follower's API is applied once, by the leader.
        store_b.set_desired("svc", st.STOPPED, "stop")
        _settle(b, a)
        assert backend.calls[1:] == [("delete", "svc", "server-a")]
        assert store_b.get("svc").status == "Stopped"
        store_b.set_desired("svc", st.RUNNING, "start")
        _settle(b, a)
        assert backend.calls[2:] == [("deploy", "svc", "server-a")]

        # The leader dies (no more passes, no release). Until its lease runs out the
        # follower does nothing; then it takes over and re-applies the store once.
        died = time.monotonic()
        calls_before = len(backend.calls)
        deadline = died + ttl + 5
        while not b.leading and time.monotonic() < deadline:
            b.reconcile()
            if not b.leading:
                assert len(backend.calls) == calls_before, "a follower must not act"
            time.sleep(0.1)
        took = time.monotonic() - died
        assert b.leading, "the follower did not take over"
        assert ttl - 0.2 <= took <= ttl + 1.0, f"takeover after {took:.2f} s with a {ttl} s lease"
        _settle(b)
        assert backend.calls[calls_before:] == [("deploy", "svc", "server-b")]
        assert store_b.lease("controller")["term"] == 2

        # The old leader comes back: it finds the lease taken and follows.
        a.reconcile()
        assert not a.leading
        assert a.routes.get("svc") is not None and len(a.routes.get("svc").endpoints) == 2

        # A clean stop hands over at once.
        b.stop()
        a.reconcile()
        assert a.leading
    finally:
        a.stop()
        b.stop()
        store_a.close()
        store_b.close()
