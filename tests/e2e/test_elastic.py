"""Elasticity with real load on loopback: autoscaling, cron, sleep and wake, warm-up."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Load, write_json

pytestmark = pytest.mark.e2e

WORKER = """
import json, time
class Worker:
    def initialize(self):
        self.calls = 0
        cfg = json.loads(self.model_config) if isinstance(self.model_config, str) else (self.model_config or {})
        self.delay = cfg.get("delay", 0)
        self.first_call = cfg.get("first_call", 0)
        time.sleep(cfg.get("init_delay", 0))  # a model that is slow to load
    def process(self, data):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.first_call)   # a model whose first call is slow (lazy init)
        if data == b"fail":
            raise RuntimeError("this request cannot be served")
        time.sleep(self.delay)
        return json.dumps({"calls": self.calls}), 200
"""


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("worker")
    (directory / "app.py").write_text(WORKER)
    return directory


def worker(name: str, code: Path, **extra) -> dict:
    config = extra.pop("config", {})
    return {"name": name, "processor_type": "python", "processor_path": str(code),
            "model_config": json.dumps(config), "metadata": {"instance": 1, "cpu": 0.25, **extra.pop("meta", {})},
            **extra}


def instances(server, name: str) -> int:  # noqa: ANN001
    return len([i for i in json.loads(server.eascmd("w", name, "--json").stdout) if i["Status"] == "Running"])


def wait_instances(server, name: str, count: int, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while instances(server, name) != count:
        assert time.monotonic() < deadline, f"{name} did not reach {count} instances: {server.desc(name)}"
        time.sleep(0.5)


def test_autoscaler_scales_up_under_load_and_back_down(server, code, tmp_path):
    spec = worker("auto", code, config={"delay": 0.02}, autoscaler={
        "min": 1, "max": 3, "scaleStrategies": [{"metricName": "qps", "threshold": 5}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4}}})
    server.eascmd("create", str(write_json(tmp_path / "a.json", spec)))
    token = server.desc("auto")["AccessToken"]
    with Load(f"{server.url}/api/predict/auto", b"{}", token, concurrency=6, max_seconds=90) as load:
        wait_instances(server, "auto", 3, timeout=60)
        info = server.desc("auto")
        assert info["Ext"]["DesiredInstance"] == 3 and "qps" in info["Ext"]["LastScaling"]["Reason"]
    assert all(status == 200 for status, _, _ in load.results), "scaling up fails no request"
    wait_instances(server, "auto", 1, timeout=60)
    events = [e for e in json.loads(server.eascmd("events", "auto", "--json").stdout) if e["Reason"] == "Scaled"]
    assert any("-> 3" in e["Message"] for e in events) and any("-> 1" in e["Message"] for e in events)
    shown = json.loads(server.eascmd("autoscale", "auto", "--json").stdout)
    assert shown["MaxReplica"] == 3 and shown["Ext"]["LastScaling"]["DesiredInstance"] == 1
    server.eascmd("delete", "auto", "-y")


def test_sleeping_service_wakes_for_a_burst_with_no_errors(server, code, tmp_path):
    # Loading takes longer than the idle period: the held burst must keep it awake.
    spec = worker("sleepy", code, config={"init_delay": 2}, sleep={"idle_seconds": 1, "wake_timeout_seconds": 60})
    server.eascmd("create", str(write_json(tmp_path / "s.json", spec)))
    token = server.desc("sleepy")["AccessToken"]
    server.wait_status("sleepy", "Sleeping", timeout=60)
    assert server.desc("sleepy")["RunningInstance"] == 0
    assert "Sleeping" in server.eascmd("ls").stdout

    async def burst() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(timeout=90, headers={"Authorization": token}) as client:
            t0 = time.perf_counter()

            async def one() -> tuple[int, float]:
                resp = await client.post(f"{server.url}/api/predict/sleepy", content=b"{}")
                return resp.status_code, time.perf_counter() - t0

            return await asyncio.gather(*(one() for _ in range(20)))

    results = asyncio.run(burst())
    assert [s for s, _ in results] == [200] * 20, results
    print(f"wake: first answer after {min(t for _, t in results):.2f} s, last after {max(t for _, t in results):.2f} s")
    assert server.desc("sleepy")["Status"] == "Running"
    server.eascmd("delete", "sleepy", "-y")


def test_cron_scaler_changes_instances_at_the_scheduled_minute(server, code, tmp_path):
    now = datetime.now(timezone.utc)
    minute = (now.minute + (1 if now.second < 30 else 2)) % 60
    # The job that fired last decides: "this minute -> 1" until the scheduled one fires.
    jobs = [{"schedule": f"{now.minute} * * * *", "target": 1}, {"schedule": f"{minute} * * * *", "target": 2}]
    spec = worker("crony", code, cron_scaler={"timezone": "UTC", "jobs": jobs})
    server.eascmd("create", str(write_json(tmp_path / "c.json", spec)))
    count = instances(server, "crony")
    if datetime.now(timezone.utc).minute != minute:  # a slow create may run into the scheduled minute
        assert count == 1, f"2 instances before {minute:02d}: the cron job fired early"
    wait_instances(server, "crony", 2, timeout=150)
    fired = datetime.now(timezone.utc)
    assert fired.minute in (minute, (minute + 1) % 60), "scaled at the scheduled minute, not before"
    assert "cron" in server.desc("crony")["Ext"]["LastScaling"]["Reason"]
    server.eascmd("delete", "crony", "-y")


def test_warm_up_runs_before_traffic_and_a_failing_one_keeps_old_instances(server, code, tmp_path):
    warm = tmp_path / "warm_up.txt"
    warm.write_text("{}\n")
    spec = worker("warm", code, config={"first_call": 2}, warm_up_data_path=str(warm))
    server.eascmd("create", str(write_json(tmp_path / "w.json", spec)))
    token = server.desc("warm")["AccessToken"]
    t0 = time.perf_counter()
    first = server.predict("warm", b"{}", token)
    elapsed = time.perf_counter() - t0
    assert first.json() == {"calls": 6}, "5 warm-up calls ran before the first real one"
    assert elapsed < 2, f"the slow first call happened during warm-up, not on traffic ({elapsed:.2f} s)"

    bad = tmp_path / "bad_warm_up.txt"
    bad.write_text("fail\n")
    res = server.eascmd("modify", "warm", "-Dwarm_up_data_path=" + str(bad), "-Dmodel_config={}", check=False)
    assert res.returncode != 0
    info = server.desc("warm")
    assert info["Status"] == "Failed" and "warm-up request 1" in info["Message"]
    still = server.predict("warm", b"{}", token)
    assert still.status_code == 200, "the old instance keeps serving after a failed warm-up"
    server.eascmd("delete", "warm", "-y")
