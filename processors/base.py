"""The one small interface every processor implements.

A processor turns request bytes into a model call and the answer back into bytes.
It knows nothing of HTTP, Ray or the gateway: the runtime hands it a `Request` and
sends back the `Response`, so every processor can be tested in-process.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import orjson

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("processors")


@dataclass(frozen=True)
class ModelContext:
    """What a processor needs to load: paths are already local (fetched and unpacked)."""

    model_dir: str | None = None
    """Local directory (or single file) the service's `model_path` resolved to."""
    model_entry: str | None = None
    """Main file inside `model_dir`, from the service JSON's `model_entry`."""
    model_config: Any = None
    """Free-form `model_config` from the service JSON (string or mapping)."""
    processor_path: str | None = None
    """Local directory (or file) of user code, from `processor_path`."""
    processor_entry: str | None = None
    processor_mainclass: str | None = None
    workers: int = 5
    """Concurrent requests this instance serves (`rpc.worker_threads`)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Other service JSON fields a processor may want (read-only)."""
    mounts: Mapping[str, str] = field(default_factory=dict)
    """The service's `storage` mounts: mount_path -> the local directory on this node."""
    device: str = "cpu"
    """Where the model runs: "cpu", or "cuda" when this instance was given a GPU."""


@dataclass
class Request:
    body: bytes
    content_type: str | None = None
    sub_path: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    method: str = "POST"
    """The HTTP method (a container service's web app sees GET, PUT, ... as sent)."""
    query: str = ""
    """The query string as sent, without '?' (passed on to a container service)."""


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] | None = None
    """More answer headers (a container service's Location, Set-Cookie, Cache-Control, ...)."""


