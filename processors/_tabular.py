"""Row-oriented models (sklearn, xgboost, lightgbm): JSON feature rows in, predictions out.

They share one request shape (`{"instances": [[f1, f2, ...], ...]}`, BML
`{"features": [...]}` rows) and one batched path, plus BML's tabular API
(`{"include_req": bool, "data": [{feature: value}, ...]}` -> `{"batch_results": [...]}`), so only loading the model and the
call itself differ per framework: subclasses set `self.model`/`n_features` and
implement `_infer`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._files import model_config_dict
from ._jsonio import instances_of, to_jsonable
from .base import (
    ModelContext,
    Processor,
    ProcessorError,
    Request,
    Response,
    decode_error,
    error_response,
    json_response,
    parse_json_body,
    predict_or_error,
)


class TabularProcessor(Processor):
    """`{"instances": [[f1, ...], ...]}` -> `{"predictions": [...]}`, batched across requests."""

    supports_batching = True
    inline_safe = True
    #: Rows may hold text (pipelines with their own encoders); False: numbers or null only.
    allow_text_features = True

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.model: Any = None

    def n_features(self) -> int | None:
        """Features per row the model needs, when it says."""
        return getattr(self.model, "n_features_in_", None)

    def _infer(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs keyed by answer field; one row per input row."""
        raise NotImplementedError

    # ------------------------------------------------------------------ parsing

    def _features(self, request: Request) -> np.ndarray:
        """The request's rows as a 2-D array; whatever fails while decoding is its 4xx."""
        try:
            return self._decode_rows(request)
        except Exception as exc:
            raise decode_error(exc) from None

    def _decode_rows(self, request: Request) -> np.ndarray:
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
        expected = self.n_features()
        if rows and expected is not None and width != expected:
            raise ProcessorError(
                f"model expects {expected} features per instance, received {width}")
        self.decode_limits.budget().take("instances", [len(rows), width or 0], 8)
        try:
            return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)
        except (TypeError, ValueError):
            if not self.allow_text_features:
                raise ProcessorError("instances must hold numbers (or null for a missing value)") from None
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

    # ------------------------------------------------------------------ answering

    def _answer(self, outputs: dict[str, np.ndarray], start: int, stop: int) -> Response:
        return json_response({key: to_jsonable(value[start:stop]) for key, value in outputs.items()})

    # ------------------------------------------------------------------ BML's tabular API

    def feature_names(self) -> list[str] | None:
        """Column order for named features: `model_config.feature_names`, else what the
        model learned (`feature_names_in_`); None: the first row's key order."""
        names = model_config_dict(self.ctx.model_config).get("feature_names")
        if names is None:
            names = getattr(self.model, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    def _table(self, request: Request) -> tuple[list[dict[str, Any]], bool] | None:
        """BML's tabular request, or None for any other shape."""
        if b'"data"' not in request.body:
            return None
        try:
            body = parse_json_body(request.body)
        except ProcessorError:
            return None
        if not isinstance(body, dict) or "data" not in body or "instances" in body:
            return None
        rows = body["data"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ProcessorError('"data" must be a list of {feature: value} objects')
        return rows, bool(body.get("include_req", False))

    def _table_answer(self, rows: list[dict[str, Any]], include_req: bool) -> Response:
        names = self.feature_names() or (list(rows[0]) if rows else [])
        for i, row in enumerate(rows):
            missing = [n for n in names if n not in row]
            if missing:
                raise ProcessorError(f"data[{i}] lacks {', '.join(missing[:5])} (features: {', '.join(names)})")
        self.decode_limits.budget().take("data", [len(rows), len(names)], 8)
        matrix = [[row[n] for n in names] for row in rows]
        try:
            features = np.asarray(matrix, dtype=np.float64).reshape(len(rows), len(names))
        except (TypeError, ValueError):
            features = np.empty((len(rows), len(names)), dtype=object)
            features[:] = matrix
        outputs = self._infer(features) if rows else {}
        results = []
        for i, row in enumerate(rows):
            result: dict[str, Any] = dict(row) if include_req else {}
            for key, value in outputs.items():
                result["prediction" if key == "predictions" else key] = to_jsonable(value[i])
            results.append(result)
        return json_response({"batch_results": results})

    def predict(self, request: Request) -> Response:
        table = self._table(request)
        if table is not None:
            return self._table_answer(*table)
        features = self._features(request)
        if not len(features):
            return json_response({"predictions": []})
        return self._answer(self._infer(features), 0, len(features))

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """One model call for all well-formed requests; a bad one fails alone."""
        responses: list[Response] = []
        parsed: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            if b'"data"' in request.body:  # maybe BML's tabular API: answered on its own
                responses.append(predict_or_error(self, request))
                continue
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
        except Exception:  # the model failed on the joint rows: find the culprit below
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

