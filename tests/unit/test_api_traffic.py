"""Releases and traffic through the management API (eas/api/traffic.py) on the real app.

Blue-green release weights, A/B splits, mirrors, versions and groups, each checked
three ways: the API's answer, what `describe`/`ls` then show, and the gateway entry
the real controller builds from the store (what predict calls actually follow). The
app is `eas.server.compose(...)` over SQLite with MemoryBackend standing in for Ray
Serve (the only stand-in), in-process through TestClient, the controller driven by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.platform import Harness, api_fixture  # noqa: F401 - api_fixture registers the fixture
from tests.support.platform import api_error as error

TOKEN = "tok-svc-12345"


def spec(name: str, instance: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "processor": "sklearn", "token": TOKEN, "metadata": {"instance": instance}, **extra}


def weights(api: Harness, *names: str) -> list[int]:
    return [api.describe(n)["Weight"] for n in names]


def entry_backends(api: Harness, name: str) -> tuple[tuple[str, int], ...] | None:
    """What the gateway sends `name`'s callers to, after a controller pass."""
    api.controller.reconcile()
    entry = api.controller.routes.entry(name)
    return entry.backends if entry is not None else None


# -- blue-green release -------------------------------------------------------------------------


def test_release_moves_weight_and_closes_the_partners_endpoint(api: Harness) -> None:
    api.create(spec("iris"))
    partner = api.create(spec("iris"), blue_green=True)["ServiceName"]
    api.settle()
    assert weights(api, "iris", partner) == [100, 0]

    answer = api.ok("PUT", api.svc(partner, "/release"), {"Weight": 30})
    assert answer["Message"] == f"'{partner}' now takes 30% of 'iris'"
    assert weights(api, "iris", partner) == [70, 30]
    assert entry_backends(api, "iris") == (("iris", 70), (partner, 30))
    # The partner's own endpoint is closed: callers are told where to go.
    closed = api.predict(partner, b"{}", api.describe(partner)["AccessToken"])
    assert closed.status_code == 404
    assert closed.json()["message"] == f"'{partner}' was released into 'iris': call /api/predict/iris"

    api.ok("PUT", api.svc(partner, "/release"), {"Weight": 100})
    assert weights(api, "iris", partner) == [0, 100]
    # From 100 back to 50: the others all had 0, so they share the rest equally.
    api.ok("PUT", api.svc(partner, "/release"), {"Weight": 50})
    assert weights(api, "iris", partner) == [50, 50]
    assert entry_backends(api, "iris") == (("iris", 50), (partner, 50))
    assert api.predict("iris", b"{}", TOKEN).status_code == 503, "the original endpoint and token still answer"


def test_release_validation(api: Harness) -> None:
    api.create(spec("iris"))
    partner = api.create(spec("iris"), blue_green=True)["ServiceName"]
    for weight in (101, -1, "30", 30.5, True, None):
        status, code, message = error(api, "PUT", api.svc(partner, "/release"), {"Weight": weight})
        assert (status, code, message) == (400, "InvalidParameter", "Weight: an integer from 0 to 100"), weight
    status, code, message = error(api, "PUT", api.svc("iris", "/release"), {"Weight": 10})
    assert (status, code) == (400, "NotAPartner") and "eascmd create <file> -r" in message
    assert error(api, "PUT", api.svc("ghost", "/release"), {"Weight": 10})[:2] == (404, "ServiceNotFound")
    assert weights(api, "iris", partner) == [100, 0], "nothing changed"


# -- A/B traffic ----------------------------------------------------------------------------------


def ext(name: str, suffix: str = "") -> str:
    """A path of ours (not EAS's): A/B weights live under /api/v2/ext/."""
    return f"/api/v2/ext/services/local/{name}{suffix}"


def test_ab_traffic_splits_one_endpoint(api: Harness) -> None:
    for name in ("a", "b"):
        api.create(spec(name))
    api.settle()
    answer = api.ok("PUT", ext("a", "/traffic"), {"Backends": [{"Service": "a", "Weight": 80},
                                                                   {"Service": "b", "Weight": 20}]})
    assert answer["Message"] == "traffic of 'a': a 80, b 20"
    assert weights(api, "a", "b") == [80, 20]
    assert entry_backends(api, "a") == (("a", 80), ("b", 20))
    assert entry_backends(api, "b") == (("b", 100),), "b's own endpoint is untouched"

    bad = [
        ([], "Backends: a non-empty list of {'Service', 'Weight'}"),
        ("a", "Backends: a non-empty list of {'Service', 'Weight'}"),
        ([{"Weight": 10}], "Backends[0].Service: a service name is required"),
        ([{"Service": "a", "Weight": 101}], "Backends[0].Weight: an integer from 0 to 100"),
        ([{"Service": "a", "Weight": 50}, {"Service": "a", "Weight": 50}], "Backends: each service may appear once"),
    ]
    for backends, message in bad:
        assert error(api, "PUT", ext("a", "/traffic"), {"Backends": backends}) == (
            400, "InvalidParameter", message)
    status, code, message = error(api, "PUT", ext("a", "/traffic"), {"Backends": [{"Service": "ghost"}]})
    assert (status, code) == (404, "ServiceNotFound") and "'ghost'" in message
    assert entry_backends(api, "a") == (("a", 80), ("b", 20)), "a refused change leaves traffic as it was"


