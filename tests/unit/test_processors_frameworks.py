"""Framework processors in-process on real tiny models (Paddle only end to end: it cannot
share a process with TensorFlow, see tests/support/models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from processors import ModelLoadError, ProcessorError, Request, create_processor, torchproto
from tests.support.models import BUILDERS, BuiltModel, read_answer

IN_PROCESS = ["xgboost", "lightgbm", "pmml", "pytorch", "tensorflow"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root = tmp_path_factory.mktemp("models")
    return {name: BUILDERS[name](root / name) for name in IN_PROCESS}


def processor_for(model: BuiltModel, **spec: object):
    return create_processor({**model.service("t"), **spec}, model_dir=str(model.model_path))


@pytest.mark.parametrize("name", IN_PROCESS)
def test_answers_errors_and_corrupt_artefacts(built: dict[str, BuiltModel], name: str) -> None:
    model = built[name]
    processor = processor_for(model)
    answer = processor.predict(Request(model.body, content_type=model.content_type))
    np.testing.assert_allclose(read_answer(model, answer.body), model.expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ProcessorError, match=model.bad_message.replace("[", "\\[").replace("]", "\\]")
                       .replace("?", "\\?")) as info:
        processor.predict(Request(model.bad_body))
    assert info.value.status == 400
    with pytest.raises(ModelLoadError, match=model.corrupt_message):
        create_processor(model.service("t"), model_dir=str(model.corrupt_path))


def test_gbm_batches_and_missing_values(built: dict[str, BuiltModel]) -> None:
    processor = processor_for(built["xgboost"])
    rows = json.loads(built["xgboost"].body)["instances"]
    batch = processor.predict_batch([Request(json.dumps({"instances": rows[:2]}).encode()),
                                     Request(b'{"instances": [[1, 2]]}'),
                                     Request(json.dumps({"instances": [rows[2][:3] + [None]]}).encode())])
    assert [r.status for r in batch] == [200, 400, 200]
    np.testing.assert_allclose(json.loads(batch[0].body)["predictions"], built["xgboost"].expected[:2], rtol=1e-6)
    with pytest.raises(ProcessorError, match="instances must hold numbers"):
        processor.predict(Request(b'{"instances": [["a", 1, 2, 3]]}'))


def test_pmml_rows_as_lists_and_missing_fields(built: dict[str, BuiltModel]) -> None:
    processor = processor_for(built["pmml"])
    records = json.loads(built["pmml"].body)["instances"]
    as_lists = [[r["x0"], r["x1"], r["x2"]] for r in records]
    answer = json.loads(processor.predict(Request(json.dumps({"instances": as_lists}).encode())).body)
    np.testing.assert_allclose([p["predicted_y"] for p in answer["predictions"]], built["pmml"].expected)
    # Missing fields are imputed as EAS does (no missingValueReplacement here: 0.0 for doubles).
    partial = json.loads(processor.predict(Request(b'{"instances": [{"x0": 1.0}]}')).body)
    zeros = json.loads(processor.predict(Request(b'{"instances": [{"x0": 1.0, "x1": 0.0, "x2": 0.0}]}')).body)
    assert partial == zeros and partial["predictions"][0]["predicted_y"] is not None
    with pytest.raises(ProcessorError, match="unknown field 'z'"):
        processor.predict(Request(b'{"instances": [{"z": 1}]}'))


def test_pytorch_without_declared_inputs_reports_what_it_received(built: dict[str, BuiltModel]) -> None:
    model = built["pytorch"]
    processor = create_processor({"processor": "pytorch"}, model_dir=str(model.model_path))
    with pytest.raises(ProcessorError, match=r"the model rejected the input \(input 0: float32 \[1, 2\]\): "
                                             r"RuntimeError: .*mat1 and mat2 shapes cannot be multiplied"):
        processor.predict(Request(b'{"instances": [[1.0, 2.0]]}'))
    request = torchproto.PredictRequest()
    request.inputs.add().CopyFrom(torchproto.array_to_proto(np.ones((2, 3), np.float32)))
    request.output_filter.append(5)
    with pytest.raises(ProcessorError, match="output_filter index 5 is out of range"):
        processor.predict(Request(request.SerializeToString()))
    with pytest.raises(ModelLoadError, match="model_config inputs names 'y', which forward\\(\\) does not take"):
        create_processor({"processor": "pytorch", "model_config": {"inputs": {"y": {"dtype": "float32"}}}},
                         model_dir=str(model.model_path))


def test_tensorflow_signature_default_and_saved_model_layout(built: dict[str, BuiltModel], tmp_path: Path) -> None:
    model = built["tensorflow"]
    # model_path is the TF-Serving layout <dir>/1/saved_model.pb: the highest version serves.
    processor = create_processor({"processor": "tensorflow_cpu_2.3", "model_config": {"signature_name": "total"}},
                                 model_dir=str(model.model_path))
    answer = json.loads(processor.predict(Request(b'{"instances": [[1, 2, 3]]}')).body)
    assert answer == {"predictions": [6.0]}
    with pytest.raises(ModelLoadError, match="signature_name 'nope' is not in the model; signatures: "
                                             "serving_default, total"):
        create_processor({"processor": "tensorflow", "model_config": {"signature_name": "nope"}},
                         model_dir=str(model.model_path))
    with pytest.raises(ModelLoadError, match="no saved_model.pb in"):
        create_processor({"processor": "tensorflow"}, model_dir=str(tmp_path))
