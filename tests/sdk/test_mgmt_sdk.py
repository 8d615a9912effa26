"""Alibaba's own management SDKs, unchanged, against a real eas-server (and its Ray).

The generated EAS OpenAPI client (PyPI `alibabacloud-eas20210701`, over
`alibabacloud-tea-openapi`) runs the whole life of a service with `protocol="http"`
and the AccessKey pair of eascmd.conf: create, describe, list, update (scale 1 -> 2),
list instances, restart, versions, autoscaler and cron scaler, events, logs, stop,
start, delete; signed ACS3-HMAC-SHA256 (the SDK's default) and ROA HMAC-SHA1
(`signature_algorithm="v2"`), and a wrong secret gets 401. The PAI SDK (`alipai`) then
finds a service by name through DescribeService and calls it with its Predictor.

The SDKs run in their own venv (tests/sdk/mgmt/.venv, `make sdk-deps`) as one
subprocess, tests/sdk/mgmt/mgmt_driver.py, that executes one SDK call per JSON line:
this module decides each step and checks each answer as the SDK decoded it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eas.client import config
from tests.e2e.harness import EasServer
from tests.sdk.harness import SDK_DIR

pytestmark = pytest.mark.e2e

MGMT_PYTHON = SDK_DIR / "mgmt" / ".venv" / "bin" / "python"
DRIVER = SDK_DIR / "mgmt" / "mgmt_driver.py"
APP = SDK_DIR / "assets" / "mgmt"
RESULT_MARK = "SDK-RESULT "
REGION = "local"
#: How long a change may take on the real server (Ray starting or replacing instances).
DEPLOY_S = 180


class Driver:
    """The SDK subprocess: one command in, one answer out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(MGMT_PYTHON), str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        seen = []
        while line := self.proc.stdout.readline():
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK):])
            seen.append(line)
        raise AssertionError(f"the SDK driver exited ({self.proc.wait()}); it printed:\n{''.join(seen)}")

    def call(self, method: str, *args: str, model: str | None = None, **fields: Any) -> dict[str, Any]:
        """One SDK action; its decoded body, or the SDK's error as a dict (ok: false)."""
        command: dict[str, Any] = {"op": "call", "method": method, "args": list(args)}
        if model:
            command["request"] = {"model": model, "map": fields}
        return self.send(command)

    def ok(self, method: str, *args: str, model: str | None = None, **fields: Any) -> dict[str, Any]:
        answer = self.call(method, *args, model=model, **fields)
        assert answer["ok"] and answer["status"] == 200, (method, answer)
        assert answer["body"]["RequestId"], answer
        return answer["body"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "exit"})
            except AssertionError:
                pass
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def credentials(sdk_server: EasServer) -> config.ClientConfig:
    if not MGMT_PYTHON.exists():
        pytest.fail(f"the management SDK venv is missing ({MGMT_PYTHON}): run `make sdk-deps` (part of `make test`)")
    return config.read(sdk_server.conf)


@pytest.fixture(scope="module")
def sdk(sdk_server: EasServer, credentials: config.ClientConfig) -> Iterator[Driver]:
    """The generated EAS client, signing ACS3-HMAC-SHA256 with the admin AccessKey."""
    driver = Driver()
    try:
        assert driver.send(client(sdk_server, credentials))["ok"]
        yield driver
    finally:
        driver.close()


def client(server: EasServer, cred: config.ClientConfig, secret: str | None = None,
           algorithm: str | None = None) -> dict[str, Any]:
    return {"op": "client", "endpoint": f"127.0.0.1:{server.port}", "access_key_id": cred.access_id,
            "access_key_secret": secret or cred.access_key, "signature_algorithm": algorithm, "region": REGION}


def spec(name: str, instances: int = 1) -> dict[str, Any]:
    return {"name": name, "processor_type": "python", "processor_path": str(APP), "processor_entry": "app.py",
            "metadata": {"instance": instances, "cpu": 0.5}}


