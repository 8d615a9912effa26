"""Server-side batching for tensor models (TensorFlow, PyTorch, Paddle).

EAS's `rpc.batching` exists to run concurrent requests as one model call, which is
where GPUs (and vectorised CPU kernels) earn their keep. Each request is decoded on its
own into a `Part`: its input arrays, a key that says which requests may share a call,
how to run the model and how to encode its own answer. Parts with equal keys (the same
signature and outputs, the same dtypes and the same shapes past axis 0) are
concatenated on axis 0, run once and split back by their row counts; a part whose key
is None, or that is alone with its key, runs on its own.

A bad request fails only itself: one that does not decode is answered with its error
before anything runs, and when the joint call fails or its outputs do not line up
with the rows (a model that does not treat axis 0 as the batch), each member runs
alone, so only a culprit sees an error and no answer is ever a neighbour's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from .base import ProcessorError, Request, Response, decode_error, error_response

log = logging.getLogger("processors.batching")

Arrays = dict[str, np.ndarray]


@dataclass
class Part:
    """One decoded request of a batch."""

    feeds: Arrays
    """Its input arrays, by name; axis 0 of each is the batch axis."""
    key: Hashable | None
    """Requests with equal keys may share a model call; None: this one runs alone."""
    run: Callable[[Arrays], Arrays]
    """Runs the model on (joint) feeds; returns every output array by name."""
    answer: Callable[[Arrays], Response]
    """Encodes this request's answer from its own rows of the outputs."""


def batch_key(*context: Hashable, feeds: Arrays) -> Hashable | None:
    """The key of a part: `context` (signature, wanted outputs, form of the inputs) plus
    each input's dtype and shape past axis 0. None when an input has no axis 0, or the
    inputs disagree on their row count (nothing to split by)."""
    if not feeds or any(a.ndim == 0 for a in feeds.values()):
        return None
    if len({len(a) for a in feeds.values()}) != 1:
        return None
    shapes = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items()))
    return (*context, shapes)


def run_batch(requests: Sequence[Request], decode: Callable[[Request], Part]) -> list[Response]:
    """Answer `requests`, compatible ones in one model call each; see the module doc."""
    responses: dict[int, Response] = {}
    groups: dict[Hashable, list[tuple[int, Part]]] = {}
    for i, request in enumerate(requests):
        try:
            part = decode(request)
        except Exception as exc:  # a decode failure of any kind is this request's own 4xx
            responses[i] = error_response(decode_error(exc), request.request_id)
            continue
        if part.key is None:
            responses[i] = _alone(part, request)
        else:
            groups.setdefault(part.key, []).append((i, part))
    for members in groups.values():
        if len(members) == 1:
            i, part = members[0]
            responses[i] = _alone(part, requests[i])
        else:
            responses.update(_together(members, requests))
    return [responses[i] for i in range(len(requests))]


def _together(members: list[tuple[int, Part]], requests: Sequence[Request]) -> dict[int, Response]:
    counts = [len(next(iter(part.feeds.values()))) for _, part in members]
    total = sum(counts)
    names = list(members[0][1].feeds)
    try:
        joint = {name: np.concatenate([part.feeds[name] for _, part in members]) for name in names}
        outputs = members[0][1].run(joint)
        aligned = all(isinstance(v, np.ndarray) and v.ndim > 0 and len(v) == total for v in outputs.values())
    except Exception as exc:  # one member may have sunk the joint call: find it below
        log.info("a joint call of %d requests failed (%s); running them one by one", len(members), exc)
        aligned = False
    if not aligned:
        return {i: _alone(part, requests[i]) for i, part in members}
    out, start = {}, 0
    for (i, part), count in zip(members, counts):
        rows = {name: value[start:start + count] for name, value in outputs.items()}
        out[i] = _settled(lambda: part.answer(rows), requests[i])
        start += count
    return out


def _alone(part: Part, request: Request) -> Response:
    """One decoded request's own model call: whatever it raises is its answer only."""
    return _settled(lambda: part.answer(part.run(part.feeds)), request)


def _settled(work: Callable[[], Response], request: Request) -> Response:
    try:
        return work()
    except ProcessorError as exc:
        return error_response(exc, request.request_id)
    except Exception as exc:
        log.warning("processor raised on request %s", request.request_id, exc_info=True)
        return error_response(ProcessorError(f"processor raised {type(exc).__name__}: {exc}"), request.request_id)


def first_dim_free(shape: Sequence[Any] | None) -> bool:
    """Whether a declared input shape leaves axis 0 open (a batch axis); unknown shapes do."""
    return shape is None or (len(shape) > 0 and not isinstance(shape[0], int))
