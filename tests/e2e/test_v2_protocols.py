"""The Open Inference Protocol (KServe v2) over REST and gRPC, and the raw eas.Predict RPC.

tritonclient, a real v2 client, calls a real eas-server (its own local Ray) on 127.0.0.1.
It needs protobuf<7, so it runs from its own venv (tests/e2e/v2client, `make
v2client-deps`) as a subprocess: one run of tests/e2e/v2client/driver.py carries out a
list of calls and prints their results. Answers are compared with the frameworks' own
in-process predictions (onnxruntime, scikit-learn).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import grpc
import numpy as np
import pytest

from eas.protocols import grpc_messages
from tests.e2e.harness import REPO, write_json

pytestmark = pytest.mark.e2e

V2_CLIENT = REPO / "tests" / "e2e" / "v2client"
V2_PYTHON = V2_CLIENT / ".venv" / "bin" / "python"


def triton(server: Any, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run `calls` through tritonclient against `server`; one result per call."""
    if not V2_PYTHON.exists():
        pytest.fail(f"tritonclient's venv is missing: run `make v2client-deps` (makes {V2_PYTHON})")
    plan = {"http": f"127.0.0.1:{server.port}", "grpc": server.grpc_target, "calls": calls}
    res = subprocess.run([str(V2_PYTHON), str(V2_CLIENT / "driver.py")], input=json.dumps(plan),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"driver failed:\n{res.stderr[-4000:]}\nserver log:\n{server.log_tail()}"
    results = json.loads(res.stdout)
    assert len(results) == len(calls)
    return results


@pytest.fixture(scope="module")
def onnx_clf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real classifier converted to ONNX (two outputs: int64 label, float32 probabilities)."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64) + (x[:, 0] > 1).astype(np.int64)
    onx = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], options={"zipmap": False})
    directory = tmp_path_factory.mktemp("onnx-v2")
    (directory / "model.onnx").write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = x[:6]
    names = [o.name for o in sess.get_outputs()]
    return {"dir": directory, "rows": rows, "input": sess.get_inputs()[0].name, "outputs": names,
            "expected": dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: rows})))}


@pytest.fixture(scope="module")
def deployed(server: Any, iris: dict[str, Any], onnx_clf: dict[str, Any], tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("specs")
    specs = [{"name": "v2_onnx", "processor": "onnx", "model_path": str(onnx_clf["dir"]),
              "metadata": {"instance": 1, "cpu": 0.5}},
             {"name": "v2_iris", "processor": "sklearn", "model_path": str(iris["path"]),
              "metadata": {"instance": 1, "cpu": 0.5}}]
    tokens = {}
    for spec in specs:
        server.eascmd("create", str(write_json(tmp / f"{spec['name']}.json", spec)))
        tokens[spec["name"]] = server.desc(spec["name"])["AccessToken"]
    return tokens


def _tensor(name: str, rows: np.ndarray, datatype: str, binary: bool = True) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(rows.shape), "data": rows.ravel().tolist(),
            "binary": binary}


def _out(result: dict[str, Any], name: str) -> np.ndarray:
    assert result["ok"], result
    tensor = result["value"][name]
    return np.array(tensor["data"]).reshape(tensor["shape"])


