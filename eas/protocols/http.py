"""HTTP plumbing shared by the gateway, the instances and the management API (Starlette/ASGI).

- `PredictFastPath`: the one route that carries traffic, `POST /api/predict/{service}[/...]`,
  matched by prefix and handed straight to its handler. Starlette's middleware stack and
  router cost more than the rest of a gateway hop for small requests (profiled: about a
  fifth of the event loop's time); everything else still goes through the Starlette app.
- `until_disconnect`: cancel work whose client went away (answered 499).
- `read_body`: the request body, counted as it arrives; None (answer 413) at the limit.
- `close_unread`: an answer given before the body was read closes the connection.
- `to_response`: a data-plane `Answer` as a Starlette response; a streamed one as a
  `StreamedResponse` (chunk by chunk, back-pressure, the producer closed when the client
  leaves).
- `signed_path`: the path a client's EAS signature covers, as it was sent.
- `ListenerLimits`, `uvicorn_config`: what one listener allows a client (connections,
  idle keep-alive, time and size of a request head, pauses in a body), enforced by
  `GuardedHttpProtocol` below the application, before any of our code runs.
"""

from __future__ import annotations

import asyncio
import http as http_status
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from eas.protocols.wire import REPEATED_SEPARATOR, UNJOINABLE_HEADERS, Answer, BodyStream

log = logging.getLogger("eas.http")
PREFIX = "/api/predict/"
Handler = Callable[[Request], Awaitable[Response]]
ASGIApp = Callable[..., Awaitable[None]]
T = TypeVar("T")
R = TypeVar("R", bound=Response)

#: A request still running after this long starts watching for its client going away.
DISCONNECT_WATCH_AFTER_S = 0.05


