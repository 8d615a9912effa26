"""Which processor class serves a service: built-in codes, EAS aliases, user code.

The gateway imports this module to validate service JSON, so framework modules are
named as strings and imported only when a code is resolved: the server process never
pays for (or needs) scikit-learn or onnxruntime.

Adding a framework: write processors/<name>.py, then set its `target` in TABLE.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import Processor

PYTHON_PROCESSOR = ".python:PythonProcessor"


@dataclass(frozen=True)
class Entry:
    code: str
    target: str | None
    """`.module:Class` inside this package; None = an EAS code we know but do not serve yet."""
    aliases: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    """EAS versioned codes, e.g. `tensorflow_cpu_1.15` starts with `tensorflow_cpu_`."""


TABLE: tuple[Entry, ...] = (
    Entry("sklearn", ".sklearn:SklearnProcessor", aliases=("scikit-learn", "sklearn_cpu")),
    Entry("onnx", ".onnx:OnnxProcessor", aliases=("onnx_cpu", "onnxruntime")),
    Entry("pmml", ".pmml:PmmlProcessor"),
    Entry("xgboost", ".xgboost:XGBoostProcessor", aliases=("xgboost_cpu",)),
    Entry("lightgbm", ".lightgbm:LightGBMProcessor", aliases=("lightgbm_cpu", "lgbm")),
    Entry("tensorflow", ".tensorflow:TensorFlowProcessor", aliases=("tensorflow_cpu", "tf"),
          prefixes=("tensorflow_cpu_", "tensorflow_gpu_")),
    Entry("pytorch", ".pytorch:PyTorchProcessor", aliases=("torch", "pytorch_cpu", "torchscript"),
          prefixes=("pytorch_cpu_", "pytorch_gpu_")),
    Entry("paddle", ".paddle:PaddleProcessor", aliases=("paddlepaddle", "paddle_cpu")),
)


class UnknownProcessorError(ValueError):
    """The service names a processor we cannot serve (the control plane answers 400)."""


def _lookup(code: str) -> Entry | None:
    for entry in TABLE:
        if code == entry.code or code in entry.aliases or code.startswith(entry.prefixes):
            return entry
    return None


def known_codes(*, include_aliases: bool = False, include_planned: bool = False) -> list[str]:
    """Codes `resolve` accepts now (sorted); optionally their aliases and not-yet-served codes."""
    codes: set[str] = set()
    for entry in TABLE:
        if entry.target is None and not include_planned:
            continue
        codes.add(entry.code)
        if include_aliases:
            codes.update(entry.aliases)
            codes.update(p + "*" for p in entry.prefixes)
    return sorted(codes)


def _load(target: str) -> type[Processor]:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name, __package__), class_name)


def resolve(processor: str | None, processor_type: str | None = None) -> type[Processor]:
    """The processor class for a service's `processor` / `processor_type` fields.

    Raises UnknownProcessorError with a message fit for the user.
    """
    kind = (processor_type or "").strip().lower()
    if kind == "python":
        return _load(PYTHON_PROCESSOR)
    code = (processor or "").strip().lower()
    supported = ", ".join(known_codes())
    if not code:
        if kind:
            raise UnknownProcessorError(
                f"processor_type {processor_type!r} is not supported: custom processors must be "
                f"Python (processor_type: python); built-in processors: {supported}")
        raise UnknownProcessorError(
            f"no processor given: set processor to one of {supported}, "
            "or processor_type: python with processor_path")
    entry = _lookup(code)
    if entry is None:
        raise UnknownProcessorError(
            f"unknown processor {processor!r}; supported: {supported} "
            "(or processor_type: python for your own code)")
    if entry.target is None:
        raise UnknownProcessorError(
            f"processor {processor!r} is a known EAS processor ({entry.code}) but is not yet "
            f"supported here; supported: {supported}, or processor_type: python")
    return _load(entry.target)
