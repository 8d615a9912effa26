"""Asynchronous services with the official Python QueueClient (eas-prediction, unchanged)
against a real eas-server, real Ray Serve and the echo user processor (issue 16).

The SDK runs in its own venv as tests/sdk/python/queue_driver.py. Checked: the protocol
(put with tags, watch the sink with and without auto-commit, commit, get by index and by
request id, attributes, search, delete, truncate, long poll, token); delivery when
eas-server or the instance is killed with -9 while requests run (after the restart
every request has exactly one answer on the sink, seen by a watcher that commits); and
`queue[backlog]` scaling 1 -> 3 on a backlog, down to 0 on an empty queue, and awake
again on the next put. This module has its own server: it kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.harness import EasServer
from tests.sdk.harness import SDK_DIR, deploy, echo_spec

pytestmark = pytest.mark.e2e

SDK_PYTHON = SDK_DIR / "python" / ".venv" / "bin" / "python"
DRIVER = SDK_DIR / "python" / "queue_driver.py"
RESULT_MARK = "SDK-RESULT "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if not SDK_PYTHON.exists():
        pytest.fail(f"the Python SDK venv is missing ({SDK_PYTHON}): run `make sdk-deps` (part of `make test`)")
    srv = EasServer(tmp_path_factory.mktemp("eas-queue-data")).start()
    yield srv
    srv.stop()


def async_spec(name: str, **queue: Any) -> dict[str, Any]:
    spec = echo_spec(name, cpu=0.25)
    spec["metadata"]["type"] = "Async"
    spec["queue"] = {"max_delivery": 3, **queue}
    return spec


def drive(srv: EasServer, scenario: str, service: str, token: str, timeout: float = 180, **args: Any) -> Any:
    cfg = {"scenario": scenario, "endpoint": f"127.0.0.1:{srv.port}", "service": service, "token": token, **args}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(SDK_PYTHON), str(DRIVER)], input=json.dumps(cfg), capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert proc.returncode == 0 and lines, f"queue driver failed:\n{proc.stdout}\n{proc.stderr}\n{srv.log_tail()}"
    return json.loads(lines[-1][len(RESULT_MARK):])


def attrs(srv: EasServer, queue: str, token: str) -> dict[str, str]:
    resp = httpx.get(f"{srv.url}/api/predict/{queue}", params={"_attrs_": "true"},
                     headers={"Authorization": token}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_until(what: str, check, timeout: float = 120, srv: EasServer | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout} s\n{srv.log_tail() if srv else ''}"
        time.sleep(0.1)


def answered_once(frames: list[dict[str, Any]], puts: list[list[Any]]) -> None:
    """Every request put has exactly one answer among the frames, a 200 from the echo."""
    ids = [f["tags"]["requestId"] for f in frames]
    assert sorted(ids) == sorted(rid for _, rid in puts), (len(ids), len(puts))
    assert len(ids) == len(set(ids)), "a request was answered twice"
    assert all(f["tags"]["status"] == "200" and not f["message"] for f in frames), frames
    by_id = {rid: int(index) for index, rid in puts}
    assert all(int(f["tags"]["sourceIndex"]) == by_id[f["tags"]["requestId"]] for f in frames)


def test_python_queue_client_round_trip(server: EasServer, tmp_path: Path) -> None:
    token = deploy(server, async_spec("q_round"), tmp_path)
    out = drive(server, "roundtrip", "q_round", token, n=12)
    assert out["input_attrs"]["meta.header.user"] == "X-EAS-QueueService-Redis-Uid"
    assert [i for i, _ in out["puts"]] == list(range(1, 13))
    frames = out["frames"]
    assert len(frames) == 12
    answered_once(frames, out["puts"])
    for f in frames:  # the request's tags travel to its answer; the echo saw the body
        n = int(f["tags"]["n"])
        assert json.loads(f["data"])["upper"] == f"ITEM-{n}"
    assert out["sink_length_after_commit"] == 0 and out["input_length_after"] == 0
    assert [f["data"] for f in out["get_by_request_id"]] == ["abc"]
    assert out["get_by_request_id"][0]["tags"]["kind"] == "direct"
    assert [f["data"] for f in out["get_by_index"]] == ["def"]
    assert out["length_three"] == 3 and out["length_after_delete"] == 2
    assert out["search"] == {"IsPending": False, "WaitCount": 2}  # keep-0 and keep-1 wait before it
    assert [f["data"] for f in out["peek"]] == ["keep-1", "keep-2"]
    assert out["length_after_truncate"] == 0
    assert out["auto_commit_data"] == [str(i) for i in range(10)]
    assert out["length_after_auto_commit"] == 0
    assert out["empty_long_poll"] == [] and out["long_poll_waited"]
    assert out["wrong_token"] == 401


def test_direct_mode_finds_the_queue_service(server: EasServer, tmp_path: Path) -> None:
    """The SDK in DIRECT mode asks service discovery where to go: for an Async service,
    the queue service itself (its queues are not on the instances)."""
    token = deploy(server, async_spec("q_direct"), tmp_path)
    found = httpx.get(f"{server.url}/api/v1/servicediscovery/upstreams/q_direct/sink", timeout=10).json()
    assert found["endpoints"]["items"] == [{"ip": "127.0.0.1", "port": server.port, "weight": 100}]
    out = drive(server, "roundtrip", "q_direct", token, n=4, endpoint_type="DIRECT")
    answered_once(out["frames"], out["puts"])
    assert out["length_after_truncate"] == 0 and out["wrong_token"] == 401


def test_queue_errors_are_clear(server: EasServer, tmp_path: Path) -> None:
    token = deploy(server, async_spec("q_errors", source={"max_length": 2, "max_payload_size_kb": 1}), tmp_path)
    url = f"{server.url}/api/predict/q_errors"
    auth = {"Authorization": token}
    bad = httpx.get(url, params={"_length_": "many"}, headers=auth, timeout=10)
    assert bad.status_code == 400 and "_length_" in bad.json()["message"]
    assert httpx.get(url, params={"_timeout_": "soon"}, headers=auth, timeout=10).status_code == 400
    assert httpx.delete(url, params={"_indexes_": "1,x"}, headers=auth, timeout=10).status_code == 400
    assert httpx.post(url, content=b"x" * 2048, headers=auth, timeout=10).status_code == 413
    assert httpx.get(url, params={"_attrs_": "true"}, timeout=10).status_code == 401
    ws_url = url.replace("http://", "ws://") + "/sink?_watch_=true&_window_=5"
    with pytest.raises(InvalidStatus) as refused:  # a watch is admitted like predict: the token first
        connect(ws_url, additional_headers={"Authorization": "wrong-token-123"}, open_timeout=10)
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url.replace("_window_=5", "_window_=0"), additional_headers=auth, open_timeout=10)
    assert refused.value.response.status_code == 400
    server.eascmd("stop", "q_errors")  # nothing takes from the queue: it fills
    assert httpx.post(url, content=b"1", headers=auth, timeout=10).status_code == 200
    assert httpx.post(url, content=b"2", headers=auth, timeout=10).status_code == 200
    full = httpx.post(url, content=b"3", headers=auth, timeout=10)
    assert full.status_code == 429 and "full" in full.json()["message"]


def test_kill9_of_server_with_requests_in_flight(server: EasServer, tmp_path: Path) -> None:
    """Requests waiting, running on the instance and answered; a watcher with commit
    connected all along (the SDK reconnects by itself): after the restart every request
    has exactly one answer on the sink. The watcher may see an answer twice (sent, then
    the server died before its commit): both times the same sink entry."""
    name = "q_crash"
    token = deploy(server, async_spec(name), tmp_path)
    puts = drive(server, "put", name, token, bodies=[f"sleep:300:{i}" for i in range(20)])
    cfg = {"scenario": "collect", "endpoint": f"127.0.0.1:{server.port}", "service": name, "token": token,
           "count": 20, "window": 4, "deadline_s": 180}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "watch.json").write_text(json.dumps(cfg))
    with open(tmp_path / "watch.json") as stdin:
        watcher = subprocess.Popen([str(SDK_PYTHON), str(DRIVER)], stdin=stdin, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
    try:
        def watched() -> bool:
            """Answers on the sink and the watcher committing them: it is connected (the
            SDK retries a connection that breaks, not its first one)."""
            sink = attrs(server, f"{name}/sink", token)
            return int(sink["stream.lastEntry"]) >= 3 and int(sink["stream.length"]) < int(sink["stream.lastEntry"])

        wait_until("first answers on the sink, committed by the watcher", watched, srv=server)
        waiting = int(attrs(server, name, token)["stream.length"])
        server.kill9()
        assert waiting > 0, "the kill came after the work was done"
        server.start()
        server.wait_status(name, "Running", timeout=180)
        stdout, stderr = watcher.communicate(timeout=240)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert lines, f"the watcher failed:\n{stdout}\n{stderr}\n{server.log_tail()}"
    out = json.loads(lines[-1][len(RESULT_MARK):])
    frames = out["frames"]
    first: dict[str, dict[str, Any]] = {}
    for f in frames:  # one answer per request: a repeat is the same sink entry
        seen = first.setdefault(f["tags"]["requestId"], f)
        assert seen["index"] == f["index"], (seen, f)
    answered_once(list(first.values()), puts)
    print(f"watcher saw {len(frames)} frames for {len(first)} requests across the kill")
    assert wait_until("both queues empty", lambda: attrs(server, f"{name}/sink", token)["stream.length"] == "0"
                      and attrs(server, name, token)["stream.length"] == "0", timeout=30, srv=server)


def test_kill9_of_instance_redelivers(server: EasServer, tmp_path: Path) -> None:
    name = "q_instance"
    token = deploy(server, async_spec(name), tmp_path)
    instances = json.loads(server.eascmd("w", name, "--json").stdout)
    pid = int(instances[0].get("Pid") or instances[0].get("Ext", {}).get("Pid"))
    puts = drive(server, "put", name, token, bodies=[f"sleep:500:{i}" for i in range(40)])
    wait_until("first answers on the sink", lambda: int(attrs(server, f"{name}/sink", token)["stream.lastEntry"]) >= 3,
               srv=server)
    os.kill(pid, signal.SIGKILL)
    assert int(attrs(server, name, token)["stream.length"]) > 0, "the kill came after the work was done"
    out = drive(server, "collect", name, token, count=40, window=4, deadline_s=150, timeout=240)
    answered_once(out["frames"], puts)
    assert len({json.loads(f["data"])["instance"] for f in out["frames"]}) == 2  # before and after the kill


def test_a_request_that_kills_every_instance_goes_to_the_sink_with_an_error(server: EasServer,
                                                                           tmp_path: Path) -> None:
    name = "q_poison"
    spec = async_spec(name)
    spec["queue"]["max_delivery"] = 2
    token = deploy(server, spec, tmp_path)
    poison = drive(server, "put", name, token, bodies=["exit:now"])
    out = drive(server, "collect", name, token, count=1, deadline_s=180, timeout=240)
    [frame] = out["frames"]
    assert frame["tags"]["requestId"] == poison[0][1] and frame["tags"]["status"] == "500"
    assert "not answered after 2 deliveries" in frame["message"]
    server.wait_status(name, "Running", timeout=180)  # the service itself lives on
    fine = drive(server, "put", name, token, bodies=["still here"])
    after = drive(server, "collect", name, token, count=1, deadline_s=120, timeout=180)
    assert [f["tags"]["requestId"] for f in after["frames"]] == [fine[0][1]]


def test_backlog_scales_out_then_to_zero_and_wakes_on_put(server: EasServer, tmp_path: Path) -> None:
    name = "q_scale"
    spec = async_spec(name)
    spec["autoscaler"] = {"min": 0, "max": 3, "scaleStrategies": [{"metricName": "queue[backlog]", "threshold": 5}],
                          "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0},
                                       "onZero": {"scaleDownGracePeriodSeconds": 2}}}
    with server.admin() as admin:
        assert admin.post("/api/v2/services", json=spec).status_code == 200
    # An empty queue: the service goes to zero once its first instance was up.
    token = server.wait_status(name, "Sleeping", timeout=180)["AccessToken"]
    puts = drive(server, "put", name, token, bodies=[f"sleep:400:{i}" for i in range(60)])

    def running() -> int:
        return sum(i["Status"] == "Running" for i in json.loads(server.eascmd("w", name, "--json").stdout))

    wait_until("3 instances for a backlog of 60", lambda: running() == 3, timeout=180, srv=server)
    out = drive(server, "collect", name, token, count=60, window=10, deadline_s=180, timeout=240)
    answered_once(out["frames"], puts)
    wait_until("0 instances once the queue is empty", lambda: server.desc(name)["Status"] == "Sleeping"
               or running() == 0, timeout=120, srv=server)
    again = drive(server, "put", name, token, bodies=["wake up"])
    woke = drive(server, "collect", name, token, count=1, deadline_s=150, timeout=240)
    assert [f["tags"]["requestId"] for f in woke["frames"]] == [again[0][1]]
    assert json.loads(woke["frames"][0]["data"])["upper"] == "WAKE UP"


def test_eascmd_queue_inspects_and_drains(server: EasServer, tmp_path: Path) -> None:
    deploy(server, async_spec("q_cmd"), tmp_path)
    put = json.loads(server.eascmd("queue", "put", "q_cmd", "-d", "from eascmd", "-t", "who=ops", "--json").stdout)
    assert put["Index"] == 1 and put["RequestId"]
    # The service answers it onto the sink; eascmd reads it there by request id.
    got = wait_until("the answer on the sink", lambda: json.loads(server.eascmd(
        "queue", "get", "q_cmd/sink", "--request-id", put["RequestId"], "--json").stdout), srv=server)
    assert got[0]["Tags"]["who"] == "ops" and json.loads(got[0]["Data"])["upper"] == "FROM EASCMD"
    for i in range(3):
        assert "[OK] Put on q_cmd/sink: index" in server.eascmd("queue", "put", "q_cmd/sink", "-d", f"x{i}").stdout
    assert "stream.lastEntry" in server.eascmd("queue", "attrs", "q_cmd/sink").stdout
    assert json.loads(server.eascmd("queue", "attrs", "q_cmd/sink", "--json").stdout)["stream.length"] == "4"
    desc = server.eascmd("desc", "q_cmd").stdout
    assert "QueueLength" in desc and "SinkLength" in desc and "4 (0 pending" in desc
    table_out = server.eascmd("queue", "get", "q_cmd/sink", "--length", "2", "--delete").stdout
    assert "INDEX" in table_out and "[OK] 2 entries read and removed from q_cmd/sink" in table_out
    out = server.eascmd("queue", "truncate", "q_cmd/sink", "-y").stdout
    assert "[OK] Truncated q_cmd/sink below index 5: 0 entries left" in out
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'eas_queue_backlog{service="q_cmd"} 0.0' in metrics
    refused = server.eascmd("queue", "attrs", "nope_svc", check=False)
    assert refused.returncode != 0 and refused.stderr.startswith("[ERROR]")


def test_queues_on_a_postgresql_store(tmp_path: Path) -> None:
    """The same protocol with the queues in PostgreSQL (what several servers share)."""
    from tests.support.postgres import PostgresServer

    pg = PostgresServer().start()
    srv = EasServer(tmp_path / "eas-data", extra_args=("--store", pg.create_database("eas_queue")))
    try:
        srv.start()
        token = deploy(srv, async_spec("q_pg"), tmp_path)
        out = drive(srv, "roundtrip", "q_pg", token, n=5)
        assert out["input_attrs"]["meta.backend"] == "postgresql"
        answered_once(out["frames"], out["puts"])
        assert out["auto_commit_data"] == [str(i) for i in range(10)] and out["wrong_token"] == 401
    finally:
        srv.stop()
        pg.stop()
