"""BML's API face in-process: envelopes, error codes, log ids, and the service JSON blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eas.protocols import bml
from eas.protocols.wire import Answer, error_answer
from eas.spec import ServiceSpec


def test_success_gets_the_log_id_spliced_in() -> None:
    answer = bml.to_bml(Answer(200, b'{"result":{"labels":[]}}', {}), "req-1")
    assert json.loads(answer.body) == {"log_id": bml.log_id("req-1"), "result": {"labels": []}}
    assert json.loads(bml.to_bml(Answer(200, b"{}", {}), "r").body) == {"log_id": bml.log_id("r")}
    listed = bml.to_bml(Answer(200, b"[1, 2]", {}), "r")
    assert json.loads(listed.body) == {"log_id": bml.log_id("r"), "result": [1, 2]}
    raw = Answer(200, b"\x89PNG", {"Content-Type": "image/png"})
    assert bml.to_bml(raw, "r").body == b"\x89PNG"


def test_log_id_is_a_stable_positive_63_bit_number() -> None:
    assert bml.log_id("abc") == bml.log_id("abc") != bml.log_id("abd")
    assert 0 < bml.log_id("abc") < 2**63


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (400, 336006, "Missing required parameter", 336006),  # the user's CustomException code
    (400, "336005", "Failed decoding input", 336005),
    (400, 400, "request body is not valid JSON: ...", bml.INVALID_JSON),
    (400, 400, "processor raised KeyError", bml.INVALID_ARGUMENT),
    (401, 401, "missing Authorization header: ...", bml.INVALID_TOKEN_PARAMETER),
    (401, 401, "wrong token for this service", bml.TOKEN_INVALID),
    (404, 404, "service 'x' does not exist", bml.NO_METHOD),
    (413, 413, "request body over 64 bytes", bml.BAD_SIZE),
    (429, 429, "over the rate limit", bml.QPS_LIMIT),
    (503, 503, "service 'x' is not available: waking", bml.MODEL_UNAVAILABLE),
    (500, 500, "boom", bml.INTERNAL_ERROR),
])
def test_error_codes(status: int, code: object, message: str, expected: int) -> None:
    assert bml.error_code_for(status, code, message) == expected


def test_errors_become_bml_error_bodies() -> None:
    answer = bml.to_bml(error_answer(429, "over the rate limit of 5 requests/s", "rid", {"Retry-After": "1"}), "rid")
    assert answer.status == 429 and answer.headers["Retry-After"] == "1"
    assert json.loads(answer.body) == {"log_id": bml.log_id("rid"), "error_code": 18,
                                       "error_msg": "over the rate limit of 5 requests/s"}


def test_service_json_blocks() -> None:
    base = {"name": "s", "processor": "sklearn", "model_path": "/m", "metadata": {"instance": 1}}
    spec = ServiceSpec.model_validate({**base, "bml": {"framework": "xgboost"}, "backflow": {"ratio": 0.25}})
    assert spec.bml is not None and spec.bml.enabled and spec.bml.framework == "xgboost"
    assert spec.backflow is not None and spec.backflow.max_body_bytes == 64 * 1024
    # Changing the sampling is applied to running instances; BML mode rolls them.
    same = ServiceSpec.model_validate({**base, "bml": {"framework": "xgboost"}, "backflow": {"ratio": 0.5}})
    assert same.code_version() == spec.code_version()
    with pytest.raises(ValueError, match="ratio"):
        ServiceSpec.model_validate({**base, "backflow": {"ratio": 2}})
    with pytest.raises(ValueError, match="framework"):
        ServiceSpec.model_validate({**base, "bml": {"framework": "caffe"}})


def test_tabular_api_batch_results(tmp_path) -> None:  # noqa: ANN001
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from processors import Request, create_processor

    x = np.random.default_rng(2).normal(size=(40, 2))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(model, tmp_path / "model.joblib")
    processor = create_processor({"name": "t", "processor": "sklearn", "model_path": str(tmp_path / "model.joblib"),
                                  "model_config": {"feature_names": ["sepal_length", "sepal_width"]},
                                  "metadata": {"instance": 1}})
    rows = [{"sepal_width": 0.1, "sepal_length": 1.5}, {"sepal_length": -2.0, "sepal_width": 0.3}]
    answer = json.loads(processor.predict(Request(json.dumps({"include_req": True, "data": rows}).encode())).body)
    expected = model.predict(np.array([[1.5, 0.1], [-2.0, 0.3]])).tolist()
    assert answer == {"batch_results": [{**row, "prediction": p} for row, p in zip(rows, expected)]}
    bare = json.loads(processor.predict(Request(json.dumps({"data": rows}).encode())).body)
    assert bare == {"batch_results": [{"prediction": p} for p in expected]}
    with pytest.raises(Exception, match="lacks sepal_width"):
        processor.predict(Request(b'{"data": [{"sepal_length": 1}]}'))


PADDLE_LOD = '''
import json, sys
from pathlib import Path
import numpy as np
from processors import Request, create_processor
from tests.support.models import build_paddle
built = build_paddle(Path(sys.argv[1]))
processor = create_processor({"processor": "paddle"}, model_dir=str(built.model_path))
rows = np.random.default_rng(5).normal(size=(3, 3)).astype(np.float32)
tensor = {"name": "x", "type": "FLOAT", "shape": [3, 3], "float_data": rows.ravel().tolist(), "lod_vector": [{"lod": [0, 1, 3]}]}
plain = {k: v for k, v in tensor.items() if k != "lod_vector"}
a = processor.predict(Request(json.dumps({"instances": [{"tensors": [tensor]}]}).encode()))
b = processor.predict(Request(json.dumps({"instances": [{"tensors": [plain]}]}).encode()))
bad = {**tensor, "lod_vector": [{"lod": [0, 3, 1]}]}
try:
    processor.predict(Request(json.dumps({"instances": [{"tensors": [bad]}]}).encode())); err = None
except Exception as exc: err = str(exc)
print(json.dumps({"status": a.status, "lod_answer": json.loads(a.body), "plain": json.loads(b.body), "err": err}))
'''


def test_paddle_bml_tensors_carry_lod_vector_both_ways(tmp_path: Path) -> None:
    """Paddle in its own process (as the other Paddle unit tests): the input's LoD is set,
    the output's comes back as `lod_vector`, a malformed one is a clear 400."""
    done = subprocess.run([sys.executable, "-c", PADDLE_LOD, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (tensor,) = result["lod_answer"]["predictions"][0]["tensors"]
    assert result["status"] == 200 and tensor["lod_vector"] == [{"lod": [0, 1, 3]}]
    assert "lod_vector" not in result["plain"]["predictions"][0]["tensors"][0]
    assert tensor["float_data"] == result["plain"]["predictions"][0]["tensors"][0]["float_data"]
    assert "each lod is a non-decreasing list of offsets" in result["err"]


def test_built_in_processor_answers_go_under_result() -> None:
    json_headers = {"Content-Type": "application/json"}
    nested = bml.to_bml(Answer(200, b'{"predictions":[[0.1,0.9]]}', json_headers), "r", nest=True)
    assert json.loads(nested.body) == {"log_id": bml.log_id("r"), "result": {"predictions": [[0.1, 0.9]]}}
    table = bml.to_bml(Answer(200, b'{"batch_results":[{"prediction":1}]}', json_headers), "r", nest=True)
    assert json.loads(table.body) == {"log_id": bml.log_id("r"), "batch_results": [{"prediction": 1}]}
    error = bml.to_bml(error_answer(400, "input 'x' expects float32", "r"), "r", nest=True)
    assert json.loads(error.body)["error_code"] == bml.INVALID_ARGUMENT
