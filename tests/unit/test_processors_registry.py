"""Processor codes, EAS aliases, and the spec -> processor helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processors import (
    ModelContext,
    Processor,
    context_from_spec,
    create_processor,
    registry,
)
from processors.onnx import OnnxProcessor
from processors.python import PythonProcessor
from processors.registry import UnknownProcessorError, known_codes, resolve
from processors.sklearn import SklearnProcessor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("code, cls", [
    ("sklearn", SklearnProcessor), ("scikit-learn", SklearnProcessor),
    ("sklearn_cpu", SklearnProcessor), ("SKLearn", SklearnProcessor),
    ("onnx", OnnxProcessor), ("onnx_cpu", OnnxProcessor), (" onnxruntime ", OnnxProcessor),
])
def test_builtin_codes_and_aliases(code: str, cls: type) -> None:
    assert resolve(code, None) is cls


def test_python_processor_type_wins() -> None:
    assert resolve(None, "python") is PythonProcessor
    assert resolve("sklearn", "PYTHON") is PythonProcessor


@pytest.mark.parametrize("code, cls_name", [
    ("pmml", "PmmlProcessor"), ("xgboost", "XGBoostProcessor"), ("lightgbm", "LightGBMProcessor"),
    ("tensorflow", "TensorFlowProcessor"), ("tensorflow_cpu_1.15", "TensorFlowProcessor"),
    ("tensorflow_gpu_2.3", "TensorFlowProcessor"), ("pytorch", "PyTorchProcessor"),
    ("pytorch_cpu_1.10", "PyTorchProcessor"), ("paddle", "PaddleProcessor"),
])
def test_framework_codes_and_eas_aliases(code: str, cls_name: str) -> None:
    assert resolve(code, None).__name__ == cls_name


def test_known_but_unsupported_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """EAS codes we recognise but cannot serve get their own message (none left today)."""
    monkeypatch.setattr(registry, "TABLE", registry.TABLE + (registry.Entry("triton", None),))
    with pytest.raises(UnknownProcessorError, match="known EAS processor.*not yet supported"):
        resolve("triton", None)


def test_unknown_code_lists_supported_ones() -> None:
    with pytest.raises(UnknownProcessorError, match=r"unknown processor 'caffe'.*onnx, paddle, pmml"):
        resolve("caffe", None)
    assert issubclass(UnknownProcessorError, ValueError)


def test_missing_processor_and_other_processor_types() -> None:
    with pytest.raises(UnknownProcessorError, match="no processor given"):
        resolve(None, None)
    with pytest.raises(UnknownProcessorError, match="processor_type 'cpp' is not supported"):
        resolve("", "cpp")
    assert resolve("sklearn", "cpp") is SklearnProcessor  # built-ins are C++ on EAS


def test_known_codes() -> None:
    assert known_codes() == ["lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn", "tensorflow",
                             "xgboost"]
    everything = known_codes(include_aliases=True, include_planned=True)
    assert {"pmml", "xgboost", "scikit-learn", "tensorflow_cpu_*"} <= set(everything)


def test_every_implemented_target_is_a_processor() -> None:
    for entry in registry.TABLE:
        if entry.target:
            cls = resolve(entry.code, None)
            assert issubclass(cls, Processor)
            if entry.code in ("sklearn", "onnx", "xgboost", "lightgbm"):
                assert cls.supports_batching


def test_registry_import_does_not_load_frameworks() -> None:
    code = ("import sys, processors, processors.registry; "
            "heavy = [m for m in ('sklearn', 'onnxruntime', 'joblib', 'numpy', 'onnx', 'torch', "
            "'tensorflow', 'paddle', 'xgboost', 'lightgbm', 'pypmml') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_context_from_spec() -> None:
    spec = {"name": "s", "processor": "sklearn", "model_path": "/m", "model_entry": "a.pkl",
            "model_config": {"return_proba": True}, "processor_entry": "",
            "metadata": {"instance": 1, "rpc": {"worker_threads": 8}}}
    ctx = context_from_spec(spec, model_dir="/local/m")
    assert ctx == ModelContext(model_dir="/local/m", model_entry="a.pkl",
                               model_config={"return_proba": True}, workers=8,
                               options=ctx.options)
    assert ctx.options["name"] == "s"
    assert context_from_spec(spec).model_dir == "/m"
    assert context_from_spec({"metadata": {"workers": 3}}).workers == 3
    assert context_from_spec({}).workers == 5


def test_create_processor(tmp_path: Path) -> None:
    processor = create_processor({"processor": "onnx_cpu"}, model_dir=str(tmp_path), load=False)
    assert isinstance(processor, OnnxProcessor) and processor.ctx.model_dir == str(tmp_path)
    with pytest.raises(UnknownProcessorError):
        create_processor({"processor": "nope"})
