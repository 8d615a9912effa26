"""The `queue` block of an asynchronous service (`metadata.type: "Async"`).

An asynchronous service gets two queues next to its instances: requests are put on the
input queue (`/api/predict/{svc}`), the platform hands them to the instances one per
worker, and each answer goes on the sink queue (`/api/predict/{svc}/sink`). On EAS the
queues run in their own instances (`cpu`, `memory`, `resource`); here they live in the
store, so those sizing fields are kept without effect. What acts: the length limits,
the payload limit and how often a request is delivered before it goes to the sink with
an error (docs/async.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from eas.spec.base import Strict, kept

#: Entries a queue holds by default (EAS's default for both queues).
DEFAULT_MAX_LENGTH = 10_000
#: Deliveries of one request before it goes to the sink with an error.
DEFAULT_MAX_DELIVERY = 5


class QueueSide(Strict):
    """One of the two queues (`source`: the input queue, `sink`: the answers)."""

    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=1, le=10_000_000, description="entries held at most")
    max_payload_size_kb: int | None = Field(None, ge=1, description="largest entry in KB (default: the body limit)")
    auto_evict: bool = Field(False, description="a full queue drops its oldest entry instead of refusing a put")


class QueueSpec(Strict):
    max_delivery: int = Field(DEFAULT_MAX_DELIVERY, ge=1, le=100,
                              description="deliveries of one request before it goes to the sink with an error")
    source: QueueSide = Field(default_factory=QueueSide)
    sink: QueueSide = Field(default_factory=QueueSide)
    cpu: float | None = kept(None, gt=0)
    memory: int | None = kept(None, ge=1)
    resource: str | None = kept()
    min_replica: int | None = kept(None, ge=0)


def is_async(spec: dict[str, Any]) -> bool:
    """Whether a stored service JSON is an Async service (`metadata.type: "Async"`)."""
    meta = spec.get("metadata")
    return isinstance(meta, dict) and str(meta.get("type") or "").lower() == "async"
