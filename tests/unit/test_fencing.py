"""HA correctness: a deposed leader stops acting, and wake-on-request works on any server.

- Fencing: the controller's store writes carry its lease term; the store refuses a write
  whose term is no longer current (another server took the lease) or whose lease has
  expired on the database's clock, and the controller asks the store the same before it
  deploys or deletes. A leader that still believes it leads (a paused process, a clock
  gone wrong) is refused and follows at once.
- Demand: a request that finds a sleeping service on a follower's gateway is recorded in
  the store; the leader wakes the service and the follower's held request is answered.

Both dialects: SQLite (a file two stores share) and a real PostgreSQL
(tests/support/postgres.py), as in tests/unit/test_store_postgres.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from eas.control import store as st
from eas.control.controller import Controller
from eas.control.leader import LeaderLease
from eas.gateway.route_table import RouteTable
from eas.server import compose
from tests.support.backend import MemoryBackend, MemoryCluster
from tests.support.platform import ACCESS_ID, ACCESS_KEY, REGION, basic_auth, wait_until, write_echo_code
from tests.support.postgres import pg_fixture, target_fixture  # noqa: F401 - fixtures


def test_the_store_refuses_writes_of_a_term_that_is_not_current(target: str) -> None:
    a, b = st.Store(target), st.Store(target)
    a.create_service("svc", {"name": "svc", "metadata": {"instance": 1}}, "tok-svc-12345")
    assert a.acquire_lease("controller", "server-a", 0.5) == (True, 1)
    mine = st.Fence("controller", "server-a", 1)
    assert a.set_status("svc", "Running", fence=mine) is True
    with pytest.raises(st.Fenced, match="term 1"):
        a.set_status("svc", "Failed", "x", fence=st.Fence("controller", "server-a", 7))
    with pytest.raises(st.Fenced):
        a.set_status("svc", "Failed", "x", fence=st.Fence("controller", "server-b", 1))

    wait_until(lambda: a.lease("controller")["remaining_s"] < 0, "the lease to expire", 5)
    with pytest.raises(st.Fenced):  # expired: refused even before anyone takes it
        a.set_status("svc", "Failed", "x", fence=mine)
    assert b.acquire_lease("controller", "server-b", 5) == (True, 2)
    for write in (lambda: a.set_status("svc", "Failed", "x", fence=mine),
                  lambda: a.add_event("svc", "Scaled", "x", fence=mine),
                  lambda: a.remove("svc", fence=mine),
                  lambda: a.delete_traffic("svc", "svc", "x", fence=mine),
                  lambda: a.consume_demand(fence=mine),
                  lambda: a.check_fence(mine)):
        with pytest.raises(st.Fenced):
            write()
    rec = b.get("svc")
    assert (rec.status, rec.message) == ("Running", ""), "no refused write got through"
    assert b.set_status("svc", "Stopped", fence=st.Fence("controller", "server-b", 2)) is True
    a.set_status("svc", "Failed", "unfenced writes (the API's) are not refused")
    a.close()
    b.close()


def _controller(store: st.Store, cluster: MemoryCluster, who: str, ttl: float, cache: Path,
                clock=time.monotonic) -> Controller:  # noqa: ANN001
    return Controller(store, MemoryBackend(cluster, who), RouteTable(), str(cache), internal_key="k",
                      leader=LeaderLease(store, who, ttl_s=ttl, clock=clock))


def _settle(c: Controller) -> None:
    for _ in range(3):
        c.reconcile()
        wait_until(lambda: not c._preparing, "deploys to finish", 10)


def test_a_deposed_leader_that_still_believes_it_leads_stops_acting(target: str, tmp_path: Path) -> None:
    """server-a's clock stands still: by its own reckoning it leads forever. Its lease
    expires on the database's clock, server-b takes it, and server-a's next pass is
    refused before it deletes anything or writes any status."""
    model = tmp_path / "m.joblib"
    model.write_bytes(b"not loaded by the memory backend")
    cluster = MemoryCluster()
    frozen = [100.0]
    store_a, store_b = st.Store(target), st.Store(target)
    a = _controller(store_a, cluster, "server-a", 1.0, tmp_path / "a", clock=lambda: frozen[0])
    b = _controller(store_b, cluster, "server-b", 1.0, tmp_path / "b")
    try:
        store_a.create_service("svc", {"name": "svc", "processor": "sklearn", "model_path": str(model),
                                       "metadata": {"instance": 1}}, "tok-svc-12345")
        _settle(a)
        assert a.leading and store_a.get("svc").status == "Running"
        wait_until(lambda: store_b.lease("controller")["remaining_s"] < 0, "server-a's lease to expire", 5)
        _settle(b)
        lease = store_b.lease("controller")
        assert b.leading and (lease["holder"], lease["term"]) == ("server-b", 2)
        assert store_b.get("svc").status == "Running"

        store_b.set_desired("svc", st.STOPPED, "stop requested")  # work a leader would act on
        events = len(store_b.events("svc"))
        calls = len(cluster.calls)
        assert a.leader.leading, "server-a still believes it leads"
        a.reconcile()
        assert not a.leading and not a.leader.leading, "refused once: it follows"
        assert [c for c in cluster.calls[calls:] if c[2] == "server-a"] == [], "server-a did not act"
        assert store_b.get("svc").status == "Running" and len(store_b.events("svc")) == events, "nor wrote"
        a.reconcile()  # and keeps following while server-b holds the lease
        assert not a.leading and [c for c in cluster.calls[calls:] if c[2] == "server-a"] == []

        b.reconcile()
        assert ("delete", "svc", "server-b") in cluster.calls[calls:]
        assert store_b.get("svc").status == "Stopping"
    finally:
        for c in (a, b):
            c.stop()
        store_a.close()
        store_b.close()


def test_a_request_on_a_followers_gateway_wakes_a_sleeping_service(target: str, tmp_path: Path) -> None:
    """Two eas-servers on one store and one cluster: the service sleeps; a request reaches
    the follower, which holds it and records the demand; the leader wakes the service."""
    code = write_echo_code(tmp_path / "code")
    cluster = MemoryCluster(host_instances=True)
    stores = {who: st.Store(target) for who in ("leader", "follower")}
    platforms = {}
    for who, store in stores.items():
        data = tmp_path / who
        data.mkdir()
        platforms[who] = compose(store, MemoryBackend(cluster, who), data, "http://testserver", region=REGION,
                                 access_id=ACCESS_ID, access_key=ACCESS_KEY, interval_s=0.05,
                                 leader=LeaderLease(store, who, ttl_s=5))
    clients: dict[str, TestClient] = {}
    try:
        platforms["leader"].controller.start()
        wait_until(lambda: platforms["leader"].controller.leading, "the first server to lead")
        platforms["follower"].controller.start()
        for who, p in platforms.items():
            clients[who] = TestClient(p.asgi, base_url="http://testserver").__enter__()
        spec = {"name": "napper", "processor_type": "python", "processor_path": str(code), "token": "napper-token-1",
                "metadata": {"instance": 1}, "sleep": {"idle_seconds": 0.5, "wake_timeout_seconds": 30}}
        created = clients["leader"].post("/api/v2/services", json=spec, headers=basic_auth())
        assert created.status_code == 200, created.text

        def status() -> str:
            return stores["follower"].get("napper").status

        wait_until(lambda: status() == "Sleeping", "the service to fall asleep", 20)
        assert not platforms["follower"].controller.leading
        routes = platforms["follower"].controller.routes
        wait_until(lambda: routes.get("napper").wake_on_demand, "the follower to see it sleep")
        started = time.monotonic()
        answer = clients["follower"].post("/api/predict/napper", content=b"hi",
                                          headers={"Authorization": "napper-token-1"})
        assert answer.status_code == 200 and answer.content == b"echo:hi", answer.text
        assert time.monotonic() - started < 25
        deploys = [c for c in cluster.calls if c[0] == "deploy" and c[1] == "napper"]
        assert {c[2] for c in deploys} == {"leader"}, "only the leader acted"
        assert len(deploys) >= 2, "deployed, released while asleep, deployed again on demand"
    finally:
        for client in clients.values():
            client.__exit__(None, None, None)
        for p in platforms.values():
            p.controller.stop()
        cluster.close()
        for store in stores.values():
            store.close()
