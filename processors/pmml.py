"""PMML models, evaluated by pypmml (PMML4S on a JVM).

Why pypmml: it implements the whole PMML 4.4 standard (every model element, the
transformations and output fields that exporters such as sklearn2pmml, R and Spark
write), it is Apache-2.0 (jpmml-evaluator wraps the AGPL JPMML-Evaluator, which an
Apache-2.0 server should not link), and it is maintained. The pure-Python
sklearn-pmml-model needs no Java but covers only a few model types and none of the
PMML transformations, so most real-world PMML files would not load. The cost is a
JVM per instance (Java 11+ on PATH or JAVA_HOME), started by pypmml at load.

Requests, as EAS's PMML processor takes them: a bare JSON list of rows
(`[{"sex": 0, "cp": 1, ...}]`, or one row object alone) answered by a bare list of
output objects (`[{"p_0": 0.3, "p_1": 0.7}]`, so `[0].p_1` reads a score), or
`{"instances": [row, ...]}` answered by `{"predictions": [...]}`. A row is an object
keyed by the model's input field names, or a list in input-field order.

Missing values are imputed as EAS does: a field that is absent or null takes its
MiningField's `missingValueReplacement` when the PMML declares one (PMML's own rule),
else the default of its type: false, 0.0, 0 or "" (`DEFAULT_FILL`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from ._files import find_model_file
from ._jsonio import instances_of, to_jsonable
from .base import ModelLoadError, Processor, ProcessorError, Request, Response, json_response, parse_json_body

MODEL_SUFFIXES = (".pmml", ".xml")
_NUMERIC = {"double", "float", "integer"}
#: What EAS fills in for a missing value when the PMML declares no replacement, by dataType.
DEFAULT_FILL: dict[str, Any] = {"double": 0.0, "float": 0.0, "integer": 0, "boolean": False, "string": ""}


def declared_replacements(path: Path) -> set[str]:
    """Fields whose MiningField declares a `missingValueReplacement` (PMML replaces those)."""
    names = set()
    for _, element in ElementTree.iterparse(path):
        if element.tag.rsplit("}", 1)[-1] == "MiningField" and element.get("missingValueReplacement") is not None:
            names.add(element.get("name", ""))
        element.clear()
    return names


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
        try:
            replaced = declared_replacements(path)
        except ElementTree.ParseError as exc:
            raise ModelLoadError(f"{path.name} is not a valid PMML model: {exc}") from None
        # Missing values EAS's way: PMML's replacement where declared, else the type's default.
        self.fill = {name: DEFAULT_FILL.get(dtype) for name, dtype in self.fields if name not in replaced}

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
        for index, ((name, dtype), value) in enumerate(zip(self.fields, values)):
            if value is None:
                values[index] = self.fill.get(name)
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
        fields = dict(self.fields)
        bare = not (isinstance(payload, dict) and "instances" in payload and "instances" not in fields)
        if not bare:
            # Objects keyed by field name are rows here, not BML {"features": [...]} wrappers.
            instances = [row["features"] if isinstance(row, dict) and set(row) == {"features"}
                         and "features" not in fields else row for row in payload["instances"]] \
                if isinstance(payload["instances"], list) else instances_of(payload)
        elif isinstance(payload, dict):
            instances = [payload]  # one row object alone
        elif isinstance(payload, list):
            instances = payload
        else:
            raise ProcessorError(f"expected a JSON list of rows ([{{field: value, ...}}]) or {{\"instances\": [...]}}; "
                                 f"got {type(payload).__name__}")
        rows = [self._row(i, row) for i, row in enumerate(instances)]
        results = self._evaluate(rows) if rows else []
        named = [self._named(r) for r in results]
        return json_response(named if bare else {"predictions": named})

    def _evaluate(self, rows: list[list[Any]]) -> list[Any]:
        try:
            return list(self.model.predict(rows))
        except Exception as exc:
            detail = exc.args[-1] if getattr(exc, "args", None) else exc
            raise ProcessorError(f"the PMML model rejected the input: {detail}") from None

    def _named(self, values: Any) -> dict[str, Any]:
        if isinstance(values, dict):
            return {k: _clean(v) for k, v in values.items()}
        return {name: _clean(v) for name, v in zip(self.outputs, values)}


def _clean(value: Any) -> Any:
    """NaN (PMML's "no result") as JSON null; numpy scalars as plain numbers."""
    value = to_jsonable(value)
    return None if isinstance(value, float) and math.isnan(value) else value
