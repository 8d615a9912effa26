"""TensorFlow SavedModels, called through their signatures.

Requests come as the EAS TF PredictRequest protobuf (what the official SDK's
`TFRequest` sends: `signature_name`, named inputs, `output_filter`) or as TF-Serving
JSON (`{"signature_name", "instances"}` row form, `{"inputs"}` columnar form), so
clients of EAS and of TF Serving both work unchanged. A GET on the predict path shows
the signature (`signature()`); with `rpc.batching`, concurrent requests to the same
signature run as one call (processors/_batching.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _signature, sdkrequests, tfproto
from ._batching import Part, batch_key, first_dim_free, run_batch
from ._files import find_model_dir, model_config_dict
from ._jsonio import is_json_request
from ._tensors import TensorSpec, collect_feeds, decode_json, from_json, json_outputs, normalize_shape, pick_outputs
from .base import (
    ModelLoadError,
    Processor,
    ProcessorError,
    Request,
    Response,
    decode_error,
    json_response,
    parse_json_body,
)

DEFAULT_SIGNATURE = "serving_default"


@dataclass
class Signature:
    name: str
    function: Any
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def _spec(name: str, tf_spec: Any) -> TensorSpec:
    dtype = tf_spec.dtype
    np_dtype = np.dtype(object) if dtype.name == "string" else np.dtype(dtype.as_numpy_dtype)
    dims = None if tf_spec.shape.rank is None else tf_spec.shape.as_list()
    return TensorSpec(name, np_dtype, normalize_shape(dims), dtype.name)


def _set_threads(tf: Any, config: dict[str, Any]) -> None:
    """Thread pools can only be sized before TF's runtime starts: later calls are refused."""
    for key, setter in (("intra_op_num_threads", tf.config.threading.set_intra_op_parallelism_threads),
                        ("inter_op_num_threads", tf.config.threading.set_inter_op_parallelism_threads)):
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelLoadError(f"model_config {key} must be a non-negative integer, got {value!r}")
            try:
                setter(value)
            except RuntimeError:  # another model in this process already started TF
                pass


