"""BML user-code styles in-process: detection, the call chain, CustomException codes, encoding."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from processors import ModelContext, ModelLoadError, ProcessorError, Request
from processors.bml import CustomException, encode_result
from processors.python import PythonProcessor


def loaded(tmp_path: Path, code: str, **ctx: object) -> PythonProcessor:
    root = tmp_path / "code"
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(textwrap.dedent(code))
    (tmp_path / "model").mkdir(exist_ok=True)
    processor = PythonProcessor(ModelContext(model_dir=str(tmp_path / "model"), processor_path=str(root), **ctx))
    processor.load()
    return processor


def test_predict_wrapper_chain_and_error_codes(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        from processors.bml import CustomException

        class PredictWrapper:
            def __init__(self, model_path):
                self.model_path = model_path
            def preprocess(self, request_body, **args):
                if request_body.get("x") is None:
                    raise CustomException(1001, "x missing")
                return request_body["x"], {"times": 3}, {"tag": request_body.get("tag")}
            def predict(self, data, infer_args):
                return [v * infer_args["times"] for v in data]
            def postprocess(self, result, request_context, **args):
                return {"result": result, "tag": request_context["tag"]}
        class Helper:
            def predict(self, x): return x
    ''')
    assert processor.style == "BML PredictWrapper"
    assert processor.instance.model_path == str(tmp_path / "model")
    assert processor.predict(Request(b'{"x": [1, 2], "tag": "t"}')).body == b'{"result":[3,6],"tag":"t"}'
    with pytest.raises(ProcessorError) as info:
        processor.predict(Request(b'{"y": 1}'))
    assert (info.value.status, info.value.code, info.value.message) == (400, 1001, "x missing")
    with pytest.raises(ProcessorError, match="processor raised TypeError: .* \\(in PredictWrapper.predict\\)"):
        processor.predict(Request(b'{"x": 5}'))
    with pytest.raises(ProcessorError, match="not valid JSON"):
        processor.predict(Request(b'{"x": ', content_type="application/json"))


def test_preprocess_must_return_three_values(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        class PredictWrapper:
            def __init__(self, model_path): pass
            def preprocess(self, request_body, **args): return request_body
            def predict(self, data, infer_args): return data
            def postprocess(self, result, request_context, **args): return result
    ''')
    with pytest.raises(ProcessorError, match="must return \\(data, infer_args, request_context\\)") as info:
        processor.predict(Request(b"{}"))
    assert info.value.status == 500


def test_wrapper_without_predict_nor_paddle_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no predict\\(\\): .* holds no Paddle inference model"):
        loaded(tmp_path, '''
            class PredictWrapper:
                def __init__(self, model_path): pass
                def preprocess(self, body): return body, {}, {}
                def postprocess(self, result, ctx): return result
        ''')


def test_pymodel_with_users_own_custom_exception(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        class CustomException(Exception):
            def __init__(self, error_code, message):
                self.error_code = error_code
                self.message = message

        class PyModel:
            def __init__(self, model_path):
                self.path = model_path
            def predict(self, request_body):
                if isinstance(request_body, bytes):
                    return request_body.upper()
                if "fail" in request_body:
                    raise CustomException("E42", "asked to fail")
                return {"echo": request_body}, 201
    ''')
    assert processor.style == "BML PyModel"
    assert processor.predict(Request(b"raw", content_type="text/plain")).body == b"RAW"
    answer = processor.predict(Request(b'{"a": 1}'))
    assert (answer.status, answer.body) == (201, b'{"echo":{"a":1}}')
    with pytest.raises(ProcessorError) as info:
        processor.predict(Request(b'{"fail": 1}'))
    assert (info.value.code, info.value.message) == ("E42", "asked to fail")


def test_module_functions_and_model_fn_failure(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        import numpy as np

        def model_fn(model_dir):
            return lambda x: np.asarray(x) * 2

        def input_fn(request):
            return request["instances"]

        def output_fn(result):
            return {"predictions": result}
    ''')
    assert processor.style == "BML model_fn/input_fn/output_fn"
    assert processor.predict(Request(b'{"instances": [1, 2.5]}')).body == b'{"predictions":[2.0,5.0]}'
    with pytest.raises(ModelLoadError, match="model_fn\\(model_dir\\) failed: ValueError: no weights \\(at .*app.py:3\\)"):
        loaded(tmp_path, '''
            def model_fn(model_dir):
                raise ValueError("no weights")
        ''')


def test_eas_class_wins_over_bml_shapes(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        class Eas:
            def initialize(self): pass
            def process(self, data): return data, 200
        class PyModel:
            def __init__(self, model_path): pass
            def predict(self, body): return "never"
    ''')
    assert processor.style == "EAS" and processor.predict(Request(b"x")).body == b"x"
    chosen = loaded(tmp_path, (tmp_path / "code" / "app.py").read_text(), processor_mainclass="PyModel")
    assert chosen.style == "BML PyModel"


def test_encode_result() -> None:
    assert encode_result({"a": np.float32(1.5), "b": np.arange(2)}, "f").body == b'{"a":1.5,"b":[0,1]}'
    assert encode_result("text", "f").content_type == "application/octet-stream"
    assert encode_result(("{}", 202), "f").status == 202
    with pytest.raises(ProcessorError, match="cannot be sent as JSON") as info:
        encode_result({"x": object()}, "postprocess")
    assert info.value.status == 500
    assert str(CustomException(7, "m")) == "[7] m"


def test_bml_constructor_styles_and_args_files(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "preprocess_args.json").write_text('{"scale": 10}')
    (tmp_path / "model" / "postprocess_args.json").write_text('{"suffix": "!"}')
    processor = loaded(tmp_path, '''
        class PredictWrapper:
            def __init__(self, model_path, use_gpu, logger):
                self.seen = (model_path, use_gpu, logger.name)
            def preprocess(self, request_body, **preprocess_args):
                return request_body["x"] * preprocess_args["scale"], {}, {}
            def predict(self, data, infer_args):
                return data + 1
            def postprocess(self, result, request_context, **postprocess_args):
                return f"{result}{postprocess_args['suffix']}"
    ''', options={"bml": {}})
    assert processor.instance.seen == (str(tmp_path / "model"), False, "bml.PredictWrapper")
    assert processor.predict(Request(b'{"x": 4}')).body == b'{"result":"41!"}'  # BML's rule: other -> result


def test_instances_run_one_batched_predict(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        import numpy as np
        calls = []
        class PredictWrapper:
            def __init__(self, model_path): pass
            def preprocess(self, request_body):
                return np.array(request_body["features"]), {}, {}
            def predict(self, data, infer_args):
                calls.append(data.shape)
                return data.sum(axis=1)
            def postprocess(self, infer_result, request_context):
                return {"categories": infer_result.tolist(), "calls": list(calls)}
    ''', options={"bml": {"framework": "tensorflow"}})
    body = b'{"instances": [{"features": [1, 2]}, {"features": [3, 4]}]}'
    answer = processor.predict(Request(body))
    assert answer.body == b'{"result":{"predictions":[{"categories":[3],"calls":[[2,2]]},' \
                          b'{"categories":[7],"calls":[[2,2]]}]}}'


def test_bml_rule_for_pymodel_and_model_fn(tmp_path: Path) -> None:
    processor = loaded(tmp_path, '''
        class PyModel:
            def __init__(self, model_path): pass
            def predict(self, request_body): return [1, 2]
    ''', options={"bml": {}})
    assert processor.predict(Request(b"{}")).body == b'{"results":[1,2]}'
    functions = loaded(tmp_path / "f", '''
        import json
        def model_fn(model_dir): return lambda data: data
        def output_fn(result): return json.dumps([result["x"]])
    ''', options={"bml": {}})
    assert functions.predict(Request(b'{"x": 5}')).body == b'{"result":[5]}'