class ProcessorError(Exception):
    """A request the processor cannot serve: bad body, wrong dtype or shape.

    The runtime turns it into an error response with `status` and `message`;
    it is the processor's way to say "your fault" (4xx) without a traceback.
    """

    def __init__(self, message: str, status: int = 400, code: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code if code is not None else status


class ModelLoadError(Exception):
    """The model or user code cannot be loaded; the service goes Failed with this text."""


# ---------------------------------------------------------------- decode limits
# A request declares shapes: a TF/Torch ArrayProto's `array_shape` (one value then fills
# the whole shape, TensorFlow's convention), a v2 tensor's `shape`, a BML tensor's
# `shape`, the nesting of JSON lists. Every decoder checks what it declares against the
# model's inputs and against these caps *before* allocating, so a 23-byte request cannot
# ask for gigabytes. The defaults sit above anything the 64 MiB body limit can carry
# without amplification (a body holds at most 64 Mi one-byte elements).

ENV_MAX_ELEMENTS = "EAS_MAX_REQUEST_ELEMENTS"
ENV_MAX_BYTES = "EAS_MAX_REQUEST_BYTES"
DEFAULT_MAX_ELEMENTS = 64 * 1024 * 1024
"""Tensor elements one request may decode to, over all its inputs."""
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Bytes one request's tensors may decode to (64 Mi float64 elements)."""
MAX_RANK = 32
"""Dimensions a tensor may declare (numpy's own limit is 64; no served model takes as many)."""
STRING_ITEM_BYTES = sys.getsizeof(b"") + 8
"""What one string element costs beyond its text: a Python bytes object and a pointer."""
_CONFIG_KEYS = {"max_request_elements": "max_elements", "max_request_bytes": "max_bytes"}


class LimitError(ProcessorError):
    """A request that declares more than the service decodes per request (413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=413)


def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
            return int(value)
        raise ModelLoadError(f"{where} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class DecodeLimits:
    """The per-request caps on decoded tensors: elements and bytes, over all inputs.

    Defaults, lowest precedence first: the built-in values, the environment of the
    process serving the model (`EAS_MAX_REQUEST_ELEMENTS`, `EAS_MAX_REQUEST_BYTES`),
    the service's `model_config` (`max_request_elements`, `max_request_bytes`).
    """

    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_config(cls, model_config: Any = None, environ: Mapping[str, str] | None = None) -> "DecodeLimits":
        """Raises ModelLoadError for a value that is not a positive integer."""
        environ = os.environ if environ is None else environ
        values = {"max_elements": DEFAULT_MAX_ELEMENTS, "max_bytes": DEFAULT_MAX_BYTES}
        for env, key in ((ENV_MAX_ELEMENTS, "max_elements"), (ENV_MAX_BYTES, "max_bytes")):
            if environ.get(env):
                values[key] = _positive(environ[env].strip(), f"environment variable {env}")
        config = model_config
        if isinstance(config, (str, bytes)):  # user code may keep any text in model_config
            try:
                config = json.loads(config)
            except (ValueError, RecursionError):
                config = None
        if isinstance(config, dict):
            for name, key in _CONFIG_KEYS.items():
                if config.get(name) is not None:
                    values[key] = _positive(config[name], f"model_config {name}")
        return cls(**values)

    def budget(self) -> "Budget":
        """A fresh allowance for one request."""
        return Budget(self)


class Budget:
    """One request's allowance, spent input by input before each is allocated."""

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self.limits = limits or DecodeLimits()
        self.elements = 0
        self.bytes = 0

    def take(self, what: str, shape: Sequence[int], itemsize: int, *, extra_bytes: int = 0) -> int:
        """Count `shape` of `itemsize`-byte elements (plus `extra_bytes`) against the caps.

        Returns the element count. Raises LimitError (413) naming `what`, the shape and
        the limit before the caller allocates anything.
        """
        count = math.prod(int(d) for d in shape)
        size = count * itemsize + extra_bytes
        limits = self.limits
        if self.elements + count > limits.max_elements:
            held = "" if not self.elements else f" (with the request's other inputs, {self.elements + count})"
            raise LimitError(
                f"{what}: shape {list(shape)} declares {count} elements{held}, over this service's "
                f"limit of {limits.max_elements} elements per request (model_config max_request_elements)")
        if self.bytes + size > limits.max_bytes:
            held = "" if not self.bytes else f" (with the request's other inputs, {self.bytes + size})"
            raise LimitError(
                f"{what}: shape {list(shape)} decodes to {size} bytes{held}, over this service's "
                f"limit of {limits.max_bytes} bytes per request (model_config max_request_bytes)")
        self.elements += count
        self.bytes += size
        return count


def check_rank(what: str, shape: Sequence[int]) -> None:
    if len(shape) > MAX_RANK:
        raise ProcessorError(f"{what}: shape has {len(shape)} dimensions; at most {MAX_RANK} are taken")


def nested_shape(value: Any, what: str) -> list[int]:
    """The shape JSON lists imply (lengths along the first elements), without copying.

    Deeper nesting than `MAX_RANK` is refused here; unevenly nested lists are found
    when numpy reads them.
    """
    shape: list[int] = []
    while isinstance(value, list):
        if len(shape) == MAX_RANK:
            raise ProcessorError(f"{what}: lists nest deeper than {MAX_RANK} levels")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def decode_error(exc: BaseException) -> ProcessorError:
    """Any failure while decoding a request body, as that request's 400.

    Hostile bodies make decoders raise more than ValueError: RecursionError for deep
    nesting, MemoryError, UnicodeDecodeError, protobuf's DecodeError.
    """
    if isinstance(exc, ProcessorError):
        return exc
    if isinstance(exc, RecursionError):
        return ProcessorError("request body nests too deeply to decode")
    if isinstance(exc, MemoryError):
        return ProcessorError("request body is too large to decode")
    return ProcessorError(f"request body cannot be decoded: {type(exc).__name__}: {exc}")


class Processor(ABC):
    """Load once, then answer requests, possibly from several threads at once."""

    #: True when `predict_batch` is a real batched call (server-side batching uses it).
    supports_batching: bool = False
    #: True when `predict` is plain model arithmetic that cannot block on I/O or hang
    #: (built-in tabular and ONNX processors). The runtime may then call it on the event
    #: loop while it measures sub-millisecond, skipping the thread hop that costs more
    #: than such a model's own work. User code is never called inline.
    inline_safe: bool = False

    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    @functools.cached_property
    def decode_limits(self) -> DecodeLimits:
        """What one request may decode to (`model_config` over the environment over defaults);
        raises ModelLoadError for a bad value (the runtime reads it once at load)."""
        return DecodeLimits.from_config(self.ctx.model_config)

    @abstractmethod
    def load(self) -> None:
        """Load the model; raise `ModelLoadError` with a reason a user can act on."""

    @abstractmethod
    def predict(self, request: Request) -> Response:
        """Answer one request; raise `ProcessorError` for bad input."""

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """Answer several requests; processors with a vectorised path override this."""
        return [self.predict(r) for r in requests]

    # The Open Inference Protocol (KServe v2, eas/protocols/oip.py): optional. A processor that
    # overrides `infer_v2` serves `/v2/models/{name}/infer` and gRPC ModelInfer; the
    # protocol layer decodes tensors to numpy before and encodes after, so a processor
    # sees arrays only. Without it, v2 calls get a 400 saying so.

    def infer_v2(self, inputs: dict[str, "np.ndarray"], outputs: list[str] | None) -> dict[str, "np.ndarray"]:
        """Run the model on named input arrays; return the named output arrays.

        `outputs` lists the names the client asked for (None: the model's default
        outputs). BYTES inputs arrive as object arrays of `bytes`. Raise
        `ProcessorError` naming the input or output at fault for anything the model
        cannot take (unknown or missing input, wrong rank, dtype or width).
        """
        raise ProcessorError(f"{type(self).__name__} does not support the Open Inference Protocol (v2)")

    def signature(self) -> dict[str, Any]:
        """The model's inputs and outputs as EAS answers a GET on the predict path (the
        form processors/_signature.py builds): what clients read to build a request.
        Without an override, `signature_of` derives it from `metadata_v2`."""
        raise ProcessorError(f"this service's processor ({type(self).__name__}) has no model signature to show; "
                             "GET on the predict path answers for tensor models (tensorflow, onnx, pytorch, paddle)")

    def metadata_v2(self) -> dict[str, Any]:
        """`{"platform": str, "inputs": [...], "outputs": [...]}`, each tensor
        `{"name": str, "dtype": numpy dtype, "shape": [int, ...]}` with -1 for a
        dimension of any size."""
        raise ProcessorError(f"{type(self).__name__} does not support the Open Inference Protocol (v2)")


# orjson parses and writes numbers about ten times faster than `json`: for a request
# of a few thousand floats, decoding was the largest cost of the whole call. `json`
# stays as the fallback for what orjson refuses (NaN/Infinity literals, integers
# beyond 64 bits, odd key types) and for its clearer error messages.
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_response(payload: Any, status: int = 200) -> Response:
    try:
        body = orjson.dumps(payload, option=_ORJSON_OPTIONS)
    except TypeError:
        body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(body, status, "application/json")


def parse_json_body(body: bytes) -> Any:
    """Decode a JSON body, or raise a 400 that says what is wrong with it.

    Whatever the body does to the decoders (nesting past their depth limits raises
    RecursionError in `json`) is this request's 400, never an error of its batch.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # nested past orjson's 1024 levels: `json` would recurse too
            raise ProcessorError(f"request body nests too deeply: {exc}") from None
    except Exception as exc:
        raise decode_error(exc) from None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProcessorError(f"request body is not valid JSON: {exc}") from None
    except Exception as exc:
        raise decode_error(exc) from None


def error_body(status: int, message: str, request_id: str = "", code: Any = None) -> bytes:
    """The one shape of every data-plane error: `{"code", "message", "request_id"}`.

    The gateway, the runtime and batched processors all answer errors with it, so a
    client cannot tell where a request failed from the body's shape.
    """
    payload = {"code": code if code is not None else status, "message": message, "request_id": request_id}
    return json.dumps(payload, ensure_ascii=False).encode()


def error_response(error: ProcessorError, request_id: str = "") -> Response:
    """One failed request inside `predict_batch`, where raising would fail the whole batch."""
    return Response(error_body(error.status, error.message, request_id, error.code), error.status)


def predict_or_error(processor: Processor, request: Request) -> Response:
    """`processor.predict(request)`, with any exception turned into its error response.

    For batch paths that fall back to answering requests one by one: whatever one
    request raises (a `ProcessorError`, or a processor bug as the runtime would answer
    it: a 400 naming the exception) is its own answer, never its batch's.
    """
    try:
        return processor.predict(request)
    except ProcessorError as exc:
        return error_response(exc, request.request_id)
    except Exception as exc:
        log.warning("%s raised on request %s", type(processor).__name__, request.request_id, exc_info=True)
        return Response(error_body(400, f"processor raised {type(exc).__name__}: {exc}", request.request_id), 400)
