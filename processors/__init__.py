"""Model processors: bytes in, model call, bytes out (see base.py for the interface).

Runtime use::

    proc = create_processor(service_spec, model_dir=local_model_dir,
                            processor_path=local_code_dir)   # resolved and loaded
    response = proc.predict(Request(body=..., content_type=...))

Importing this package stays cheap: frameworks are imported when a code is resolved.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

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
from .registry import (
    MissingFrameworkError,
    UnknownProcessorError,
    check_framework,
    known_codes,
    resolve,
)

__all__ = [
    "MissingFrameworkError", "ModelContext", "ModelLoadError", "Processor", "ProcessorError", "Request",
    "Response", "UnknownProcessorError", "check_framework", "context_from_spec", "create_processor",
    "error_response", "json_response", "known_codes", "parse_json_body", "predict_or_error", "resolve",
    "signature_of",
]

DEFAULT_WORKERS = 5


def _workers(spec: Mapping[str, Any]) -> int:
    metadata = spec.get("metadata") or {}
    rpc = metadata.get("rpc") or {}
    value = rpc.get("worker_threads") or metadata.get("workers") or DEFAULT_WORKERS
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return DEFAULT_WORKERS


def context_from_spec(
    spec: Mapping[str, Any],
    *,
    model_dir: str | None = None,
    processor_path: str | None = None,
    workers: int | None = None,
    mounts: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> ModelContext:
    """A ModelContext from a service JSON; pass the *local* paths model/code were fetched to.

    Without them, `model_path`/`processor_path` are used as given (local paths, as in
    `eascmd test`). The whole spec is kept in `options` for processors that want more.
    """
    return ModelContext(
        model_dir=model_dir if model_dir is not None else spec.get("model_path"),
        model_entry=spec.get("model_entry") or None,
        model_config=spec.get("model_config"),
        processor_path=processor_path if processor_path is not None else spec.get("processor_path"),
        processor_entry=spec.get("processor_entry") or None,
        processor_mainclass=spec.get("processor_mainclass") or None,
        workers=workers if workers is not None else _workers(spec),
        options=MappingProxyType(dict(spec)),
        mounts=MappingProxyType(dict(mounts or {})),
        device=device,
    )


def create_processor(
    spec: Mapping[str, Any],
    *,
    model_dir: str | None = None,
    processor_path: str | None = None,
    workers: int | None = None,
    load: bool = True,
    mounts: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> Processor:
    """Resolve, build and (unless load=False) load the processor a service JSON asks for.

    Raises UnknownProcessorError (a ValueError) for a bad `processor` code,
    MissingFrameworkError (a ValueError) when loading needs a framework that is not
    installed (its text is the pip command), and ModelLoadError when the model or user
    code cannot be loaded.
    """
    cls = resolve(spec.get("processor"), spec.get("processor_type"))
    if load:
        check_framework(spec.get("processor"), spec.get("processor_type"))
    ctx = context_from_spec(spec, model_dir=model_dir, processor_path=processor_path, workers=workers,
                            mounts=mounts, device=device)
    processor = cls(ctx)
    if load:
        processor.load()
    return processor


def signature_of(processor: Processor) -> dict[str, Any]:
    """What a GET on the predict path answers (processors/_signature.py; numpy loads then)."""
    from ._signature import signature_of as build

    return build(processor)
