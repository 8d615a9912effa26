"""The EAS data-plane wire: header names, size limits, and the one error body.

Gateway, instances and clients meet here, so a header is spelled in one place and an
error looks the same wherever a request failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Mapping, Protocol

from processors.base import error_body

__all__ = [
    "INSTANCE_HEADER", "INSTANCE_KEEPALIVE_S", "INTERNAL_KEY_HEADER", "MAX_BODY_BYTES", "PASSED_HEADERS",
    "PROCESSOR_TIME_HEADER", "REQUEST_ID_HEADER", "TARGET_HEADER", "Answer", "BodyStream", "error_answer",
    "error_body", "passed_headers",
]

REQUEST_ID_HEADER = "X-Request-Id"
#: The instance that answered (`<service>-<replica id>`).
INSTANCE_HEADER = "X-Eas-Instance"
#: The gateway's proof to an instance that it already checked the client.
INTERNAL_KEY_HEADER = "X-Eas-Internal-Key"
#: Milliseconds the request spent inside the instance (queue + processor).
PROCESSOR_TIME_HEADER = "X-Eas-Processor-Ms"
#: Pins a request to one service behind a shared or group endpoint (debugging).
TARGET_HEADER = "X-Eas-Target"
#: Where the JSON part of a binary Open Inference Protocol body ends.
OIP_HEADER_LENGTH = "Inference-Header-Content-Length"

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body a gateway or instance takes (413 beyond)."""
INSTANCE_KEEPALIVE_S = 75
"""Idle keep-alive of instance servers; the gateway closes its idle connections sooner."""

PASSED_HEADERS = ("Content-Type", INSTANCE_HEADER, PROCESSOR_TIME_HEADER, OIP_HEADER_LENGTH)
"""Instance answer headers a caller sees (the rest are the instance server's own)."""


class BodyStream(Protocol):
    """An answer's body as it is produced: chunks of bytes, then the end.

    Whoever sends it on reads it to its end, or calls `aclose()` when it stops early
    (the client went away): the producer then stops and frees what it holds.
    """

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    """A data-plane answer, whatever the transport: status, body and headers."""

    status: int
    body: bytes
    headers: dict[str, str]
    stream: BodyStream | None = None
    """A streamed answer's body, chunk by chunk as it is produced (`body` is then empty):
    chunked or server-sent events from an instance, chunks a processor yields."""


#: Headers are str -> str maps on every hop; a header an app sends several times that
#: cannot be comma-joined (Set-Cookie: its Expires holds a comma) keeps its values
#: joined by a line break, which no header value can hold, and is written back as one
#: line per value (eas/protocols/http.py).
REPEATED_SEPARATOR = "\n"
UNJOINABLE_HEADERS = frozenset({"set-cookie"})


def add_header(headers: dict[str, str], name: str, value: str) -> None:
    """Add one received header line to a map (`name` lower-case): a repeated header is
    joined as HTTP allows (comma), Set-Cookie by REPEATED_SEPARATOR."""
    if name in headers:
        headers[name] += (REPEATED_SEPARATOR if name in UNJOINABLE_HEADERS else ", ") + value
    else:
        headers[name] = value


def error_answer(status: int, message: str, request_id: str, extra: Mapping[str, str] | None = None) -> Answer:
    """The error answer every data-plane layer gives: EAS's JSON error body plus the request id."""
    headers = {REQUEST_ID_HEADER: request_id, "Content-Type": "application/json", **(extra or {})}
    return Answer(status, error_body(status, message, request_id), headers)


def passed_headers(received: Mapping[str, str], request_id: str) -> dict[str, str]:
    """The caller's view of an instance answer's headers (`received` has lower-case names)."""
    headers = {REQUEST_ID_HEADER: request_id}
    for key in PASSED_HEADERS:
        value = received.get(key.lower())
        if value is not None:
            headers[key] = value
    return headers
