"""Every framework processor through the whole stack: eascmd create, HTTP, real models.

One eas-server for all six frameworks: the models are built in parallel (each in its
own process: TensorFlow and Paddle cannot share one), every service (and a corrupt
twin of each) is created at once, then each answer is compared with the framework's
own in-process prediction.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.e2e.harness import write_json
from tests.support.models import BUILDERS, BuiltModel, build_isolated, read_answer

pytestmark = pytest.mark.e2e

NAMES = list(BUILDERS)


def describe(server, service: str) -> dict[str, Any]:
    """The service's description over the management API (eascmd desc, minus a process start)."""
    with server.admin() as client:
        resp = client.get(f"/api/v2/services/local/{service}")
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Builds every model, then creates `<name>_ok` and `<name>_bad` services concurrently."""
    root = tmp_path_factory.mktemp("frameworks")
    with ThreadPoolExecutor(len(NAMES)) as pool:
        built: dict[str, BuiltModel] = dict(zip(NAMES, pool.map(lambda n: build_isolated(n, root / n), NAMES)))

    def create(job: tuple[str, bool]) -> tuple[str, Any]:
        name, corrupt = job
        service = f"{name}_{'bad' if corrupt else 'ok'}"
        path = write_json(root / f"{service}.json", built[name].service(service, corrupt=corrupt))
        return service, server.eascmd("create", str(path), check=False, timeout=300)

    jobs = [(n, c) for n in NAMES for c in (False, True)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        created = dict(pool.map(create, jobs))
    # No deletes: the module's server (and every replica with it) stops right after.
    return {"built": built, "created": created}


@pytest.mark.parametrize("name", NAMES)
def test_answers_match_the_framework(server, deployed: dict[str, Any], name: str) -> None:
    built: BuiltModel = deployed["built"][name]
    res = deployed["created"][f"{name}_ok"]
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{server.log_tail()}"
    token = describe(server, f"{name}_ok")["AccessToken"]
    resp = server.predict(f"{name}_ok", built.body, token, **{"Content-Type": built.content_type})
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(read_answer(built, resp.content), built.expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_is_a_400_naming_it(server, deployed: dict[str, Any], name: str) -> None:
    built: BuiltModel = deployed["built"][name]
    token = describe(server, f"{name}_ok")["AccessToken"]
    resp = server.predict(f"{name}_ok", built.bad_body, token, **{"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert built.bad_message in body["message"], body
    assert "Traceback" not in body["message"]
    # The instance survives a bad request.
    again = server.predict(f"{name}_ok", built.body, token, **{"Content-Type": built.content_type})
    assert again.status_code == 200


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_artefact_fails_with_the_reason(server, deployed: dict[str, Any], name: str) -> None:
    built: BuiltModel = deployed["built"][name]
    res = deployed["created"][f"{name}_bad"]
    assert res.returncode != 0 and "[FAIL]" in res.stdout + res.stderr, res.stdout + res.stderr
    info = describe(server, f"{name}_bad")
    assert info["Status"] == "Failed"
    assert built.corrupt_message in info["Message"], info["Message"]
    assert "Traceback" not in info["Message"]
    assert server.predict(f"{name}_bad", built.body, info["AccessToken"]).status_code == 503


def test_tensorflow_json_and_signatures(server, deployed: dict[str, Any]) -> None:
    """TF-Serving JSON (row and columnar) and a second signature, beside the protobuf test above."""
    built: BuiltModel = deployed["built"]["tensorflow"]
    token = describe(server, "tensorflow_ok")["AccessToken"]
    import json

    from processors import tfproto

    request = tfproto.PredictRequest.FromString(built.body)
    x = tfproto.array_from_proto(request.inputs["x"])
    ids = tfproto.array_from_proto(request.inputs["ids"])
    rows = [{"x": r.tolist(), "ids": int(i)} for r, i in zip(x, ids)]
    resp = server.predict("tensorflow_ok", json.dumps({"instances": rows}), token)
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    np.testing.assert_allclose([p["scores"] for p in predictions], built.expected, rtol=1e-5)
    assert [p["ids_twice"] for p in predictions] == (ids * 2).tolist()

    resp = server.predict("tensorflow_ok", json.dumps({"signature_name": "total", "inputs": x.tolist()}), token)
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(resp.json()["outputs"], x.sum(axis=1), rtol=1e-5)
    unknown = server.predict("tensorflow_ok", json.dumps({"signature_name": "nope", "instances": rows}), token)
    assert unknown.status_code == 400 and "unknown signature_name 'nope'" in unknown.json()["message"]


def test_pytorch_json_matches_protobuf(server, deployed: dict[str, Any]) -> None:
    import json

    from processors import torchproto

    built: BuiltModel = deployed["built"]["pytorch"]
    token = describe(server, "pytorch_ok")["AccessToken"]
    rows = torchproto.array_from_proto(torchproto.PredictRequest.FromString(built.body).inputs[0])
    resp = server.predict("pytorch_ok", json.dumps({"instances": rows.tolist()}), token)
    assert resp.status_code == 200, resp.text
    logits, labels = resp.json()["predictions"]
    np.testing.assert_allclose(logits, built.expected, rtol=1e-5)
    assert labels == built.expected.argmax(axis=1).tolist()