# -- mirror ---------------------------------------------------------------------------------------


def test_mirror_set_and_drop(api: Harness) -> None:
    for name in ("a", "shadow"):
        api.create(spec(name))
    api.settle()
    status, code, message = error(api, "DELETE", api.svc("a", "/mirror"))
    assert (status, code, message) == (404, "MirrorNotFound", "'a' has no mirror")

    assert {k: v for k, v in api.ok("GET", api.svc("a", "/mirror")).items() if k != "RequestId"} == {
        "ServiceName": "a", "Ratio": "", "Target": ""}
    # CreateServiceMirror (POST) and UpdateServiceMirror (PUT) take EAS's body.
    answer = api.ok("POST", api.svc("a", "/mirror"), {"Target": ["shadow"], "Ratio": 25})
    assert answer["Message"] == "25% of 'a' requests are copied to 'shadow'"
    api.controller.reconcile()
    entry = api.controller.routes.entry("a")
    assert entry.mirror == ("shadow", 25) and entry.backends == (("a", 100),)
    assert weights(api, "a") == [100]
    got = api.ok("GET", api.svc("a", "/mirror"))
    assert (got["ServiceName"], got["Ratio"], got["Target"]) == ("a", "25", "shadow"), "as text, as EAS answers"

    for body, words in [({"Target": ["a"]}, "Target: another service"), ({"Ratio": 10}, "Target:"),
                        ({"Target": ["shadow", "a"]}, "Target: a list with the one service"),
                        ({"Target": ["shadow"], "Ratio": 101}, "Ratio: an integer from 0 to 100")]:
        status, code, message = error(api, "PUT", api.svc("a", "/mirror"), body)
        assert (status, code) == (400, "InvalidParameter") and message.startswith(words), message
    assert error(api, "PUT", api.svc("a", "/mirror"), {"Target": ["ghost"]})[:2] == (404, "ServiceNotFound")

    assert api.ok("DELETE", api.svc("a", "/mirror"))["Message"] == "'a' is no longer mirrored"
    api.controller.reconcile()
    assert api.controller.routes.entry("a").mirror is None
    assert error(api, "DELETE", api.svc("a", "/mirror"))[:2] == (404, "MirrorNotFound")


# -- versions ------------------------------------------------------------------------------------


def test_versions_and_switch_keep_the_instance_count(api: Harness, tmp_path: Path) -> None:
    models = [tmp_path / "v1.joblib", tmp_path / "v2.joblib"]
    for m in models:
        m.write_bytes(b"not loaded by MemoryBackend")
    api.create(spec("iris", model_path=str(models[0])))
    api.ok("PUT", api.svc("iris"), {"model_path": str(models[1])})
    api.ok("PUT", api.svc("iris"), {"metadata": {"instance": 3}})  # a scale is not a version
    api.settle()

    listed = api.ok("GET", api.svc("iris", "/versions"))
    assert (listed["Ext"]["CurrentVersion"], listed["TotalCount"], listed["PageNumber"]) == (2, 2, 1)
    assert [(v["ImageId"], v["Message"]) for v in listed["Versions"]] == [(1, ""), (2, "current")]
    assert set(listed["Versions"][0]) == {"BuildTime", "ImageAvailable", "ImageId", "Message", "ServiceConfig",
                                          "ServiceRunnable"}, "EAS's version fields, no others"
    assert [json.loads(v["ServiceConfig"])["model_path"] for v in listed["Versions"]] == [str(m) for m in models]
    second = api.ok("GET", api.svc("iris", "/versions"), params={"PageSize": "1", "PageNumber": "2"})
    assert [v["ImageId"] for v in second["Versions"]] == [2]

    answer = api.ok("PUT", api.svc("iris", "/version"), {"Version": 1})
    assert answer["Message"] == "'iris' is rolling to version 1"
    desc = api.describe("iris")
    assert (desc["Status"], desc["CurrentVersion"], desc["LatestVersion"]) == ("Updating", 1, 2)
    config = json.loads(desc["ServiceConfig"])
    assert config["model_path"] == str(models[0]) and config["metadata"]["instance"] == 3
    api.settle()
    desc = api.describe("iris")
    assert (desc["Status"], desc["RunningInstance"], desc["CurrentVersion"]) == ("Running", 3, 1)
    assert [v["Message"] for v in api.ok("GET", api.svc("iris", "/versions"))["Versions"]] == ["current", ""]
    assert ("Version", "switched from version 2 to 1") in [
        (e["Reason"], e["Message"]) for e in api.ok("GET", api.svc("iris", "/events"))["Events"]]

    status, code, message = error(api, "PUT", api.svc("iris", "/version"), {"Version": 9})
    assert (status, code, message) == (404, "VersionNotFound", "'iris' has no version 9 (latest is 2)")
    for version in ("1", None, True):
        assert error(api, "PUT", api.svc("iris", "/version"), {"Version": version})[:2] == (400, "InvalidParameter")
    assert error(api, "GET", api.svc("ghost", "/versions"))[:2] == (404, "ServiceNotFound")
    assert api.describe("iris")["CurrentVersion"] == 1


