"""ONNX models on onnxruntime, fed JSON or the EAS TF PredictRequest protobuf.

The protobuf path exists because the official SDK's `TFRequest` is what EAS users
already send; JSON is what curl users send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import tfproto
from ._files import find_model_file, model_config_dict
from ._jsonio import instances_of, is_json_request, to_jsonable
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

_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as onnxruntime reports it."""

    name: str
    onnx_type: str
    shape: tuple[int | str | None, ...] | None
    """Fixed dims are ints; named or unknown (dynamic) dims are str/None; None = any rank."""

    @property
    def dtype(self) -> np.dtype | None:
        found = _ORT_DTYPES.get(self.onnx_type)
        return None if found is None else np.dtype(found)

    @property
    def is_tensor(self) -> bool:
        return self.onnx_type.startswith("tensor(")

    def shape_text(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape) + "]"

    def describe(self) -> str:
        return f"{self.name} ({self.onnx_type} {self.shape_text()})"

    @classmethod
    def from_ort(cls, arg: Any) -> "TensorSpec":
        shape = arg.shape
        return cls(arg.name, arg.type, None if shape is None else tuple(
            d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None) for d in shape))


# ---------------------------------------------------------------- session options

def _graph_level(ort: Any, value: Any) -> Any:
    """Accept ORT's enum names, their short forms (`all`, `basic`...) or numbers."""
    levels = ort.GraphOptimizationLevel.__members__
    aliases: dict[str, Any] = {}
    for name, member in levels.items():
        short = name.removeprefix("ORT_")
        for key in (name, short, short.removeprefix("ENABLE_"), short.removesuffix("_ALL"),
                    str(int(member))):
            aliases.setdefault(key.lower(), member)
    found = aliases.get(str(value).strip().lower())
    if found is None:
        raise ModelLoadError(
            f"model_config graph_optimization_level {value!r} is not one of: "
            + ", ".join(f"{n.removeprefix('ORT_').lower()} ({int(m)})" for n, m in levels.items()))
    return found


def _session_options(ort: Any, config: dict[str, Any]) -> Any:
    options = ort.SessionOptions()
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelLoadError(f"model_config {key} must be a non-negative integer, got {value!r}")
            setattr(options, key, value)
    if "graph_optimization_level" in config:
        options.graph_optimization_level = _graph_level(ort, config["graph_optimization_level"])
    return options


# ---------------------------------------------------------------- input checking

def _mismatch(spec: TensorSpec, array: np.ndarray, reason: str) -> ProcessorError:
    received = "string" if array.dtype.kind in "OUS" else str(array.dtype)
    return ProcessorError(
        f"input {spec.name!r} expects {spec.onnx_type} with shape {spec.shape_text()}; "
        f"received {received} with shape {list(array.shape)}: {reason}")


def _as_str_array(array: np.ndarray) -> np.ndarray:
    """onnxruntime string tensors take an object array of str (protobuf sends bytes)."""
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.flat]
    return out


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Cast to the model's dtype where no value changes meaning (float64 -> float32 allowed)."""
    target = spec.dtype
    kind = array.dtype.kind
    if target is None or (array.dtype == target and kind != "O"):
        return array
    if target.kind == "O":  # even object arrays: protobuf strings arrive as bytes
        if kind in "US" or (kind == "O" and all(isinstance(v, (str, bytes)) for v in array.flat)):
            try:
                return _as_str_array(array)
            except UnicodeDecodeError:
                raise _mismatch(spec, array, "a string is not valid UTF-8") from None
        raise _mismatch(spec, array, "the model takes strings")
    if kind not in "biuf":
        raise _mismatch(spec, array, "the model takes numbers")
    if target.kind == "f":
        return array.astype(target)
    if target.kind in "iu":
        if kind == "f":
            if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
                raise _mismatch(spec, array, "the model takes integers")
        if array.size and kind != "b":
            info = np.iinfo(target)
            if array.min() < info.min or array.max() > info.max:
                raise _mismatch(spec, array, f"a value is out of range for {target}")
        return array.astype(target)
    if target.kind == "b" and (kind == "b" or np.isin(array, (0, 1)).all()):
        return array.astype(np.bool_)
    raise _mismatch(spec, array, f"cannot be read as {target}")


