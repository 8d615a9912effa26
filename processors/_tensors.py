"""Named-tensor models (ONNX, TensorFlow, PyTorch, Paddle): checking and decoding inputs.

Every tensor framework fails on a wrong dtype or shape with its own cryptic text, or
worse, silently broadcasts. Checking the request against what the model declares,
before the call, gives one kind of 400 for all of them: the input's name, what the
model expects and what the client sent. JSON requests in the TF-Serving spellings
(`{"inputs": ...}` columnar, `{"instances": [...]}` row form) decode here too, so
every tensor processor reads them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._jsonio import instances_of, to_jsonable
from .base import Budget, ProcessorError, nested_shape

Dim = int | str | None
"""A fixed dimension (int) or a dynamic one (None, or a symbolic name)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, dtype and shape as the model declares them."""

    name: str
    dtype: np.dtype | None
    """None = the model did not say (anything numeric goes through unchanged)."""
    shape: tuple[Dim, ...] | None
    """Fixed dims are ints; dynamic dims are str/None; None = any rank."""
    type_name: str = ""
    """The framework's own spelling of the dtype for messages (`tensor(float)`, `float32`)."""

    def type_text(self) -> str:
        if self.type_name:
            return self.type_name
        return "any dtype" if self.dtype is None else dtype_text(self.dtype)

    def shape_text(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape) + "]"

    def describe(self) -> str:
        return f"{self.name} ({self.type_text()} {self.shape_text()})"


def dtype_text(dtype: np.dtype) -> str:
    return "string" if dtype.kind in "OUS" else str(dtype)


def normalize_shape(dims: Sequence[Any] | None) -> tuple[Dim, ...] | None:
    """Framework shapes (-1/None/'N' for dynamic dims) in TensorSpec form."""
    if dims is None:
        return None
    return tuple(d if isinstance(d, str) else (int(d) if d is not None and int(d) >= 0 else None)
                 for d in dims)


# ---------------------------------------------------------------- checking one input

def mismatch(spec: TensorSpec, array: np.ndarray, reason: str) -> ProcessorError:
    """The one 400 for a bad input: names the input, the expected and the received."""
    return _mismatch(spec, array.dtype, array.shape, reason)


def _mismatch(spec: TensorSpec, dtype: np.dtype, shape: Sequence[int], reason: str) -> ProcessorError:
    return ProcessorError(
        f"input {spec.name!r} expects {spec.type_text()} with shape {spec.shape_text()}; "
        f"received {dtype_text(np.dtype(dtype))} with shape {list(shape)}: {reason}")


def _as_str_array(array: np.ndarray) -> np.ndarray:
    """String tensors as an object array of str (protobuf sends bytes)."""
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.flat]
    return out


def cast(spec: TensorSpec, array: np.ndarray, *, strings_as: str = "str") -> np.ndarray:
    """Cast to the model's dtype where no value changes meaning (float64 -> float32 allowed).

    Integers are accepted for float inputs; floats for integer inputs only when whole;
    out-of-range integers and text for numbers are refused. `strings_as="bytes"` keeps
    string tensors as bytes (TensorFlow wants bytes, onnxruntime wants str).
    """
    target = spec.dtype
    kind = array.dtype.kind
    if target is None:
        if kind == "O" and not all(isinstance(v, (str, bytes)) for v in array.flat):
            raise mismatch(spec, array, "values must be numbers or strings in evenly nested lists")
        return array
    if array.dtype == target and kind != "O":
        return array
    if target.kind in "OSU":  # even object arrays: protobuf strings arrive as bytes
        if kind in "US" or (kind == "O" and all(isinstance(v, (str, bytes)) for v in array.flat)):
            if strings_as == "bytes":
                out = np.empty(array.shape, dtype=object)
                out.flat[:] = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.flat]
                return out
            try:
                return _as_str_array(array)
            except UnicodeDecodeError:
                raise mismatch(spec, array, "a string is not valid UTF-8") from None
        raise mismatch(spec, array, "the model takes strings")
    if kind not in "biuf":
        raise mismatch(spec, array, "the model takes numbers")
    if target.kind in "fc":
        return array.astype(target)
    if target.kind in "iu":
        if kind == "f":
            if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
                raise mismatch(spec, array, "the model takes integers")
        if array.size and kind != "b":
            info = np.iinfo(target)
            if array.min() < info.min or array.max() > info.max:
                raise mismatch(spec, array, f"a value is out of range for {target}")
        return array.astype(target)
    if target.kind == "b" and (kind == "b" or np.isin(array, (0, 1)).all()):
        return array.astype(np.bool_)
    raise mismatch(spec, array, f"cannot be read as {target}")


