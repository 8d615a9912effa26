"""PyTorch TorchScript models (`torch.jit.script`/`trace`, then `.save`).

TorchScript, not pickled eager modules: it loads without the user's Python classes
and runs without the GIL-bound Python forward. Requests are the EAS Torch
PredictRequest protobuf (what the official SDK's `TorchRequest` sends: positional
`inputs`, named `map_inputs`, `output_filter` by output index) or JSON.

TorchScript does not record input dtypes or shapes, so the model's own error is
what a wrong input gets, prefixed with what was received; `model_config.inputs`
(`{"x": {"dtype": "float32", "shape": [-1, 3]}}`) declares them for exact 400s.

The model runs on the instance's device (a GPU when it was given one). With
`rpc.batching`, concurrent requests whose tensors agree past axis 0 run as one
forward() call (processors/_batching.py), which assumes axis 0 is the batch axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _signature, sdkrequests, torchproto
from ._batching import Part, batch_key, first_dim_free, run_batch
from ._files import find_model_file, model_config_dict
from ._jsonio import is_json_request, to_jsonable
from ._tensors import TensorSpec, checked, dtype_text, from_json, normalize_shape
from .base import (
    Budget,
    ModelLoadError,
    Processor,
    ProcessorError,
    Request,
    Response,
    decode_error,
    json_response,
    parse_json_body,
)

MODEL_SUFFIXES = (".pt", ".pth", ".torchscript", ".jit")


@dataclass(frozen=True)
class Argument:
    name: str
    type: str
    required: bool


def _declared_specs(config: dict[str, Any], names: list[str]) -> dict[str, TensorSpec]:
    declared = config.get("inputs") or {}
    if not isinstance(declared, dict):
        raise ModelLoadError('model_config inputs must be an object: {"x": {"dtype": "float32", "shape": [-1, 3]}}')
    specs = {}
    for name, spec in declared.items():
        if name not in names:
            raise ModelLoadError(f"model_config inputs names {name!r}, which forward() does not take "
                                 f"(arguments: {', '.join(names) or 'none'})")
        if not isinstance(spec, dict):
            raise ModelLoadError(f"model_config inputs.{name} must be an object with dtype and/or shape")
        try:
            dtype = np.dtype(spec["dtype"]) if spec.get("dtype") else None
        except TypeError:
            raise ModelLoadError(f"model_config inputs.{name}.dtype {spec['dtype']!r} is not a dtype") from None
        specs[name] = TensorSpec(name, dtype, normalize_shape(spec.get("shape")))
    return specs


def _torch_error(exc: BaseException) -> str:
    """The useful line of a TorchScript error (they carry a whole interpreter traceback)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z]*(Error|Exception):", line):
            return line
    return lines[-1] if lines else type(exc).__name__


