"""An instance that dies under load costs no request that can be saved (issue 23).

The real eas-server with Ray Serve; two services of two instances each, running the
same user code: it appends each request's id (the body) to a file, takes 20 ms, and
echoes the id, so the file tells how many times each request ran. `retry_on` sets
`rpc.retry_in_flight: true`; `retry_off` keeps the default for user code (off). Under
8 concurrent clients (every request a new id), one instance's Ray worker (its `Pid`
from `eascmd w <svc> --json`) is killed with -9, then, once the service is back at two
ready instances, one again. Counted: non-200 answers (none with the switch on; with it
off only requests in flight on the dead instance, each a 503 saying so), how many
requests ran twice (none with the switch off), and how long the service took to be back
at two ready instances (printed).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.harness import write_json

pytestmark = pytest.mark.e2e

CLIENTS = 8
CODE = '''
import json
import os
import time


class Counted:
    def initialize(self):
        config = self.model_config if isinstance(self.model_config, dict) else json.loads(self.model_config)
        self.log = config["log"]

    def process(self, data):
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data + b"\\n")
        finally:
            os.close(fd)
        time.sleep(0.02)
        return data, 200
'''


class Load:
    """CLIENTS clients on one thread, each sending new ids back to back until stopped."""

    def __init__(self, url: str, token: str, prefix: str) -> None:
        self.url, self.token, self.prefix = url, token, prefix
        self.answers: list[tuple[str, int, str]] = []  # id, status, body
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers in {timeout} s"
            time.sleep(0.05)

    async def _main(self) -> None:
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": self.token}) as client:
            async def one_client(n: int) -> None:
                sent = 0
                while not self._stop.is_set():
                    rid = f"{self.prefix}-{n}-{sent}"
                    sent += 1
                    try:
                        resp = await client.post(self.url, content=rid.encode())
                        self.answers.append((rid, resp.status_code, resp.text))
                    except httpx.HTTPError as exc:
                        self.answers.append((rid, -1, f"{type(exc).__name__}: {exc}"))

            await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))


def running_pids(server, name: str) -> dict[str, int]:
    """Running instances of `name` and the pid of the Ray worker hosting each (`eascmd w`)."""
    instances = json.loads(server.eascmd("w", name, "--json").stdout)
    return {i["InstanceName"]: int(i.get("Pid") or i.get("Ext", {}).get("Pid"))
            for i in instances if i["Status"] == "Running"}


def wait_back_at_two(server, name: str, killed: int, timeout: float = 120) -> float:
    """Seconds until `name` has two ready instances again, none of them the killed worker."""
    started = time.monotonic()
    with server.admin() as admin:
        while time.monotonic() - started < timeout:
            items = admin.get(f"/api/v2/services/local/{name}/instances").json().get("Instances", [])
            ready = [i for i in items if i["Status"] == "Running" and i.get("ReadyProcesses")]
            pids = {i.get("Pid") or i.get("Ext", {}).get("Pid") for i in ready}
            if len(ready) == 2 and killed not in pids:
                return time.monotonic() - started
            time.sleep(0.2)
    raise AssertionError(f"{name} not back at 2 ready instances after {timeout} s\n{server.log_tail()}")


@pytest.fixture(scope="module")
def services(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("death")
    (root / "code").mkdir()
    (root / "code" / "app.py").write_text(CODE)
    tokens, logs = {}, {}
    for name, retry in (("retry_on", True), ("retry_off", None)):
        logs[name] = root / f"{name}.calls"
        rpc: dict[str, Any] = {"worker_threads": 4, "keepalive": 10000}
        if retry is not None:
            rpc["retry_in_flight"] = retry
        spec = {"name": name, "processor_type": "python", "processor_path": str(root / "code"),
                "model_config": {"log": str(logs[name])}, "metadata": {"instance": 2, "cpu": 0.5, "rpc": rpc}}
        server.eascmd("create", str(write_json(root / f"{name}.json", spec)))
        with server.admin() as client:
            tokens[name] = client.get(f"/api/v2/services/local/{name}").json()["AccessToken"]
    return {"tokens": tokens, "logs": logs}


def kill_twice_under_load(server, name: str, token: str) -> tuple[list[tuple[str, int, str]], list[float]]:
    back: list[float] = []
    with Load(f"{server.url}/api/predict/{name}", token, name) as load:
        load.wait_for(200)
        for _ in range(2):
            pids = running_pids(server, name)
            assert len(pids) == 2, pids
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            back.append(wait_back_at_two(server, name, victim))
            load.wait_for(len(load.answers) + 200)
    return load.answers, back


def calls(path: Any) -> collections.Counter[str]:
    return collections.Counter(path.read_text().split())


def test_with_the_switch_on_no_request_is_lost(server, services: dict[str, Any]) -> None:
    answers, back = kill_twice_under_load(server, "retry_on", services["tokens"]["retry_on"])
    failed = [a for a in answers if a[1] != 200]
    twice = sum(1 for n in calls(services["logs"]["retry_on"]).values() if n > 1)
    print(f"\nretry_in_flight on: {len(answers)} requests, {len(failed)} not 200, {twice} ran twice "
          f"(retried after their instance died); back at 2 ready instances after "
          f"{', '.join(f'{s:.1f} s' for s in back)}")
    assert failed == [], failed[:5]
    assert all(rid == body for rid, _, body in answers)


def test_with_the_switch_off_only_requests_in_flight_fail_and_none_runs_twice(server, services: dict[str, Any]) -> None:
    answers, back = kill_twice_under_load(server, "retry_off", services["tokens"]["retry_off"])
    failed = [a for a in answers if a[1] != 200]
    ran = calls(services["logs"]["retry_off"])
    print(f"\nretry_in_flight off: {len(answers)} requests, {len(failed)} not 200 (503, in flight on the "
          f"dead instance); back at 2 ready instances after {', '.join(f'{s:.1f} s' for s in back)}")
    assert [rid for rid, n in ran.items() if n > 1] == [], "a request ran twice with the switch off"
    # In flight: at most one request per client at each kill, each a 503 naming the failure.
    assert len(failed) <= 2 * CLIENTS, failed
    for rid, status, body in failed:
        message = json.loads(body)["message"]
        assert status == 503 and "failed: the instance closed the connection" in message, (rid, status, body)
    assert all(rid == body for rid, status, body in answers if status == 200)