def shape_problem(spec: TensorSpec, shape: Sequence[int]) -> str | None:
    """What is wrong with `shape` for this input (rank, a fixed dimension), or None."""
    if spec.shape is None:
        return None
    if len(shape) != len(spec.shape):
        hint = "; wrap a single instance in a list" if len(shape) == len(spec.shape) - 1 else ""
        return f"rank {len(shape)} instead of {len(spec.shape)}{hint}"
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int) and want != got:
            return f"dimension {axis} is {got}, the model needs {want}"
    return None


def check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    """Rank and every fixed dimension must match; dynamic dimensions take anything."""
    problem = shape_problem(spec, array.shape)
    if problem:
        raise mismatch(spec, array, problem)


def check_declared(spec: TensorSpec, shape: Sequence[int], dtype: Any) -> None:
    """A shape a request declares, checked before anything of that size is allocated:
    the same 400 `check_shape` gives the decoded array."""
    problem = shape_problem(spec, shape)
    if problem:
        raise _mismatch(spec, dtype, shape, problem)


def from_json(spec: TensorSpec, value: Any, budget: Budget | None = None) -> np.ndarray:
    """A JSON value (nested lists) as an array, refusing ragged or mixed nesting.

    The shape the lists imply is counted against `budget` before numpy copies them.
    """
    if budget is not None:
        budget.take(f"input {spec.name!r}", nested_shape(value, f"input {spec.name!r}"), 8)
    wants_text = spec.dtype is not None and spec.dtype.kind in "OSU"
    try:
        array = np.asarray(value, dtype=object if wants_text else None)
    except ValueError as exc:
        raise ProcessorError(f"input {spec.name!r}: nested lists of uneven lengths ({exc})") from None
    if array.dtype.kind == "O" and not wants_text and not all(isinstance(v, (str, bytes)) for v in array.flat):
        raise ProcessorError(f"input {spec.name!r} expects {spec.type_text()}: "
                             "values must be numbers in evenly nested lists")
    return array


def checked(spec: TensorSpec, array: np.ndarray, *, strings_as: str = "str") -> np.ndarray:
    """Shape first (so errors show what the client sent), then the dtype cast."""
    check_shape(spec, array)
    return cast(spec, array, strings_as=strings_as)


# ---------------------------------------------------------------- whole requests

