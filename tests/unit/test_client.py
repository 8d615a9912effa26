"""eas.client against the stand-in server of test_client_standin.py (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eas.client import EasApiError, ManagementClient, PredictClient, PredictError, ServiceFailedError
from tests.unit.test_client_standin import (  # noqa: F401 - the *_fixture names register the fixtures
    ACCESS_ID,
    ACCESS_KEY,
    FAIL_REASON,
    StandIn,
    conf_file_fixture,
    free_port,
    standin_fixture,
    standin_server_fixture,
)


@pytest.fixture
def client(standin: StandIn) -> Iterator[ManagementClient]:
    with ManagementClient(standin.url, ACCESS_ID, ACCESS_KEY) as c:
        yield c


def test_from_config_reads_eascmd_conf(conf_file: str, standin: StandIn) -> None:
    with ManagementClient.from_config(conf_file) as c:
        assert c.endpoint == standin.url and c.region == "local"
        assert c.list_services() == []


def test_service_lifecycle(client: ManagementClient, standin: StandIn) -> None:
    answer = client.create_service({"name": "iris", "processor": "sklearn", "metadata": {"instance": 2}})
    assert answer["ServiceName"] == "iris" and answer["RequestId"]
    assert [s["ServiceName"] for s in client.list_services()] == ["iris"]

    seen: list[tuple[str, int, int]] = []

    def record(s: dict) -> None:
        seen.append((s["Status"], s["PendingInstance"], s["RunningInstance"]))

    final = client.wait_until_running("iris", record, timeout=10, interval=0.01)
    assert final["Status"] == "Running" and final["RunningInstance"] == 2
    assert seen[0] == ("Waiting", 2, 0) and ("Waiting", 1, 1) in seen and seen[-1] == ("Running", 0, 2)

    client.update_service("iris", {"metadata": {"instance": 3}})
    assert standin.updates == [{"metadata": {"instance": 3}}]
    assert client.wait_until_running("iris", timeout=10, interval=0.01)["TotalInstance"] == 3

    client.stop_service("iris")
    assert client.wait_for_status("iris", {"Stopped"}, timeout=10, interval=0.01)["Status"] == "Stopped"
    client.start_service("iris")
    client.wait_until_running("iris", timeout=10, interval=0.01)

    assert [i["InstanceName"] for i in client.list_instances("iris")] == ["iris-0", "iris-1", "iris-2"]
    client.restart_instances("iris", ["iris-0", "iris-2"])
    assert standin.restarted == ["iris-0", "iris-2"]
    assert client.list_events("iris")[0]["Type"] == "Normal"

    client.delete_service("iris")
    client.wait_until_deleted("iris", timeout=10, interval=0.01)
    with pytest.raises(EasApiError) as err:
        client.describe_service("iris")
    assert err.value.status == 404


def test_wait_raises_service_failed(client: ManagementClient) -> None:
    client.create_service({"name": "bad", "processor": "broken", "metadata": {"instance": 1}})
    with pytest.raises(ServiceFailedError) as err:
        client.wait_until_running("bad", timeout=10, interval=0.01)
    assert err.value.message == FAIL_REASON
    assert err.value.service["ServiceName"] == "bad"


def test_wait_times_out(client: ManagementClient) -> None:
    client.create_service({"name": "slow", "metadata": {"instance": 1}})
    with pytest.raises(TimeoutError, match=r"slow is not Running or Sleeping after 0\.05 s"):
        client.wait_until_running("slow", timeout=0.05, interval=0.5)


def test_wait_rides_out_transient_server_errors(client: ManagementClient, standin: StandIn) -> None:
    standin.add_running("iris")
    standin.describe_failures = 2
    assert client.wait_until_running("iris", timeout=10, interval=0.01)["Status"] == "Running"
    standin.describe_failures = 3
    with pytest.raises(EasApiError) as err:
        client.wait_until_running("iris", timeout=10, interval=0.01)
    assert err.value.status == 500 and err.value.message == "the server is restarting"


def test_api_errors_are_readable(client: ManagementClient, standin: StandIn) -> None:
    with pytest.raises(EasApiError) as err:
        client.describe_service("nope")
    exc = err.value
    assert (exc.status, exc.code) == (404, "ServiceNotFound") and exc.request_id
    assert str(exc).startswith("service nope does not exist in region local [HTTP 404, ServiceNotFound, RequestId: ")

    client.create_service({"name": "dup"})
    with pytest.raises(EasApiError) as err:
        client.create_service({"name": "dup"})
    assert err.value.status == 409


def test_wrong_credentials_are_401(standin: StandIn) -> None:
    with ManagementClient(standin.url, ACCESS_ID, "wrong") as c, pytest.raises(EasApiError) as err:
        c.list_services()
    assert (err.value.status, err.value.code) == (401, "Unauthorized")
    assert "wrong access id or key" in str(err.value)


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


# -- PredictClient --------------------------------------------------------------------


def test_predict_signed_is_verified_by_check_service_auth(standin: StandIn) -> None:
    svc = standin.add_running("echo")
    with PredictClient(standin.url, "echo", token=svc.token) as pc:
        assert pc.predict(b"\x00\x01") == b"echo:\x00\x01"
        assert pc.predict('{"instances": [1]}', content_type="application/json", sub_path="v1/run") == (
            b'echo:{"instances": [1]}'
        )
    assert standin.auth_schemes == ["EAS", "EAS"]


def test_predict_raw_token(standin: StandIn) -> None:
    svc = standin.add_running("echo")
    with PredictClient(standin.url, "echo", token=svc.token, signed=False) as pc:
        assert pc.predict("hi") == b"echo:hi"
    assert standin.auth_schemes == [svc.token]


@pytest.mark.parametrize("signed", [True, False])
def test_predict_wrong_token_is_not_retried(standin: StandIn, signed: bool) -> None:
    standin.add_running("echo")
    with PredictClient(standin.url, "echo", token="wrong", signed=signed) as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert err.value.status == 401 and err.value.request_id
    assert standin.predict_calls == 1


def test_predict_retries_503_then_succeeds(standin: StandIn) -> None:
    svc = standin.add_running("echo")
    standin.predict_failures = 2
    with PredictClient(standin.url, "echo", token=svc.token, retries=3) as pc:
        assert pc.predict(b"x") == b"echo:x"
    assert standin.predict_calls == 3


def test_predict_gives_up_after_retries(standin: StandIn) -> None:
    svc = standin.add_running("echo")
    standin.predict_failures = 10
    with PredictClient(standin.url, "echo", token=svc.token, retries=2) as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert (err.value.status, err.value.message) == (503, "no ready instance")
    assert standin.predict_calls == 3


def test_predict_connection_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PredictClient(url, "echo", token="t", retries=1) as pc, pytest.raises(PredictError) as err:
        pc.predict(b"x")
    assert err.value.status == 0 and "cannot reach" in str(err.value)
