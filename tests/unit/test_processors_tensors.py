"""Shared tensor-input rules (processors/_tensors.py) and the Paddle/BML pure parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processors import ModelContext, ProcessorError
from processors._tensors import TensorSpec, cast, check_shape, decode_json, json_outputs
from processors.paddle import PaddleProcessor, _pir_input_specs

REPO = Path(__file__).resolve().parents[2]
X = TensorSpec("x", np.dtype(np.float32), (None, 3))
IDS = TensorSpec("ids", np.dtype(np.int64), (None,))
OUT = {"scores": TensorSpec("scores", None, None), "ids_twice": TensorSpec("ids_twice", None, None)}


def test_cast_rules() -> None:
    assert cast(X, np.array([[1, 2, 3]])).dtype == np.float32
    assert cast(IDS, np.array([1.0, 2.0])).tolist() == [1, 2]
    with pytest.raises(ProcessorError, match="input 'ids' expects int64 with shape \\[\\?\\]; received float64 "
                                             "with shape \\[1\\]: the model takes integers"):
        cast(IDS, np.array([1.5]))
    with pytest.raises(ProcessorError, match="received string with shape \\[1, 3\\]: the model takes numbers"):
        cast(X, np.array([["a", "b", "c"]]))
    text = TensorSpec("t", np.dtype(object), (None,))
    assert cast(text, np.array([b"a", "b"], dtype=object), strings_as="bytes").tolist() == [b"a", b"b"]


def test_shape_rules() -> None:
    check_shape(X, np.zeros((7, 3)))
    with pytest.raises(ProcessorError, match="rank 1 instead of 2; wrap a single instance in a list"):
        check_shape(X, np.zeros(3))
    with pytest.raises(ProcessorError, match="dimension 1 is 2, the model needs 3"):
        check_shape(X, np.zeros((1, 2)))


def test_tf_serving_row_and_columnar_json() -> None:
    inputs = {"x": X, "ids": IDS}
    call = decode_json({"instances": [{"x": [1, 2, 3], "ids": 4}, {"x": [5, 6, 7], "ids": 8}]}, inputs, OUT)
    assert call.form == "instances" and call.raw == {"x": [[1, 2, 3], [5, 6, 7]], "ids": [4, 8]}
    rows = json_outputs("instances", {"scores": np.array([[1.0], [2.0]]), "ids_twice": np.array([8, 16])},
                        single_unwrapped=True)
    assert rows == {"predictions": [{"scores": [1.0], "ids_twice": 8}, {"scores": [2.0], "ids_twice": 16}]}
    call = decode_json({"inputs": {"x": [[1, 2, 3]], "ids": [1]}, "output_filter": ["scores"]}, inputs, OUT)
    assert call.form == "inputs" and call.outputs == ["scores"]
    assert json_outputs("inputs", {"scores": np.array([1.5])}, single_unwrapped=True) == {"outputs": [1.5]}
    assert json_outputs("inputs", {"scores": np.array([1.5])}, single_unwrapped=False) == \
        {"outputs": {"scores": [1.5]}}
    with pytest.raises(ProcessorError, match="instance 1 names inputs"):
        decode_json({"instances": [{"x": [1, 2, 3], "ids": 4}, {"x": [1, 2, 3]}]}, inputs, OUT)
    with pytest.raises(ProcessorError, match="unknown output 'nope'"):
        decode_json({"inputs": {"x": [[1, 2, 3]]}, "output_filter": ["nope"]}, inputs, OUT)


def test_pir_program_declares_feeds(tmp_path: Path) -> None:
    """Paddle's PIR JSON `data` ops give the feeds' dtype and shape, without importing paddle."""
    def data_op(name: str, shape: list[int], dtype: str) -> dict:
        return {"#": "1.data", "A": [{"AT": {"#": "0.a_str", "D": name}, "N": "name"},
                                     {"AT": {"#": "1.a_intarray", "D": shape}, "N": "shape"},
                                     {"AT": {"#": "1.a_dtype", "D": dtype}, "N": "dtype"}]}
    program = {"base_code": {"magic": "pir"}, "program": {"regions": [{"blocks": [{"ops": [
        {"#": "p", "A": [0, 1, 1, "w"]}, data_op("x", [-1, 3], "float32"), data_op("k", [-1], "int64")]}]}]}}
    (tmp_path / "model.json").write_text(json.dumps(program))
    specs = _pir_input_specs(tmp_path / "model.json")
    assert specs == {"x": TensorSpec("x", np.dtype(np.float32), (None, 3)),
                     "k": TensorSpec("k", np.dtype(np.int64), (None,))}
    (tmp_path / "broken.json").write_text("{")
    assert _pir_input_specs(tmp_path / "broken.json") == {}


def test_bml_tensor_format() -> None:
    processor = PaddleProcessor(ModelContext())
    name, array = processor._bml_tensor(0, {"name": "x", "type": "FLOAT", "shape": [2, 2],
                                            "float_data": [1, 2, 3, 4]})
    assert name == "x" and array.dtype == np.float32 and array.tolist() == [[1, 2], [3, 4]]
    for tensor, message in [
        ({"name": "x", "type": "STRING", "shape": [1]}, "has type 'STRING'; use one of FLOAT"),
        ({"name": "x", "type": "INT64", "shape": [1]}, "needs a int64_data list"),
        ({"name": "x", "type": "FLOAT", "shape": [3], "float_data": [1]}, "shape [3] needs 3 values"),
        ({"name": "x", "type": "INT32", "shape": [1], "int32_data": ["a"]}, "int32_data must hold numbers"),
    ]:
        with pytest.raises(ProcessorError, match=message.replace("[", "\\[").replace("]", "\\]")):
            processor._bml_tensor(0, tensor)
    answer = processor._bml_answer({"out": np.array([[0.5, 0.5]], np.float32), "flag": np.array([True])})
    assert answer == {"tensors": [
        {"name": "out", "type": "FLOAT", "shape": [1, 2], "float_data": [0.5, 0.5]},
        {"name": "flag", "type": "INT32", "shape": [1], "int32_data": [1]}]}


def test_processor_modules_import_no_framework() -> None:
    """Resolving a code imports our module only; the framework loads in load()."""
    code = ("import sys; from processors.registry import resolve; "
            "[resolve(c) for c in ('xgboost', 'lightgbm', 'pmml', 'pytorch', 'tensorflow', 'paddle')]; "
            "heavy = [m for m in ('torch', 'tensorflow', 'paddle', 'xgboost', 'lightgbm', 'pypmml') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
