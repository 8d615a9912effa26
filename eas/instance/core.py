"""One instance's data plane, free of any transport: every request to a model enters here.

The gateway forwards to it, and SDKs in DIRECT mode call it straight from the upstream
list, over EAS HTTP or the Open Inference Protocol (eas/instance/http.py is the
adapter). So per-instance rules hold whatever the path and the protocol: nothing is
served before the credentials are set (503), the service token or the gateway's
internal key (401, from the headers, before the body is read), the queue limit (450),
the keepalive (408), cancel when the caller goes away (499), and the counters /stats
reports.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Mapping, TypeVar

from eas.instance.runtime import ServiceRuntime
from eas.protocols.auth import AuthError, body_md5, check_body_md5, check_service_head
from eas.protocols.compression import DecompressionError, decompress_async
from eas.protocols.http import ClientGone
from eas.protocols.wire import (
    INSTANCE_HEADER,
    INTERNAL_KEY_HEADER,
    MAX_BODY_BYTES,
    PROCESSOR_TIME_HEADER,
    REQUEST_ID_HEADER,
    Answer,
    error_answer,
)
from processors.base import ProcessorError, Request, Response

log = logging.getLogger("eas.instance")
T = TypeVar("T")
#: Wraps the work of one call so the transport can cancel it (HTTP: when the client leaves).
Guard = Callable[[Awaitable[Response]], Awaitable[Response]]


@dataclass
class Credentials:
    """Mutable so a token change reaches a running instance without a restart.

    Empty until the host sets them (Serve's reconfigure): an instance with no
    credentials serves nothing (503), and an empty key never matches an empty header.
    """

    token: str = ""
    internal_key: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.token) and bool(self.internal_key)


@dataclass(slots=True)
class Call:
    """One request to this instance, as every transport hands it over."""

    service: str
    """The service the caller named (404 unless it is this instance's)."""
    kind: Literal["predict", "infer_v2", "signature"]
    """An EAS predict body, an Open Inference Protocol call, or a GET of the model's signature."""
    body: bytes
    headers: Mapping[str, str]
    """Case-insensitive (what the auth checks read)."""
    path: str
    """The path as the caller signed it."""
    request_id: str
    content_type: str | None = None
    sub_path: str = ""
    passed: dict[str, str] = field(default_factory=dict)
    """Headers the processor sees (lower-case names)."""
    method: str = "POST"
    query: str = ""
    """The query string as sent (a container service gets it; processors ignore it)."""


class InstanceApp:
    def __init__(self, runtime: ServiceRuntime, instance: str, creds: Credentials,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.runtime = runtime
        self.service = runtime.spec.name
        self.instance = instance
        self.creds = creds
        self.max_body_bytes = max_body_bytes
        meta = runtime.spec.metadata
        self.keepalive_s = meta.rpc.keepalive / 1000
        self.workers = meta.concurrency
        self.max_queue = meta.rpc.max_queue_size
        self.decompressor = meta.rpc.decompressor
        """The codec every predict body is compressed with (`metadata.rpc.decompressor`), or None."""
        self.in_flight = 0
        """Requests running or queued here; past workers + max_queue_size we shed with 450."""
        self.codes: dict[int, int] = {}
        """Answers by status code since start (cumulative, scraped by the controller)."""
        self.processor_seconds = 0.0
        self.on_drain: Callable[[], None] = lambda: None
        """Set by the host (eas/backend/replica.py) to take this instance out of discovery."""

    # -- checks ---------------------------------------------------------------------

    def from_gateway(self, headers: Mapping[str, str]) -> bool:
        """The request carries the server's internal key: the gateway already checked the client."""
        key = headers.get(INTERNAL_KEY_HEADER)
        expected = self.creds.internal_key
        if not key or not expected:  # an empty key is never a key
            return False
        return hmac.compare_digest(key.encode(), expected.encode())

    def refusal(self, service: str, headers: Mapping[str, str], path: str,
                method: str = "POST") -> tuple[int, str] | None:
        """Why a caller may not use this instance, from the request head alone (404
        another service, 503 no credentials yet, 401), or None. A signed request's body
        is checked against its Content-MD5 in `handle`."""
        refused = self._head_check(service, headers, path, method)
        return refused if isinstance(refused, tuple) else None

    def _head_check(self, service: str, headers: Mapping[str, str], path: str,
                    method: str) -> tuple[int, str] | str | None:
        """`refusal`, or the MD5 a signed request's body must have (None: nothing left to check)."""
        if service != self.service:
            return 404, f"this instance serves '{self.service}', not '{service}'"
        if not self.creds.ready:
            return 503, "this instance's credentials are not set yet: retry in a moment"
        if self.from_gateway(headers):
            return None
        try:
            return check_service_head(self.creds.token, headers, path, method=method)
        except AuthError as exc:
            return 401, str(exc)

    def reject(self, status: int, message: str, request_id: str) -> Answer:
        """An error answer, counted as given."""
        self.codes[status] = self.codes.get(status, 0) + 1
        answer = error_answer(status, message, request_id)
        answer.headers[INSTANCE_HEADER] = self.instance
        return answer

    # -- the one path to the model --------------------------------------------------

    async def handle(self, call: Call, guard: Guard | None = None) -> Answer:
        """Admit a call (404, 503, 401, 413, 450), run it within the keepalive (408), count it."""
        checked = self._head_check(call.service, call.headers, call.path,
                                   "GET" if call.kind == "signature" else call.method)
        if isinstance(checked, tuple):
            return self.reject(*checked, call.request_id)
        if len(call.body) > self.max_body_bytes:
            return self.reject(413, f"request body over {self.max_body_bytes} bytes", call.request_id)
        if checked is not None:  # a signed direct call: the body is the one signed
            try:
                check_body_md5(checked, await body_md5(call.body))
            except AuthError as exc:
                return self.reject(401, str(exc), call.request_id)
        if self.in_flight >= self.workers + self.max_queue:
            return self.reject(450, f"instance queue is full ({self.max_queue} waiting, {self.workers} running): "
                               "retry later or add instances", call.request_id)
        self.in_flight += 1
        started = time.perf_counter()
        try:
            body = call.body
            if self.decompressor is not None and call.kind == "predict":
                # After the MD5 check (the SDKs sign the compressed bytes), before the
                # processor; at most the body limit comes out (a bomb is a 413).
                body = await decompress_async(self.decompressor, body, self.max_body_bytes)
            request = Request(body=body, content_type=call.content_type, sub_path=call.sub_path.lstrip("/"),
                              headers=call.passed, request_id=call.request_id, method=call.method, query=call.query)
            work = asyncio.wait_for(self.runtime.run(call.kind, request), self.keepalive_s)
            response = await (guard(work) if guard is not None else work)
        except asyncio.TimeoutError:
            return self.reject(408, f"request ran longer than the keepalive of {self.keepalive_s * 1000:.0f} ms",
                               call.request_id)
        except ClientGone:
            log.info("499 client went away: request %s to %s cancelled", call.request_id, self.instance)
            return self.reject(499, "client closed the connection", call.request_id)
        except DecompressionError as exc:
            return self.reject(exc.status, str(exc), call.request_id)
        finally:
            self.in_flight -= 1
        spent = time.perf_counter() - started
        self.processor_seconds += spent
        headers = {**(response.headers or {}), "Content-Type": response.content_type,
                   REQUEST_ID_HEADER: call.request_id, INSTANCE_HEADER: self.instance,
                   PROCESSOR_TIME_HEADER: f"{spent * 1000:.3f}"}
        chunks = getattr(response, "chunks", None)
        if chunks is not None:  # streamed: its first chunk came within the keepalive
            self.in_flight += 1  # it holds its place in the queue until it ends
            return Answer(response.status, b"", headers, _InstanceStream(self, call, response.status,
                                                                         response.body, chunks))
        self.codes[response.status] = self.codes.get(response.status, 0) + 1
        return Answer(response.status, response.body, headers)

    def stream_ended(self, status: int) -> None:
        """A streamed answer ended (`_InstanceStream`): its place in the queue is free."""
        self.in_flight -= 1
        self.codes[status] = self.codes.get(status, 0) + 1

    # -- what the host and the controller read ---------------------------------------

    def health(self) -> dict[str, object]:
        return {"service": self.service, "instance": self.instance, "in_flight": self.in_flight}

    def stats(self) -> dict[str, object]:
        """Cumulative counters for metrics and autoscaling (the control plane's scraper reads them)."""
        return {
            "instance": self.instance,
            "in_flight": self.in_flight,
            "queued": max(0, self.in_flight - self.workers),
            "codes": self.codes,
            "processor_seconds": self.processor_seconds,
            "load_seconds": self.runtime.load_seconds,
            "warm_up_seconds": self.runtime.warm_up_seconds,
            "cpu_seconds": time.process_time(),
            "batches": self.runtime.batch_sizes(),
        }

    def drain(self) -> dict[str, object]:
        """Stop taking new work before a restart: leave discovery, report what is in flight."""
        self.on_drain()
        return {"instance": self.instance, "in_flight": self.in_flight}


class _InstanceStream:
    """A processor's streamed answer as this instance sends it (the transport reads it).

    The first chunk is already there (it came within the keepalive, like any answer);
    each next one must come within the keepalive of the one before, else the stream is
    cut (the client sees an incomplete answer; 408 counted and logged). Until it ends
    the request keeps its place in `in_flight` (the queue limit, /stats). The transport
    closes it when its client leaves (499): the processor's generator is closed too.
    """

    def __init__(self, app: InstanceApp, call: Call, status: int, first: bytes, chunks: Any) -> None:
        self._app, self._call, self._status = app, call, status
        self._first: bytes | None = first
        self._chunks = chunks
        self._ended = False

    def __aiter__(self) -> _InstanceStream:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._ended:
            raise StopAsyncIteration
        keepalive = self._app.keepalive_s
        try:
            async with asyncio.timeout(keepalive):
                return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._end(self._status)
            raise
        except TimeoutError:
            self._end(408, f"no next chunk within the keepalive of {keepalive * 1000:.0f} ms")
            await self._chunks.aclose()
            raise StreamCut(f"no next chunk within the keepalive of {keepalive * 1000:.0f} ms") from None
        except ProcessorError as exc:
            self._end(exc.status, exc.message)
            raise StreamCut(exc.message) from None
        except Exception as exc:
            self._end(400, f"processor raised {type(exc).__name__}: {exc}")
            raise StreamCut(f"processor raised {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if not self._ended:
            log.info("499 client went away mid-stream: request %s to %s cancelled", self._call.request_id,
                     self._app.instance)
            self._end(499)
        await self._chunks.aclose()

    def _end(self, status: int, why: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self._app.stream_ended(status)
        if why:
            log.warning("request %s to %s: streamed answer cut short (%d): %s", self._call.request_id,
                        self._app.instance, status, why)


class StreamCut(Exception):
    """A streamed answer stopped before its end (the processor failed or went silent)."""
