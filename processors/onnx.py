"""ONNX models on onnxruntime, fed JSON, the EAS TF PredictRequest or the EAS OnnxRequest.

The protobuf paths exist because the official SDKs' `TFRequest` and eas-prediction's
`OnnxRequest` (processors/onnxproto.py; answered in kind) are what EAS users already
send; JSON is what curl users send. Another SDK request (a TorchRequest, an
EasyRecRequest) is a 400 that names the processor it needs (processors/sdkrequests.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import onnxproto, sdkrequests, tfproto
from ._files import find_model_file, model_config_dict
from ._jsonio import is_json_request
from ._tensors import TensorSpec, collect_feeds, decode_json, from_json, json_outputs, pick_outputs
from .base import (
    Budget,
    ModelContext,
    ModelLoadError,
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

_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


def _spec(arg: Any) -> TensorSpec:
    """onnxruntime's NodeArg as a TensorSpec (`tensor(float)` kept for messages)."""
    found = _ORT_DTYPES.get(arg.type)
    shape = None if arg.shape is None else tuple(
        d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None) for d in arg.shape)
    return TensorSpec(arg.name, None if found is None else np.dtype(found), shape, arg.type)


def _is_tensor(spec: TensorSpec) -> bool:
    return spec.type_name.startswith("tensor(")


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
    # onnxruntime's intra-op threads spin between calls by default: fine for one
    # benchmark loop, but in a server they burn the CPU the HTTP side and the other
    # instances on the node need. `allow_spinning: true` in model_config restores it.
    spinning = config.get("allow_spinning", False)
    if not isinstance(spinning, bool):
        raise ModelLoadError(f"model_config allow_spinning must be true or false, got {spinning!r}")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def _from_proto(spec: TensorSpec, proto: Any, budget: Budget) -> np.ndarray:
    return tfproto.array_from_proto(proto, f"input {spec.name!r}", spec=spec, budget=budget)


@dataclass
class _Call:
    """A decoded request: what to feed, what to fetch, and which answer form to use."""

    feeds: dict[str, np.ndarray]
    outputs: list[str]
    form: str  # "inputs" | "instances" | "proto" | "onnx"


