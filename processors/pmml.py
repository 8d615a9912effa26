"""PMML models, evaluated by pypmml (PMML4S on a JVM).

Why pypmml: it implements the whole PMML 4.4 standard (every model element, the
transformations and output fields that exporters such as sklearn2pmml, R and Spark
write), it is Apache-2.0 (jpmml-evaluator wraps the AGPL JPMML-Evaluator, which an
Apache-2.0 server should not link), and it is maintained. The pure-Python
sklearn-pmml-model needs no Java but covers only a few model types and none of the
PMML transformations, so most real-world PMML files would not load. The cost is a
JVM per instance (Java 11+ on PATH or JAVA_HOME), started by pypmml at load.

Requests: `{"instances": [row, ...]}` where a row is an object keyed by the model's
input field names, or a list in `inputNames` order. Answers: `{"predictions": [...]}`,
one object of the model's output fields per row.
"""

from __future__ import annotations

import math
from typing import Any

from ._files import find_model_file
from ._jsonio import instances_of, to_jsonable
from .base import ModelLoadError, Processor, ProcessorError, Request, Response, json_response, parse_json_body

MODEL_SUFFIXES = (".pmml", ".xml")
_NUMERIC = {"double", "float", "integer"}


class PmmlProcessor(Processor):
    """Rows in (objects or ordered lists), one object of PMML output fields per row out."""

    def load(self) -> None:
        path = find_model_file(self.ctx, MODEL_SUFFIXES, "PMML")
        try:
            from pypmml import Model
        except ImportError as exc:
            raise ModelLoadError(f"the pmml processor needs pypmml (pip install eas-serving[pmml]): {exc}") from None
        try:
            self.model = Model.fromFile(str(path))
        except Exception as exc:  # PMMLError, py4j errors, a missing java binary
            detail = exc.args[-1] if getattr(exc, "args", None) else exc
            raise ModelLoadError(f"{path.name} is not a valid PMML model: {type(exc).__name__}: {detail}") from None
        self.fields = [(f.name, str(f.dataType).lower()) for f in self.model.inputFields]
        self.outputs = list(self.model.outputNames)

    def _row(self, i: int, row: Any) -> list[Any]:
        """One instance as a list in input-field order, each value checked against its type."""
        names = [name for name, _ in self.fields]
        if isinstance(row, dict):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise ProcessorError(f"instance {i}: unknown field {', '.join(map(repr, unknown))}; "
                                     f"model fields: {self._fields_text()}")
            values = [row.get(name) for name in names]  # absent = missing, PMML's missing-value rules apply
        elif isinstance(row, list):
            if len(row) != len(names):
                raise ProcessorError(f"instance {i}: model expects {len(names)} fields "
                                     f"({self._fields_text()}), received {len(row)}")
            values = list(row)
        else:
            raise ProcessorError(f"instance {i} must be an object keyed by field name or a list of "
                                 f"{len(names)} values, got {type(row).__name__}")
        for (name, dtype), value in zip(self.fields, values):
            if value is None:
                continue
            if dtype in _NUMERIC and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ProcessorError(f"instance {i}: field {name!r} expects {dtype}, received "
                                     f"{type(value).__name__} {value!r:.40}")
            if isinstance(value, (list, dict)):
                raise ProcessorError(f"instance {i}: field {name!r} expects a single {dtype} value")
        return values

    def _fields_text(self) -> str:
        return ", ".join(f"{n} ({t})" for n, t in self.fields)

    def predict(self, request: Request) -> Response:
        payload = parse_json_body(request.body)
        if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            # Objects keyed by field name are rows here, not BML {"features": [...]} wrappers.
            instances = [row["features"] if isinstance(row, dict) and set(row) == {"features"}
                         and "features" not in dict(self.fields) else row for row in payload["instances"]]
        else:
            instances = instances_of(payload)
        rows = [self._row(i, row) for i, row in enumerate(instances)]
        if not rows:
            return json_response({"predictions": []})
        try:
            results = self.model.predict(rows)
        except Exception as exc:
            detail = exc.args[-1] if getattr(exc, "args", None) else exc
            raise ProcessorError(f"the PMML model rejected the input: {detail}") from None
        return json_response({"predictions": [self._named(r) for r in results]})

    def _named(self, values: Any) -> dict[str, Any]:
        if isinstance(values, dict):
            return {k: _clean(v) for k, v in values.items()}
        return {name: _clean(v) for name, v in zip(self.outputs, values)}


def _clean(value: Any) -> Any:
    """NaN (PMML's "no result") as JSON null; numpy scalars as plain numbers."""
    value = to_jsonable(value)
    return None if isinstance(value, float) and math.isnan(value) else value
