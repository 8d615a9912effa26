"""Which processor class serves a service: built-in codes, EAS aliases, user code.

The gateway imports this module to validate service JSON, so framework modules are
named as strings and imported only when a code is resolved: the server process never
pays for (or needs) scikit-learn or onnxruntime.

Each framework comes with an extra of the package (`pip install "eas-serving[torch]"`);
a plain `pip install eas-serving` has none of them. `check_framework` tells, without
importing anything, whether the framework of a code is installed, and fails with the
exact pip command when not: the controller calls it before deploying (the service is
Failed with that command within a second) and `create_processor` again in the instance.

Adding a framework: write processors/<name>.py, then set its `target`, `modules` and
`extra` in TABLE (and add the extra to pyproject.toml).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .base import Processor
from .requirements import REQUIREMENTS_FILE

PYTHON_PROCESSOR = ".python:PythonProcessor"


@dataclass(frozen=True)
class Entry:
    code: str
    target: str | None
    """`.module:Class` inside this package; None = an EAS code we know but do not serve yet."""
    aliases: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    """EAS versioned codes, e.g. `tensorflow_cpu_1.15` starts with `tensorflow_cpu_`."""
    modules: tuple[str, ...] = ()
    """The top-level Python modules the processor imports to load a model (its framework)."""
    extra: str | None = None
    """The extra of the eas-serving package that installs `modules` (pyproject.toml)."""


TABLE: tuple[Entry, ...] = (
    Entry("sklearn", ".sklearn:SklearnProcessor", aliases=("scikit-learn", "sklearn_cpu"),
          modules=("sklearn",), extra="sklearn"),
    Entry("onnx", ".onnx:OnnxProcessor", aliases=("onnx_cpu", "onnxruntime"),
          modules=("onnxruntime",), extra="onnx"),
    Entry("pmml", ".pmml:PmmlProcessor", modules=("pypmml",), extra="pmml"),
    Entry("xgboost", ".xgboost:XGBoostProcessor", aliases=("xgboost_cpu",),
          modules=("xgboost",), extra="xgboost"),
    Entry("lightgbm", ".lightgbm:LightGBMProcessor", aliases=("lightgbm_cpu", "lgbm"),
          modules=("lightgbm",), extra="lightgbm"),
    Entry("tensorflow", ".tensorflow:TensorFlowProcessor", aliases=("tensorflow_cpu", "tf"),
          prefixes=("tensorflow_cpu_", "tensorflow_gpu_"), modules=("tensorflow",), extra="tensorflow"),
    Entry("pytorch", ".pytorch:PyTorchProcessor", aliases=("torch", "pytorch_cpu", "torchscript"),
          prefixes=("pytorch_cpu_", "pytorch_gpu_"), modules=("torch",), extra="torch"),
    Entry("paddle", ".paddle:PaddleProcessor", aliases=("paddlepaddle", "paddle_cpu"),
          modules=("paddle",), extra="paddle"),
)


class UnknownProcessorError(ValueError):
    """The service names a processor we cannot serve (the control plane answers 400)."""


class MissingFrameworkError(ValueError):
    """A built-in processor's framework is not installed; the message names the pip command.

    A ValueError, like the other "this service cannot run" errors: the controller and the
    instance runtime show its text as the service's Failed reason, as is.
    """


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


def _not_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return True


def missing_framework(processor: str | None, processor_type: str | None = None) -> str | None:
    """Why a built-in processor cannot load here (one line with the pip command), or None.

    Only looks for the framework's modules (no import: cheap, and safe in the server).
    None too for user code (`processor_type: python`) and for codes `resolve` refuses.
    """
    if (processor_type or "").strip().lower() == "python":
        return None
    entry = _lookup((processor or "").strip().lower())
    if entry is None or entry.target is None or entry.extra is None:
        return None
    absent = [m for m in entry.modules if _not_installed(m)]
    if not absent:
        return None
    names = ("module " if len(absent) == 1 else "modules ") + ", ".join(repr(m) for m in absent)
    return (f"the {entry.code} processor needs the Python {names}, which is not installed; "
            f"run: pip install \"eas-serving[{entry.extra}]\"")


def check_framework(processor: str | None, processor_type: str | None = None, *,
                    code_dir: str | None = None) -> None:
    """Raise MissingFrameworkError when the processor's framework is not installed here.

    `code_dir`: the service's fetched `processor_path`, given by the controller before a
    deploy; when it holds a requirements.txt, the service's own environment (built by
    Ray, not visible here) may bring the framework, so only the instance checks.
    """
    if code_dir is not None and (Path(code_dir) / REQUIREMENTS_FILE).is_file():
        return
    reason = missing_framework(processor, processor_type)
    if reason is not None:
        raise MissingFrameworkError(reason)
