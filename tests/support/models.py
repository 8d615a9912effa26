"""Tiny real models, one builder per framework processor, shared by tests and benchmarks.

Each `build_<processor>(directory)` trains or builds a small model with the framework
itself, saves its native artefact under `directory`, and returns a `BuiltModel` (plain
data, picklable): the service JSON to deploy it, a request in the processor's wire
format, the framework's own in-process answer to that request, how to read the
platform's answer (`read_answer`), a wrong request with the 400 it must get, and a
corrupt artefact with the reason the service must fail with. `native_call(built)` is
the framework's own in-process call on the same input, for latency comparisons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
import pickle
import subprocess
import sys
from typing import Any, Callable

import numpy as np

from processors import tfproto, torchproto

RNG_SEED = 11


@dataclass
class BuiltModel:
    processor: str
    model_path: Path
    body: bytes
    expected: np.ndarray
    """The framework's own in-process answer to `body`."""
    answer_kind: str
    """How `read_answer` reads the platform's HTTP answer into what `expected` holds."""
    bad_body: bytes
    bad_message: str
    """A substring of the 400's message for `bad_body`: it names the input and the mismatch."""
    corrupt_path: Path
    corrupt_message: str
    content_type: str = "application/json"
    model_config: dict[str, Any] | None = None


    def service(self, name: str, *, corrupt: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": name, "processor": self.processor,
                                "model_path": str(self.corrupt_path if corrupt else self.model_path),
                                "metadata": {"instance": 1, "cpu": 0.5}}
        if self.model_config:
            spec["model_config"] = self.model_config
        return spec


def _rows(n: int, width: int) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).normal(size=(n, width)).round(4)


def _tabular_bad(width: int) -> tuple[bytes, str]:
    return (json.dumps({"instances": [[1.0] * (width - 1)]}).encode(),
            f"model expects {width} features per instance, received {width - 1}")


# ---------------------------------------------------------------- xgboost / lightgbm

def build_xgboost(directory: Path) -> BuiltModel:
    import xgboost as xgb

    x = _rows(80, 4)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(x, label=y), num_boost_round=8)
    (directory / "xgb").mkdir(parents=True)
    path = directory / "xgb" / "model.json"
    booster.save_model(path)
    loaded = xgb.Booster(model_file=str(path))
    rows = x[:5]
    corrupt = directory / "xgb_corrupt" / "model.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"learner": ')
    bad, message = _tabular_bad(4)
    return BuiltModel("xgboost", path, json.dumps({"instances": rows.tolist()}).encode(),
                      loaded.predict(xgb.DMatrix(rows)), "predictions", bad, message,
                      corrupt, "model.json is not a valid XGBoost model")


def build_lightgbm(directory: Path) -> BuiltModel:
    import lightgbm as lgb

    x = _rows(120, 5)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 1.5]) + 0.1
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1, "num_threads": 1,
                         "min_data_in_leaf": 5}, lgb.Dataset(x, label=y), num_boost_round=10)
    (directory / "lgb").mkdir(parents=True)
    path = directory / "lgb" / "model.txt"
    booster.save_model(str(path))
    loaded = lgb.Booster(model_file=str(path))
    rows = x[:5]
    corrupt = directory / "lgb_corrupt" / "model.txt"
    corrupt.parent.mkdir()
    corrupt.write_text("tree\nversion=v4\nnot really a model\n")
    bad, message = _tabular_bad(5)
    return BuiltModel("lightgbm", path, json.dumps({"instances": [{"features": r} for r in rows.tolist()]}).encode(),
                      loaded.predict(rows), "predictions", bad, message,
                      corrupt, "model.txt is not a valid LightGBM model")


# ---------------------------------------------------------------- pmml

def _regression_pmml(names: list[str], coef: np.ndarray, intercept: float) -> str:
    """A PMML 4.4 RegressionModel for a fitted linear model (what PMML exporters write)."""
    fields = "".join(f'<DataField name="{n}" optype="continuous" dataType="double"/>' for n in names)
    mining = "".join(f'<MiningField name="{n}"/>' for n in names)
    predictors = "".join(f'<NumericPredictor name="{n}" coefficient="{float(c)!r}"/>' for n, c in zip(names, coef))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">'
            f'<Header description="linear regression"/><DataDictionary numberOfFields="{len(names) + 1}">{fields}'
            '<DataField name="y" optype="continuous" dataType="double"/></DataDictionary>'
            f'<RegressionModel functionName="regression"><MiningSchema>{mining}'
            '<MiningField name="y" usageType="target"/></MiningSchema>'
            f'<RegressionTable intercept="{float(intercept)!r}">{predictors}</RegressionTable></RegressionModel></PMML>')


