"""Fixtures for the official-SDK tests: one real eas-server for the whole tests/sdk run.

The SDKs themselves (Python venv, Maven repository) are installed by `make sdk-deps`,
a prerequisite of `make test`; a test whose SDK is missing fails and says how to get it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.e2e.harness import EasServer
from tests.sdk.harness import deploy, echo_spec


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory: pytest.TempPathFactory):
    """One server (and one local Ray) for every SDK module: booting Ray is the slow part."""
    srv = EasServer(tmp_path_factory.mktemp("eas-sdk-data")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def echo_service(sdk_server: EasServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Python user processor (tests/sdk/assets/echo/app.py), one instance."""
    token = deploy(sdk_server, echo_spec("sdk_echo"), tmp_path_factory.mktemp("echo"))
    return {"name": "sdk_echo", "token": token}


@pytest.fixture(scope="session")
def onnx_service(sdk_server: EasServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real regressor converted to ONNX, served by our onnx processor; onnxruntime's own answers."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = x @ np.array([0.5, -1.25, 2.0], dtype=np.float32) - 0.75
    model_dir = tmp_path_factory.mktemp("onnx-model")
    (model_dir / "model.onnx").write_bytes(to_onnx(LinearRegression().fit(x, y), x[:1]).SerializeToString())
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = x[:4]
    expected = sess.run(None, {sess.get_inputs()[0].name: rows})[0]
    spec = {"name": "sdk_onnx", "processor": "onnx", "model_path": str(model_dir),
            "metadata": {"instance": 1, "cpu": 0.5}}
    token = deploy(sdk_server, spec, tmp_path_factory.mktemp("onnx"))
    return {"name": "sdk_onnx", "token": token, "rows": rows, "expected": expected,
            "input": sess.get_inputs()[0].name, "output": sess.get_outputs()[0].name}
