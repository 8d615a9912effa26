"""The store is the truth: a server killed with SIGKILL comes back with every service."""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import sklearn_service, write_json

pytestmark = pytest.mark.e2e


def test_kill9_and_restart_restores_services(fresh_server, iris, tmp_path):
    srv = fresh_server.start()
    srv.eascmd("create", str(write_json(tmp_path / "a.json", sklearn_service("keeper", iris["path"]))))
    custom = {**sklearn_service("custom_token", iris["path"], instance=2), "token": "my-fixed-token-123"}
    srv.eascmd("create", str(write_json(tmp_path / "b.json", custom)))
    srv.eascmd("create", str(write_json(tmp_path / "c.json", sklearn_service("parked", iris["path"]))))
    srv.eascmd("stop", "parked")
    before = {name: srv.desc(name) for name in ("keeper", "custom_token", "parked")}
    body = json.dumps({"instances": iris["rows"]})

    srv.kill9()
    assert srv.proc is not None and srv.proc.returncode == -9
    srv.start()

    after_keeper = srv.wait_status("keeper", "Running")
    after_custom = srv.wait_status("custom_token", "Running")
    assert after_keeper["AccessToken"] == before["keeper"]["AccessToken"]
    assert after_custom["AccessToken"] == "my-fixed-token-123"
    assert after_custom["TotalInstance"] == 2
    assert srv.desc("parked")["Status"] == "Stopped"
    for name, info in (("keeper", after_keeper), ("custom_token", after_custom)):
        resp = srv.predict(name, body, info["AccessToken"])
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == iris["expected"]
    assert srv.predict("parked", body, before["parked"]["AccessToken"]).status_code == 503
    assert after_keeper["CreateTime"] == before["keeper"]["CreateTime"]