def build_pmml(directory: Path) -> BuiltModel:
    from pypmml import Model
    from sklearn.linear_model import LinearRegression

    names = ["x0", "x1", "x2"]
    x = _rows(40, 3)
    fitted = LinearRegression().fit(x, x @ np.array([2.0, -1.0, 0.5]) + 3.0)
    (directory / "pmml").mkdir(parents=True)
    path = directory / "pmml" / "model.pmml"
    path.write_text(_regression_pmml(names, fitted.coef_, float(fitted.intercept_)))
    evaluator = Model.fromFile(str(path))
    rows = x[:4]
    records = [dict(zip(names, r)) for r in rows.tolist()]
    expected = np.asarray([evaluator.predict(r)["predicted_y"] for r in records])
    assert np.allclose(expected, fitted.predict(rows))  # the PMML file is the sklearn model
    corrupt = directory / "pmml_corrupt" / "model.pmml"
    corrupt.parent.mkdir()
    corrupt.write_text("<PMML><DataDictionary>")
    return BuiltModel("pmml", path, json.dumps({"instances": records}).encode(), expected,
                      "pmml:predicted_y",
                      json.dumps({"instances": [{"x0": "tall", "x1": 1.0, "x2": 2.0}]}).encode(),
                      "field 'x0' expects double, received str", corrupt, "model.pmml is not a valid PMML model")


#: The heart-disease features of the PAI pipeline example (a logistic regression exported to PMML).
HEART_FEATURES = ["sex", "cp", "fbs", "restecg", "exang", "slop", "thal", "age", "trestbps", "chol",
                  "thalach", "oldpeak", "ca"]
#: The feature whose MiningField declares a missingValueReplacement in `build_pmml_heart`'s file.
HEART_REPLACED = ("ca", 0.5)


@dataclass
class HeartModel:
    """A binary classifier as PMML with output fields p_0 and p_1 (what PAI exports)."""

    path: Path
    rows: list[dict[str, float]]
    p_1: list[float]
    """sklearn's own probability of class 1 for each of `rows`."""
    predict: Callable[[list[dict[str, float]]], list[float]]
    """sklearn's probability of class 1 for any rows (every feature given)."""


