"""eas.client against the real eas-server app, over real HTTP on 127.0.0.1.

The server is `eas.server.compose(...)` served by uvicorn in a background thread, its
controller looping every 50 ms, over SQLite with MemoryBackend in place of Ray Serve
(the only stand-in, tests/support/backend.py). Python services run as real instances in
this process (the echo processor behind eas/instance's HTTP server), so PredictClient's
calls go through the real gateway to a real instance. Where a test needs the steps of a
deploy, MemoryBackend scripts them and the client's own progress callback releases
each step once it has seen it, so no step can be missed and nothing depends on timing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eas.client import EasApiError, ManagementClient, PredictClient, PredictError, ServiceFailedError
from eas.control.store import ServiceRecord, Store
from tests.support.backend import ABSENT, Phase
from tests.support.platform import (  # noqa: F401 - the *_fixture names register the fixtures
    ACCESS_ID,
    ACCESS_KEY,
    Harness,
    build_platform,
    conf_file_fixture,
    echo_code_fixture,
    echo_spec,
    free_port,
    metric_samples,
    metric_value,
    served_fixture,
)

TOKEN = "tok-echo-12345"


@pytest.fixture
def client(served: Harness) -> Iterator[ManagementClient]:
    with ManagementClient(served.url, ACCESS_ID, ACCESS_KEY) as c:
        yield c


def spec(name: str, instance: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "processor": "sklearn", "metadata": {"instance": instance}, **extra}


def test_from_config_reads_eascmd_conf(conf_file: str, served: Harness) -> None:
    with ManagementClient.from_config(conf_file) as c:
        assert c.endpoint == served.url and c.region == "local"
        assert c.list_services() == []


#: A first deploy as Serve goes through it, each step held until released by name.
DEPLOY_STEPS = [
    Phase(ABSENT, hold=True, step="accepted"),  # Serve does not list the app yet
    Phase("DEPLOYING", running=0, hold=True, step="starting"),
    Phase("DEPLOYING", running=1, hold=True, step="one-up"),
]


def test_service_lifecycle(client: ManagementClient, served: Harness) -> None:
    served.cluster.script = lambda name, s: DEPLOY_STEPS if s.metadata.instance == 2 else None
    answer = client.create_service(spec("iris", 2))
    assert answer["ServiceName"] == "iris" and answer["RequestId"]
    assert [s["ServiceName"] for s in client.list_services()] == ["iris"]

    seen: list[tuple[str, int, int]] = []
    release = {("Creating", 0, 0): "accepted", ("Waiting", 2, 0): "starting", ("Waiting", 1, 1): "one-up"}

    def record(s: dict) -> None:
        seen.append((s["Status"], s["PendingInstance"], s["RunningInstance"]))
        if seen[-1] in release:  # seen: let the backend take its next step
            served.cluster.advance("iris", release[seen[-1]])

    final = client.wait_until_running("iris", record, timeout=10, interval=0.01)
    assert final["Status"] == "Running" and final["RunningInstance"] == 2
    assert seen[0] == ("Creating", 0, 0) and seen[-1] == ("Running", 0, 2)
    assert seen.index(("Waiting", 2, 0)) < seen.index(("Waiting", 1, 1)), seen

    client.update_service("iris", {"metadata": {"instance": 3}})
    assert client.wait_until_running("iris", timeout=10, interval=0.01)["TotalInstance"] == 3
    assert ("Updated", "scaled from 2 to 3 instances") in [(e["Reason"], e["Message"])
                                                           for e in client.list_events("iris")]

    client.stop_service("iris")
    assert client.wait_for_status("iris", {"Stopped"}, timeout=10, interval=0.01)["Status"] == "Stopped"
    client.start_service("iris")
    client.wait_until_running("iris", timeout=10, interval=0.01)

    assert [i["InstanceName"] for i in client.list_instances("iris")] == ["iris-r0", "iris-r1", "iris-r2"]
    client.restart_instances("iris", ["iris-r0", "iris-r2"])
    assert [c[1] for c in served.cluster.calls if c[0] == "restart"] == ["iris-r0", "iris-r2"]
    events = client.list_events("iris")  # newest first
    assert events[-1]["Reason"] == "Created" and events[0]["Message"] == "restarting instances iris-r0, iris-r2"

    client.delete_service("iris")
    client.wait_until_deleted("iris", timeout=10, interval=0.01)
    with pytest.raises(EasApiError) as err:
        client.describe_service("iris")
    assert err.value.status == 404


def test_wait_raises_service_failed(client: ManagementClient, tmp_path: Path) -> None:
    """A model the server cannot fetch fails in the controller, with its reason."""
    missing = tmp_path / "missing.joblib"
    client.create_service(spec("bad", model_path=str(missing)))
    with pytest.raises(ServiceFailedError) as err:
        client.wait_until_running("bad", timeout=10, interval=0.01)
    assert err.value.message == f"{missing} does not exist on the server"
    assert err.value.service["ServiceName"] == "bad" and err.value.service["Status"] == "Failed"


def test_wait_times_out(client: ManagementClient, served: Harness) -> None:
    served.cluster.script = lambda name, s: [Phase("DEPLOYING", running=0, hold=True, step="never")]
    client.create_service(spec("slow"))
    with pytest.raises(TimeoutError, match=r"slow is not Running or Sleeping after 0\.05 s"):
        client.wait_until_running("slow", timeout=0.05, interval=0.5)


class FlakyStore(Store):
    """A real SQLite store whose next `failures` reads of one service fail, as a
    database connection that drops does; the API answers those with a 500."""

    failures = 0

    def get(self, name: str) -> ServiceRecord:
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().get(name)


def test_wait_rides_out_transient_server_errors(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    harness = build_platform(tmp_path, serve=True, run_controller=True, store=store)
    try:
        with ManagementClient(harness.url, ACCESS_ID, ACCESS_KEY) as c:
            c.create_service(spec("iris"))
            c.wait_until_running("iris", timeout=10, interval=0.01)
            store.failures = 2
            assert c.wait_until_running("iris", timeout=10, interval=0.01)["Status"] == "Running"
            store.failures = 3
            with pytest.raises(EasApiError) as err:
                c.wait_until_running("iris", timeout=10, interval=0.01)
    finally:
        harness.close()
    assert (err.value.status, err.value.code) == (500, "InternalError") and err.value.request_id
    assert err.value.message.startswith("the server failed on this request (OperationalError)")


def test_api_errors_are_readable(client: ManagementClient) -> None:
    with pytest.raises(EasApiError) as err:
        client.describe_service("nope")
    exc = err.value
    assert (exc.status, exc.code) == (404, "ServiceNotFound") and exc.request_id
    assert str(exc).startswith("service 'nope' does not exist in region local: list services with 'eascmd ls' "
                               "[HTTP 404, ServiceNotFound, RequestId: ")

    client.create_service(spec("dup"))
    with pytest.raises(EasApiError) as err:
        client.create_service(spec("dup"))
    assert (err.value.status, err.value.code) == (409, "ServiceAlreadyExists")


def test_wrong_credentials_are_401(served: Harness) -> None:
    with ManagementClient(served.url, ACCESS_ID, "wrong") as c, pytest.raises(EasApiError) as err:
        c.list_services()
    assert (err.value.status, err.value.code) == (401, "SignatureDoesNotMatch")
    assert "check the AccessKey secret" in str(err.value)
    with ManagementClient(served.url, "nobody", ACCESS_KEY) as c, pytest.raises(EasApiError) as err:
        c.list_services()
    assert (err.value.status, err.value.code) == (401, "InvalidAccessKeyId.NotFound")


def test_eas_actions_beyond_the_lifecycle(client: ManagementClient, served: Harness) -> None:
    """Each call signs like the SDKs (ACS3-HMAC-SHA256) and reads EAS's answers."""
    client.create_service(spec("iris", 2))
    client.wait_until_running("iris", timeout=10, interval=0.01)
    assert client.restart_service("iris")["Message"] == "service 'iris' is restarting its 2 instances"
    served.cluster.logs[("iris", "r0")] = ["hello", "ERROR boom"]
    assert client.service_logs("iris", instance="iris-r0", keyword="ERROR")["Logs"] == ["ERROR boom"]
    assert client.describe_endpoints("iris")["Endpoints"][0]["IntranetEndpoints"] == [f"{served.url}/api/predict/iris"]
    client.set_autoscaler("iris", {"min": 1, "max": 3, "scaleStrategies": [{"metricName": "qps", "threshold": 5}]})
    assert client.describe_autoscaler("iris")["MaxReplica"] == 3
    client.delete_autoscaler("iris")
    client.set_cron_scaler("iris", {"ScaleJobs": [{"Name": "up", "Schedule": "0 0 9 * * *", "TargetSize": 2}]})
    assert [j["Name"] for j in client.describe_cron_scaler("iris")["ScaleJobs"]] == ["up"]
    client.delete_cron_scaler("iris")
    client.update_service("iris", {"processor": "sklearn", "metadata": {"instance": 1}}, replace=True)
    assert client.wait_until_running("iris", timeout=10, interval=0.01)["TotalInstance"] == 1
    assert [v["ImageId"] for v in client.list_versions("iris")] == [1]
    assert client.last_request_id


