"""scikit-learn (and any pickled object with `predict`) served from a pickle/joblib file.

Nothing here imports scikit-learn: unpickling imports whatever the model needs, so
the same processor also serves pickled xgboost/lightgbm sklearn-API estimators.
"""

from __future__ import annotations

import pickle
from typing import Any, Sequence

import numpy as np

from ._files import find_model_file, model_config_dict
from ._jsonio import instances_of, to_jsonable
from .base import (
    ModelContext,
    ModelLoadError,
    Processor,
    ProcessorError,
    Request,
    Response,
    error_response,
    json_response,
    parse_json_body,
    predict_or_error,
)

MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _unpickle(path: Any) -> Any:
    try:
        import joblib
    except ImportError:  # joblib is optional; plain pickles still load
        with open(path, "rb") as f:
            return pickle.load(f)
    return joblib.load(path)  # reads plain pickles too


class SklearnProcessor(Processor):
    """`{"instances": [[f1, ...], ...]}` -> `{"predictions": [...]}` (+ `probabilities`)."""

    supports_batching = True

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.model: Any = None
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

    # ------------------------------------------------------------------ parsing

    def _features(self, request: Request) -> np.ndarray:
        """The request's rows as a 2-D array, checked against the model's feature count."""
        rows = instances_of(parse_json_body(request.body))
        width = None
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise ProcessorError(
                    f"instance {i} must be a list of features, got {type(row).__name__}")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise ProcessorError(
                    f"instances differ in length: instance 0 has {width} features, "
                    f"instance {i} has {len(row)}")
        expected = getattr(self.model, "n_features_in_", None)
        if rows and expected is not None and width != expected:
            raise ProcessorError(
                f"model expects {expected} features per instance, received {width}")
        try:
            return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)
        except (TypeError, ValueError):
            # Mixed text/number rows, for pipelines with their own encoders.
            features = np.empty((len(rows), width or 0), dtype=object)
            try:
                features[:] = rows
            except ValueError:
                nested = True
            else:
                nested = any(isinstance(v, (list, dict)) for v in features.flat)
            if nested:
                raise ProcessorError("instances must be flat lists of feature values")
            return features

    # ------------------------------------------------------------------ inference

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

    def _answer(self, outputs: dict[str, np.ndarray], start: int, stop: int) -> Response:
        return json_response({key: to_jsonable(value[start:stop]) for key, value in outputs.items()})

    def predict(self, request: Request) -> Response:
        features = self._features(request)
        if not len(features):
            return json_response({"predictions": []})
        return self._answer(self._infer(features), 0, len(features))

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """One model call for all well-formed requests; a bad one fails alone."""
        responses: list[Response] = []
        parsed: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                features = self._features(request)
            except ProcessorError as exc:
                responses.append(error_response(exc, request.request_id))
                continue
            responses.append(json_response({"predictions": []}))  # replaced below unless empty
            if len(features):
                parsed.append((i, features))
        if not parsed:
            return responses
        total = sum(len(f) for _, f in parsed)
        try:
            outputs = self._infer(np.concatenate([f for _, f in parsed]))
            joint = all(len(v) == total for v in outputs.values())
        except (ProcessorError, ValueError, TypeError):
            joint = False
        if not joint:
            # The joint call failed (or its output does not line up with the rows):
            # answer each request alone so only the culprit sees an error.
            for i, _ in parsed:
                responses[i] = predict_or_error(self, requests[i])
            return responses
        start = 0
        for i, features in parsed:
            responses[i] = self._answer(outputs, start, start + len(features))
            start += len(features)
        return responses