class OnnxProcessor(Processor):
    """ONNX via onnxruntime; `model_config` may set threads and graph optimisation."""

    supports_batching = True
    inline_safe = True

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
        # The instance's GPU when it has one (onnxruntime-gpu provides CUDA; CPU stays the fallback).
        providers = config.get("providers") or (["CUDAExecutionProvider", "CPUExecutionProvider"]
                                                if self.ctx.device == "cuda" else ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(
                f"{path.name} is not a valid ONNX model: {type(exc).__name__}: {exc}") from None
        self.inputs = {a.name: _spec(a) for a in self.session.get_inputs()}
        self.outputs = {a.name: _spec(a) for a in self.session.get_outputs()}

    # ------------------------------------------------------------ decoding

    def _decode_json(self, payload: Any) -> _Call:
        call = decode_json(payload, self.inputs, self.outputs, first_output_only=True)
        feeds = collect_feeds(self.inputs, call.raw, from_json, budget=self.decode_limits.budget())
        return _Call(feeds, call.outputs, call.form)

    def _decode_proto(self, body: bytes) -> _Call:
        request = tfproto.PredictRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:
            raise ProcessorError(
                f"request body is neither JSON nor a serialized TF PredictRequest: {exc}") from None
        feeds = collect_feeds(self.inputs, dict(request.inputs), _from_proto, budget=self.decode_limits.budget())
        outputs = pick_outputs(self.outputs, list(request.output_filter))
        # Sequences/maps (e.g. sklearn's ZipMap) have no ArrayProto form: refuse them when
        # asked for by name, leave them out otherwise.
        non_tensor = [n for n in outputs if not _is_tensor(self.outputs[n])]
        if request.output_filter and non_tensor:
            raise ProcessorError(
                f"output {non_tensor[0]!r} is {self.outputs[non_tensor[0]].type_name}, which has no "
                "ArrayProto form; ask for it with a JSON request")
        return _Call(feeds, [n for n in outputs if n not in non_tensor], "proto")

    def _decode_binary(self, body: bytes) -> _Call:
        """A TF PredictRequest, else an OnnxRequest; else the TF error, or a 400 naming
        the processor the body is meant for. The TF path is tried first and alone on
        success: OnnxRequest costs nothing to TFRequest callers."""
        try:
            return self._decode_proto(body)
        except ProcessorError:
            message = onnxproto.parse(body)
            if message is not None:
                return self._decode_onnx(message)
            why = sdkrequests.misdirected(body, ("TFRequest", "OnnxRequest"), "onnx")
            if why is None:
                raise
            raise ProcessorError(why) from None

    def _decode_onnx(self, message: Any) -> _Call:
        """An OnnxRequest: named tensors in, every tensor output back (it names none)."""
        feeds = collect_feeds(
            self.inputs, {t.name: t for t in message.tensors},
            lambda spec, t, budget: onnxproto.array_from_tensor(t, f"input {spec.name!r}", spec=spec, budget=budget),
            budget=self.decode_limits.budget())
        return _Call(feeds, [n for n, s in self.outputs.items() if _is_tensor(s)], "onnx")

    def _decode(self, request: Request) -> _Call:
        """The request's call; whatever fails while decoding is this request's 4xx."""
        try:
            return self._decode_body(request)
        except Exception as exc:
            raise decode_error(exc) from None

    def _decode_body(self, request: Request) -> _Call:
        if not request.body.strip():
            raise ProcessorError("empty request body: send JSON or a TF PredictRequest")
        if not is_json_request(request):
            return self._decode_binary(request.body)
        declared_json = bool(request.content_type and "json" in request.content_type.lower())
        try:
            payload = parse_json_body(request.body)
        except ProcessorError:
            if declared_json:
                raise
            try:  # a protobuf whose first bytes happen to look like JSON
                return self._decode_binary(request.body)
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
        if call.form == "onnx":
            answer = onnxproto.to_proto(dict(zip(call.outputs, results)))
            return Response(answer.SerializeToString(), 200, "application/octet-stream")
        if call.form != "proto":
            named = dict(zip(call.outputs, results))
            return json_response(json_outputs(call.form, named, single_unwrapped=False))
        response = tfproto.PredictResponse()
        for name, result in zip(call.outputs, results):
            response.outputs[name].CopyFrom(tfproto.array_to_proto(result))
        return Response(response.SerializeToString(), 200, "application/octet-stream")

    def predict(self, request: Request) -> Response:
        call = self._decode(request)
        return self._encode(call, self._run(call))

    # ------------------------------------------------------------ Open Inference Protocol

    def metadata_v2(self) -> dict[str, Any]:
        def tensor(spec: TensorSpec) -> dict[str, Any]:
            shape = [-1] if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
            return {"name": spec.name, "dtype": spec.dtype, "shape": shape}

        # Sequences and maps (sklearn's ZipMap) are not tensors: v2 cannot carry them.
        return {"platform": "onnxruntime_onnx",
                "inputs": [tensor(s) for s in self.inputs.values() if s.dtype is not None],
                "outputs": [tensor(s) for s in self.outputs.values() if _is_tensor(s) and s.dtype is not None]}

    def infer_v2(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        feeds = collect_feeds(self.inputs, inputs, lambda spec, array, budget: array)
        if outputs is None:
            names = [n for n, s in self.outputs.items() if _is_tensor(s)]
        else:
            names = pick_outputs(self.outputs, list(outputs))
            for name in names:
                if not _is_tensor(self.outputs[name]):
                    raise ProcessorError(f"output {name!r} is {self.outputs[name].type_name}, which is not a "
                                         "tensor: the Open Inference Protocol cannot carry it")
        results = self._run(_Call(feeds, names, "v2"))
        return {name: np.asarray(result) for name, result in zip(names, results)}

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
                call = self._decode(request)  # any decode failure is a ProcessorError
            except ProcessorError as exc:
                responses[i] = error_response(exc, request.request_id)
                continue
            array = next(iter(call.feeds.values()))
            if not (stackable and call.form == "instances" and array.ndim > 0):
                responses[i] = self._answer_alone(call, request)
                continue
            key = (array.shape[1:], array.dtype.str, tuple(call.outputs))
            groups.setdefault(key, []).append((i, call))
        for members in groups.values():
            responses.update(self._run_group(members, requests))
        return [responses[i] for i in range(len(requests))]

    def _answer_alone(self, call: _Call, request: Request) -> Response:
        """One decoded request's own model call: whatever it raises is its answer only."""
        try:
            return self._encode(call, self._run(call))
        except ProcessorError as exc:
            return error_response(exc, request.request_id)
        except Exception as exc:
            return error_response(ProcessorError(f"processor raised {type(exc).__name__}: {exc}"),
                                  request.request_id)

    def _run_group(self, members: list[tuple[int, _Call]],
                   requests: Sequence[Request]) -> dict[int, Response]:
        name = next(iter(self.inputs))
        counts = [len(call.feeds[name]) for _, call in members]
        joint = _Call({name: np.concatenate([c.feeds[name] for _, c in members])},
                      members[0][1].outputs, "instances")
        try:
            (result,) = self._run(joint)
            aligned = isinstance(result, np.ndarray) and result.ndim > 0 and len(result) == sum(counts)
        except Exception:  # the model failed on the joint input: find the culprit below
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
