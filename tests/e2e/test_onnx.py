"""ONNX through the whole stack: JSON and the EAS TF-request protobuf."""

from __future__ import annotations

import json

import numpy as np
import pytest

from processors import tfproto
from tests.e2e.harness import write_json

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory):
    """A real sklearn regressor converted to ONNX, and onnxruntime's own answers."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5], dtype=np.float32) + 0.25
    onx = to_onnx(LinearRegression().fit(x, y), x[:1])
    directory = tmp_path_factory.mktemp("onnx")
    path = directory / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = x[:4]
    input_name = sess.get_inputs()[0].name
    output_name = sess.get_outputs()[0].name
    expected = sess.run(None, {input_name: rows})[0]
    return {"dir": directory, "rows": rows, "input": input_name, "output": output_name, "expected": expected}


def test_onnx_json_and_tf_protobuf(server, onnx_model, tmp_path):
    spec = {"name": "onnx_reg", "processor": "onnx", "model_path": str(onnx_model["dir"]),
            "metadata": {"instance": 1, "cpu": 0.5}}
    server.eascmd("create", str(write_json(tmp_path / "o.json", spec)))
    token = server.desc("onnx_reg")["AccessToken"]
    rows = onnx_model["rows"]

    resp = server.predict("onnx_reg", json.dumps({"inputs": {onnx_model["input"]: rows.tolist()}}), token)
    assert resp.status_code == 200, resp.text
    got = np.array(resp.json()["outputs"][onnx_model["output"]])
    np.testing.assert_allclose(got, onnx_model["expected"], rtol=1e-5)

    req = tfproto.PredictRequest()
    req.inputs[onnx_model["input"]].CopyFrom(tfproto.array_to_proto(rows))
    req.output_filter.append(onnx_model["output"])
    resp = server.predict("onnx_reg", req.SerializeToString(), token, **{"Content-Type": "application/octet-stream"})
    assert resp.status_code == 200, resp.text
    answer = tfproto.PredictResponse.FromString(resp.content)
    np.testing.assert_allclose(tfproto.array_from_proto(answer.outputs[onnx_model["output"]]),
                               onnx_model["expected"], rtol=1e-5)

    wrong = server.predict("onnx_reg", json.dumps({"inputs": {onnx_model["input"]: [[1.0, 2.0]]}}), token)
    assert wrong.status_code == 400 and onnx_model["input"] in wrong.json()["message"]
    garbage = server.predict("onnx_reg", b"\x08\x96\x01garbage", token)
    assert garbage.status_code == 400
    server.eascmd("delete", "onnx_reg", "-y")
