"""Our own Python client (eas/client/) against a real eas-server: management, predict, DIRECT.

The same checks the official SDKs pass (tests/sdk/test_*_sdk.py), so our client is held
to the same contract: signed and raw tokens, retries on 5xx only, clear 401/404/400
bodies, a tampered body refused, and DIRECT mode spreading over a new instance.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from eas.client import config
from eas.client import ENDPOINT_DIRECT, ManagementClient, PredictClient, PredictError
from tests.sdk.harness import echo_spec
from tests.sdk.tamper import TamperProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def management(sdk_server):
    with ManagementClient.from_config(str(sdk_server.conf)) as client:
        yield client


def test_signed_and_raw_token_predict(sdk_server, echo_service):
    for signed in (True, False):
        with PredictClient(sdk_server.url, echo_service["name"], echo_service["token"], signed=signed) as client:
            answer = json.loads(client.predict("héllo"))
            assert answer["upper"] == "HÉLLO" and answer["length"] == len("héllo".encode())


def test_retries_5xx_not_4xx(sdk_server, echo_service):
    flaky, exhausted, refused = (uuid.uuid4().hex[:8] for _ in range(3))
    with PredictClient(sdk_server.url, echo_service["name"], echo_service["token"], retries=3) as client:
        assert json.loads(client.predict(f"flaky:{flaky}:2"))["attempts"] == 3
        with pytest.raises(PredictError) as err:
            client.predict(f"flaky:{exhausted}:9")
        assert err.value.status == 500 and "flaky failure 4 of 9" in err.value.message
        with pytest.raises(PredictError) as err:
            client.predict(f"fail400:{refused}")
        assert err.value.status == 400
        assert json.loads(client.predict(f"count:{exhausted}"))["calls"] == 4, "1 call + 3 retries"
        assert json.loads(client.predict(f"count:{refused}"))["calls"] == 1, "a 4xx must not be retried"


def test_clear_errors(sdk_server, echo_service, onnx_service):
    cases = [
        (echo_service["name"], "not-the-token", b"x", 401, "signature does not match"),
        ("no_such_service", echo_service["token"], b"x", 404, "'no_such_service' does not exist"),
        (onnx_service["name"], onnx_service["token"], b"\x08\x96\x01 not a protobuf", 400, "PredictRequest"),
    ]
    for service, token, body, status, text in cases:
        with PredictClient(sdk_server.url, service, token, retries=0) as client, \
                pytest.raises(PredictError) as err:
            client.predict(body)
        assert err.value.status == status and text in err.value.message, err.value
        assert err.value.request_id, "every error names its request id"


def test_tampered_body_is_refused(sdk_server, echo_service):
    with TamperProxy(sdk_server.port) as tampering, \
            PredictClient(f"127.0.0.1:{tampering.port}", echo_service["name"], echo_service["token"],
                          retries=0) as client, pytest.raises(PredictError) as err:
        client.predict("sign me")
    assert err.value.status == 401 and "Content-MD5 does not match the body" in err.value.message


def test_management_and_direct_mode_scale_out(sdk_server, management):
    name = "client_direct"
    management.create_service(echo_spec(name))
    service = management.wait_until_running(name, timeout=120)
    token = service["AccessToken"]
    assert config.read(sdk_server.conf).endpoint == sdk_server.url

    with PredictClient(sdk_server.url, name, token, endpoint_type=ENDPOINT_DIRECT) as client:
        before = {json.loads(client.predict("direct"))["instance"] for _ in range(10)}
        assert len(before) == 1 and len(client.upstreams()) == 1
        assert all(url.startswith("http://127.0.0.1:") for url, _ in client.upstreams())

        management.update_service(name, {"metadata": {"instance": 2}})
        scaled = management.wait_until_running(name, timeout=120)
        assert scaled["RunningInstance"] == 2 and len(management.list_instances(name)) == 2
        started = time.monotonic()
        seen: list[str] = []
        while len(set(seen)) < 2 and time.monotonic() - started < 10:
            seen.append(json.loads(client.predict("direct"))["instance"])
            time.sleep(0.02)
        spread_s = time.monotonic() - started
        assert len(set(seen)) == 2, f"no second instance within 10 s: {seen}"
        after = [json.loads(client.predict("direct"))["instance"] for _ in range(40)]
        counts = {i: after.count(i) for i in set(after)}
        # Equal weights, smooth round robin: strict alternation, 20 each.
        assert sorted(counts.values()) == [20, 20], counts
        print(f"DIRECT: second instance answered {spread_s:.2f} s after scaling; then {counts}")

    management.delete_service(name)
    management.wait_until_deleted(name, timeout=120)
