"""The one small interface every processor implements.

A processor turns request bytes into a model call and the answer back into bytes.
It knows nothing of HTTP, Ray or the gateway: the runtime hands it a `Request` and
sends back the `Response`, so every processor can be tested in-process.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import orjson

if TYPE_CHECKING:
    import numpy as np


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


@dataclass
class Request:
    body: bytes
    content_type: str | None = None
    sub_path: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


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
    """Decode a JSON body, or raise a 400 that says what is wrong with it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProcessorError(f"request body is not valid JSON: {exc}") from None


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
    """`processor.predict(request)`, with a `ProcessorError` turned into its error response.

    For batch paths that fall back to answering requests one by one.
    """
    try:
        return processor.predict(request)
    except ProcessorError as exc:
        return error_response(exc, request.request_id)
