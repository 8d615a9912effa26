"""The Open Inference Protocol on an instance: decode, run the processor, encode.

Runs on the instance's worker pool (or inline, as the runtime decides). With
server-side batching on, concurrent calls whose inputs agree in names, datatypes and
every dimension but the first are stacked along axis 0 into one model call and the
outputs split back by rows, as EAS predict batches are; whatever cannot be stacked,
or a joint call that fails, is answered call by call so only a culprit sees an error.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from eas.protocols.oip import (
    HEADER_LENGTH,
    INFER_RESPONSE_TYPE,
    PROTOBUF_TYPE,
    InferRequest,
    decode_grpc,
    decode_rest,
    encode_grpc,
    encode_rest,
    supports_v2,
)
from eas.ratelog import BurstLog
from processors.base import Processor, ProcessorError, Request, Response, decode_error, error_body, error_response

log = logging.getLogger("eas.instance.oip")
failures = BurstLog(log)


def _decode(processor: Processor, request: Request) -> tuple[InferRequest, bool]:
    """The decoded call and whether it came as a serialized ModelInferRequest (gRPC form).

    Shapes are checked against the processor's decode limits before tensors are built;
    whatever else a hostile body makes the decoder raise is this request's 400.
    """
    grpc_form = (request.content_type or "").startswith(PROTOBUF_TYPE)
    limits = getattr(processor, "decode_limits", None)
    try:
        if grpc_form:
            return decode_grpc(request.body, limits), True
        return decode_rest(request.body, request.headers.get(HEADER_LENGTH.lower()), limits), False
    except Exception as exc:
        raise decode_error(exc) from None


def _encode(model: str, call: InferRequest, grpc_form: bool, results: dict[str, np.ndarray]) -> Response:
    if grpc_form:
        return Response(encode_grpc(model, call, results), 200, INFER_RESPONSE_TYPE)
    body, split = encode_rest(model, call, results)
    if split is None:
        return Response(body, 200, "application/json")
    return Response(body, 200, f"application/octet-stream; {HEADER_LENGTH.lower()}={split}")


def _guarded(model: str, request: Request, work: Any) -> Response:
    try:
        return work()
    except ProcessorError as exc:
        return error_response(exc, request.request_id)
    except Exception as exc:  # a processor bug is the request's 400, never the instance's death
        failures.exception(f"{model}/v2", "v2 call to %s failed", model)
        return Response(error_body(400, f"processor raised {type(exc).__name__}: {exc}", request.request_id), 400)


def infer_one(processor: Processor, model: str, request: Request) -> Response:
    """Decode, run and encode one v2 call."""

    def work() -> Response:
        if not supports_v2(processor):
            raise ProcessorError(
                f"service '{model}' runs the {type(processor).__name__}, which does not support the Open "
                f"Inference Protocol (v2): call POST /api/predict/{model} instead")
        call, grpc_form = _decode(processor, request)
        return _encode(model, call, grpc_form, processor.infer_v2(call.inputs, call.outputs))

    return _guarded(model, request, work)


def infer_batch(processor: Processor, model: str, requests: Sequence[Request]) -> list[Response]:
    """Answer several v2 calls, stacking compatible ones into one model call."""
    if not (supports_v2(processor) and processor.supports_batching):
        return [infer_one(processor, model, r) for r in requests]
    answers: dict[int, Response] = {}
    groups: dict[tuple[Any, ...], list[tuple[int, InferRequest, bool]]] = {}
    for i, request in enumerate(requests):
        try:
            call, grpc_form = _decode(processor, request)  # any decode failure is a ProcessorError
        except ProcessorError as exc:
            answers[i] = error_response(exc, request.request_id)
            continue
        if any(array.ndim == 0 for array in call.inputs.values()):
            answers[i] = infer_one(processor, model, request)
            continue
        key = (tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in call.inputs.items())),
               None if call.outputs is None else tuple(call.outputs))
        groups.setdefault(key, []).append((i, call, grpc_form))
    for members in groups.values():
        answers.update(_run_group(processor, model, members, requests))
    return [answers[i] for i in range(len(requests))]


def _run_group(processor: Processor, model: str, members: list[tuple[int, InferRequest, bool]],
               requests: Sequence[Request]) -> dict[int, Response]:
    if len(members) == 1:
        i = members[0][0]
        return {i: infer_one(processor, model, requests[i])}
    first = members[0][1]
    rows = [len(next(iter(call.inputs.values()))) for _, call, _ in members]
    if any(len(array) != count for (_, call, _), count in zip(members, rows) for array in call.inputs.values()):
        return {i: infer_one(processor, model, requests[i]) for i, _, _ in members}
    joint = {name: np.concatenate([call.inputs[name] for _, call, _ in members]) for name in first.inputs}
    try:
        results = processor.infer_v2(joint, first.outputs)
        aligned = all(np.ndim(r) > 0 and len(r) == sum(rows) for r in results.values())
    except Exception:
        aligned = False
    if not aligned:
        # The joint call failed, or an output is not one row per input row.
        return {i: infer_one(processor, model, requests[i]) for i, _, _ in members}
    out: dict[int, Response] = {}
    start = 0
    for (i, call, grpc_form), count in zip(members, rows):
        part = {name: np.asarray(r)[start:start + count] for name, r in results.items()}
        out[i] = _guarded(model, requests[i], lambda c=call, g=grpc_form, p=part: _encode(model, c, g, p))
        start += count
    return out
