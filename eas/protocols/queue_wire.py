"""The EAS queue service's wire format, as the official SDKs speak it.

The Python (`eas_prediction.QueueClient`), Go (`eas.NewQueueClient`) and Java
(`QueueClient`) SDKs all talk to `/api/predict/{svc}` (the input queue) and
`/api/predict/{svc}/sink` with the same query keys (`_index_`, `_length_`, `_timeout_`,
`_auto_delete_`, `_attrs_`, `_search_`, `_indexes_`, `_trunc_`, `_watch_`, `_window_`,
`_index_only_`, `_auto_commit_`; every other key is a tag), the same headers and the
protobuf messages of protos/queue_service.proto. This module is the codec only; what
the operations do is eas/queue/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from processors import protobuf

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")
DataFrameProto: Any = _defs["eas.queue.DataFrameProto"]
DataFrameListProto: Any = _defs["eas.queue.DataFrameListProto"]
AttributesProto: Any = _defs["eas.queue.AttributesProto"]

REQUEST_ID_HEADER = "X-Eas-Queueservice-Request-Id"
USER_HEADER = "X-EAS-QueueService-Redis-Uid"
GROUP_HEADER = "X-EAS-QueueService-Redis-Gid"
PRIORITY_HEADER = "X-EAS-QueueService-Priority"
PROTOBUF = "application/vnd.google.protobuf"

#: Query keys of the protocol; any other key is a tag (tags never start with "_").
RESERVED = frozenset({"_index_", "_length_", "_timeout_", "_raw_", "_auto_delete_", "_attrs_", "_search_",
                      "_indexes_", "_trunc_", "_watch_", "_window_", "_index_only_", "_auto_commit_",
                      "_eos_", "_force_", "_negative_"})
#: The key a request id is asked by on GET (the SDKs send `requestId`).
REQUEST_ID_TAG = "requestId"
MAX_LENGTH = 1000
"""Entries one GET answers at most (`_length_`)."""
MAX_TIMEOUT_S = 60.0
"""The longest long poll (`_timeout_`)."""
MAX_WINDOW = 1000
MAX_INDEXES = 1000
"""Indexes one delete or commit names at most (`_indexes_`)."""


class QueueRequestError(ValueError):
    """A request the protocol cannot take: answered 400 with the reason."""


def frame(index: int, data: bytes, tags: Mapping[str, str], message: str = "") -> Any:
    df = DataFrameProto(index=index, data=data, message=message)
    df.tags.update(tags)
    return df


def encode_frame(index: int, data: bytes, tags: Mapping[str, str], message: str = "") -> bytes:
    return frame(index, data, tags, message).SerializeToString()


def encode_list(frames: list[tuple[int, bytes, Mapping[str, str], str]]) -> bytes:
    out = DataFrameListProto()
    out.index.extend(frame(*f) for f in frames)
    return out.SerializeToString()


def encode_attributes(attrs: Mapping[str, str]) -> bytes:
    out = AttributesProto()
    out.attributes.update(attrs)
    return out.SerializeToString()


def tags_of(query: Mapping[str, str]) -> dict[str, str]:
    """The tags of a request: every query key that is not the protocol's."""
    return {k: v for k, v in query.items() if k not in RESERVED and not k.startswith("_")}


def flag(query: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = query.get(key)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise QueueRequestError(f"{key} must be true or false, not {value!r}")


def integer(query: Mapping[str, str], key: str, default: int, low: int = 0, high: int | None = None) -> int:
    value = query.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(float(value)) if "." in value else int(value)
    except ValueError:
        raise QueueRequestError(f"{key} must be a whole number, not {value!r}") from None
    if number < low or (high is not None and number > high):
        raise QueueRequestError(f"{key} must be between {low} and {high if high is not None else 'any'}: {number}")
    return number


def indexes(query: Mapping[str, str]) -> list[int]:
    raw = query.get("_indexes_", "")
    try:
        found = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise QueueRequestError(f"_indexes_ must be indexes separated by commas, not {raw!r}") from None
    if not found:
        raise QueueRequestError("_indexes_ names no index")
    if len(found) > MAX_INDEXES:
        raise QueueRequestError(f"_indexes_ names {len(found)} indexes: at most {MAX_INDEXES} at once")
    return found


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str | None) -> float:
    """`_timeout_` as the SDKs write it: Python "5s", Go's Duration.String() ("1m30s",
    "500ms", "0s"), or a bare number of seconds. At most MAX_TIMEOUT_S."""
    if text is None or text.strip() == "":
        return 0.0
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise QueueRequestError(f"_timeout_ {text!r} is not a duration such as 5s or 500ms") from None
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds < 0:
        raise QueueRequestError("_timeout_ must not be negative")
    return min(seconds, MAX_TIMEOUT_S)
