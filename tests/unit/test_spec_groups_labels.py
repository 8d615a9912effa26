"""`metadata.group`, `labels`, `workspace_id` and the "kept" event, through the real
management API and controller (in-memory backend, the only stand-in, counts instances
as the spec asks), and what the gateway then follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eas.control import routing
from eas.control.store import ServiceRecord, TrafficRecord
from tests.support.platform import Harness, api_fixture, served_fixture  # noqa: F401 - register fixtures
from tests.support.platform import api_error


def member(name: str, instance: int, group: str | None = "recs", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "instance": instance, **({"group": group} if group else {})}
    return {"metadata": meta, "processor": "sklearn", **extra}


def backends(api: Harness, name: str) -> tuple[tuple[str, int], ...] | None:
    api.controller.reconcile()
    entry = api.controller.routes.entry(name)
    return entry.backends if entry is not None else None


def test_metadata_group_forms_a_group_that_splits_by_running_instances(api: Harness) -> None:
    api.create(member("recs_a", 1))
    api.create(member("recs_b", 3))
    api.settle()
    group = api.ok("GET", "/api/v2/groups/local/recs")
    assert group["TrafficMode"] == "auto" and group["AccessToken"]
    assert group["Ext"]["Members"] == [{"Service": "recs_a", "Weight": 1}, {"Service": "recs_b", "Weight": 3}]
    assert backends(api, "recs") == (("recs_a", 1), ("recs_b", 3))
    assert api.describe("recs_b")["ServiceGroup"] == "recs"
    # The group endpoint answers to the group's own token.
    assert api.predict("recs", b"{}", "wrong-token").status_code == 401

    # Scaling a member moves traffic with it.
    api.ok("PUT", api.svc("recs_a"), {"metadata": {"instance": 3}})
    api.settle()
    assert backends(api, "recs") == (("recs_a", 3), ("recs_b", 3))

    # Customized: the weights given; auto again: instances.
    api.ok("PUT", "/api/v2/ext/groups/local/recs", {"TrafficMode": "customized", "Members": [
        {"Service": "recs_a", "Weight": 90}, {"Service": "recs_b", "Weight": 10}]})
    assert backends(api, "recs") == (("recs_a", 90), ("recs_b", 10))
    api.ok("PUT", "/api/v2/ext/groups/local/recs", {"TrafficMode": "auto"})
    assert backends(api, "recs") == (("recs_a", 3), ("recs_b", 3))


def test_changing_or_dropping_the_group_moves_the_service(api: Harness) -> None:
    api.create(member("solo", 1, group="first"))
    api.settle()
    api.ok("PUT", api.svc("solo"), {"metadata": {"group": "second"}})
    api.settle()
    assert backends(api, "second") == (("solo", 1),)
    assert backends(api, "first") is None, "a group formed by metadata.group goes with its last member"
    events = [e["Message"] for e in api.ok("GET", api.svc("solo", "/events"))["Events"]]
    assert any("left group 'first', its last member: group removed" in m for m in events), events


def test_a_group_cannot_take_a_service_name(api: Harness) -> None:
    api.create(member("taken", 1, group=None))
    status, _, message = api_error(api, "POST", "/api/v2/services", member("other", 1, group="taken"))
    assert status == 400 and message == "metadata.group: 'taken' is a service name; pick another group name"
    status, _, message = api_error(api, "POST", "/api/v2/services", member("self", 1, group="self"))
    assert "metadata.group: 'self' is this service's own name" in message


def test_auto_weights_follow_what_runs_and_share_equally_while_nothing_does() -> None:
    recs = [ServiceRecord(n, n, {"metadata": {"instance": 1}}, "t", "Running", "Running") for n in ("a", "b")]
    row = TrafficRecord("g", "group", "group-token", [("a", 100), ("b", 100)], mode="auto")
    entries, _ = routing.entries(recs, [row], {"a": 2, "b": 0})
    assert entries["g"].backends == (("a", 2), ("b", 0)) and entries["g"].token == "group-token"
    entries, _ = routing.entries(recs, [row], {})
    assert entries["g"].backends == (("a", 1), ("b", 1))
    customized = TrafficRecord("g", "group", "t", [("a", 70), ("b", 30)])
    assert routing.entries(recs, [customized], {"a": 5})[0]["g"].backends == (("a", 70), ("b", 30))


def test_labels_and_workspace_are_stored_shown_and_filter_the_list(api: Harness) -> None:
    api.create({**member("one", 1, group=None), "labels": {"team": "search", "env": "prod"}})
    api.create({**member("two", 1, group=None), "labels": {"team": "ads", "env": "prod"}})
    api.create(member("three", 1, group=None))
    api.ok("PUT", api.svc("three"), {"metadata": {"workspace_id": "ws-42"}})
    described = api.describe("one")
    assert described["Labels"] == [{"LabelKey": "env", "LabelValue": "prod"},
                                   {"LabelKey": "team", "LabelValue": "search"}]
    assert api.describe("three")["WorkspaceId"] == "ws-42"

    def names(label: str) -> list[str]:
        return sorted(s["ServiceName"] for s in api.ok("GET", "/api/v2/services", params={"Label": label})["Services"])

    assert names("env=prod") == ["one", "two"]
    assert names("env=prod,team=ads") == ["two"]
    assert names('{"team": "search"}') == ["one"], "EAS's own form: a JSON map"
    assert names("team=nobody") == []
    status, _, message = api_error(api, "GET", "/api/v2/services", params={"Label": "team"})
    assert status == 400 and message == "Label: 'team' is not key=value"


def test_fields_without_effect_are_named_once(api: Harness) -> None:
    spec = {**member("kept", 1, group=None), "cloud": {"computing": {"instance_type": "ecs.gn6i-c4g1.xlarge"}},
            "networking": {"disable_internet_endpoint": True}}
    api.create(spec)
    api.ok("PUT", api.svc("kept"), {"metadata": {"instance": 2}})  # the same kept fields: no new event
    api.ok("PUT", api.svc("kept"), {"features": {"eas.aliyun.com/extra-ephemeral-storage": "100Gi"}})
    events = [e["Message"] for e in api.ok("GET", api.svc("kept", "/events"))["Events"] if "kept" in e["Message"]]
    assert sorted(events) == [
        "kept, no effect here: cloud.computing.instance_type, features, networking.disable_internet_endpoint",
        "kept, no effect here: cloud.computing.instance_type, networking.disable_internet_endpoint"]
    config = api.describe("kept")["ServiceConfig"]
    assert "ecs.gn6i-c4g1.xlarge" in config and "disable_internet_endpoint" in config


def test_a_deleted_member_leaves_its_group(api: Harness) -> None:
    api.create(member("first", 1))
    api.create(member("second", 2))
    api.settle()
    api.ok("DELETE", api.svc("first"))
    api.settle()
    assert backends(api, "recs") == (("second", 2),)
    api.create(member("first", 1, group=None))  # the same name again, in no group
    api.settle()
    assert backends(api, "recs") == (("second", 2),)


def test_eascmd_ls_filters_by_label(served: Harness, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eascmd.cli import cli

    served.running({"name": "tagged", **member("tagged", 1, group=None), "labels": {"team": "search"}})
    served.running({"name": "plain", **member("plain", 1, group=None)})
    conf = served.conf(tmp_path / "eascmd.conf")
    listed = CliRunner().invoke(cli, ["-c", conf, "ls", "--label", "team=search", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [s["ServiceName"] for s in json.loads(listed.output)] == ["tagged"]
    bad = CliRunner().invoke(cli, ["-c", conf, "ls", "--label", "team"])
    assert bad.exit_code != 0 and "'team' is not KEY=VALUE" in bad.output


def test_a_store_from_before_group_modes_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from eas.control.store import Store

    path = tmp_path / "old.db"
    Store(path).close()
    with sqlite3.connect(path) as db:  # the traffic table as it was before `mode`
        db.execute("ALTER TABLE traffic DROP COLUMN mode")
    store = Store(path)
    try:
        store.put_traffic(TrafficRecord("g", "group", "token-12345", [("a", 1)], mode="auto"), "g", "made")
        assert store.traffic()["g"].mode == "auto"
    finally:
        store.close()
