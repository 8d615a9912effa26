"""Token rotation works for every service, whatever traffic rules it ever had.

A token lives in one place: a service's endpoint (its own, shared with blue-green or A/B
partners, mirrored) answers to the service's current token; only a group, or a shared
endpoint whose service was deleted, keeps a token of its own. Before, each traffic row
kept a copy of the token taken when the rule was set, so after `modify -Dtoken=...`
the gateway still wanted the old token and refused the new one.

The real app over SQLite with MemoryBackend (tests/support/platform.py): made-up
instances refuse connections, so an admitted call answers 503 and a refused one 401;
one test serves real echo instances for a 200.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from eas.control import store as st
from tests.support.platform import Harness, api_fixture, echo_code_fixture, echo_spec, served_fixture  # noqa: F401
from tests.support.platform import wait_until

OLD, NEW = "old-token-12345", "new-token-67890"


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "processor": "sklearn", "metadata": {"instance": 1}, **extra}


def rotate(api: Harness, name: str, token: str) -> None:
    api.ok("PUT", api.svc(name), {"token": token})
    api.settle()


def admitted(api: Harness, endpoint: str, token: str) -> bool:
    """The gateway let the call through (503: the made-up instance refused it) or not (401)."""
    status = api.predict(endpoint, b"{}", token).status_code
    assert status in (401, 503), status
    return status == 503


def with_mirror(api: Harness) -> str:
    api.create(spec("shadow", token="shadow-token-1"))
    api.settle()
    api.ok("PUT", api.svc("svc", "/mirror"), {"Target": ["shadow"], "Ratio": 50})
    return "svc"


def with_ab_split(api: Harness) -> str:
    api.create(spec("other", token="other-token-1"))
    api.settle()
    api.ok("PUT", "/api/v2/ext/services/local/svc/traffic", {"Backends": [{"Service": "svc", "Weight": 50},
                                                                         {"Service": "other", "Weight": 50}]})
    return "svc"


def with_blue_green_partner(api: Harness) -> str:
    partner = api.create(spec("svc"), blue_green=True)["ServiceName"]
    api.settle()
    api.ok("PUT", api.svc(partner, "/release"), {"Weight": 30})
    return "svc"


@pytest.mark.parametrize("rule", [with_mirror, with_ab_split, with_blue_green_partner],
                         ids=["mirror", "ab-split", "blue-green"])
def test_modify_token_rotates_the_endpoint_after_a_traffic_rule(api: Harness, rule: Callable[[Harness], str]) -> None:
    api.create(spec("svc", token=OLD))
    api.settle()
    endpoint = rule(api)
    api.settle()
    assert admitted(api, endpoint, OLD)

    rotate(api, "svc", NEW)
    assert api.describe("svc")["AccessToken"] == NEW
    assert admitted(api, endpoint, NEW), "the new token is accepted"
    assert not admitted(api, endpoint, OLD), "the old token is refused"
    # The rule outlives the rotation and keeps no copy of any token.
    row = api.store.traffic()["svc"]
    assert row.token == "" and row.kind == "service"

    rotate(api, "svc", OLD)  # and back, through the same rule
    assert admitted(api, endpoint, OLD) and not admitted(api, endpoint, NEW)


def test_the_released_partners_own_endpoint_and_a_group_keep_their_own_tokens(api: Harness) -> None:
    api.create(spec("svc", token=OLD))
    partner = api.create(spec("svc"), blue_green=True)["ServiceName"]
    api.settle()
    api.ok("PUT", api.svc(partner, "/release"), {"Weight": 50})
    assert api.store.traffic()[partner].token == "", "the closed row holds no token"
    api.ok("POST", "/api/v2/ext/groups", {"Name": "grp", "Members": [{"Service": "svc", "Weight": 100}],
                                      "Token": "group-token-1"})
    api.settle()
    rotate(api, "svc", NEW)
    assert admitted(api, "grp", "group-token-1"), "a group keeps its own token"
    assert not admitted(api, "grp", NEW)
    assert api.ok("GET", "/api/v2/groups/local/grp")["AccessToken"] == "group-token-1"


def test_a_shared_endpoint_outlives_its_deleted_service_with_the_last_token(api: Harness) -> None:
    """Blue-green done: the original is deleted, its endpoint stays for the partner and
    answers the original's last token, which moves into the traffic row (the one place
    left for it)."""
    api.create(spec("svc", token=OLD))
    partner = api.create(spec("svc"), blue_green=True)["ServiceName"]
    api.settle()
    api.ok("PUT", api.svc(partner, "/release"), {"Weight": 100})
    rotate(api, "svc", NEW)
    api.ok("DELETE", api.svc("svc"))
    api.reconcile_until(lambda: api.status("svc") is None, "svc to be removed")
    api.settle()
    assert api.store.traffic()["svc"].token == NEW
    assert admitted(api, "svc", NEW) and not admitted(api, "svc", OLD)
    assert api.controller.routes.entry("svc").backends == ((partner, 100),)


def test_a_store_from_before_keeps_no_copies(tmp_path: Path) -> None:
    """Rows written by an older server carry a token copy: opening the store drops the
    copies of rows whose service exists (they answer to the service's token again)."""
    path = tmp_path / "old.db"
    s = st.Store(path)
    s.create_service("svc", {"name": "svc", "processor": "sklearn", "metadata": {"instance": 1}}, OLD)
    s.create_service("gone_partner", {"name": "gone_partner", "processor": "sklearn",
                                      "metadata": {"instance": 1}}, "partner-token-1")
    with s._tx() as db:  # what an older server wrote
        db.execute("INSERT INTO traffic (name, kind, token, backends, mirror, created_at) "
                   "VALUES ('svc', 'service', ?, '[[\"svc\", 100]]', '', 0)", (OLD,))
        db.execute("INSERT INTO traffic (name, kind, token, backends, mirror, created_at) "
                   "VALUES ('grp', 'group', 'group-token-1', '[[\"svc\", 100]]', '', 0)")
    s.close()
    again = st.Store(path)
    rows = again.traffic()
    assert rows["svc"].token == "" and rows["grp"].token == "group-token-1"
    again.close()


def test_rotation_through_a_mirror_with_real_instances(served: Harness, echo_code: Path) -> None:
    served.running(echo_spec("front", echo_code, token=OLD))
    served.running(echo_spec("copy", echo_code, token="copy-token-12"))
    served.ok("PUT", served.svc("front", "/mirror"), {"Target": ["copy"], "Ratio": 100})
    served.ok("PUT", served.svc("front"), {"token": NEW})
    wait_until(lambda: served.predict("front", b"x", NEW).status_code == 200, "the new token to be accepted")
    answer = served.predict("front", b"x", NEW)
    assert answer.status_code == 200 and answer.content == b"echo:x"
    assert served.predict("front", b"x", OLD).status_code == 401