def build_pmml_heart(directory: Path) -> HeartModel:
    """A logistic regression trained here on made-up heart-disease rows, written as PMML 4.4
    (a RegressionModel with a logit table per class, as PMML exporters write it)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(RNG_SEED)
    x = rng.normal(size=(200, len(HEART_FEATURES))).round(3)
    y = (x[:, 0] - x[:, 7] + 0.5 * x[:, 12] > 0).astype(int)
    fitted = LogisticRegression().fit(x, y)
    name, value = HEART_REPLACED
    fields = "".join(f'<DataField name="{n}" optype="continuous" dataType="double"/>' for n in HEART_FEATURES)
    mining = "".join(f'<MiningField name="{n}"' + (f' missingValueReplacement="{value}"' if n == name else "") + "/>"
                     for n in HEART_FEATURES)
    predictors = "".join(f'<NumericPredictor name="{n}" coefficient="{float(c)!r}"/>'
                         for n, c in zip(HEART_FEATURES, fitted.coef_[0]))
    pmml = ('<?xml version="1.0" encoding="UTF-8"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">'
            f'<Header description="heart disease"/><DataDictionary>{fields}'
            '<DataField name="ifhealth" optype="categorical" dataType="integer"><Value value="0"/><Value value="1"/>'
            '</DataField></DataDictionary>'
            f'<RegressionModel functionName="classification" normalizationMethod="logit"><MiningSchema>{mining}'
            '<MiningField name="ifhealth" usageType="target"/></MiningSchema><Output>'
            '<OutputField name="p_0" optype="continuous" dataType="double" feature="probability" value="0"/>'
            '<OutputField name="p_1" optype="continuous" dataType="double" feature="probability" value="1"/>'
            f'</Output><RegressionTable intercept="{float(fitted.intercept_[0])!r}" targetCategory="1">{predictors}'
            '</RegressionTable><RegressionTable intercept="0" targetCategory="0"/></RegressionModel></PMML>')
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "heart.pmml"
    path.write_text(pmml)
    rows = [dict(zip(HEART_FEATURES, r)) for r in x[:3].tolist()]

    def predict(records: list[dict[str, float]]) -> list[float]:
        matrix = np.asarray([[r[n] for n in HEART_FEATURES] for r in records])
        return fitted.predict_proba(matrix)[:, 1].tolist()

    return HeartModel(path, rows, predict(rows), predict)


# ---------------------------------------------------------------- pytorch

def build_pytorch(directory: Path) -> BuiltModel:
    import torch

    torch.manual_seed(RNG_SEED)

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(3, 8)
            self.out = torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.out(torch.relu(self.hidden(x)))
            return logits, logits.argmax(dim=1)

    (directory / "torch").mkdir(parents=True)
    path = directory / "torch" / "model.pt"
    torch.jit.script(Scorer().eval()).save(str(path))
    loaded = torch.jit.load(str(path))
    rows = _rows(4, 3).astype(np.float32)
    with torch.inference_mode():
        expected = loaded(torch.from_numpy(rows))[0].numpy()
    request = torchproto.PredictRequest()
    request.inputs.add().CopyFrom(torchproto.array_to_proto(rows))
    request.output_filter.append(0)

    corrupt = directory / "torch_corrupt" / "model.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    return BuiltModel("pytorch", path, request.SerializeToString(), expected, "torch:0",
                      json.dumps({"instances": [[1.0, 2.0]]}).encode(),
                      "input 'x' expects float32 with shape [?, 3]; received float64 with shape [1, 2]",
                      corrupt, "model.pt is not a TorchScript model", "application/octet-stream",
                      model_config={"inputs": {"x": {"dtype": "float32", "shape": [-1, 3]}}})


# ---------------------------------------------------------------- tensorflow

def build_tensorflow(directory: Path) -> BuiltModel:
    import tensorflow as tf

    weights = np.random.default_rng(RNG_SEED).normal(size=(3, 2)).astype(np.float32)

    class Linear(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weights)
            self.b = tf.Variable(np.array([0.5, -0.25], dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, x: Any, ids: Any) -> dict[str, Any]:
            return {"scores": tf.matmul(x, self.w) + self.b, "ids_twice": ids * 2}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def total(self, x: Any) -> dict[str, Any]:
            return {"total": tf.reduce_sum(x, axis=1)}

    module = Linear()
    path = directory / "tf" / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "total": module.total})
    loaded = tf.saved_model.load(str(path))
    rows = _rows(4, 3).astype(np.float32)
    ids = np.arange(4, dtype=np.int64)
    serve = loaded.signatures["serving_default"]
    expected = serve(x=tf.constant(rows), ids=tf.constant(ids))["scores"].numpy()
    request = tfproto.PredictRequest()
    request.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tfproto.array_to_proto(rows))
    request.inputs["ids"].CopyFrom(tfproto.array_to_proto(ids))
    request.output_filter.append("scores")

    corrupt = directory / "tf_corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01 not a saved model")
    return BuiltModel("tensorflow", directory / "tf", request.SerializeToString(), expected, "tf:scores",
                      json.dumps({"inputs": {"x": [[1.0, 2.0]], "ids": [1]}}).encode(),
                      "input 'x' expects float32 with shape [?, 3]; received float64 with shape [1, 2]",
                      corrupt, "is not a valid SavedModel", "application/octet-stream")


# ---------------------------------------------------------------- paddle

def build_paddle(directory: Path) -> BuiltModel:
    import paddle
    from paddle import inference
    from paddle.static import InputSpec

    paddle.seed(RNG_SEED)

    class Net(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.fc = paddle.nn.Linear(3, 2)

        def forward(self, x: Any) -> Any:
            return paddle.nn.functional.softmax(self.fc(x))

    net = Net()
    net.eval()
    (directory / "paddle").mkdir(parents=True)
    prefix = directory / "paddle" / "model"
    paddle.jit.save(net, str(prefix), input_spec=[InputSpec([None, 3], "float32", "x")])
    program = next(p for p in prefix.parent.iterdir() if p.suffix in (".json", ".pdmodel"))
    config = inference.Config(str(program), str(prefix.with_suffix(".pdiparams")))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    rows = _rows(3, 3).astype(np.float32)

    def call() -> np.ndarray:
        handle = predictor.get_input_handle("x")
        handle.reshape(list(rows.shape))
        handle.copy_from_cpu(rows)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    expected = call()
    body = {"instances": [{"tensors": [{"name": "x", "type": "FLOAT", "shape": list(rows.shape),
                                        "float_data": rows.ravel().tolist()}]}]}

    bad = {"instances": [{"tensors": [{"name": "x", "type": "FLOAT", "shape": [1, 2], "float_data": [1.0, 2.0]}]}]}
    corrupt = directory / "paddle_corrupt"
    corrupt.mkdir()
    (corrupt / program.name).write_text('{"base_code": {"magic": "pir"}, "program": ')
    (corrupt / "model.pdiparams").write_bytes(b"\x00" * 16)
    return BuiltModel("paddle", prefix.parent, json.dumps(body).encode(), expected, "bml:0",
                      json.dumps(bad).encode(),
                      "input 'x' expects float32 with shape [?, 3]; received float32 with shape [1, 2]",
                      corrupt, "not a valid Paddle inference model")


BUILDERS: dict[str, Callable[[Path], BuiltModel]] = {
    "xgboost": build_xgboost, "lightgbm": build_lightgbm, "pmml": build_pmml,
    "pytorch": build_pytorch, "tensorflow": build_tensorflow, "paddle": build_paddle,
}


def read_answer(built: BuiltModel, body: bytes) -> np.ndarray:
    """The platform's answer body as the array `built.expected` holds."""
    kind, _, arg = built.answer_kind.partition(":")
    if kind == "predictions":
        return np.asarray(json.loads(body)["predictions"], dtype=np.float64)
    if kind == "pmml":
        return np.asarray([p[arg] for p in json.loads(body)["predictions"]], dtype=np.float64)
    if kind == "torch":
        return torchproto.array_from_proto(torchproto.PredictResponse.FromString(body).outputs[int(arg)])
    if kind == "tf":
        return tfproto.array_from_proto(tfproto.PredictResponse.FromString(body).outputs[arg])
    if kind == "bml":
        tensor = json.loads(body)["predictions"][0]["tensors"][int(arg)]
        return np.asarray(tensor["float_data"], dtype=np.float32).reshape(tensor["shape"])
    raise ValueError(f"unknown answer kind {built.answer_kind!r}")


