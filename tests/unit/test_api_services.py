"""The service lifecycle of the management API (eas/api/services.py) on the real app.

The app is `eas.server.compose(...)` over a SQLite store in tmp_path with MemoryBackend
standing in for Ray Serve (the only stand-in), called in-process through Starlette's
TestClient. The controller's loop does not run: tests advance state with reconcile
passes by hand, so every status asserted here is one the real controller wrote, and
the predict calls go through the real gateway and the route table it fills.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from eas.control.store import Store
from tests.support.platform import (  # noqa: F401 - api_fixture registers the fixture
    ACCESS_ID,
    ACCESS_KEY,
    REQUEST_ID,
    Harness,
    api_fixture,
    basic_auth,
    build_platform,
    wait_until,
)
from tests.support.platform import api_error as error

TOKEN = "tok-iris-12345"
#: The fields of EAS's `Service` and `Instance` objects (alibabacloud-eas20210701's models).
EAS_SERVICE_FIELDS = {
    "AccessToken", "AppConfig", "AppSpecName", "AppType", "AppVersion", "CallerUid", "Cpu", "CreateTime",
    "CurrentVersion", "ExtraData", "Gateway", "Gpu", "Image", "InternetEndpoint", "IntranetEndpoint", "Labels",
    "LatestVersion", "Memory", "Message", "Namespace", "ParentUid", "PendingInstance", "QuotaId", "Reason", "Region",
    "Resource", "ResourceAlias", "Role", "RoleAttrs", "RunningInstance", "SafetyLock", "SecondaryInternetEndpoint",
    "SecondaryIntranetEndpoint", "ServiceConfig", "ServiceGroup", "ServiceId", "ServiceName", "ServiceUid", "Source",
    "Status", "TotalInstance", "TrafficState", "UpdateTime", "Weight", "WorkspaceId",
}  # fmt: skip
EAS_INSTANCE_FIELDS = {
    "CurrentAmount", "ExternalIP", "ExternalInstancePort", "HostIP", "HostName", "InnerIP", "InstanceName",
    "InstancePort", "InstanceType", "IsSpot", "Isolated", "LastState", "Namespace", "OriginalAmount",
    "ReadyProcesses", "Reason", "ResourceType", "RestartCount", "Role", "StartAt", "StartTime", "Status",
    "TenantHostIP", "TenantInstanceIP", "TotalProcesses", "Zone",
}  # fmt: skip


def sklearn_spec(name: str = "iris", instance: int = 1, **extra: Any) -> dict[str, Any]:
    """A service MemoryBackend deploys (no model_path: the controller has nothing to fetch)."""
    return {"name": name, "processor": "sklearn", "token": TOKEN, "metadata": {"instance": instance}, **extra}


# -- create ---------------------------------------------------------------------------------


def test_create_answers_with_ids_and_only_writes_the_store(api: Harness) -> None:
    answer = api.create(sklearn_spec(instance=2))
    assert set(answer) == {"RequestId", "ServiceId", "ServiceName", "Region", "Status", "InternetEndpoint",
                           "IntranetEndpoint"}
    assert REQUEST_ID.match(answer["RequestId"]) and answer["ServiceId"].startswith("eas-m-")
    assert (answer["ServiceName"], answer["Region"], answer["Status"]) == ("iris", "local", "Creating")
    assert answer["IntranetEndpoint"] == answer["InternetEndpoint"] == f"{api.endpoint}/api/predict/iris"
    # The API never waits for the backend: nothing is deployed before a controller pass.
    assert api.cluster.calls == []
    desc = api.describe("iris")
    assert (desc["Status"], desc["ServiceId"], desc["AccessToken"]) == ("Creating", answer["ServiceId"], TOKEN)
    assert (desc["TotalInstance"], desc["RunningInstance"], desc["PendingInstance"]) == (2, 0, 0)


def test_create_refuses_taken_names_and_invalid_specs(api: Harness) -> None:
    api.create(sklearn_spec())
    status, code, message = error(api, "POST", "/api/v2/services", sklearn_spec())
    assert (status, code) == (409, "ServiceAlreadyExists") and "eascmd modify" in message

    cases = [
        ({"name": "x", "processor": "sklearn", "metdata": {"instance": 1}},
         ["metdata: unknown field", "metadata: required field is missing"]),
        ({"name": "x", "processor": "nope", "metadata": {"instance": 1}}, ["processor: unknown processor 'nope'"]),
        ({"name": "X-1", "processor": "sklearn", "metadata": {"instance": 1}}, ["name: must start with"]),
        (sklearn_spec("x", token="short"), ["token: must be at least 8 characters"]),
        (sklearn_spec("x", instance=-1), ["metadata.instance:"]),
    ]
    for spec, words in cases:
        status, code, message = error(api, "POST", "/api/v2/services", spec)
        assert (status, code) == (400, "InvalidParameter"), message
        assert all(w in message for w in words), message
    empty = api.http.post("/api/v2/services", content=b"", headers=basic_auth())
    assert empty.status_code == 400 and "request body is empty" in empty.json()["Message"]
    broken = api.http.post("/api/v2/services", content=b'{"name": ', headers=basic_auth())
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["Message"]

    api.ok("POST", "/api/v2/ext/groups", {"Name": "grp", "Members": [{"Service": "iris", "Weight": 100}]})
    status, code, message = error(api, "POST", "/api/v2/services", sklearn_spec("grp"))
    assert (status, code) == (409, "NameTaken") and "'grp' is a group name" in message
    assert [s["ServiceName"] for s in api.ok("GET", "/api/v2/services")["Services"]] == ["iris"]


def test_blue_green_create_makes_a_partner_at_weight_zero(api: Harness) -> None:
    api.create(sklearn_spec())
    answer = api.create(sklearn_spec(), blue_green=True)
    partner = answer["ServiceName"]
    assert re.fullmatch(r"iris_[a-z0-9]{6}", partner), partner
    api.settle()
    mine, theirs = api.describe("iris"), api.describe(partner)
    assert (mine["Weight"], theirs["Weight"]) == (100, 0)
    assert theirs["AccessToken"] != TOKEN, "a partner gets its own token, not the file's"
    assert theirs["Status"] == "Running"
    # The original endpoint now names both services; the partner answers on its own too.
    entry = api.controller.routes.entry("iris")
    assert entry is not None and entry.backends == (("iris", 100), (partner, 0)) and entry.token == TOKEN
    assert api.controller.routes.entry(partner).token == theirs["AccessToken"]
    assert {e["Reason"] for e in api.ok("GET", api.svc("iris", "/events"))["Events"]} >= {"Traffic"}

    status, code, _ = error(api, "POST", "/api/v2/ext/services/local/ghost/partners", sklearn_spec("ghost"))
    assert (status, code) == (404, "ServiceNotFound")
    status, code, message = error(api, "POST", "/api/v2/ext/services/local/iris/partners", sklearn_spec("other"))
    assert (status, code) == (400, "InvalidParameter") and "names the service it joins" in message


# -- describe and list ------------------------------------------------------------------------


def test_describe_and_list_show_the_controllers_counts(api: Harness) -> None:
    api.create(sklearn_spec(instance=2))
    api.settle()
    desc = api.describe("iris")
    url = f"{api.endpoint}/api/predict/iris"
    expected = {
        "ServiceName": "iris", "Region": "local", "Status": "Running", "Message": "", "AccessToken": TOKEN,
        "TotalInstance": 2, "RunningInstance": 2, "PendingInstance": 0, "Cpu": 1, "Gpu": 0, "Memory": 0,
        "Weight": 100, "LatestVersion": 1, "CurrentVersion": 1, "IntranetEndpoint": url, "InternetEndpoint": url,
        "Ext": {"Cpu": 1, "DesiredInstance": 2, "LastScaling": None},
    }  # fmt: skip
    assert {k: desc[k] for k in expected} == expected
    # Every field of EAS's Service object is there (the SDKs map them by name); none of our old names.
    assert EAS_SERVICE_FIELDS <= set(desc) and not {"CPU", "GPU", "ServicePath", "DesiredInstance"} & set(desc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", desc["CreateTime"])
    config = json.loads(desc["ServiceConfig"])
    assert config["name"] == "iris" and config["metadata"]["instance"] == 2
    assert config["metadata"]["rpc"]["keepalive"] == 5000, "EAS defaults are filled in"
    assert "token" not in config and TOKEN not in desc["ServiceConfig"], "the token stays out of ServiceConfig"

    listed = api.ok("GET", "/api/v2/services")
    assert (listed["TotalCount"], listed["PageNumber"], listed["PageSize"]) == (1, 1, 100)
    assert {k: v for k, v in listed["Services"][0].items()} == {k: v for k, v in desc.items() if k != "RequestId"}
    assert api.cluster.calls == [("deploy", "iris", "server")]


def test_list_filters_sorts_and_pages(api: Harness) -> None:
    for name in ("b_svc", "a_svc", "c_other"):
        api.create(sklearn_spec(name))
    api.ok("PUT", api.svc("c_other", "/stop"))

    def names(**query: str) -> list[str]:
        return [s["ServiceName"] for s in api.ok("GET", "/api/v2/services", params=query)["Services"]]

    assert sorted(names()) == ["a_svc", "b_svc", "c_other"]
    assert sorted(names(Filter="svc")) == ["a_svc", "b_svc"]
    assert names(ServiceName="a_svc") == ["a_svc"]
    assert names(ServiceStatus="Stopping") == ["c_other"]
    assert names(Sort="ServiceName", Order="desc") == ["c_other", "b_svc", "a_svc"]
    page = api.ok("GET", "/api/v2/services", params={"Sort": "ServiceName", "PageSize": "2", "PageNumber": "2"})
    assert (page["TotalCount"], page["PageNumber"], page["PageSize"]) == (3, 2, 2)
    assert [s["ServiceName"] for s in page["Services"]] == ["c_other"]
    assert names(PageNumber="9") == []
    for query, words in [({"PageSize": "0"}, "PageSize: an integer from 1"), ({"PageNumber": "x"}, "PageNumber"),
                         ({"Sort": "Nope"}, "Sort: one of")]:
        status, code, message = error(api, "GET", "/api/v2/services", params=query)
        assert (status, code) == (400, "InvalidParameter") and words in message, message


def test_update_type_replace_and_scale(api: Harness) -> None:
    api.create(sklearn_spec(instance=2, metadata={"instance": 2, "cpu": 2}))
    api.ok("PUT", api.svc("iris"), {"metadata": {"instance": 3}})
    assert json.loads(api.describe("iris")["ServiceConfig"])["metadata"]["cpu"] == 2, "merge keeps the rest"
    api.ok("PUT", api.svc("iris"), {"processor": "sklearn", "metadata": {"instance": 1}},
           params={"UpdateType": "replace"})
    config = json.loads(api.describe("iris")["ServiceConfig"])
    assert (config["metadata"]["instance"], config["metadata"]["cpu"]) == (1, 1), "replace drops what is not sent"
    assert api.describe("iris")["AccessToken"] == TOKEN, "the token stays"
    status, code, message = error(api, "PUT", api.svc("iris"), {"metadata": {"instance": 1}},
                                  params={"UpdateType": "patch"})
    assert (status, code) == (400, "InvalidParameter") and message.startswith("UpdateType")
    api.ok("PUT", api.svc("iris", "/scale"), {"Instance": 4})
    assert api.describe("iris")["TotalInstance"] == 4
    assert error(api, "PUT", api.svc("iris", "/scale"), {"Instance": -1})[:2] == (400, "InvalidParameter")


# -- modify --------------------------------------------------------------------------------------


def test_modify_rename_unchanged_scale_version_and_token(api: Harness, tmp_path: Path) -> None:
    models = [tmp_path / "m1.joblib", tmp_path / "m2.joblib"]
    for m in models:
        m.write_bytes(b"not loaded by MemoryBackend")
    api.create(sklearn_spec(model_path=str(models[0])))
    api.settle()
    events = lambda: api.ok("GET", api.svc("iris", "/events"))["Events"]  # noqa: E731
    before = len(events())

    status, code, message = error(api, "PUT", api.svc("iris"), {"name": "other"})
    assert (status, code) == (400, "InvalidParameter") and "cannot be renamed" in message
    status, _, message = error(api, "PUT", api.svc("iris"), {"metadata": {"instance": -1}})
    assert status == 400 and "metadata.instance" in message
    assert api.ok("PUT", api.svc("iris"), {"metadata": {"instance": 1}})["Message"] == "service 'iris' unchanged"
    assert len(events()) == before and api.describe("iris")["Status"] == "Running"

    # Instance count only: a scale event, no new version; Updating at once, then Running.
    scaled = api.ok("PUT", api.svc("iris"), {"metadata": {"instance": 2}})
    assert "scaled from 1 to 2 instances" in scaled["Message"]
    desc = api.describe("iris")
    assert (desc["Status"], desc["LatestVersion"]) == ("Updating", 1)
    api.settle()
    desc = api.describe("iris")
    assert (desc["Status"], desc["RunningInstance"], desc["CurrentVersion"]) == ("Running", 2, 1)

    # A model change is a new version.
    changed = api.ok("PUT", api.svc("iris"), {"model_path": str(models[1])})
    assert changed["Message"].endswith("service updated (new version)")
    api.settle()
    desc = api.describe("iris")
    assert (desc["LatestVersion"], desc["CurrentVersion"]) == (2, 2)
    assert json.loads(desc["ServiceConfig"])["model_path"] == str(models[1])
    assert json.loads(desc["ServiceConfig"])["metadata"]["instance"] == 2, "a partial update is merged"

    # A token change reaches the gateway after the next pass; no new version.
    api.ok("PUT", api.svc("iris"), {"token": "a-new-token-678"})
    api.settle()
    desc = api.describe("iris")
    assert (desc["AccessToken"], desc["LatestVersion"]) == ("a-new-token-678", 2)
    assert api.predict("iris", b"{}", TOKEN).status_code == 401
    assert api.predict("iris", b"{}", "a-new-token-678").status_code == 503  # admitted; no instance listens
    assert [c[0] for c in api.cluster.calls] == ["deploy"] * 4

    status, code, _ = error(api, "PUT", api.svc("ghost"), {"metadata": {"instance": 2}})
    assert (status, code) == (404, "ServiceNotFound")


# -- stop, start, delete ----------------------------------------------------------------------------


def test_stop_start_delete_drive_statuses_through_passes(api: Harness) -> None:
    api.create(sklearn_spec(instance=2))
    api.settle()

    assert api.ok("PUT", api.svc("iris", "/stop"))["Message"] == "service 'iris' in region local is stopping"
    assert api.describe("iris")["Status"] == "Stopping", "visible at once, before any pass"
    api.controller.reconcile()
    assert api.cluster.calls[-1] == ("delete", "iris", "server")
    api.reconcile_until(lambda: api.status("iris") == "Stopped", "iris to stop")
    desc = api.describe("iris")
    assert (desc["TotalInstance"], desc["RunningInstance"]) == (0, 0)
    instances = api.ok("GET", api.svc("iris", "/instances"))
    assert (instances["TotalCount"], instances["Instances"]) == (0, [])
    stopped = api.predict("iris", b"{}", TOKEN)
    assert stopped.status_code == 503 and "service is stopped" in stopped.json()["message"]

    assert api.ok("PUT", api.svc("iris", "/start"))["Message"].endswith("is creating")
    assert api.describe("iris")["Status"] == "Creating"
    api.reconcile_until(lambda: api.status("iris") == "Running", "iris to run again")
    assert api.describe("iris")["RunningInstance"] == 2

    assert api.ok("DELETE", api.svc("iris"))["Message"].endswith("is deleting")
    assert api.describe("iris")["Status"] == "Deleting"
    status, code, message = error(api, "PUT", api.svc("iris", "/start"))
    assert (status, code) == (409, "ServiceDeleting") and "being deleted" in message
    api.reconcile_until(lambda: api.status("iris") is None, "iris to be removed")
    status, code, message = error(api, "GET", api.svc("iris"))
    assert (status, code) == (404, "ServiceNotFound")
    assert message == "service 'iris' does not exist in region local: list services with 'eascmd ls'"
    listed = api.ok("GET", "/api/v2/services")
    assert (listed["TotalCount"], listed["Services"]) == (0, [])
    assert [c[0] for c in api.cluster.calls] == ["deploy", "delete", "deploy", "delete"]


# -- instances and events --------------------------------------------------------------------------


def test_instances_and_restart(api: Harness) -> None:
    api.create(sklearn_spec(instance=2))
    api.settle()
    listed = api.ok("GET", api.svc("iris", "/instances"))
    assert listed["TotalCount"] == 2
    assert [i["InstanceName"] for i in listed["Instances"]] == ["iris-r0", "iris-r1"]
    first = listed["Instances"][0]
    assert (first["Status"], first["ReadyProcesses"], first["TotalProcesses"], first["InnerIP"], first["HostIP"],
            first["RestartCount"], first["LastState"]) == ("Running", 1, 1, "127.0.0.1", "127.0.0.1", 0, [])
    assert EAS_INSTANCE_FIELDS <= set(first) and first["Ext"]["ReplicaState"] == "RUNNING"
    assert [i["InstanceName"] for i in api.ok("GET", api.svc("iris", "/instances"),
                                             params={"InstanceName": "r1"})["Instances"]] == ["iris-r1"]
    paged = api.ok("GET", api.svc("iris", "/instances"), params={"PageSize": "1", "PageNumber": "2"})
    assert (paged["TotalCount"], [i["InstanceName"] for i in paged["Instances"]]) == (2, ["iris-r1"])

    status, code, message = error(api, "DELETE", api.svc("iris", "/instances"))
    assert (status, code) == (400, "InvalidParameter") and message.startswith("InstanceList:")
    status, code, message = error(api, "DELETE", api.svc("iris", "/instances"), params={"InstanceList": "iris-r9"})
    assert (status, code) == (404, "InstanceNotFound") and "iris-r9" in message
    assert not any(c[0] == "restart" for c in api.cluster.calls)

    answer = api.ok("DELETE", api.svc("iris", "/instances"), params={"InstanceList": "iris-r1", "SoftRestart": "true"})
    assert answer["Message"] == "instances iris-r1 of 'iris' are restarting"
    assert ("restart", "iris-r1", "server") in api.cluster.calls
    last = api.ok("GET", api.svc("iris", "/events"))["Events"][0]
    assert (last["Reason"], last["Message"]) == ("Restart", "restarting instances iris-r1")

    # RestartService: every instance.
    assert api.ok("PUT", api.svc("iris", "/restart"))["Message"] == "service 'iris' is restarting its 2 instances"
    assert [c[1] for c in api.cluster.calls if c[0] == "restart"] == ["iris-r1", "iris-r0", "iris-r1"]
    api.ok("PUT", api.svc("iris", "/stop"))
    assert error(api, "PUT", api.svc("iris", "/restart"))[:2] == (409, "ServiceNotRunning")


def test_logs_endpoints_and_their_filters(api: Harness) -> None:
    api.create(sklearn_spec(instance=2))
    api.settle()
    api.cluster.logs[("iris", "r0")] = [f"line {i}" for i in range(1, 8)] + ["ERROR http://u:secret@h/x"]
    logs = api.ok("GET", api.svc("iris", "/logs"), params={"InstanceName": "iris-r0", "PageSize": "3"})
    assert (logs["TotalCount"], logs["TotalPageNum"], logs["PageNum"]) == (8, 3, 1)
    assert logs["Logs"] == ["line 6", "line 7", "ERROR http://***@h/x"], "page 1: the latest, in order, redacted"
    older = api.ok("GET", api.svc("iris", "/logs"), params={"InstanceName": "iris-r0", "PageSize": "3", "PageNum": "3"})
    assert older["Logs"] == ["line 1", "line 2"]
    assert api.ok("GET", api.svc("iris", "/logs"), params={"InstanceName": "iris-r0", "Keyword": "line 3"})[
        "Logs"] == ["line 3"]
    every = api.ok("GET", api.svc("iris", "/logs"))["Logs"]
    assert every[-1] == "[iris-r1] instance iris-r1 started" and every[0] == "[iris-r0] line 1"
    assert error(api, "GET", api.svc("iris", "/logs"), params={"InstanceName": "iris-r9"})[:2] == (
        404, "InstanceNotFound")

    endpoints = api.ok("GET", api.svc("iris", "/endpoints"))
    assert endpoints["AccessToken"] == TOKEN
    assert endpoints["Endpoints"][0]["IntranetEndpoints"] == [f"{api.endpoint}/api/predict/iris"]


def test_events_tell_the_story(api: Harness) -> None:
    api.create(sklearn_spec())
    api.settle()
    events = api.ok("GET", api.svc("iris", "/events"))
    assert (events["TotalCount"], events["PageNum"], events["TotalPageNum"]) == (len(events["Events"]), 1, 1)
    assert [(e["Type"], e["Reason"], e["Message"]) for e in events["Events"]] == [
        ("Normal", "Status", "Creating -> Running"), ("Normal", "Created", "service created")], "newest first"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", events["Events"][0]["Time"])
    assert error(api, "GET", api.svc("ghost", "/events"))[:2] == (404, "ServiceNotFound")

    api.ok("PUT", api.svc("iris", "/stop"))
    api.settle()
    api.ok("PUT", api.svc("iris", "/start"))
    everything = api.ok("GET", api.svc("iris", "/events"))["Events"]
    page = api.ok("GET", api.svc("iris", "/events"), params={"PageSize": "2", "PageNum": "2"})
    assert page["Events"] == everything[2:4] and page["TotalPageNum"] == (len(everything) + 1) // 2
    stops = api.ok("GET", api.svc("iris", "/events"), params={"EventType": "Normal"})["Events"]
    assert len(stops) == len(everything)
    assert api.ok("GET", api.svc("iris", "/events"), params={"EventType": "Warning"})["Events"] == []
    later = api.ok("GET", api.svc("iris", "/events"), params={"StartTime": "2999-01-01 00:00:00"})
    assert later["Events"] == [] and later["TotalCount"] == 0
    assert error(api, "GET", api.svc("iris", "/events"), params={"EndTime": "yesterday"})[:2] == (
        400, "InvalidParameter")


# -- scalers ---------------------------------------------------------------------------------------


def test_autoscaler_put_get_delete_and_validation(api: Harness) -> None:
    api.create(sklearn_spec())
    api.settle()
    block = {"min": 2, "max": 3, "scaleStrategies": [{"metricName": "qps", "threshold": 10}]}
    bad = [
        ({**block, "min": 4}, "autoscaler: min (4) is larger than max (3)"),
        ({**block, "scaleStrategies": [{"metricName": "qpx", "threshold": 1}]},
         "autoscaler.scaleStrategies.0.metricName"),
        ({"min": 1, "scaleStrategies": block["scaleStrategies"]}, "autoscaler.max: required field is missing"),
    ]
    for body, words in bad:
        status, code, message = error(api, "PUT", api.svc("iris", "/autoscaler"), body)
        assert (status, code) == (400, "InvalidParameter") and words in message, message
    empty = api.http.put(api.svc("iris", "/autoscaler"), content=b"", headers=basic_auth())
    assert empty.status_code == 400 and "send the autoscaler block" in empty.json()["Message"]
    off = api.ok("GET", api.svc("iris", "/autoscaler"))
    assert (off["MinReplica"], off["MaxReplica"], off["ScaleStrategies"], off["Ext"]["Enabled"]) == (0, 0, [], False)

    api.ok("POST", api.svc("iris", "/autoscaler"), block)  # CreateServiceAutoScaler; PUT is the Update
    got = api.ok("GET", api.svc("iris", "/autoscaler"))
    assert (got["ServiceName"], got["MinReplica"], got["MaxReplica"]) == ("iris", 2, 3)
    assert got["ScaleStrategies"] == [{"metricName": "qps", "threshold": 10, "service": ""}]
    assert got["CurrentMetrics"] == [{"metricName": "qps", "service": "", "value": 0.0}]
    assert got["Behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300, "EAS's defaults are filled in"
    assert json.loads(api.describe("iris")["ServiceConfig"])["autoscaler"]["max"] == 3
    # The real scaler runs in the controller's pass: min 2 lifts the count from 1.
    api.settle()
    desc = api.describe("iris")
    assert (desc["Ext"]["DesiredInstance"], desc["RunningInstance"]) == (2, 2)
    assert desc["Ext"]["LastScaling"]["DesiredInstance"] == 2 and got["Ext"]["LastScaling"] is None

    api.ok("DELETE", api.svc("iris", "/autoscaler"))
    assert api.ok("GET", api.svc("iris", "/autoscaler"))["Ext"]["Enabled"] is False
    assert "autoscaler" not in json.loads(api.describe("iris")["ServiceConfig"])
    api.settle()
    assert api.describe("iris")["Ext"]["DesiredInstance"] == 1, "back to metadata.instance"


def test_cronscaler_put_delete_and_validation(api: Harness) -> None:
    api.create(sklearn_spec())
    off = api.ok("GET", api.svc("iris", "/cronscaler"))
    assert (off["ScaleJobs"], off["ExcludeDates"], off["Ext"]["Enabled"]) == ([], [], False)
    body = {"TimeZone": "Asia/Shanghai", "ScaleJobs": [{"Name": "morning", "Schedule": "0 0 8 * * *", "TargetSize": 2}],
            "ExcludeDates": ["* * * * * 0,6"]}
    api.ok("POST", api.svc("iris", "/cronscaler"), body)  # CreateServiceCronScaler; PUT is the Update
    assert json.loads(api.describe("iris")["ServiceConfig"])["cron_scaler"] == {
        "timezone": "Asia/Shanghai", "jobs": [{"name": "morning", "schedule": "0 8 * * *", "target": 2}],
        "exclude_dates": ["* * * * 0,6"]}
    got = api.ok("GET", api.svc("iris", "/cronscaler"))
    assert (got["ServiceName"], got["TimeZone"], got["ExcludeDates"]) == ("iris", "Asia/Shanghai", ["* * * * * 0,6"])
    job = got["ScaleJobs"][0]
    assert (job["Name"], job["Schedule"], job["TargetSize"]) == ("morning", "0 0 8 * * *", 2)
    fired = job["LastProbeTime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", fired), "08:00 in Shanghai is 00:00 UTC"
    assert datetime.fromisoformat(fired.replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Shanghai")).weekday() < 5
    bad = [
        ({"ScaleJobs": [{"Schedule": "every day", "TargetSize": 1}]}, "ScaleJobs[0].Schedule: a cron expression"),
        ({"ScaleJobs": [{"Schedule": "30 0 8 * * *", "TargetSize": 1}], "TimeZone": "Mars/Base"},
         "cron_scaler.timezone: unknown time zone 'Mars/Base'"),
        ({"ScaleJobs": [{"Schedule": "* 0 8 * * *", "TargetSize": 1}]}, "the seconds field must be one number"),
        ({"ScaleJobs": [{"Schedule": "0 0 8 * * *", "TargetSize": -1}]}, "cron_scaler.jobs.0.target"),
        ({"ScaleJobs": []}, "ScaleJobs: a non-empty list"),
    ]
    for body, words in bad:
        status, code, message = error(api, "PUT", api.svc("iris", "/cronscaler"), body)
        assert (status, code) == (400, "InvalidParameter") and words in message, message
    api.ok("DELETE", api.svc("iris", "/cronscaler"))
    assert "cron_scaler" not in json.loads(api.describe("iris")["ServiceConfig"])


# -- auth, region, envelope -------------------------------------------------------------------------


def test_admin_credentials_are_required(api: Harness) -> None:
    api.create(sklearn_spec())
    refused = [
        ({}, "missing admin credentials"),
        (basic_auth(ACCESS_ID, "wrong"), "wrong access id or key"),
        (basic_auth("someone", ACCESS_KEY), "wrong access id or key"),
        ({"Authorization": "Basic !!!"}, "malformed Basic credentials"),
        ({"Authorization": f"Bearer {ACCESS_KEY}"}, "missing admin credentials"),
    ]
    calls = [("GET", "/api/v2/services", None), ("GET", api.svc("iris"), None),
             ("POST", "/api/v2/services", sklearn_spec("other")), ("DELETE", api.svc("iris"), None),
             ("GET", "/api/v2/groups", None), ("PUT", "/api/v2/ext/services/local/iris/traffic", {"Backends": []}),
             ("GET", "/api/v2/ext/accesskeys", None)]
    for headers, words in refused:
        for method, path, body in calls:
            status, code, message = error(api, method, path, body, auth=headers)
            assert (status, code) == (401, "Unauthorized") and words in message, (method, path, message)
    assert [s["ServiceName"] for s in api.ok("GET", "/api/v2/services")["Services"]] == ["iris"]
    assert api.describe("iris")["Status"] == "Creating", "nothing was changed"


def test_wrong_region_is_404(api: Harness) -> None:
    api.create(sklearn_spec())
    for method, suffix in [("GET", ""), ("PUT", "/stop"), ("DELETE", ""), ("GET", "/events"), ("GET", "/versions")]:
        status, code, message = error(api, method, api.svc("iris", suffix, region="cn-hangzhou"))
        assert (status, code) == (404, "RegionNotFound"), (method, suffix)
        assert message == "this server serves region 'local', not 'cn-hangzhou'"
    assert api.describe("iris")["Status"] == "Creating"


def test_error_envelope_and_request_ids(api: Harness) -> None:
    ids = set()
    for _ in range(3):
        resp = api.call("GET", api.svc("ghost"))
        assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
        ids.add(resp.json()["RequestId"])
    assert len(ids) == 3, "every answer has its own request id"
    too_big = api.http.post("/api/v2/services", content=b" " * (1024 * 1024 + 1), headers=basic_auth())
    assert too_big.status_code == 413 and too_big.json()["Code"] == "RequestTooLarge"


class FailingStore(Store):
    """A real SQLite store whose event reads fail, as a database going away does."""

    def events(self, service: str, limit: int = 200) -> list[dict[str, Any]]:
        raise sqlite3.OperationalError("disk I/O error")


def test_an_unexpected_failure_is_still_an_eas_error(tmp_path: Path) -> None:
    """docs/api.md: every error answer is JSON with RequestId, Code and Message, 500 included."""
    harness = build_platform(tmp_path, store=FailingStore(tmp_path / "failing.db"))
    try:
        harness.create(sklearn_spec())
        status, code, message = error(harness, "GET", harness.svc("iris", "/events"))
        assert (status, code) == (500, "InternalError")
        assert "OperationalError" in message and "RequestId" in message
        assert harness.describe("iris")["ServiceName"] == "iris", "the server keeps answering"
    finally:
        harness.close()


class HoldCreatingStore(Store):
    """A real SQLite store that holds the controller's "Creating" write of a service until
    that service's deploy task has finished: the interleaving, rare but real, in which
    a deploy that fails at once is overtaken by the pass that submitted it."""

    harness: Harness | None = None

    def set_status(self, name: str, status: str, message: str = "") -> bool:
        harness = self.harness
        if status == "Creating" and harness is not None:
            wait_until(lambda: name not in harness.controller._preparing, f"the deploy task of {name} to finish")
        return super().set_status(name, status, message)


def test_a_deploy_that_fails_at_once_ends_failed(tmp_path: Path) -> None:
    """A missing model fails the deploy task within the pass that submitted it; the
    service must still end Failed with the reason (it used to stay Creating forever)."""
    store = HoldCreatingStore(tmp_path / "hold.db")
    harness = build_platform(tmp_path, store=store)
    store.harness = harness
    missing = tmp_path / "missing.joblib"
    try:
        harness.create(sklearn_spec("bad", model_path=str(missing)))
        harness.controller.reconcile()  # submits the deploy; it fails before this pass writes Creating
        harness.controller.reconcile()
        desc = harness.describe("bad")
        assert (desc["Status"], desc["Message"]) == ("Failed", f"{missing} does not exist on the server")
        statuses = [(e["Type"], e["Message"]) for e in harness.ok("GET", harness.svc("bad", "/events"))["Events"]
                    if e["Reason"] == "Status"]
        assert statuses == [("Warning", f"Creating -> Failed: {missing} does not exist on the server")]
        failed = harness.predict("bad", b"{}", TOKEN)
        assert failed.status_code == 503 and "service failed: " in failed.json()["message"]
        harness.ok("PUT", harness.svc("bad"), {"model_path": None})  # fixed: deploys again
        harness.settle()
        assert harness.describe("bad")["Status"] == "Running"
    finally:
        harness.close()


# -- the gateway follows the API ------------------------------------------------------------------


def test_gateway_routes_follow_create_and_delete(api: Harness) -> None:
    api.create(sklearn_spec())
    unknown = api.predict("iris", b"{}", TOKEN)
    assert unknown.status_code == 404, "no route before the controller's pass"
    api.settle()
    routed = api.predict("iris", b"{}", TOKEN)
    assert routed.status_code == 503, routed.text
    # Nothing listens there: the instance leaves the gateway's rotation at the refusal, and
    # the request, after waiting for another within the keepalive, says which one failed.
    assert routed.json()["message"].startswith("service 'iris' is not available: instance iris-r0 failed (cannot "
                                               "connect to 127.0.0.1:")
    assert api.predict("iris", b"{}", "not-the-token").status_code == 401
    assert api.predict("iris", b"{}", None).status_code == 401

    api.ok("DELETE", api.svc("iris"))
    api.controller.reconcile()
    closed = api.predict("iris", b"{}", TOKEN)
    assert closed.status_code == 404, "a deleting service leaves the gateway at the first pass"
    api.reconcile_until(lambda: api.status("iris") is None, "iris to be removed")
    gone = api.predict("iris", b"{}", TOKEN)
    assert gone.status_code == 404 and gone.json()["message"] == "service 'iris' does not exist"