class PyTorchProcessor(Processor):
    """`torch.jit.load` on the instance's device; forward(*inputs) or forward(Dict[str, Tensor])."""

    supports_batching = True

    def load(self) -> None:
        import torch

        path = find_model_file(self.ctx, MODEL_SUFFIXES, "TorchScript")
        config = model_config_dict(self.ctx.model_config)
        threads = config.get("intra_op_num_threads")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ModelLoadError(f"model_config intra_op_num_threads must be a positive integer, got {threads!r}")
            torch.set_num_threads(threads)
        try:
            module = torch.jit.load(str(path), map_location=self.ctx.device)
        except Exception as exc:
            raise ModelLoadError(
                f"{path.name} is not a TorchScript model ({_torch_error(exc)}); export it with "
                "torch.jit.script(model).save(path) or torch.jit.trace(model, example).save(path)") from None
        module.eval()
        self.module = module
        self._torch = torch
        try:
            schema = module.forward.schema
            self.arguments = [Argument(a.name, str(a.type), not a.has_default_value())
                              for a in schema.arguments[1:]]
        except (AttributeError, RuntimeError):
            self.arguments = []
        self.takes_dict = len(self.arguments) == 1 and bool(
            re.match(r"Dict[\[(]str, ?Tensor[\])]", self.arguments[0].type))
        self.specs = _declared_specs(config, [a.name for a in self.arguments])
        floats = [p.dtype for p in module.parameters() if p.dtype.is_floating_point]
        self.float_dtype = np.dtype(str(floats[0]).removeprefix("torch.")) if floats else np.dtype(np.float32)

    # ------------------------------------------------------------ inputs

    def _names_text(self) -> str:
        return ", ".join(f"{a.name}: {a.type}" for a in self.arguments) or "unknown"

    def _prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        """Declared specs are enforced; otherwise floats follow the model's parameter dtype."""
        spec = self.specs.get(name)
        if spec is not None:
            return checked(spec, array)
        if array.dtype.kind in "OUS":
            raise ProcessorError(f"input {name!r}: TorchScript tensors hold numbers, received strings")
        if array.dtype.kind == "f" and array.dtype != self.float_dtype:
            return array.astype(self.float_dtype)
        return array

    def _positional(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.arguments:
            required = sum(a.required for a in self.arguments)
            if not required <= len(arrays) <= len(self.arguments):
                raise ProcessorError(f"the model takes {required} input(s) ({self._names_text()}); "
                                     f"received {len(arrays)}")
            names = [a.name for a in self.arguments]
        else:
            names = [f"input_{i}" for i in range(len(arrays))]
        return [self._prepare(n, a) for n, a in zip(names, arrays)]

    def _named(self, arrays: dict[str, np.ndarray]) -> tuple[list[Any], dict[str, Any]]:
        """map_inputs / named JSON inputs: one Dict[str, Tensor] argument, or keyword arguments."""
        if self.takes_dict:
            return [{k: self._prepare(k, v) for k, v in arrays.items()}], {}
        known = {a.name for a in self.arguments}
        unknown = sorted(set(arrays) - known)
        if unknown:
            raise ProcessorError(f"unknown input {', '.join(map(repr, unknown))}; forward() takes "
                                 f"{self._names_text()}")
        missing = [a.name for a in self.arguments if a.required and a.name not in arrays]
        if missing:
            raise ProcessorError(f"missing input {', '.join(map(repr, missing))}; forward() takes "
                                 f"{self._names_text()}")
        return [], {k: self._prepare(k, v) for k, v in arrays.items()}

    # ------------------------------------------------------------ running

    def _run(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        torch = self._torch
        types = {a.name: a.type for a in self.arguments}
        names = [a.name for a in self.arguments]

        def convert(name: str | None, value: Any) -> Any:
            if isinstance(value, dict):
                return {k: convert(None, v) for k, v in value.items()}
            kind = types.get(name or "", "Tensor")
            if kind in ("float", "int", "bool"):  # scalar arguments such as `scale: float`
                if value.size != 1:
                    raise ProcessorError(f"input {name!r} is a {kind} argument: send one value, "
                                         f"received shape {list(value.shape)}")
                return {"float": float, "int": int, "bool": bool}[kind](value.reshape(()).item())
            return torch.from_numpy(np.ascontiguousarray(value)).to(self.ctx.device)

        try:
            positional = [convert(names[i] if i < len(names) else None, a) for i, a in enumerate(args)]
            keywords = {k: convert(k, v) for k, v in kwargs.items()}
            with torch.inference_mode():
                return self.module(*positional, **keywords)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            received = [_shape_text(f"input {i}", a) for i, a in enumerate(args)]
            received += [_shape_text(k, v) for k, v in kwargs.items()]
            raise ProcessorError(f"the model rejected the input ({'; '.join(received)}): "
                                 f"{_torch_error(exc)}") from None

    def _outputs(self, result: Any) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """forward()'s answer as (positional outputs, named outputs)."""
        torch = self._torch

        def array(value: Any, where: str) -> np.ndarray:
            if isinstance(value, torch.Tensor):
                return value.detach().cpu().numpy()
            if isinstance(value, (int, float, bool)):
                return np.asarray(value)
            raise ProcessorError(f"the model returned {type(value).__name__} at {where}; "
                                 "only tensors, tuples/lists of tensors and Dict[str, Tensor] can be sent",
                                 status=500)

        if isinstance(result, dict):
            return [], {str(k): array(v, f"output {k!r}") for k, v in result.items()}
        if isinstance(result, (tuple, list)):
            return [array(v, f"output {i}") for i, v in enumerate(result)], {}
        return [array(result, "output 0")], {}

    # ------------------------------------------------------------ requests

    def _decode(self, request: Request) -> tuple[list[Any], dict[str, Any], str, list[int]]:
        """(args, kwargs, answer form, output_filter); whatever fails while decoding is this request's 4xx."""
        if not request.body.strip():
            raise ProcessorError("empty request body: send JSON or a Torch PredictRequest")
        budget = self.decode_limits.budget()
        try:
            if is_json_request(request):
                args, kwargs, form = self._decode_json(parse_json_body(request.body), budget)
                return args, kwargs, form, []
            args, kwargs, wanted = self._decode_proto(request.body, budget)
            return args, kwargs, "proto", wanted
        except Exception as exc:
            # Another SDK's request (TFRequest, OnnxRequest, EasyRecRequest): say what it needs.
            why = None if is_json_request(request) else sdkrequests.misdirected(
                request.body, ("TorchRequest",), "pytorch")
            raise (ProcessorError(why) if why else decode_error(exc)) from None

    def predict(self, request: Request) -> Response:
        args, kwargs, form, wanted = self._decode(request)
        positional, named = self._outputs(self._run(args, kwargs))
        return self._encode(form, wanted, positional, named)

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """Requests whose tensors agree past axis 0 run as one forward() call."""
        return run_batch(requests, self._part)

    def _part(self, request: Request) -> Part:
        args, kwargs, form, wanted = self._decode(request)
        types = {a.name: a.type for a in self.arguments}
        names = [a.name for a in self.arguments]
        feeds = {f"a{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
        feeds.update({f"k:{k}": v for k, v in kwargs.items() if isinstance(v, np.ndarray)})
        arg_names = [names[i] if i < len(names) else "" for i in range(len(args))] + list(kwargs)
        batchable = len(feeds) == len(args) + len(kwargs) and all(
            types.get(n, "Tensor") not in ("float", "int", "bool")
            and first_dim_free(self.specs[n].shape if n in self.specs else None) for n in arg_names)

        def run(joint: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            positional, named = self._outputs(self._run(
                [joint[f"a{i}"] for i in range(len(args))], {k: joint[f"k:{k}"] for k in kwargs}))
            return {**{f"p{i}": v for i, v in enumerate(positional)}, **{f"n:{k}": v for k, v in named.items()}}

        def answer(rows: dict[str, np.ndarray]) -> Response:
            positional = [rows[f"p{i}"] for i in range(sum(k.startswith("p") for k in rows))]
            named = {k[2:]: v for k, v in rows.items() if k.startswith("n:")}
            return self._encode(form, wanted, positional, named)

        return Part(feeds, batch_key(feeds=feeds) if batchable else None, run, answer)

    def signature(self) -> dict[str, Any]:
        """forward()'s arguments (with `model_config.inputs` dtypes and shapes where declared)
        and its return type; TorchScript records no more."""
        inputs = []
        for a in self.arguments:
            spec = self.specs.get(a.name)
            inputs.append(_signature.tensor(a.name, spec.dtype if spec else None, spec.shape if spec else None))
        try:
            returns = str(self.module.forward.schema.returns[0].type)
        except (AttributeError, IndexError, RuntimeError):
            returns = ""
        if returns.startswith("Tuple[") or returns.startswith("("):
            count = returns.count("Tensor")
            outputs = [_signature.tensor(str(i), None, None) for i in range(count)]
        elif returns == "Tensor":
            outputs = [_signature.tensor("0", None, None)]
        else:
            outputs = []
        return _signature.signature("forward", inputs, outputs, returns=returns)

    def _encode(self, form: str, wanted: list[int], positional: list[np.ndarray],
                named: dict[str, np.ndarray]) -> Response:
        if form != "proto":
            key = "outputs" if form == "inputs" else "predictions"
            if named:
                return json_response({key: to_jsonable(named)})
            return json_response({key: to_jsonable(positional[0] if len(positional) == 1 else positional)})
        bad = [i for i in wanted if not 0 <= i < len(positional)]
        if bad:
            raise ProcessorError(f"output_filter index {bad[0]} is out of range: the model returned "
                                 f"{len(positional)} positional output(s)")
        response = torchproto.PredictResponse()
        for i in (wanted or range(len(positional))):
            response.outputs.add().CopyFrom(torchproto.array_to_proto(positional[i]))
        for name, value in named.items():
            response.map_outputs[name].CopyFrom(torchproto.array_to_proto(value))
        return Response(response.SerializeToString(), 200, "application/octet-stream")

    def _proto_array(self, proto: Any, what: str, name: str | None, budget: Budget) -> np.ndarray:
        """One ArrayProto, its declared shape checked against a declared input and the budget."""
        spec = self.specs.get(name) if name is not None else None
        return torchproto.array_from_proto(proto, what, spec=spec, budget=budget)

    def _decode_proto(self, body: bytes, budget: Budget) -> tuple[list[Any], dict[str, Any], list[int]]:
        proto = torchproto.PredictRequest()
        try:
            proto.ParseFromString(body)
        except Exception as exc:
            raise ProcessorError(f"request body is neither JSON nor a serialized Torch PredictRequest: {exc}") from None
        if proto.inputs and proto.map_inputs:
            raise ProcessorError("send either positional inputs or map_inputs, not both")
        if proto.map_inputs:
            args, kwargs = self._named({k: self._proto_array(v, f"input {k!r}", k, budget)
                                        for k, v in proto.map_inputs.items()})
        else:
            names = [a.name for a in self.arguments]
            args, kwargs = self._positional([
                self._proto_array(v, f"input {i}", names[i] if i < len(names) else None, budget)
                for i, v in enumerate(proto.inputs)]), {}
        return args, kwargs, list(proto.output_filter)

    def _json_array(self, name: str, value: Any, budget: Budget) -> np.ndarray:
        spec = self.specs.get(name) or TensorSpec(name, None, None)
        return from_json(spec, value, budget)

    def _decode_json(self, payload: Any, budget: Budget) -> tuple[list[Any], dict[str, Any], str]:
        """(args, kwargs, answer form) of a JSON request."""
        names = [a.name for a in self.arguments]
        if isinstance(payload, dict) and "inputs" in payload:
            raw = payload["inputs"]
            if isinstance(raw, dict):
                args, kwargs = self._named({k: self._json_array(k, v, budget) for k, v in raw.items()})
            elif len(self.arguments) > 1:
                if not isinstance(raw, list):
                    raise ProcessorError(f'"inputs" must be a list of the inputs in order or an object '
                                         f"naming them ({self._names_text()})")
                padded = names + [f"input_{i}" for i in range(len(names), len(raw))]
                args, kwargs = self._positional([self._json_array(n, v, budget) for n, v in zip(padded, raw)]), {}
            else:
                args, kwargs = self._positional([self._json_array(names[0] if names else "input_0", raw, budget)]), {}
            return args, kwargs, "inputs"
        if not (isinstance(payload, dict) and "instances" in payload):
            keys = ", ".join(sorted(map(str, payload))) if isinstance(payload, dict) else type(payload).__name__
            raise ProcessorError(f'expected {{"instances": [...]}} or {{"inputs": ...}}; received {keys}')
        if len(self.arguments) > 1 and sum(a.required for a in self.arguments) > 1:
            raise ProcessorError(f'"instances" works for single-input models only; this one takes '
                                 f'{self._names_text()}: send {{"inputs": {{name: values}}}}')
        name = names[0] if names else "input_0"
        if self.takes_dict:
            raise ProcessorError(f"forward() takes {self._names_text()}: send {{\"inputs\": {{name: values}}}}")
        return self._positional([self._json_array(name, payload["instances"], budget)]), {}, "instances"


def _shape_text(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(_shape_text(k, v) for k, v in value.items())
    return f"{name}: {dtype_text(value.dtype)} {list(value.shape)}"