def test_lists_read_every_page(client: ManagementClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("eas.client.management.PAGE_SIZE", 2)
    for i in range(5):
        client.create_service(spec(f"svc{i}"))
    assert sorted(s["ServiceName"] for s in client.list_services()) == [f"svc{i}" for i in range(5)]
    assert [s["ServiceName"] for s in client.list_services(ServiceName="svc3")] == ["svc3"]


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ManagementClient(url, ACCESS_ID, ACCESS_KEY, timeout=2) as c, pytest.raises(EasApiError) as err:
        c.list_services()
    assert err.value.status == 0 and err.value.code == "ConnectionError"
    assert f"the EAS server at {url} is not reachable" in str(err.value)
    assert "check it is running" in str(err.value)


def test_endpoint_without_scheme_is_explained() -> None:
    with ManagementClient("localhost:8080", ACCESS_ID, ACCESS_KEY) as c, pytest.raises(EasApiError) as err:
        c.list_services()
    assert err.value.code == "InvalidEndpoint" and "write it like http://127.0.0.1:8080" in str(err.value)


# -- PredictClient: through the real gateway to a real echo instance -------------------------------


@pytest.fixture
def echo(served: Harness, echo_code: Path) -> Path:
    """A running echo service (one real instance); returns its code folder."""
    served.running(echo_spec("echo", echo_code, token=TOKEN))
    return echo_code


def answered(served: Harness, code: str) -> float:
    """How many predict calls to echo the gateway answered with `code` (its /metrics)."""
    return metric_value(metric_samples(served.metrics()), "eas_requests_total", service="echo", code=code) or 0


def test_predict_signed_is_verified_by_check_service_auth(served: Harness, echo: Path) -> None:
    with PredictClient(served.url, "echo", token=TOKEN) as pc:
        assert pc.predict(b"\x00\x01") == b"echo:\x00\x01"
        assert pc.predict('{"instances": [1]}', content_type="application/json", sub_path="v1/run") == (
            b'echo:{"instances": [1]}'
        )
    # The client signs: a wrong token fails the signature check, not the raw-token one.
    with PredictClient(served.url, "echo", token="not-the-token") as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert err.value.status == 401 and err.value.message == "signature does not match: check the service token"
    assert answered(served, "200") == 2


def test_predict_raw_token(served: Harness, echo: Path) -> None:
    with PredictClient(served.url, "echo", token=TOKEN, signed=False) as pc:
        assert pc.predict("hi") == b"echo:hi"
    with PredictClient(served.url, "echo", token="not-the-token", signed=False) as pc, pytest.raises(PredictError) as err:
        pc.predict("hi")
    assert err.value.message == "wrong token for this service"


@pytest.mark.parametrize("signed", [True, False])
def test_predict_wrong_token_is_not_retried(served: Harness, echo: Path, signed: bool) -> None:
    with PredictClient(served.url, "echo", token="wrong-token", signed=signed) as pc, \
            pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert err.value.status == 401 and err.value.request_id
    assert answered(served, "401") == 1


def test_predict_retries_503_then_succeeds(served: Harness, echo: Path) -> None:
    (echo / "fail_next").write_text("2")
    with PredictClient(served.url, "echo", token=TOKEN, retries=3) as pc:
        assert pc.predict(b"x") == b"echo:x"
    assert (answered(served, "503"), answered(served, "200")) == (2, 1)


def test_predict_gives_up_after_retries(served: Harness, echo: Path) -> None:
    (echo / "fail_next").write_text("10")
    with PredictClient(served.url, "echo", token=TOKEN, retries=2) as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert (err.value.status, err.value.message) == (503, "no ready instance")
    assert answered(served, "503") == 3


def test_predict_connection_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PredictClient(url, "echo", token="t", retries=1) as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert err.value.status == 0 and "cannot reach" in str(err.value)