def _check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        hint = ""
        if array.ndim == len(spec.shape) - 1:
            hint = "; wrap a single instance in a list"
        raise _mismatch(spec, array, f"rank {array.ndim} instead of {len(spec.shape)}{hint}")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(want, int) and want != got:
            raise _mismatch(spec, array, f"dimension {axis} is {got}, the model needs {want}")


def _from_json(spec: TensorSpec, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=object if spec.dtype == np.dtype(object) else None)
    except ValueError as exc:
        raise ProcessorError(f"input {spec.name!r}: nested lists of uneven lengths ({exc})") from None
    if array.dtype.kind == "O" and spec.dtype != np.dtype(object):
        raise ProcessorError(f"input {spec.name!r} expects {spec.onnx_type}: "
                             "values must be numbers in evenly nested lists")
    return array


def _from_proto(spec: TensorSpec, proto: Any) -> np.ndarray:
    return tfproto.array_from_proto(proto, f"input {spec.name!r}")


@dataclass
class _Call:
    """A decoded request: what to feed, what to fetch, and which answer form to use."""

    feeds: dict[str, np.ndarray]
    outputs: list[str]
    form: str  # "inputs" | "instances" | "proto"


class OnnxProcessor(Processor):
    """ONNX via onnxruntime; `model_config` may set threads and graph optimisation."""

    supports_batching = True

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.session: Any = None
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}

    def load(self) -> None:
        import onnxruntime as ort

        path = find_model_file(self.ctx, (".onnx",), "ONNX")
        config = model_config_dict(self.ctx.model_config)
        options = _session_options(ort, config)
        providers = config.get("providers") or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(
                f"{path.name} is not a valid ONNX model: {type(exc).__name__}: {exc}") from None
        self.inputs = {a.name: TensorSpec.from_ort(a) for a in self.session.get_inputs()}
        self.outputs = {a.name: TensorSpec.from_ort(a) for a in self.session.get_outputs()}

    # ------------------------------------------------------------ decoding

    def _inputs_text(self) -> str:
        return ", ".join(s.describe() for s in self.inputs.values())

    def _feeds(self, raw: dict[str, Any], to_array: Any) -> dict[str, np.ndarray]:
        """Checked, cast arrays for every model input; `to_array(spec, value)` decodes one."""
        feeds = {}
        for name, value in raw.items():
            spec = self.inputs.get(name)
            if spec is None:
                raise ProcessorError(f"unknown input {name!r}; model inputs: {self._inputs_text()}")
            array = to_array(spec, value)
            _check_shape(spec, array)  # before casting, so errors show what the client sent
            feeds[name] = _cast(spec, array)
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ProcessorError(
                f"missing input {', '.join(map(repr, missing))}; model inputs: {self._inputs_text()}")
        return feeds

    def _output_names(self, wanted: Any) -> list[str]:
        if not wanted:
            return list(self.outputs)
        if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
            raise ProcessorError("output_filter must be a list of output names")
        unknown = [n for n in wanted if n not in self.outputs]
        if unknown:
            raise ProcessorError(f"unknown output {', '.join(map(repr, unknown))}; model outputs: "
                                 + ", ".join(s.describe() for s in self.outputs.values()))
        return list(wanted)

    def _decode_json(self, payload: Any) -> _Call:
        wanted = payload.get("output_filter") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and "inputs" in payload:
            raw = payload["inputs"]
            if not isinstance(raw, dict):
                if len(self.inputs) != 1:
                    raise ProcessorError(
                        f'"inputs" must map input names to values; model inputs: {self._inputs_text()}')
                raw = {next(iter(self.inputs)): raw}
            return _Call(self._feeds(raw, _from_json), self._output_names(wanted), "inputs")
        if isinstance(payload, dict) and "instances" not in payload:
            raise ProcessorError(
                'expected {"inputs": {name: values}} or {"instances": [...]}; the object has keys: '
                + (", ".join(sorted(map(str, payload))) or "none"))
        if len(self.inputs) != 1:
            raise ProcessorError(
                f'"instances" works for single-input models only; this one has {len(self.inputs)} '
                f'inputs ({self._inputs_text()}): send {{"inputs": {{name: values}}}}')
        raw = {next(iter(self.inputs)): instances_of(payload)}
        return _Call(self._feeds(raw, _from_json), self._output_names(wanted)[:1], "instances")

    def _decode_proto(self, body: bytes) -> _Call:
        request = tfproto.PredictRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:
            raise ProcessorError(
                f"request body is neither JSON nor a serialized TF PredictRequest: {exc}") from None
        feeds = self._feeds(dict(request.inputs), _from_proto)
        outputs = self._output_names(list(request.output_filter))
        # Sequences/maps (e.g. sklearn's ZipMap) have no ArrayProto form: refuse them when
        # asked for by name, leave them out otherwise.
        non_tensor = [n for n in outputs if not self.outputs[n].is_tensor]
        if request.output_filter and non_tensor:
            raise ProcessorError(
                f"output {non_tensor[0]!r} is {self.outputs[non_tensor[0]].onnx_type}, which has no "
                "ArrayProto form; ask for it with a JSON request")
        return _Call(feeds, [n for n in outputs if n not in non_tensor], "proto")

    def _decode(self, request: Request) -> _Call:
        if not request.body.strip():
            raise ProcessorError("empty request body: send JSON or a TF PredictRequest")
        if not is_json_request(request):
            return self._decode_proto(request.body)
        declared_json = bool(request.content_type and "json" in request.content_type.lower())
        try:
            payload = parse_json_body(request.body)
        except ProcessorError:
            if declared_json:
                raise
            try:  # a protobuf whose first bytes happen to look like JSON
                return self._decode_proto(request.body)
            except ProcessorError:
                pass
            raise
        return self._decode_json(payload)

    # ------------------------------------------------------------ running

    def _run(self, call: _Call) -> list[Any]:
        try:
            return self.session.run(call.outputs, call.feeds)
        except Exception as exc:
            bad_input = "INVALID_ARGUMENT" in str(exc) or type(exc).__name__ == "InvalidArgument"
            raise ProcessorError(f"onnxruntime failed: {exc}", status=400 if bad_input else 500) from None

    def _encode(self, call: _Call, results: list[Any]) -> Response:
        if call.form == "instances":
            return json_response({"predictions": to_jsonable(results[0])})
        if call.form == "inputs":
            return json_response({"outputs": {n: to_jsonable(r) for n, r in zip(call.outputs, results)}})
        response = tfproto.PredictResponse()
        for name, result in zip(call.outputs, results):
            response.outputs[name].CopyFrom(tfproto.array_to_proto(result))
        return Response(response.SerializeToString(), 200, "application/octet-stream")

    def predict(self, request: Request) -> Response:
        call = self._decode(request)
        return self._encode(call, self._run(call))

    # ------------------------------------------------------------ batching

    def _batch_axis_free(self) -> bool:
        spec = next(iter(self.inputs.values()))
        return spec.shape is None or (len(spec.shape) > 0 and not isinstance(spec.shape[0], int))

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """Stack JSON `instances` requests along axis 0 into one run; others go one by one."""
        responses: dict[int, Response] = {}
        groups: dict[tuple[Any, ...], list[tuple[int, _Call]]] = {}
        stackable = len(self.inputs) == 1 and self._batch_axis_free()
        for i, request in enumerate(requests):
            try:
                call = self._decode(request)
                array = next(iter(call.feeds.values()))
                if not (stackable and call.form == "instances" and array.ndim > 0):
                    responses[i] = self._encode(call, self._run(call))
                    continue
            except ProcessorError as exc:
                responses[i] = error_response(exc, request.request_id)
                continue
            key = (array.shape[1:], array.dtype.str, tuple(call.outputs))
            groups.setdefault(key, []).append((i, call))
        for members in groups.values():
            responses.update(self._run_group(members, requests))
        return [responses[i] for i in range(len(requests))]

    def _run_group(self, members: list[tuple[int, _Call]],
                   requests: Sequence[Request]) -> dict[int, Response]:
        name = next(iter(self.inputs))
        counts = [len(call.feeds[name]) for _, call in members]
        joint = _Call({name: np.concatenate([c.feeds[name] for _, c in members])},
                      members[0][1].outputs, "instances")
        try:
            (result,) = self._run(joint)
            aligned = isinstance(result, np.ndarray) and result.ndim > 0 and len(result) == sum(counts)
        except ProcessorError:
            aligned = False
        if not aligned:
            # The joint run failed, or its output is not one row per input row: answer
            # each request alone so only a culprit sees an error.
            return {i: predict_or_error(self, requests[i]) for i, _ in members}
        out, start = {}, 0
        for (i, call), count in zip(members, counts):
            out[i] = self._encode(call, [result[start:start + count]])
            start += count
        return out
