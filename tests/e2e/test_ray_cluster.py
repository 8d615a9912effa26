"""eas-server on a real two-node Ray cluster: instances spread, a node dies under load,
the service keeps answering and its instances come back on the surviving node.

Both nodes run on this machine on 127.0.0.1 (tests/support/raycluster.py); the worker node is
killed with SIGKILL (its raylet and every process under it), as a lost machine would be.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.e2e.harness import EasServer, sklearn_service, write_json
from tests.support.raycluster import ENV, RayCluster

pytestmark = pytest.mark.e2e

#: What the test promises: answering again within this long after the node is lost, and
#: both instances running again (on the surviving node) within RESCHEDULED_S.
ANSWERING_S = 15.0
RESCHEDULED_S = 60.0


class TimedLoad:
    """Bounded loopback load that records (time, status) of every answer."""

    def __init__(self, url: str, body: str, token: str, threads: int = 2, max_s: float = 120) -> None:
        self.url, self.body, self.token, self.max_s = url, body, token, max_s
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "TimedLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=10, headers={"Authorization": self.token}) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < 100_000:
                try:
                    status = client.post(self.url, content=self.body).status_code
                except httpx.HTTPError:
                    status = -1
                self.results.append((time.monotonic(), status))
                time.sleep(0.01)


def _instances(srv: EasServer, name: str) -> list[dict]:
    return json.loads(srv.eascmd("w", name, "--json").stdout)


def test_instances_spread_and_survive_a_lost_node(iris, tmp_path):
    cluster = RayCluster(cpus_per_node=4)
    srv = None
    try:
        cluster.start({"worker_node": 1})
        assert len(cluster.raylets()) == 2
        srv = EasServer(tmp_path / "eas-data", extra_args=("--ray-address", cluster.address), env=ENV).start()

        spec = sklearn_service("spread", iris["path"], instance=2, cpu=1)
        srv.eascmd("create", str(write_json(tmp_path / "spread.json", spec)))
        running = [i for i in _instances(srv, "spread") if i["Status"] == "Running"]
        assert len(running) == 2
        assert sorted(cluster.node_of(i["Ext"]["Pid"]) for i in running) == ["head", "worker"], \
            "Serve spreads a service's instances over the nodes"

        # metadata.resource is a Ray custom resource: only nodes that have it take the instances.
        pinned = sklearn_service("pinned", iris["path"], instance=2, cpu=0.5, resource="worker_node")
        srv.eascmd("create", str(write_json(tmp_path / "pinned.json", pinned)))
        assert {cluster.node_of(i["Ext"]["Pid"]) for i in _instances(srv, "pinned")} == {"worker"}
        srv.eascmd("delete", "pinned", "-y")

        token = srv.desc("spread")["AccessToken"]
        body = json.dumps({"instances": iris["rows"]})
        url = f"{srv.url}/api/predict/spread"
        with TimedLoad(url, body, token) as load:
            time.sleep(2)
            assert load.results and all(s == 200 for _, s in load.results), "steady before the loss"
            killed_at = time.monotonic()
            cluster.kill_node(cluster.raylet_with("worker_node"))

            # Both instances running again, on the head node (the only one left).
            deadline = killed_at + RESCHEDULED_S
            while time.monotonic() < deadline:
                now = [i for i in _instances(srv, "spread") if i["Status"] == "Running"]
                if len(now) == 2 and {cluster.node_of(i["Ext"]["Pid"]) for i in now} == {"head"}:
                    break
                time.sleep(0.5)
            rescheduled_s = time.monotonic() - killed_at
            assert rescheduled_s < RESCHEDULED_S, f"instances not rescheduled: {_instances(srv, 'spread')}"
            time.sleep(3)  # a stretch of load after recovery

        after = [(t - killed_at, s) for t, s in load.results if t >= killed_at]
        failures = [(t, s) for t, s in after if s != 200]
        last_failure = max((t for t, _ in failures), default=0.0)
        assert after and after[-1][1] == 200
        assert last_failure < ANSWERING_S, f"still failing {last_failure:.1f} s after the loss: {failures[-5:]}"
        tail = [s for t, s in after if t > last_failure]
        assert len(tail) >= 20 and all(s == 200 for s in tail)

        # No dead node's endpoint is routed to or offered to DIRECT clients.
        items = httpx.get(f"{srv.url}/api/v1/servicediscovery/upstreams/spread").json()["endpoints"]["items"]
        assert len(items) == 2
        for item in items:
            direct = httpx.post(f"http://{item['ip']}:{item['port']}/api/predict/spread", content=body,
                                headers={"Authorization": token}, timeout=10)
            assert direct.status_code == 200
        print(f"\nnode lost under load: {len(after)} requests after the kill, {len(failures)} failed; "
              f"answering again {last_failure:.1f} s after the loss (0 = never stopped); "
              f"2/2 instances running again on the surviving node after {rescheduled_s:.1f} s")
    finally:
        if srv is not None:
            srv.stop()
        cluster.stop()