def describe_all(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(s.describe() for s in specs.values()) or "none"


def collect_feeds(
    specs: Mapping[str, TensorSpec],
    raw: Mapping[str, Any],
    to_array: Callable[[TensorSpec, Any, Budget], np.ndarray],
    *,
    strings_as: str = "str",
    budget: Budget | None = None,
) -> dict[str, np.ndarray]:
    """Checked, cast arrays for every model input; unknown and missing names are 400s.

    `to_array(spec, value, budget)` decodes one input; it checks what the value
    declares against `spec` and `budget` (this request's, shared by its inputs) before
    it allocates.
    """
    budget = budget if budget is not None else Budget()
    feeds = {}
    for name, value in raw.items():
        spec = specs.get(name)
        if spec is None:
            raise ProcessorError(f"unknown input {name!r}; model inputs: {describe_all(specs)}")
        feeds[name] = checked(spec, to_array(spec, value, budget), strings_as=strings_as)
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise ProcessorError(
            f"missing input {', '.join(map(repr, missing))}; model inputs: {describe_all(specs)}")
    return feeds


def pick_outputs(outputs: Mapping[str, TensorSpec], wanted: Any) -> list[str]:
    """The `output_filter` names (all outputs when empty), each checked to exist."""
    if not wanted:
        return list(outputs)
    if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
        raise ProcessorError("output_filter must be a list of output names")
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise ProcessorError(f"unknown output {', '.join(map(repr, unknown))}; model outputs: "
                             + describe_all(outputs))
    return list(wanted)


@dataclass
class JsonCall:
    """A decoded JSON request: raw values per input, the outputs asked for, the answer form."""

    raw: dict[str, Any]
    outputs: list[str]
    form: str  # "inputs" (columnar) | "instances" (rows)


def _rows_to_columns(rows: list[Any], inputs: Mapping[str, TensorSpec]) -> dict[str, Any]:
    """TF-Serving row form for several inputs: `[{"a": .., "b": ..}, ...]` -> columns."""
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ProcessorError(
                f'"instances" works for single-input models only, or with each instance an object '
                f"naming the inputs (TF Serving row format); instance {i} is a {type(row).__name__}; "
                f'model inputs: {describe_all(inputs)}; or send {{"inputs": {{name: values}}}}')
        if i and set(row) != set(columns):
            raise ProcessorError(f"instance {i} names inputs {sorted(row)}, instance 0 names {sorted(columns)}")
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    return columns


def decode_json(payload: Any, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec],
                *, first_output_only: bool = False) -> JsonCall:
    """`{"inputs": {name: v} | v}` or `{"instances": [...]}` (+ optional `output_filter`).

    Row-form instances feed a single-input model directly; for several inputs each
    row is an object keyed by input name (TF Serving's row format).
    """
    wanted = payload.get("output_filter") if isinstance(payload, dict) else None
    if isinstance(payload, dict) and "inputs" in payload:
        raw = payload["inputs"]
        if not isinstance(raw, dict):
            if len(inputs) != 1:
                raise ProcessorError(
                    f'"inputs" must map input names to values; model inputs: {describe_all(inputs)}')
            raw = {next(iter(inputs)): raw}
        return JsonCall(dict(raw), pick_outputs(outputs, wanted), "inputs")
    if isinstance(payload, dict) and "instances" not in payload:
        raise ProcessorError(
            'expected {"inputs": {name: values}} or {"instances": [...]}; the object has keys: '
            + (", ".join(sorted(map(str, payload))) or "none"))
    if len(inputs) == 1:
        raw_rows: Any = instances_of(payload)
        raw = {next(iter(inputs)): raw_rows}
    else:
        rows = payload["instances"] if isinstance(payload, dict) else payload
        if not isinstance(rows, list):
            raise ProcessorError(f'"instances" must be a list, got {type(rows).__name__}')
        raw = _rows_to_columns(rows, inputs)
    names = pick_outputs(outputs, wanted)
    return JsonCall(raw, names[:1] if first_output_only else names, "instances")


def json_outputs(form: str, results: Mapping[str, Any], *, single_unwrapped: bool) -> dict[str, Any]:
    """The JSON answer to a `form` request, from `results` (output name -> value, in order).

    `{"predictions": rows}` answers row requests, `{"outputs": ...}` columnar ones.
    With one output, predictions are its rows; with several, one object per row
    (TF Serving). `single_unwrapped` writes a lone columnar output as its bare value
    (TF Serving) instead of `{name: value}`.
    """
    names = list(results)
    if form == "instances":
        if len(names) == 1:
            return {"predictions": to_jsonable(results[names[0]])}
        columns = {n: np.asarray(results[n]) for n in names}
        count = min((len(c) for c in columns.values() if c.ndim), default=0)
        return {"predictions": [{n: to_jsonable(c[i]) for n, c in columns.items()} for i in range(count)]}
    if single_unwrapped and len(names) == 1:
        return {"outputs": to_jsonable(results[names[0]])}
    return {"outputs": {n: to_jsonable(results[n]) for n in names}}