def build_isolated(name: str, directory: Path, timeout: float = 180) -> BuiltModel:
    """`BUILDERS[name](directory)` in a fresh Python process.

    TensorFlow and Paddle crash when loaded into one process (both bundle their own
    native runtimes), and a test session may need both; each service runs in its own
    replica process, so only the test process must keep them apart.
    """
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.built.pickle"
    code = ("import pickle, sys; from pathlib import Path; from tests.support.models import BUILDERS; "
            "built = BUILDERS[sys.argv[1]](Path(sys.argv[2])); open(sys.argv[3], 'wb').write(pickle.dumps(built))")
    res = subprocess.run([sys.executable, "-c", code, name, str(directory), str(out)], capture_output=True,
                         text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2])
    if res.returncode != 0:
        raise RuntimeError(f"building the {name} model failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return pickle.loads(out.read_bytes())


def native_call(built: BuiltModel) -> Callable[[], Any]:
    """The framework's own call on `built.body`'s input, from the saved artefact (for benchmarks).

    Returns a zero-argument function doing one in-process prediction and nothing else,
    to compare with the same request through the platform.
    """
    name, path = built.processor, str(built.model_path)
    if name == "xgboost":
        import xgboost as xgb

        booster, rows = xgb.Booster(model_file=path), np.asarray(json.loads(built.body)["instances"])
        return lambda: booster.inplace_predict(rows)
    if name == "lightgbm":
        import lightgbm as lgb

        booster = lgb.Booster(model_file=path)
        rows = np.asarray([r["features"] for r in json.loads(built.body)["instances"]])
        return lambda: booster.predict(rows)
    if name == "pmml":
        from pypmml import Model

        evaluator, records = Model.fromFile(path), json.loads(built.body)["instances"]
        return lambda: evaluator.predict(records)
    if name == "pytorch":
        import torch

        module = torch.jit.load(path)
        request = torchproto.PredictRequest.FromString(built.body)
        x = torch.from_numpy(torchproto.array_from_proto(request.inputs[0]))

        def call() -> Any:
            with torch.inference_mode():
                return module(x)
        return call
    if name == "tensorflow":
        import tensorflow as tf

        request = tfproto.PredictRequest.FromString(built.body)
        loaded = tf.saved_model.load(str(next(Path(path).rglob("saved_model.pb")).parent))
        fn = loaded.signatures[request.signature_name or "serving_default"]
        feeds = {k: tf.constant(tfproto.array_from_proto(v)) for k, v in request.inputs.items()}
        return lambda: fn(**feeds)
    if name == "paddle":
        from paddle import inference

        params = next(Path(path).glob("*.pdiparams"))
        program = next(p for p in Path(path).iterdir() if p.suffix in (".json", ".pdmodel"))
        config = inference.Config(str(program), str(params))
        config.disable_gpu()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        tensor = json.loads(built.body)["instances"][0]["tensors"][0]
        rows = np.asarray(tensor["float_data"], dtype=np.float32).reshape(tensor["shape"])

        def run() -> Any:
            handle = predictor.get_input_handle(tensor["name"])
            handle.reshape(list(rows.shape))
            handle.copy_from_cpu(rows)
            predictor.run()
            return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        return run
    raise ValueError(f"no native call for {name}")
