"""The gateway's HTTP/1.1 client to instances: pooled keep-alive connections, little else.

aiohttp's client took a third of the gateway's event loop per forwarded request
(profiled at concurrency 32): URL objects, cookie handling, tracing hooks and a timeout
task per call, none of which a hop to our own instances needs. The instances are
uvicorn servers we run, so this client does only what that hop uses: one request at a
time per connection, a Content-Length body out, a Content-Length or chunked answer in
(parsed by httptools, the parser uvicorn uses on the other side), and a pool of idle
connections per instance, newest first. Measured: sklearn iris at c=32 through the
gateway went from 2440 to 2715 req/s when it replaced aiohttp's client.

Streamed answers. A caller that can pass an answer on as it arrives (`stream=True`)
gets, for an answer the instance streams (chunked, `text/event-stream`, or a declared
length over `STREAM_ABOVE_BYTES`), the status and headers at once and the body as an
`UpstreamStream`: chunks as they arrive, with back-pressure (reading from the instance
pauses while more than `STREAM_HIGH_BYTES` wait for the caller), so memory per stream
stays bounded whatever the answer's size. Every other answer is read whole, as before:
the decision is taken from the answer's headers, and costs the fast path nothing.

Failures are told apart by what the instance may have done with the request (the
gateway decides from that what may be sent again, eas/gateway/core.py):
`UpstreamRefused`, never delivered (no connection, or it broke before the whole request
was handed to the kernel); `UpstreamFailed` with `in_flight`, the instance took the
request and the connection closed before a complete answer (it may have run it), and
`gone` when the instance then refused a new connection too; `UpstreamTimeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import quote

import httptools

from eas.protocols.wire import add_header

IDLE_S = 30.0
"""Idle connections older than this are closed, well inside the instances' keep-alive
(eas/protocols/wire.py INSTANCE_KEEPALIVE_S) so that the instance never closes a
connection just as the gateway reuses it."""
STREAM_ABOVE_BYTES = 1 << 20
"""A Content-Length answer larger than this is passed on as a stream when the caller can
(the gateway never holds a large answer whole)."""
STREAM_HIGH_BYTES = 256 * 1024
"""Bytes of a streamed answer waiting for the caller above which reading from the
instance pauses (TCP then slows the instance down); it resumes once they are taken."""
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar plus "/": everything else is escaped


class UpstreamRefused(Exception):
    """Never delivered: no connection, or it broke before the whole request was handed
    over. The instance cannot have run it, so another instance may take the request."""


class UpstreamFailed(Exception):
    """The request was sent, then the connection broke or the answer was malformed."""

    def __init__(self, message: str, *, in_flight: bool = False, gone: bool = False) -> None:
        super().__init__(message)
        self.in_flight = in_flight
        """The instance took the whole request and the connection closed before a complete
        answer: it may have run it (sending it elsewhere may run it twice)."""
        self.gone = gone
        """The instance refused a new connection afterwards: it died or stopped."""


class UpstreamTimeout(Exception):
    """No complete answer (or, streaming, no next chunk) within the time given."""


@dataclass
class UpstreamAnswer:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes
    stream: UpstreamStream | None = None
    """The body as it arrives, for a streamed answer (`body` is then empty)."""


class _Connection(asyncio.Protocol):
    def __init__(self, key: tuple[str, int], on_lost: Callable[["_Connection"], None],
                 on_idle: Callable[["_Connection"], None]) -> None:
        self.key = key
        self._on_lost = on_lost
        self._on_idle = on_idle
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.received = False
        """Any byte of an answer arrived since the last request was sent."""
        self.sent_all = True
        """The whole request was handed to the kernel (False while part of it waits in
        the transport's buffer: a connection lost then never delivered it)."""
        self.idle_since = 0.0
        self.stream: UpstreamStream | None = None
        self._stream_ok = False
        self._gap_s = 0.0
        self._waiter: asyncio.Future[UpstreamAnswer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Told (pause_writing) whenever a write leaves bytes behind, and (resume_writing)
        # when they are out: what tells "not delivered" from "sent" when the connection breaks.
        self.transport.set_write_buffer_limits(high=0)

    def pause_writing(self) -> None:
        self.sent_all = False

    def resume_writing(self) -> None:
        self.sent_all = True

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailed(f"malformed answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        # The instance closed its side (it went away): never hand this connection out again,
        # even before connection_lost runs.
        self.closed = True
        self._on_lost(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        why = "the instance closed the connection" + (f": {exc}" if exc else "")
        if self.stream is not None:
            self.stream._broken(UpstreamFailed(why + " in the middle of its answer"))
        if not self.sent_all:
            self._fail(UpstreamRefused(why + " before the request was sent whole"))
        else:
            self._fail(UpstreamFailed(why, in_flight=True))

    # -- httptools callbacks ---------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        add_header(self._headers, name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        if not self._stream_ok:
            return
        headers = self._headers
        length = headers.get("content-length")
        if not ("chunked" in headers.get("transfer-encoding", "").lower()
                or headers.get("content-type", "").startswith("text/event-stream")
                or (length is not None and length.isdigit() and int(length) > STREAM_ABOVE_BYTES)):
            return
        self.stream = UpstreamStream(self, self._gap_s)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(UpstreamAnswer(self.parser.get_status_code(), headers, b"", self.stream))

    def on_body(self, body: bytes) -> None:
        if self.stream is not None:
            self.stream._feed(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.stream is not None:
            self._headers = {}
            self.stream._end()
            return
        answer = UpstreamAnswer(self.parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # -- use -------------------------------------------------------------------------

    def send(self, raw: bytes, timeout: float, stream_ok: bool = False,
             gap_s: float = 0.0) -> asyncio.Future[UpstreamAnswer]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamAnswer] = loop.create_future()
        self._waiter, self.reusable, self.received = waiter, False, False
        self._stream_ok, self._gap_s = stream_ok, gap_s
        # A timer, not asyncio.wait_for: wait_for costs a task per request.
        timer = loop.call_later(timeout, self._fail, UpstreamTimeout(f"no answer within {timeout:.1f} s"))
        waiter.add_done_callback(lambda _: timer.cancel())
        try:
            self.transport.write(raw)
        except (RuntimeError, OSError) as exc:  # uvloop refuses a write to a transport closed under us
            self._fail(UpstreamRefused(f"the connection to the instance broke before the request was sent: {exc}"))
        return waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def stream_done(self) -> None:
        """The streamed answer was read to its end: the connection may serve the next request."""
        self.stream = None
        if self.reusable and not self.closed:
            self._on_idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamStream:
    """A streamed answer's body, chunk by chunk as it arrives (async iterator of bytes).

    Bounded: past `STREAM_HIGH_BYTES` waiting, the connection stops reading from the
    instance until the caller takes them (all that waits comes out as one chunk). Each
    wait for the next bytes is bounded by the gap given to the request
    (UpstreamTimeout). Read to its end, the connection goes back to the pool;
    `aclose()` before that drops it, which tells the instance its caller is gone.
    """

    def __init__(self, conn: _Connection, gap_s: float) -> None:
        self._conn = conn
        self._gap_s = gap_s
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._paused = False
        self._ended = False
        self._closed = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection -----------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if not self._paused and self._size > STREAM_HIGH_BYTES and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _broken(self, exc: Exception) -> None:
        if not self._ended and self._error is None:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _gap_passed(self) -> None:
        self._broken(UpstreamTimeout(f"the instance sent nothing for {self._gap_s:.1f} s in the middle of its answer"))

    # -- read by the caller ---------------------------------------------------------------

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._closed:
                raise StopAsyncIteration
            if self._error is not None:
                self._closed = True
                self._conn.abort()
                raise self._error
            if self._ended:
                self._closed = True
                self._conn.stream_done()
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(self._gap_s, self._gap_passed) if self._gap_s > 0 else None
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            transport = self._conn.transport
            if transport is not None and not self._conn.closed:
                transport.resume_reading()
        return data

    async def aclose(self) -> None:
        """Stop reading: unless the answer was read to its end, the connection is dropped."""
        if not self._closed:
            self._closed = True
            self._conn.abort()
        self._wake()

    @property
    def complete(self) -> bool:
        """The answer was read to its end."""
        return self._closed and self._ended and not self._chunks and self._error is None


class UpstreamPool:
    """Keep-alive connections to instances, keyed by (host, port); one event loop only."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(self, method: str, host: str, port: int, path: str, headers: Mapping[str, str],
                      body: bytes, timeout: float, *, stream: bool = False, gap_s: float = 0.0,
                      query: str = "") -> UpstreamAnswer:
        """Send one request and return its answer: whole, or (`stream`, and the instance
        streams it) its head with an `UpstreamStream` whose waits are bounded by `gap_s`.

        Raises UpstreamRefused (never delivered), UpstreamTimeout or UpstreamFailed. A
        cancelled caller drops the connection: its answer may still be on the way.
        """
        target = quote(path, safe=_PATH_SAFE) + (f"?{quote(query, safe=_PATH_SAFE + '?=&%')}" if query else "")
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Length: {len(body)}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise UpstreamFailed(f"header {name!r} has a line break")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        raw = "".join(head).encode("latin-1") + body
        key = (host, port)
        conn = self._take(key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(host, port, timeout)
        try:
            answer = await conn.send(raw, timeout, stream, gap_s)
        except UpstreamFailed as exc:
            conn.abort()
            if not exc.in_flight or conn.received:
                raise
            # Closed before any byte of an answer: the instance died with the request, or
            # (a reused connection) it closed that idle connection just as it was reused.
            # A new connection tells which.
            try:
                fresh = await self._connect(host, port, timeout)
            except UpstreamRefused as gone:
                raise UpstreamFailed(f"{exc}, and is gone ({gone})", in_flight=True, gone=True) from None
            if not reused:
                self._put(fresh)
                raise
            # Alive, and it closed an idle connection as it was reused: a live instance never
            # closes a connection on a request it read without answering, so the request goes
            # once more on the fresh connection. To this instance only: a request that
            # killed its instance must not be sent to kill the next one.
            conn = fresh
            try:
                answer = await conn.send(raw, timeout, stream, gap_s)
            except BaseException:
                conn.abort()
                raise
        except BaseException:
            conn.abort()
            raise
        if answer.stream is None:
            self._put(conn)
        return answer

    def _put(self, conn: _Connection) -> None:
        """Back to the pool if it can serve another request, else closed."""
        if conn.reusable and not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            conn.abort()

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the newest: least likely to be near its expiry
            if not conn.closed and now - conn.idle_since < self.idle_s:
                return conn
            conn.abort()
        return None

    async def _connect(self, host: str, port: int, timeout: float) -> _Connection:
        """A new connection, or UpstreamRefused; a cancelled caller always sees CancelledError.

        Not `asyncio.wait_for`: before Python 3.12 it runs the connect as a task of its
        own and, when that task finishes in the very loop turn the caller is cancelled
        (a client gone as the connection to the instance completes), returns the
        connection and swallows the cancellation: the request went on for a caller
        that was gone (and a connect finishing after the cancel leaked its socket).
        `asyncio.timeout` connects in this task: a cancel lands in create_connection,
        which closes the half-made transport, or at the next await, which drops it.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection((host, port), self._forget, self._put), host, port)
        except OSError as exc:  # TimeoutError included
            raise UpstreamRefused(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None
        return conn

    def _forget(self, conn: _Connection) -> None:
        """A connection closed (often: its instance went away); drop it from the pool."""
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close(self) -> None:
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.abort()
        self._idle.clear()
