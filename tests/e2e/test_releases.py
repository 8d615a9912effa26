"""Releases under constant load: not one failed or slow request through any change."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Load, write_json

pytestmark = pytest.mark.e2e

KEEPALIVE_S = 5.0
WHO = """
import json
class Who:
    def initialize(self):
        self.who = self.model_config if isinstance(self.model_config, str) else json.dumps(self.model_config)
    def process(self, data):
        return json.dumps({"who": self.who}), 200
"""


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("who")
    (directory / "app.py").write_text(WHO)
    return directory


def who_service(name: str, code: Path, who: str, instances: int = 1) -> dict:
    return {"name": name, "processor_type": "python", "processor_path": str(code), "model_config": who,
            "metadata": {"instance": instances, "cpu": 0.25}}


def answers(load: Load, since: int = 0) -> collections.Counter:
    return collections.Counter(json.loads(b)["who"] for s, _, b in load.results[since:] if s == 200)


def assert_clean(load: Load, what: str, since: int = 0) -> None:
    window = load.results[since:]
    bad = collections.Counter(s for s, _, _ in window if s != 200)
    assert not bad, f"{what}: non-200 answers {dict(bad)}; e.g. {[b[:200] for s, _, b in window if s != 200][:3]}"
    slowest = max((t for _, t, _ in window), default=0)
    assert slowest < KEEPALIVE_S, f"{what}: a request took {slowest:.2f} s"


def wait_answers(load: Load, since: int, want: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while set(answers(load, since)) != want or len(load.results) - since < 20:
        assert time.monotonic() < deadline, f"wanted answers from {want}, got {answers(load, since)}"
        time.sleep(0.2)


def test_versions_scaling_restart_and_blue_green_under_load(server, code, tmp_path):
    server.eascmd("create", str(write_json(tmp_path / "v1.json", who_service("rel", code, "v1", instances=2))))
    token = server.desc("rel")["AccessToken"]
    url = f"{server.url}/api/predict/rel"

    # Bounded by time: on a fast machine 50,000 requests (Load's default cap) can run out
    # before the last release step, and a stopped load looks like a stalled gateway.
    with Load(url, b"{}", token, concurrency=4, max_requests=400_000, max_seconds=400) as load:
        time.sleep(1)
        # A new version rolls out; then back to version 1.
        mark = load.mark()
        patch = write_json(tmp_path / "v2.json", {"model_config": "v2"})
        server.eascmd("modify", "rel", "-s", str(patch))
        wait_answers(load, load.mark(), {"v2"})
        info = server.desc("rel")
        assert (info["LatestVersion"], info["CurrentVersion"]) == (2, 2)
        server.eascmd("version", "rel", "1")
        wait_answers(load, load.mark(), {"v1"})
        assert server.desc("rel")["CurrentVersion"] == 1
        assert_clean(load, "version rollout and rollback", mark)

        # Restart one of two instances.
        mark = load.mark()
        victim = json.loads(server.eascmd("w", "rel", "--json").stdout)[0]["InstanceName"]
        server.eascmd("dw", "rel", victim, "-y")
        deadline = time.monotonic() + 60
        while True:
            running = [i for i in json.loads(server.eascmd("w", "rel", "--json").stdout) if i["Status"] == "Running"]
            if len(running) == 2 and victim not in {i["InstanceName"] for i in running}:
                break
            assert time.monotonic() < deadline, running
            time.sleep(0.3)
        time.sleep(1.5)
        assert_clean(load, "dw of one instance", mark)

        # Scale 2 -> 3 -> 1.
        mark = load.mark()
        server.eascmd("modify", "rel", "-Dmetadata.instance=3")
        server.eascmd("modify", "rel", "-Dmetadata.instance=1")
        deadline = time.monotonic() + 60
        while len(json.loads(server.eascmd("w", "rel", "--json").stdout)) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        time.sleep(1.5)
        assert_clean(load, "scale 2 -> 3 -> 1", mark)

        # Blue-green: a partner with its own endpoint, released at 0, 50, 100.
        mark = load.mark()
        out = server.eascmd("create", str(write_json(tmp_path / "g.json", who_service("rel", code, "green"))),
                            "-r").stdout
        partner = next(s["ServiceName"] for s in json.loads(server.eascmd("ls", "--json").stdout)
                       if s["ServiceName"].startswith("rel_"))
        assert partner in out
        partner_token = server.desc(partner)["AccessToken"]
        own = server.predict(partner, b"{}", partner_token)
        assert own.status_code == 200 and own.json() == {"who": "green"}, "the partner has its own endpoint"
        server.eascmd("release", partner, "-w", "0", "-y")
        time.sleep(1.5)
        m0 = load.mark()
        time.sleep(2)
        assert answers(load, m0) == collections.Counter({"v1": len(load.results) - m0}) or \
            set(answers(load, m0)) == {"v1"}
        closed = server.predict(partner, b"{}", partner_token)
        assert closed.status_code == 404 and "released into 'rel'" in closed.json()["message"]

        server.eascmd("release", partner, "-w", "50", "-y")
        time.sleep(1.5)
        m50 = load.mark()
        deadline = time.monotonic() + 120
        while len(load.results) - m50 < 2000:
            assert time.monotonic() < deadline, \
                f"load too slow for 2,000 requests: {len(load.results) - m50} in 120 s, {load.mark()} in all"
            time.sleep(0.2)
        split = answers(load, m50)
        share = split["green"] / sum(split.values())
        assert abs(share - 0.5) <= 0.05, f"green took {share:.1%} at weight 50: {split}"
        listing = {s["ServiceName"]: s for s in json.loads(server.eascmd("ls", "--json").stdout)}
        assert listing[partner]["Weight"] == 50 and listing["rel"]["Weight"] == 50

        server.eascmd("release", partner, "-w", "100", "-y")
        wait_answers(load, load.mark() + 10, {"green"})
        assert_clean(load, "blue-green create and release 0/50/100", mark)

        # Deleting the original leaves the endpoint to the partner.
        mark = load.mark()
        server.eascmd("delete", "rel", "-y")
        time.sleep(2)
        assert set(answers(load, mark)) == {"green"}
        assert_clean(load, "deleting the blue side", mark)
    assert len(load.results) > 2500
    events = json.loads(server.eascmd("events", partner, "--json").stdout)
    assert any(e["Reason"] == "Traffic" for e in events)
    server.eascmd("delete", partner, "-y")


def test_group_split_pin_and_weight_change(server, code, tmp_path):
    for name, who in (("grp_a", "a"), ("grp_b", "b")):
        server.eascmd("create", str(write_json(tmp_path / f"{name}.json", who_service(name, code, who))))
    out = server.eascmd("group", "create", "grp", "-m", "grp_a:80", "-m", "grp_b:20").stdout
    assert "grp_a:80" in out
    group = json.loads(server.eascmd("group", "desc", "grp", "--json").stdout)
    url = f"{server.url}/api/predict/grp"
    time.sleep(1.5)
    with Load(url, b"{}", group["AccessToken"], concurrency=4, max_requests=2000, max_seconds=120) as load:
        while len(load.results) < 2000 and load._thread.is_alive():
            time.sleep(0.2)
    split = answers(load)
    assert abs(split["b"] / sum(split.values()) - 0.2) <= 0.05, split
    assert_clean(load, "group at 80/20")

    pinned = httpx.post(url, content=b"{}", headers={"Authorization": group["AccessToken"], "X-Eas-Target": "grp_b"})
    assert pinned.json() == {"who": "b"}
    own = server.predict("grp_a", b"{}", server.desc("grp_a")["AccessToken"])
    assert own.json() == {"who": "a"}, "members keep their own endpoints"

    with Load(url, b"{}", group["AccessToken"], concurrency=4, max_seconds=120) as load:
        time.sleep(1)
        server.eascmd("group", "modify", "grp", "-m", "grp_a:0", "-m", "grp_b:100")
        time.sleep(1.5)
        mark = load.mark()
        time.sleep(2)
    assert set(answers(load, mark)) == {"b"}
    assert_clean(load, "group weight change")
    server.eascmd("group", "delete", "grp", "-y")
    assert httpx.post(url, content=b"{}", headers={"Authorization": group["AccessToken"]}).status_code == 404


def test_mirror_copies_every_request_to_the_shadow(server, code, tmp_path):
    for name in ("primary", "shadow"):
        server.eascmd("create", str(write_json(tmp_path / f"{name}.json", who_service(name, code, name))))
    server.eascmd("mirror", "primary", "shadow", "-p", "100")
    time.sleep(1.5)
    token = server.desc("primary")["AccessToken"]
    for _ in range(50):
        resp = server.predict("primary", b"{}", token)
        assert resp.json() == {"who": "primary"}, "the primary answers; the shadow's answer is dropped"
    time.sleep(2.5)  # copies finish and one controller pass reads the shadow's counters
    metrics = httpx.get(f"{server.url}/metrics").text
    shadow_count = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("eas_instance_requests_total") and 'service="shadow"' in line)
    assert shadow_count == 50
    server.eascmd("mirror", "primary", "--off")
    for name in ("primary", "shadow"):
        server.eascmd("delete", name, "-y")
