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

    # ------------------------------------------------------------------ Open Inference Protocol
    # Outputs carry the names of the JSON answer's fields: `predictions`, and
    # `probabilities` (predict_proba) for models that have it.

    def _v2_outputs(self) -> list[str]:
        return ["predictions"] + (["probabilities"] if callable(getattr(self.model, "predict_proba", None)) else [])

    def metadata_v2(self) -> dict[str, Any]:
        width = self.n_features()
        classes = getattr(self.model, "classes_", None)
        labels = np.asarray(classes).dtype if classes is not None else np.dtype(np.float64)
        outputs = [{"name": "predictions", "dtype": labels, "shape": [-1]}]
        if "probabilities" in self._v2_outputs():
            outputs.append({"name": "probabilities", "dtype": np.dtype(np.float64),
                            "shape": [-1, len(classes) if classes is not None else -1]})
        return {"platform": "sklearn",
                "inputs": [{"name": "input", "dtype": np.dtype(np.float64),
                            "shape": [-1, width if isinstance(width, int) else -1]}],
                "outputs": outputs}

    def infer_v2(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        """One input (any name): a [rows, features] matrix."""
        if len(inputs) != 1:
            raise ProcessorError(f"sklearn models take one input, a [rows, features] matrix; received "
                                 f"{len(inputs)}: {', '.join(map(repr, inputs))}")
        ((name, features),) = inputs.items()
        if features.ndim != 2:
            raise ProcessorError(f"input {name!r} must be a [rows, features] matrix (rank 2); received "
                                 f"shape {list(features.shape)}")
        expected = self.n_features()
        if expected is not None and features.shape[1] != expected:
            raise ProcessorError(f"input {name!r}: the model expects {expected} features per row, "
                                 f"received {features.shape[1]} (shape {list(features.shape)})")
        if not len(features):
            raise ProcessorError(f"input {name!r} has no rows")
        if features.dtype.kind == "O":  # BYTES: text features, for pipelines with their own encoders
            features = np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                                    otypes=[object])(features)
        available = self._v2_outputs()
        wanted = outputs if outputs is not None else ["predictions"] + (["probabilities"] if self.return_proba else [])
        unknown = [n for n in wanted if n not in available]
        if unknown:
            raise ProcessorError(f"unknown output {', '.join(map(repr, unknown))}; this model has: "
                                 + ", ".join(available))
        try:
            return {out: np.asarray((self.model.predict if out == "predictions" else self.model.predict_proba)(features))
                    for out in wanted}
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ProcessorError(f"model rejected input {name!r}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            raise ProcessorError(f"model failed: {type(exc).__name__}: {exc}", status=500) from None