class PredictFastPath:
    def __init__(self, app: ASGIApp, handler: Handler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(PREFIX):
            service, _, sub_path = scope["path"][len(PREFIX):].partition("/")
            if service:
                scope["path_params"] = {"service": service, "sub_path": sub_path}
                response = await self.handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def to_response(answer: Answer) -> Response:
    if answer.stream is not None:
        response: Response = StreamedResponse(answer.stream, answer.status, answer.headers)
    else:
        response = Response(answer.body, answer.status, headers=answer.headers)
    if any(REPEATED_SEPARATOR in answer.headers.get(name, "") for name in UNJOINABLE_HEADERS):
        response.raw_headers = split_repeated(response.raw_headers)
    return response


def split_repeated(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """One header line per value of a header kept joined by REPEATED_SEPARATOR
    (eas/protocols/wire.py: several Set-Cookie)."""
    sep = REPEATED_SEPARATOR.encode()
    return [(name, part) for name, value in raw for part in (value.split(sep) if sep in value else (value,))]


class StreamedResponse(Response):
    """An answer whose body is produced as it goes: each chunk is sent as it comes.

    Chunked transfer encoding (no Content-Length). Back-pressure: a chunk is asked of the
    producer only once the previous one was handed to the client's connection (uvicorn's
    `send` waits while the socket's buffer is full), so a slow client slows the producer
    and memory stays bounded. A client that goes away mid-stream is noticed at once (a
    watch on `receive`, which only reports the disconnect once the request body was
    read) and the producer is closed (`aclose`): that is what cancels the work behind it.
    A producer that fails mid-stream ends the answer without its last chunk, the one
    signal HTTP has after a 200: the client sees an incomplete answer, never a complete
    wrong one (uvicorn then logs "returned without completing response" and closes).
    """

    def __init__(self, stream: BodyStream, status: int, headers: Mapping[str, str]) -> None:
        self.stream = stream
        self.status_code = status
        self.background = None
        self.init_headers({k: v for k, v in headers.items() if k.lower() != "content-length"})
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(send))
        watch = loop.create_task(_disconnected_receive(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not pump.done():  # the client left (or the server is stopping): stop producing
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            whole = not pump.cancelled() and pump.exception() is None and pump.result()
            if not whole:
                await self.stream.aclose()
        if not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, send: Any) -> bool:
        """Send the head and every chunk; True when the answer was sent whole."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.stream:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # the producer failed: cut the answer short (see the class doc)
            log.info("streamed answer cut short: %s", exc or type(exc).__name__)
            return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


async def _disconnected_receive(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The caller closed the connection before the answer (logged as 499)."""


#: What a 413 (or any answer given before the body was read) carries: the connection
#: closes, so the server never reads, nor keeps discarding, the rest of a large body.
CLOSE = {"Connection": "close"}
#: An answer given without reading the body keeps the connection only when what is left
#: of the body is declared this small (it is then read and dropped by the HTTP server).
UNREAD_KEEP_BYTES = 64 * 1024


async def read_body(http: Request, limit: int) -> bytes | None:
    """The whole body, counted as it arrives: None as soon as it is over `limit` bytes
    (at once when its Content-Length says so; answer 413 with CLOSE, the rest is never
    read); raises ClientGone when the client leaves. Nothing over the limit is ever
    held, chunked or not, whatever the headers say.
    """
    length = http.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    receive = http.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            http._body = body  # what Starlette's request.body() answers from now on
            return body


def close_unread(http: Request, response: R) -> R:
    """Mark an answer given before the request body was read: unless the body is declared
    small, the connection closes after it (else the server would go on reading a body,
    maybe gigabytes, only to drop it)."""
    length = http.headers.get("content-length")
    if "transfer-encoding" in http.headers or (length is not None and (
            not length.isdigit() or int(length) > UNREAD_KEEP_BYTES)):
        response.headers["connection"] = "close"
    return response


async def until_disconnect(http: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (raises ClientGone).

    Most requests finish in a few milliseconds, so the watcher is only started for
    requests still running after DISCONNECT_WATCH_AFTER_S: the fast path costs one
    timer, not two extra tasks. The watcher cancels this very task when the client
    leaves. Call after the body was read: from then on the ASGI `receive` only ever
    returns the disconnect message.
    """
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    state: dict[str, Any] = {"gone": False, "watch": None}

    def on_disconnect(watch: asyncio.Task[None]) -> None:
        if not watch.cancelled() and watch.exception() is None and me is not None:
            state["gone"] = True
            me.cancel()

    def start_watch() -> None:
        watch = loop.create_task(_disconnected(http))
        watch.add_done_callback(on_disconnect)
        state["watch"] = watch

    timer = loop.call_later(DISCONNECT_WATCH_AFTER_S, start_watch)
    try:
        return await work
    except asyncio.CancelledError:
        if state["gone"]:
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if state["watch"] is not None:
            state["watch"].cancel()


async def _disconnected(http: Request) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


def signed_path(http: Request) -> str:
    """The request target a client's EAS signature covers: the path exactly as it was sent
    (`raw_path`: still percent-encoded), then `?` and the query as sent when there is one,
    as the official SDKs sign it (they sign the string they put in the request line; the
    Java SDK's query parameters included, the others send none; eas/protocols/auth.py
    also accepts a signature over the path alone). Never the decoded path, so
    `/api/predict/svc/a%2Fb` is signed as sent, and never anything from the Host header."""
    raw = http.scope.get("raw_path")
    if raw is None:  # an ASGI server without raw_path: the decoded path is all there is
        path = http.scope.get("root_path", "") + http.scope["path"]
    else:
        path = raw.decode("latin-1")
    query = http.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


# -- what one listener allows a client -------------------------------------------------------


@dataclass(frozen=True)
class ListenerLimits:
    """Per listener (eas-server's predict port, its admin port, each instance server).

    Beyond `concurrency` open connections or requests in progress, uvicorn answers
    `503 Service Unavailable` (text, `Connection: close`) without calling the app; 0 is
    no limit. The three times and the head size are enforced by `GuardedHttpProtocol`.
    """

    concurrency: int = 1000
    """Open connections (idle keep-alive ones included) and requests in progress."""
    keep_alive_s: float = 5.0
    """An idle keep-alive connection closes after this long."""
    head_timeout_s: float = 10.0
    """The request line and headers must be complete this long after the connection
    opened, or after the first byte of a next request on a kept-alive connection: 408,
    closed (a slowloris client holds a connection for this long at most)."""
    body_timeout_s: float = 30.0
    """A body that stops arriving for this long (the app waiting for it): 408, closed."""
    max_head_bytes: int = 64 * 1024
    """Request line plus headers; larger: 431, closed (the parser would otherwise hold
    a never-ending header in memory)."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on what a client may hold.

    uvicorn bounds idle keep-alive connections only: a new connection that sends
    nothing, or sends its head one byte at a time, or a header that never ends, or a
    body that stops halfway, holds a connection (and memory) forever. This subclass
    times the head from the connection (or the first byte of the next request), caps
    its size, and times pauses in a body while the app waits for it; each ends in an
    answer when one can still be given (408 or 431) and a closed connection.

    Cheap per request: a kept-alive connection keeps one head timer that re-arms itself
    (at most once per `head_timeout_s`), so a request costs a clock read, not a timer;
    the body timer exists only while a body spans more than one read.
    """

    limits = ListenerLimits()  # per server: see `uvicorn_config`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        """Between requests or inside a request head (not inside a body)."""
        self._head_bytes = 0
        self._head_at: float | None = None
        """When the head being read began (None: between requests, or in a body)."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_at = 0.0
        self._upgraded = False
        """Handed over to a WebSocket protocol: nothing here times it any more."""

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_at = self.loop.time()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)  # reset when the head completes within this data
            if self._head_at is None:  # the first byte of a next request: its head is timed
                self._head_at = self.loop.time()
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)
        super().data_received(data)
        if self.transport.is_closing() or self._upgraded:
            return
        if self._in_head:
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes")
        else:
            self._body_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_check)

    def handle_websocket_upgrade(self) -> None:
        # The connection now speaks WebSocket with a protocol of its own (its frames and
        # pings bound it): none of this protocol's head or body timers may close it.
        self._upgraded = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().handle_websocket_upgrade()

    # -- httptools callbacks -------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._head_at = None  # the head timer, if armed, finds nothing to time and lapses
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_at = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- the bounds ---------------------------------------------------------------------

    def _busy(self) -> bool:
        """A request of this connection is being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self._head_at is None or self.transport.is_closing():
            return  # no head is being read: the next one arms the timer again
        timeout = self.limits.head_timeout_s
        left = self._head_at + timeout - self.loop.time()
        if left > 0:  # a later head than the one this timer was armed for
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        if self._busy():  # a pipelined head waits behind a request in progress: not the client's delay
            self._head_at = self.loop.time()
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)
            return
        if self._head_bytes:
            self._refuse(408, f"request head not complete within {self.limits.head_timeout_s:g} s")
        else:  # nothing was sent: close quietly, as for an idle keep-alive connection
            self.transport.close()

    def _body_check(self) -> None:
        self._body_timer = None
        if self._in_head or self.transport.is_closing():
            return
        if not self._busy():  # answered already: the rest of the body would only be dropped
            self.transport.close()
            return
        timeout = self.limits.body_timeout_s
        idle = self.loop.time() - self._body_at
        if self.flow.read_paused:  # the app is not reading: not the client's delay
            idle = 0.0
        if idle >= timeout:
            self._refuse(408, f"request body stalled: nothing arrived for {timeout:g} s")
        else:
            self._body_timer = self.loop.call_later(timeout - idle, self._body_check)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` when no answer of this connection has started, then close; a
        request in progress sees its client gone (its answer is dropped)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            body = reason.encode()
            self.transport.write(
                f"HTTP/1.1 {status} {http_status.HTTPStatus(status).phrase}\r\ncontent-type: text/plain; "
                f"charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the `websockets` library's), minus one false alarm:
    after an upgrade answered with an HTTP error (the WebSocket denial extension: a 401
    for a wrong token) it forgets the handshake is over and logs "ASGI callable returned
    without completing handshake" for every refusal."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def uvicorn_config(app: Any, limits: ListenerLimits, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config that serves `app` within `limits` (`GuardedHttpProtocol`)."""
    protocol = type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
    kwargs.setdefault("ws", WebSocketProtocol)
    return uvicorn.Config(app, http=protocol, limit_concurrency=limits.concurrency or None,
                          timeout_keep_alive=limits.keep_alive_s, **kwargs)  # type: ignore[arg-type]