def wait_for(sdk: Driver, name: str, done: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = DEPLOY_S) -> dict[str, Any]:
    """DescribeService through the SDK until `done` holds (polling, as SDK users do)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = sdk.ok("describe_service", REGION, name)
        if done(last):
            return last
        assert last["Status"] != "Failed", last
        time.sleep(0.5)
    raise AssertionError(f"{name}: {what} not reached in {timeout} s; last: {last}")


def running(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["Status"] == "Running" and s["RunningInstance"] == count and s["TotalInstance"] == count


def test_a_service_lifecycle_through_the_generated_sdk(sdk: Driver, sdk_server: EasServer,
                                                       credentials: config.ClientConfig) -> None:
    name = "mgmt_sdk"
    url = f"{sdk_server.url}/api/predict/{name}"

    # CreateService: the body is the service JSON; the endpoints are full URLs.
    created = sdk.ok("create_service", model="CreateServiceRequest", body=json.dumps(spec(name)))
    assert (created["ServiceName"], created["Region"], created["IntranetEndpoint"]) == (name, REGION, url)
    assert created["ServiceId"].startswith("eas-m-") and created["Status"] == "Creating"

    # DescribeService, as the SDK's Service model decodes it.
    svc = wait_for(sdk, name, running(1), "Running with 1 instance")
    assert (svc["InternetEndpoint"], svc["Cpu"], svc["Gpu"], svc["CurrentVersion"]) == (url, 1, 0, 1)
    assert svc["AccessToken"] and json.loads(svc["ServiceConfig"])["metadata"]["cpu"] == 0.5

    # ListServices: filters and paging.
    listed = sdk.ok("list_services", model="ListServicesRequest", Filter="mgmt_", PageSize=10, PageNumber=1)
    assert (listed["PageNumber"], listed["PageSize"]) == (1, 10)
    assert name in [s["ServiceName"] for s in listed["Services"]] and listed["TotalCount"] >= 1
    assert sdk.ok("list_services", model="ListServicesRequest", ServiceName="no_such_service")["Services"] == []

    # UpdateService (merge): scale 1 -> 2.
    updated = sdk.ok("update_service", REGION, name, model="UpdateServiceRequest", UpdateType="merge",
                     body=json.dumps({"metadata": {"instance": 2}}))
    assert "scaled from 1 to 2 instances" in updated["Message"]
    wait_for(sdk, name, running(2), "Running with 2 instances")

    # ListServiceInstances: EAS's Instance fields.
    instances = sdk.ok("list_service_instances", REGION, name, model="ListServiceInstancesRequest", PageSize=10)
    assert instances["TotalCount"] == 2 and len(instances["Instances"]) == 2
    for instance in instances["Instances"]:
        assert instance["Status"] == "Running" and instance["InnerIP"] and instance["HostIP"]
        assert (instance["ReadyProcesses"], instance["TotalProcesses"], instance["RestartCount"]) == (1, 1, 0)
        assert instance["InstanceName"].startswith(f"{name}-") and instance["InstancePort"] > 0
    before = {i["InstanceName"] for i in instances["Instances"]}

    # RestartService: both instances are replaced (new names), then both run again.
    assert "restarting its 2 instances" in sdk.ok("restart_service", REGION, name)["Message"]
    deadline = time.monotonic() + DEPLOY_S
    while True:
        now = sdk.ok("list_service_instances", REGION, name)["Instances"]
        names = {i["InstanceName"] for i in now}
        if not names & before and [i["Status"] for i in now] == ["Running", "Running"]:
            break
        assert time.monotonic() < deadline, f"instances not replaced: {now}"
        time.sleep(0.5)
    wait_for(sdk, name, running(2), "Running again after the restart")

    # Versions: a scale is not a version; rolling to version 1 keeps the instance count.
    versions = sdk.ok("list_service_versions", REGION, name, model="ListServiceVersionsRequest", PageSize=10)
    assert versions["TotalCount"] == 1 and versions["Versions"][0]["ImageId"] == 1
    assert json.loads(versions["Versions"][0]["ServiceConfig"])["name"] == name
    assert sdk.ok("update_service_version", REGION, name, model="UpdateServiceVersionRequest", Version=1)["Message"]
    wait_for(sdk, name, running(2), "Running on version 1")

    # The autoscaler in EAS's body: create, describe, delete.
    autoscaler = {"min": 2, "max": 3, "scaleStrategies": [{"metricName": "qps", "threshold": 50}]}
    sdk.ok("create_service_auto_scaler", REGION, name, model="CreateServiceAutoScalerRequest", **autoscaler)
    described = sdk.ok("describe_service_auto_scaler", REGION, name)
    assert (described["ServiceName"], described["MinReplica"], described["MaxReplica"]) == (name, 2, 3)
    assert [(s["metricName"], s["threshold"]) for s in described["ScaleStrategies"]] == [("qps", 50)]
    assert described["CurrentMetrics"][0]["metricName"] == "qps"
    sdk.ok("delete_service_auto_scaler", REGION, name)
    assert sdk.ok("describe_service_auto_scaler", REGION, name)["MaxReplica"] == 0

    # The cron scaler in EAS's body (six-field schedules, seconds first): create, describe, delete.
    jobs = [{"Name": "keep-two", "Schedule": "0 0 3 * * *", "TargetSize": 2}]
    sdk.ok("create_service_cron_scaler", REGION, name, model="CreateServiceCronScalerRequest", ScaleJobs=jobs,
           ExcludeDates=["* * * * 12 *"])
    cron = sdk.ok("describe_service_cron_scaler", REGION, name)
    assert (cron["ServiceName"], cron["ExcludeDates"]) == (name, ["* * * * 12 *"])
    assert [(j["Name"], j["Schedule"], j["TargetSize"]) for j in cron["ScaleJobs"]] == [("keep-two", "0 0 3 * * *", 2)]
    sdk.ok("delete_service_cron_scaler", REGION, name)
    assert sdk.ok("describe_service_cron_scaler", REGION, name)["ScaleJobs"] == []
    wait_for(sdk, name, running(2), "Running after the scalers")

    # DescribeServiceEvent: newest first, filtered, paged.
    events = sdk.ok("describe_service_event", REGION, name, model="DescribeServiceEventRequest", PageSize="3",
                    PageNum="1")
    assert len(events["Events"]) == 3 and events["TotalCount"] > 3 and events["TotalPageNum"] >= 2
    assert {e["Type"] for e in events["Events"]} <= {"Normal", "Warning"}
    every = sdk.ok("describe_service_event", REGION, name, model="DescribeServiceEventRequest", PageSize="100")
    reasons = [e["Reason"] for e in every["Events"]]
    assert reasons[-1] == "Created" and "Restart" in reasons and "Updated" in reasons

    # DescribeServiceLog: what the instance's own code printed, read from its Ray worker.
    instance = sdk.ok("list_service_instances", REGION, name)["Instances"][0]["InstanceName"]
    logs = sdk.ok("describe_service_log", REGION, name, model="DescribeServiceLogRequest", InstanceName=instance,
                  PageSize=100, PageNum=1)
    assert any("mgmt echo ready: instance" in line for line in logs["Logs"]), logs
    found = sdk.ok("describe_service_log", REGION, name, model="DescribeServiceLogRequest", InstanceName=instance,
                   Keyword="mgmt echo ready")
    assert found["TotalCount"] >= 1 and all("mgmt echo ready" in line for line in found["Logs"])

    # DescribeServiceEndpoints.
    endpoints = sdk.ok("describe_service_endpoints", REGION, name)
    assert endpoints["Endpoints"][0]["IntranetEndpoints"] == [url] and endpoints["AccessToken"] == svc["AccessToken"]

    # StopService, StartService.
    sdk.ok("stop_service", REGION, name)
    wait_for(sdk, name, lambda s: s["Status"] == "Stopped", "Stopped")
    sdk.ok("start_service", REGION, name)
    wait_for(sdk, name, running(2), "Running after start")

    # DeleteService: then DescribeService is the SDK's 404.
    sdk.ok("delete_service", REGION, name)
    deadline = time.monotonic() + DEPLOY_S
    while (gone := sdk.call("describe_service", REGION, name))["ok"]:
        assert time.monotonic() < deadline, gone
        time.sleep(0.5)
    assert (gone["status"], gone["code"]) == (404, "ServiceNotFound"), gone


def test_roa_signatures_and_a_wrong_secret(sdk_server: EasServer, credentials: config.ClientConfig) -> None:
    """`signature_algorithm="v2"` signs ROA HMAC-SHA1 (`acs <AK>:<signature>`); a wrong
    secret is 401 in EAS's error envelope, with either scheme."""
    driver = Driver()
    try:
        for algorithm in (None, "v2"):
            assert driver.send(client(sdk_server, credentials, algorithm=algorithm))["ok"]
            listed = driver.ok("list_services", model="ListServicesRequest", PageSize=5)
            assert "Services" in listed
            assert driver.send(client(sdk_server, credentials, secret="not-the-secret", algorithm=algorithm))["ok"]
            refused = driver.call("list_services", model="ListServicesRequest")
            assert (refused["ok"], refused["status"], refused["code"]) == (False, 401, "SignatureDoesNotMatch")
            # EAS's envelope, as the SDK read it (it adds the status it saw).
            assert set(refused["data"]) - {"statusCode"} == {"RequestId", "Code", "Message"}, refused
    finally:
        driver.close()


def test_the_pai_predictor_finds_and_calls_a_service(sdk: Driver, sdk_server: EasServer,
                                                      credentials: config.ClientConfig) -> None:
    """`pai.predictor.Predictor(service_name)`: DescribeService (ROA-signed, by alipai's
    own client) gives it InternetEndpoint and AccessToken; it POSTs JSON there."""
    name = "mgmt_predictor"
    sdk.ok("create_service", model="CreateServiceRequest", body=json.dumps(spec(name)))
    wait_for(sdk, name, running(1), "Running")
    try:
        answer = sdk.send({"op": "predict", "endpoint": f"127.0.0.1:{sdk_server.port}", "region": REGION,
                           "access_key_id": credentials.access_id, "access_key_secret": credentials.access_key,
                           "service": name, "data": {"instances": [[1, 2, 3]]}})
        assert answer["ok"], answer
        assert answer["endpoint"] == f"{sdk_server.url}/api/predict/{name}" and answer["status"] == "Running"
        assert answer["result"]["echo"] == {"instances": [[1, 2, 3]]}
    finally:
        sdk.ok("delete_service", REGION, name)