class TensorFlowProcessor(Processor):
    """A SavedModel's signatures; `model_config.signature_name` picks the default one."""

    supports_batching = True

    def load(self) -> None:
        import tensorflow as tf

        directory = find_model_dir(self.ctx, "saved_model.pb", "TensorFlow SavedModel")
        config = model_config_dict(self.ctx.model_config)
        _set_threads(tf, config)
        try:
            # TensorFlow places ops on a visible GPU by itself; an instance without one has none visible.
            loaded = tf.saved_model.load(str(directory))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"{directory} is not a valid SavedModel: {type(exc).__name__}: {first}") from None
        self._loaded = loaded  # keeps the variables the signatures use alive
        self.signatures: dict[str, Signature] = {}
        for name, fn in loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            outputs = fn.structured_outputs
            if not isinstance(outputs, dict):
                outputs = {"output_0": outputs}
            self.signatures[name] = Signature(
                name, fn, {k: _spec(k, s) for k, s in kwargs.items()},
                {k: _spec(k, s) for k, s in outputs.items()})
        if not self.signatures:
            raise ModelLoadError(f"{directory} has no signatures; save it with "
                                 "tf.saved_model.save(model, path, signatures=...)")
        wanted = config.get("signature_name")
        if wanted and wanted not in self.signatures:
            raise ModelLoadError(f"model_config signature_name {wanted!r} is not in the model; "
                                 f"signatures: {', '.join(sorted(self.signatures))}")
        self.default = wanted or (DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in self.signatures
                                  else sorted(self.signatures)[0])
        self._tf = tf

    def _signature(self, name: Any) -> Signature:
        if not name:
            return self.signatures[self.default]
        if not isinstance(name, str) or name not in self.signatures:
            raise ProcessorError(f"unknown signature_name {name!r}; the model has: "
                                 + ", ".join(sorted(self.signatures)))
        return self.signatures[name]

    def _run(self, sig: Signature, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        tf = self._tf
        try:
            result = sig.function(**{k: tf.constant(v) for k, v in feeds.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ProcessorError(f"signature {sig.name!r} rejected the input: {first}") from None
        except Exception as exc:
            raise ProcessorError(f"tensorflow failed: {type(exc).__name__}: {exc}", status=500) from None
        if not isinstance(result, dict):
            result = {"output_0": result}
        return {n: result[n].numpy() for n in outputs}

    def _decode(self, request: Request) -> tuple[Signature, dict[str, np.ndarray], list[str], str]:
        """(signature, feeds, outputs, answer form); any decode failure is this request's 4xx."""
        try:
            return self._decode_body(request)
        except Exception as exc:
            # Another SDK's request (TorchRequest, OnnxRequest, EasyRecRequest): say what it needs.
            why = None if is_json_request(request) else sdkrequests.misdirected(
                request.body, ("TFRequest",), "tensorflow")
            raise (ProcessorError(why) if why else decode_error(exc)) from None

    def _decode_body(self, request: Request) -> tuple[Signature, dict[str, np.ndarray], list[str], str]:
        if not request.body.strip():
            raise ProcessorError("empty request body: send JSON or a TF PredictRequest")
        budget = self.decode_limits.budget()
        if is_json_request(request):
            payload = parse_json_body(request.body)
            sig = self._signature(payload.get("signature_name") if isinstance(payload, dict) else None)
            call = decode_json(payload, sig.inputs, sig.outputs)
            feeds = collect_feeds(sig.inputs, call.raw, from_json, strings_as="bytes", budget=budget)
            return sig, feeds, call.outputs, call.form
        proto = tfproto.PredictRequest()
        try:
            proto.ParseFromString(request.body)
        except Exception as exc:
            raise ProcessorError(f"request body is neither JSON nor a serialized TF PredictRequest: {exc}") from None
        sig = self._signature(proto.signature_name)
        feeds = collect_feeds(
            sig.inputs, dict(proto.inputs),
            lambda spec, p, budget: tfproto.array_from_proto(p, f"input {spec.name!r}", spec=spec, budget=budget),
            strings_as="bytes", budget=budget)
        return sig, feeds, pick_outputs(sig.outputs, list(proto.output_filter)), "proto"

    def _encode(self, form: str, results: dict[str, np.ndarray]) -> Response:
        if form != "proto":
            return json_response(json_outputs(form, results, single_unwrapped=True))
        response = tfproto.PredictResponse()
        for name, value in results.items():
            response.outputs[name].CopyFrom(tfproto.array_to_proto(value))
        return Response(response.SerializeToString(), 200, "application/octet-stream")

    def predict(self, request: Request) -> Response:
        sig, feeds, outputs, form = self._decode(request)
        return self._encode(form, self._run(sig, feeds, outputs))

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """Requests to one signature with the same outputs and row shapes run as one call."""
        return run_batch(requests, self._part)

    def _part(self, request: Request) -> Part:
        sig, feeds, outputs, form = self._decode(request)
        batchable = all(first_dim_free(spec.shape) for spec in sig.inputs.values())
        return Part(feeds, batch_key(sig.name, tuple(outputs), feeds=feeds) if batchable else None,
                    lambda joint: self._run(sig, joint, outputs), lambda results: self._encode(form, results))

    def signature(self) -> dict[str, Any]:
        """The default signature in EAS's form; `signatures` lists every one when there are several."""
        def tensors(sig: Signature) -> dict[str, Any]:
            return {"inputs": _signature.of_specs(sig.inputs.values()),
                    "outputs": _signature.of_specs(sig.outputs.values())}

        default = self.signatures[self.default]
        extra = {"signatures": {n: tensors(s) for n, s in sorted(self.signatures.items())}} \
            if len(self.signatures) > 1 else {}
        return _signature.signature(default.name, **tensors(default), **extra)
