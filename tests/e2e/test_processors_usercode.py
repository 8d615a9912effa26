"""BML user code (PredictWrapper, PyModel, model_fn/input_fn/output_fn) through the whole stack.

Each style is deployed with `processor_type: python` from a code folder written here;
a tiny scikit-learn model trained here is what the code serves, so answers are
checked against the model's own predictions.
"""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.e2e.harness import write_json

pytestmark = pytest.mark.e2e

WRAPPER = '''
import joblib
import numpy as np
from processors.bml import CustomException


class PredictWrapper:
    def __init__(self, model_path):
        self.model = joblib.load(model_path + "/model.joblib")

    def preprocess(self, request_body, **args):
        if "rows" not in request_body:
            raise CustomException(40001, "rows is required")
        return np.asarray(request_body["rows"]), {"proba": request_body.get("proba", False)}, {"n": len(request_body["rows"])}

    def predict(self, data, infer_args):
        return self.model.predict_proba(data) if infer_args["proba"] else self.model.predict(data)

    def postprocess(self, result, request_context, **args):
        return {"result": result, "count": request_context["n"]}
'''

PYMODEL = '''
import joblib


class CustomException(Exception):
    """BML scripts define their own; any class of this name with error_code/message maps."""
    def __init__(self, error_code, message):
        super().__init__(message)
        self.error_code, self.message = error_code, message


class PyModel:
    def __init__(self, model_path):
        self.model = joblib.load(model_path + "/model.joblib")

    def predict(self, request_body):
        if not isinstance(request_body, dict) or "instances" not in request_body:
            raise CustomException("E_INPUT", "send {\\"instances\\": [...]}")
        return {"predictions": self.model.predict(request_body["instances"]).tolist()}
'''

FUNCTIONS = '''
import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(model_dir + "/model.joblib").predict


def input_fn(request):
    return np.asarray(request["instances"], dtype=float)


def output_fn(result):
    return {"predictions": result}
'''

BROKEN = '''
def model_fn(model_dir):
    raise FileNotFoundError("weights.bin is missing from " + model_dir)
'''


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import joblib
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("usercode")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3)).round(3)
    model = LogisticRegression().fit(x, (x[:, 0] - x[:, 2] > 0).astype(int))
    (root / "model").mkdir()
    joblib.dump(model, root / "model" / "model.joblib")

    def create(job: tuple[str, str]) -> tuple[str, Any]:
        name, code = job
        (root / name).mkdir()
        (root / name / "app.py").write_text(textwrap.dedent(code))
        spec = {"name": name, "processor_type": "python", "processor_path": str(root / name),
                "processor_entry": "app.py", "model_path": str(root / "model"),
                "metadata": {"instance": 1, "cpu": 0.5}}
        return name, server.eascmd("create", str(write_json(root / f"{name}.json", spec)), check=False)

    jobs = [("wrapper", WRAPPER), ("pymodel", PYMODEL), ("functions", FUNCTIONS), ("broken", BROKEN)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        created = dict(pool.map(create, jobs))
    rows = x[:6]
    return {"created": created, "rows": rows, "model": model}


def token(server, name: str) -> str:
    with server.admin() as client:
        return client.get(f"/api/v2/services/local/{name}").json()["AccessToken"]


def test_predict_wrapper_and_custom_exception(server, deployed: dict[str, Any]) -> None:
    assert deployed["created"]["wrapper"].returncode == 0, deployed["created"]["wrapper"].stdout
    rows, model = deployed["rows"], deployed["model"]
    auth = token(server, "wrapper")
    resp = server.predict("wrapper", json.dumps({"rows": rows.tolist()}), auth)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"result": model.predict(rows).tolist(), "count": len(rows)}
    resp = server.predict("wrapper", json.dumps({"rows": rows.tolist(), "proba": True}), auth)
    np.testing.assert_allclose(resp.json()["result"], model.predict_proba(rows), rtol=1e-9)

    error = server.predict("wrapper", json.dumps({"cols": []}), auth)
    assert error.status_code == 400
    assert error.json()["code"] == 40001 and error.json()["message"] == "rows is required"
    assert error.json()["request_id"]


def test_pymodel_with_its_own_custom_exception(server, deployed: dict[str, Any]) -> None:
    assert deployed["created"]["pymodel"].returncode == 0, deployed["created"]["pymodel"].stdout
    rows, model = deployed["rows"], deployed["model"]
    auth = token(server, "pymodel")
    resp = server.predict("pymodel", json.dumps({"instances": rows.tolist()}), auth)
    assert resp.status_code == 200 and resp.json() == {"predictions": model.predict(rows).tolist()}
    error = server.predict("pymodel", b"[1, 2]", auth)
    assert error.status_code == 400 and error.json()["code"] == "E_INPUT"


def test_model_fn_input_fn_output_fn(server, deployed: dict[str, Any]) -> None:
    assert deployed["created"]["functions"].returncode == 0, deployed["created"]["functions"].stdout
    rows, model = deployed["rows"], deployed["model"]
    auth = token(server, "functions")
    resp = server.predict("functions", json.dumps({"instances": rows.tolist()}), auth)
    assert resp.status_code == 200 and resp.json() == {"predictions": model.predict(rows).tolist()}
    error = server.predict("functions", json.dumps({"rows": []}), auth)
    assert error.status_code == 400
    assert "processor raised KeyError: 'instances' (in input_fn)" in error.json()["message"]


def test_failing_model_fn_fails_the_service_with_file_and_line(server, deployed: dict[str, Any]) -> None:
    res = deployed["created"]["broken"]
    assert res.returncode != 0
    with server.admin() as client:
        info = client.get("/api/v2/services/local/broken").json()
    assert info["Status"] == "Failed"
    assert "model_fn(model_dir) failed: FileNotFoundError: weights.bin is missing" in info["Message"]
    assert "app.py:3" in info["Message"], info["Message"]
