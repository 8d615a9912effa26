"""The store keeps services, versions and events across reopenings (a restart)."""

from __future__ import annotations

import pytest

from eas.control import store as st


def test_create_update_version_and_reopen(tmp_path):
    db = tmp_path / "eas.db"
    s = st.Store(db)
    s.create_service("a", {"name": "a", "metadata": {"instance": 1}}, "tok-aaaaaaaa")
    with pytest.raises(st.AlreadyExists):
        s.create_service("a", {}, "x")
    s.update_spec("a", {"name": "a", "metadata": {"instance": 2}}, new_version=False, event="scaled")
    assert s.get("a").version == 1
    s.update_spec("a", {"name": "a", "model_path": "/new", "metadata": {"instance": 2}}, new_version=True,
                  event="model", token="tok-bbbbbbbb")
    s.set_desired("a", st.STOPPED, "stop")
    assert s.set_status("a", "Stopped") is True
    assert s.set_status("a", "Stopped") is False
    s.close()

    again = st.Store(db)
    rec = again.get("a")
    assert (rec.version, rec.token, rec.desired, rec.status) == (2, "tok-bbbbbbbb", st.STOPPED, "Stopped")
    assert rec.spec["model_path"] == "/new"
    assert again.latest_version("a") == 2
    types = [e["type"] for e in again.events("a")]
    assert types[0] == "Created" and "Stopped" in types
    again.remove("a")
    with pytest.raises(st.NotFound):
        again.get("a")
    with pytest.raises(st.NotFound):
        again.set_desired("a", st.RUNNING, "x")


def test_settings_roundtrip(tmp_path):
    s = st.Store(tmp_path / "eas.db")
    assert s.setting("k") is None
    s.set_setting("k", "1")
    s.set_setting("k", "2")
    assert s.setting("k") == "2"
