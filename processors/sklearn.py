"""scikit-learn (and any pickled object with `predict`) served from a pickle/joblib file.

Nothing here imports scikit-learn: unpickling imports whatever the model needs, so
the same processor also serves pickled xgboost/lightgbm sklearn-API estimators.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from ._files import find_model_file, model_config_dict
from ._tabular import TabularProcessor
from .base import ModelContext, ModelLoadError, ProcessorError

MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _unpickle(path: Any) -> Any:
    try:
        import joblib
    except ImportError:  # joblib is optional; plain pickles still load
        with open(path, "rb") as f:
            return pickle.load(f)
    return joblib.load(path)  # reads plain pickles too


class SklearnProcessor(TabularProcessor):
    """`{"instances": [[f1, ...], ...]}` -> `{"predictions": [...]}` (+ `probabilities`)."""

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.return_proba = False

    def load(self) -> None:
        path = find_model_file(self.ctx, MODEL_SUFFIXES, "sklearn")
        config = model_config_dict(self.ctx.model_config)
        try:
            model = _unpickle(path)
        except ModuleNotFoundError as exc:
            raise ModelLoadError(
                f"{path.name} needs Python module {exc.name!r}, which is not installed") from None
        except Exception as exc:  # any unpickling failure means "not a model file"
            raise ModelLoadError(
                f"{path.name} is not a valid pickle/joblib file: {type(exc).__name__}: {exc}") from None
        if not callable(getattr(model, "predict", None)):
            raise ModelLoadError(
                f"{path.name} holds a {type(model).__module__}.{type(model).__qualname__} object, "
                "which has no predict() method")
        self.return_proba = bool(config.get("return_proba", False))
        if self.return_proba and not callable(getattr(model, "predict_proba", None)):
            raise ModelLoadError(
                f"model_config asks for return_proba but {type(model).__name__} has no predict_proba()")
        self.model = model

    def _infer(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs keyed by answer field; one row per input row."""
        try:
            out = {"predictions": np.asarray(self.model.predict(features))}
            if self.return_proba:
                out["probabilities"] = np.asarray(self.model.predict_proba(features))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ProcessorError(f"model rejected the input: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            raise ProcessorError(f"model failed: {type(exc).__name__}: {exc}", status=500) from None
        return out
