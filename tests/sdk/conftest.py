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

#: The pytorch service that takes Snappy-compressed TorchRequests.
TORCH_SNAPPY = "sdk_torch_snappy"
#: `metadata.rpc.decompressor` codecs with an echo service each (gzip also reads zlib).
CODECS = ("gzip", "snappy", "lz4", "zstd")


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


@pytest.fixture(scope="session")
def framework_services(sdk_server: EasServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A TensorFlow SavedModel and a TorchScript model (tests/support/models.py),
    served by our tensorflow and pytorch processors, with the frameworks' own answers.

    Both models are built at once (each in its own process: TensorFlow and the test
    process do not mix) and both services start together, since each framework takes
    seconds to import.
    """
    from concurrent.futures import ThreadPoolExecutor

    from processors import tfproto, torchproto
    from tests.support.models import build_isolated

    root = tmp_path_factory.mktemp("frameworks")
    names = {"tensorflow": "sdk_tf", "pytorch": "sdk_torch"}

    def build_and_create(kind: str):  # noqa: ANN202
        model = build_isolated(kind, root / kind)
        specs = [model.service(names[kind])]
        if kind == "pytorch":  # the same model, its bodies Snappy-compressed (TorchRequest(True))
            specs.append(model.service(TORCH_SNAPPY))
            specs[-1]["metadata"]["rpc"] = {"decompressor": "snappy"}
        with sdk_server.admin() as admin:
            for spec in specs:
                resp = admin.post("/api/v2/services", json=spec)
                assert resp.status_code == 200, resp.text
        return model

    with ThreadPoolExecutor(len(names)) as pool:
        built = dict(zip(names, pool.map(build_and_create, names)))
    tokens = {kind: sdk_server.wait_status(name, "Running", timeout=300)["AccessToken"]
              for kind, name in {**names, "snappy": TORCH_SNAPPY}.items()}
    tf_request = tfproto.PredictRequest.FromString(built["tensorflow"].body)
    torch_request = torchproto.PredictRequest.FromString(built["pytorch"].body)
    return {
        "tf": {"name": names["tensorflow"], "token": tokens["tensorflow"], "signature": tf_request.signature_name,
               "x": tfproto.array_from_proto(tf_request.inputs["x"]),
               "ids": tfproto.array_from_proto(tf_request.inputs["ids"]),
               "output": "scores", "expected": built["tensorflow"].expected},
        "torch": {"name": names["pytorch"], "token": tokens["pytorch"],
                  "x": torchproto.array_from_proto(torch_request.inputs[0]),
                  "expected": built["pytorch"].expected},
        "torch_snappy": {"name": TORCH_SNAPPY, "token": tokens["snappy"]},
    }


@pytest.fixture(scope="session")
def compressed_services(sdk_server: EasServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Echo services whose predict bodies arrive compressed, one per codec
    (`metadata.rpc.decompressor`): codec -> {"name", "token"}. The echo answers what
    its processor saw, so a caller checks the body was decompressed, not passed through."""
    from concurrent.futures import ThreadPoolExecutor

    workdir = tmp_path_factory.mktemp("compressed")

    def create(codec: str) -> dict[str, str]:
        name = f"sdk_{codec}"
        return {"name": name, "token": deploy(sdk_server, echo_spec(name, cpu=0.25, decompressor=codec), workdir)}

    with ThreadPoolExecutor(len(CODECS)) as pool:
        return dict(zip(CODECS, pool.map(create, CODECS)))