# -- groups --------------------------------------------------------------------------------------


def test_groups_crud_validation_and_routing(api: Harness) -> None:
    for name in ("a", "b"):
        api.create(spec(name))
    api.settle()
    members = [{"Service": "a", "Weight": 50}, {"Service": "b", "Weight": 50}]
    group = api.ok("POST", "/api/v2/ext/groups", {"Name": "grp", "Members": members, "Token": "group-token-1"})
    url = f"{api.endpoint}/api/predict/grp"
    assert {k: v for k, v in group.items() if k not in ("RequestId", "CreateTime", "UpdateTime")} == {
        "Name": "grp", "ClusterId": "local", "AccessToken": "group-token-1", "TrafficMode": "customized",
        "QueueService": "", "InternetEndpoint": url, "IntranetEndpoint": url, "Ext": {"Members": members},
    }
    listed = api.ok("GET", "/api/v2/groups")
    assert ([g["Name"] for g in listed["Groups"]], listed["TotalCount"]) == (["grp"], 1)
    assert api.ok("GET", "/api/v2/groups", params={"Filter": "nope"})["Groups"] == []
    assert api.ok("GET", "/api/v2/groups/local/grp")["Ext"]["Members"] == members
    endpoints = api.ok("GET", "/api/v2/groups/local/grp/endpoints")
    assert (endpoints["AccessToken"], endpoints["Endpoints"][0]["InternetEndpoints"]) == ("group-token-1", [url])
    assert entry_backends(api, "grp") == (("a", 50), ("b", 50))
    assert api.predict("grp", b"{}", "group-token-1").status_code == 503  # admitted, to a member
    assert api.predict("grp", b"{}", TOKEN).status_code == 401, "a group has its own token"

    for name in ("Grp", "1grp", "g-1", None):
        status, code, message = error(api, "POST", "/api/v2/ext/groups", {"Name": name, "Members": members})
        assert (status, code) == (400, "InvalidParameter") and message.startswith("Name:"), name
    for name in ("grp", "a"):
        status, code, message = error(api, "POST", "/api/v2/ext/groups", {"Name": name, "Members": members})
        assert (status, code) == (409, "NameTaken") and f"'{name}' is already a service or group name" in message
    assert error(api, "POST", "/api/v2/ext/groups", {"Name": "g2", "Members": [{"Service": "ghost"}]})[:2] == (
        404, "ServiceNotFound")
    assert error(api, "POST", "/api/v2/ext/groups", {"Name": "g2", "Members": []})[:2] == (400, "InvalidParameter")

    updated = api.ok("PUT", "/api/v2/ext/groups/local/grp", {"Members": [{"Service": "b", "Weight": 100}]})
    assert updated["Ext"]["Members"] == [{"Service": "b", "Weight": 100}]
    assert entry_backends(api, "grp") == (("b", 100),)

    assert api.ok("DELETE", "/api/v2/ext/groups/local/grp")["Message"] == "group 'grp' deleted"
    for method, path in (("GET", "/api/v2/groups/local/grp"), ("PUT", "/api/v2/ext/groups/local/grp"),
                         ("DELETE", "/api/v2/ext/groups/local/grp")):
        status, code, message = error(api, method, path, {"Members": members})
        assert (status, code) == (404, "GroupNotFound") and "eascmd group ls" in message
    assert error(api, "GET", "/api/v2/groups/elsewhere/grp")[:2] == (404, "RegionNotFound")
    assert entry_backends(api, "grp") is None
    assert api.predict("grp", b"{}", "group-token-1").status_code == 404


def test_traffic_calls_need_a_live_service(api: Harness) -> None:
    for name in ("a", "b"):
        api.create(spec(name))
    api.ok("DELETE", api.svc("b"))
    for method, path, body in [("PUT", ext("b", "/traffic"), {"Backends": [{"Service": "b"}]}),
                               ("PUT", api.svc("b", "/mirror"), {"Target": ["a"]}),
                               ("PUT", api.svc("b", "/version"), {"Version": 1})]:
        status, code, message = error(api, method, path, body)
        assert (status, code) == (409, "ServiceDeleting") and "being deleted" in message
    status, code, _ = error(api, "PUT", ext("a", "/traffic"), {"Backends": [{"Service": "b"}]})
    assert (status, code) == (409, "ServiceDeleting")