def test_tritonclient_rest_and_grpc(server, deployed, onnx_clf, iris):
    onnx_tok, iris_tok = deployed["v2_onnx"], deployed["v2_iris"]
    rows, inp = onnx_clf["rows"], onnx_clf["input"]
    label, proba = onnx_clf["outputs"]
    iris_rows = np.array(iris["rows"])
    model = iris["model"]

    def infer(proto: str, model_name: str, token: str | None, inputs: list[dict[str, Any]],
              outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"call": "infer", "proto": proto, "model": model_name, "token": token, "inputs": inputs,
                "outputs": outputs}

    calls: dict[str, dict[str, Any]] = {}
    for proto in ("http", "grpc"):
        calls |= {
            f"{proto}/live": {"call": "server_live", "proto": proto},
            f"{proto}/ready": {"call": "server_ready", "proto": proto},
            f"{proto}/server_meta": {"call": "server_metadata", "proto": proto},
            f"{proto}/onnx_ready": {"call": "model_ready", "proto": proto, "model": "v2_onnx", "token": onnx_tok},
            f"{proto}/onnx_meta": {"call": "model_metadata", "proto": proto, "model": "v2_onnx", "token": onnx_tok},
            f"{proto}/iris_meta": {"call": "model_metadata", "proto": proto, "model": "v2_iris", "token": iris_tok},
            # tritonclient's defaults: binary inputs (REST), every output.
            f"{proto}/onnx": infer(proto, "v2_onnx", onnx_tok, [_tensor(inp, rows, "FP32")]),
            # JSON data both ways, one output by name; FP64 rows for a float32 model are cast.
            f"{proto}/onnx_one": infer(proto, "v2_onnx", onnx_tok, [_tensor(inp, rows.astype(np.float64), "FP64",
                                                                            binary=False)],
                                       [{"name": proba, "binary": False}]),
            f"{proto}/iris": infer(proto, "v2_iris", iris_tok, [_tensor("features", iris_rows, "FP64")],
                                   [{"name": "predictions"}, {"name": "probabilities"}]),
            f"{proto}/bad_shape": infer(proto, "v2_onnx", onnx_tok, [_tensor(inp, rows[:, :2], "FP32")]),
            f"{proto}/bad_input": infer(proto, "v2_onnx", onnx_tok, [_tensor("nope", rows, "FP32")]),
            f"{proto}/iris_width": infer(proto, "v2_iris", iris_tok, [_tensor("features", iris_rows[:, :3], "FP64")]),
            f"{proto}/wrong_token": infer(proto, "v2_onnx", "not-the-token", [_tensor(inp, rows, "FP32")]),
            f"{proto}/no_token": infer(proto, "v2_onnx", None, [_tensor(inp, rows, "FP32")]),
            f"{proto}/other_token": infer(proto, "v2_onnx", iris_tok, [_tensor(inp, rows, "FP32")]),
            f"{proto}/unknown": infer(proto, "v2_nope", onnx_tok, [_tensor(inp, rows, "FP32")]),
            f"{proto}/unknown_ready": {"call": "model_ready", "proto": proto, "model": "v2_nope", "token": onnx_tok},
            f"{proto}/meta_wrong_token": {"call": "model_metadata", "proto": proto, "model": "v2_onnx",
                                          "token": "not-the-token"},
        }
    got = dict(zip(calls, triton(server, list(calls.values()))))
    statuses = {"http": {"401": "401", "404": "404", "400": "400"},
                "grpc": {"401": "StatusCode.UNAUTHENTICATED", "404": "StatusCode.NOT_FOUND",
                         "400": "StatusCode.INVALID_ARGUMENT"}}

    for proto in ("http", "grpc"):
        codes = statuses[proto]
        for key in ("live", "ready", "onnx_ready"):
            assert got[f"{proto}/{key}"] == {"ok": True, "value": True}, (proto, key, got[f"{proto}/{key}"])
        server_meta = got[f"{proto}/server_meta"]["value"]
        assert server_meta["name"] == "eas-serving" and "binary_tensor_data" in server_meta["extensions"]

        meta = got[f"{proto}/onnx_meta"]["value"]
        assert meta["name"] == "v2_onnx" and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": inp, "datatype": "FP32", "shape": [-1, 3]}], meta
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [(label, "INT64"), (proba, "FP32")]
        iris_meta = got[f"{proto}/iris_meta"]["value"]
        assert iris_meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}], iris_meta
        assert [o["name"] for o in iris_meta["outputs"]] == ["predictions", "probabilities"]

        both = got[f"{proto}/onnx"]
        np.testing.assert_array_equal(_out(both, label), onnx_clf["expected"][label])
        np.testing.assert_allclose(_out(both, proba), onnx_clf["expected"][proba], rtol=1e-6)
        assert both["value"][label]["datatype"] == "INT64" and both["value"][proba]["datatype"] == "FP32"
        assert both["value"]["_id"] == "req-1"
        one = got[f"{proto}/onnx_one"]
        assert set(one["value"]) == {proba, "_id"}, one
        np.testing.assert_allclose(_out(one, proba), onnx_clf["expected"][proba], rtol=1e-6)

        iris_out = got[f"{proto}/iris"]
        np.testing.assert_array_equal(_out(iris_out, "predictions"), model.predict(iris_rows))
        np.testing.assert_allclose(_out(iris_out, "probabilities"), model.predict_proba(iris_rows), rtol=1e-9)

        for key, status, words in [("bad_shape", "400", [inp, "dimension 1 is 2"]),
                                   ("bad_input", "400", ["'nope'", inp]),
                                   ("iris_width", "400", ["'features'", "4 features", "received 3"]),
                                   ("wrong_token", "401", ["wrong token"]),
                                   ("no_token", "401", ["missing"]),
                                   ("other_token", "401", ["wrong token"]),
                                   ("unknown", "404", ["v2_nope"]),
                                   ("meta_wrong_token", "401", ["wrong token"])]:
            result = got[f"{proto}/{key}"]
            assert not result["ok"] and result["status"] == codes[status], (proto, key, result)
            assert all(w in result["message"] for w in words), (proto, key, result)

    # A model that does not exist is not ready: REST says so with a status, gRPC with NOT_FOUND.
    assert got["http/unknown_ready"] == {"ok": True, "value": False}
    assert got["grpc/unknown_ready"]["status"] == "StatusCode.NOT_FOUND"


def test_raw_eas_predict_rpc(server, deployed, iris):
    """eas.Predict/Predict answers exactly what POST /api/predict answers, status in the reply."""
    token = deployed["v2_iris"]
    body = json.dumps({"instances": iris["rows"]}).encode()
    over_http = server.predict("v2_iris", body, token)
    assert over_http.status_code == 200 and over_http.json()["predictions"] == iris["expected"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        predict = channel.unary_unary("/eas.Predict/Predict",
                                      request_serializer=grpc_messages.PredictRequest.SerializeToString,
                                      response_deserializer=grpc_messages.PredictReply.FromString)
        reply = predict(grpc_messages.PredictRequest(service="v2_iris", body=body, token=token,
                                               content_type="application/json"), timeout=30)
        assert reply.status == 200 and reply.body == over_http.content, reply
        assert reply.content_type.startswith("application/json") and len(reply.request_id) == 32
        # The token may come in the call's metadata instead of the message.
        reply = predict(grpc_messages.PredictRequest(service="v2_iris", body=body), timeout=30,
                        metadata=(("authorization", token),))
        assert reply.status == 200 and json.loads(reply.body)["predictions"] == iris["expected"]

        wrong = predict(grpc_messages.PredictRequest(service="v2_iris", body=body, token="nope"), timeout=30)
        assert wrong.status == 401 and "wrong token" in json.loads(wrong.body)["message"]
        missing = predict(grpc_messages.PredictRequest(service="v2_nope", body=body, token=token), timeout=30)
        assert missing.status == 404 and "v2_nope" in json.loads(missing.body)["message"]
        bad = predict(grpc_messages.PredictRequest(service="v2_iris", body=b"not json", token=token), timeout=30)
        assert bad.status == 400 and json.loads(bad.body)["code"] == 400
