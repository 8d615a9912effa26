"""The queue service at an Async service's predict paths, as the official SDKs call it.

`QueueFront` sits in front of the gateway's ASGI application: a request (or WebSocket)
to `/api/predict/{svc}` or `/api/predict/{svc}/sink` of an Async service is a queue
operation; anything else passes through untouched. The token (or EAS signature) is
checked exactly as on predict, before the body is read.

| method | query | does |
|---|---|---|
| POST | tags as keys | put; answers the index, `X-Eas-Queueservice-Request-Id` |
| GET | `_index_ _length_ _timeout_ _auto_delete_ requestId` tags | entries as a `DataFrameListProto` (long poll up to `_timeout_`) |
| GET | `_attrs_` | attributes (JSON, or `AttributesProto` when Accept is protobuf) |
| GET | `_search_ _index_` | where an entry stands (`IsPending`, `WaitCount`) |
| DELETE | `_indexes_` / `_index_ _trunc_` | delete entries / everything before an index |
| PUT | `_indexes_` [`_negative_`] | commit (done with them) / hand back for redelivery |
| WebSocket | `_watch_ _index_ _window_ _index_only_ _auto_commit_` tags | one `DataFrameProto` per frame |
| GET | `_watch_` and the same | the same frames, each after its 4-byte length, streamed (the Go SDK without WebSocket) |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.websockets import WebSocket

from eas.control.queues import QueueEntry, QueueFull, sink_of
from eas.gateway.core import Call, Gateway
from eas.protocols import queue_wire as wire
from eas.protocols.auth import AuthError, body_md5, check_body_md5, check_service_head
from eas.protocols.http import ClientGone, read_body, signed_path, to_response
from eas.protocols.wire import Answer, error_answer
from eas.queue.service import POLL_S, QueueService

log = logging.getLogger("eas.queue")
PREFIX = "/api/predict/"
#: Where the Python and Go SDKs ask for a service's instances in DIRECT mode.
DISCOVERY_PREFIXES = ("/api/v1/servicediscovery/upstreams/", "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/")
#: A watcher with nothing to send looks again after this long (changes through another server).
WATCH_POLL_S = POLL_S


class QueueFront:
    """ASGI: the queue operations of Async services, everything else to `app`."""

    def __init__(self, app: Any, service: QueueService, gateway: Gateway) -> None:
        self.app = app
        self.service = service
        self.gateway = gateway

    def _target(self, scope: dict[str, Any]) -> tuple[str, str] | None:
        """(service, queue) when the path is one of an Async service's queues."""
        path: str = scope.get("path", "")
        if not path.startswith(PREFIX):
            return None
        name, _, sub = path[len(PREFIX):].partition("/")
        if not self.service.is_async(name):
            return None
        return name, sink_of(name) if sub.strip("/") == "sink" else name

    def _discovery(self, scope: dict[str, Any]) -> Answer | None:
        """DIRECT-mode discovery of an Async service (or its sink): the queue service's
        own address, since its queues are served here, not by the instances. An SDK in
        DIRECT mode then speaks the queue protocol to this server as in DEFAULT mode."""
        path: str = scope.get("path", "")
        for prefix in DISCOVERY_PREFIXES:
            if path.startswith(prefix):
                name = path[len(prefix):].partition("/")[0]
                server = scope.get("server")
                if not self.service.is_async(name) or not server:
                    return None
                host, port = server[0], server[1]
                return _json({"endpoints": {"items": [{"ip": host, "port": port, "weight": 100}]}})
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (answer := self._discovery(scope)) is not None:
            await to_response(answer)(scope, receive, send)
            return
        target = self._target(scope) if scope["type"] in ("http", "websocket") else None
        if target is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._watch(WebSocket(scope, receive, send), *target)
            return
        request = Request(scope, receive)
        request_id = uuid.uuid4().hex
        try:
            answer = await self._http(request, *target, request_id)
        except wire.QueueRequestError as exc:
            answer = error_answer(400, str(exc), request_id)
        except QueueFull as exc:
            answer = error_answer(429, str(exc), request_id)
        except ClientGone:
            answer = error_answer(499, "client closed the connection", request_id)
        await to_response(answer)(scope, receive, send)

    # -- admission -------------------------------------------------------------------

    async def _admit(self, name: str, headers: Mapping[str, str], path: str, method: str, client: str | None,
                     request_id: str) -> Answer | str | None:
        """None when the caller holds the token; else the refusal. A signed request
        returns the Content-MD5 its body must have."""
        entry = self.gateway.routes.entry(name)
        if entry is None or entry.closed:
            return error_answer(404, entry.closed if entry else f"service '{name}' does not exist", request_id)
        try:
            return check_service_head(entry.token, headers, path, method=method)
        except AuthError as exc:  # the gateway's 401, with its slow-down of repeated failures
            return await self.gateway.unauthorized(Call(name, headers, path, method=method, client=client), str(exc))

    # -- HTTP ------------------------------------------------------------------------

    async def _http(self, request: Request, name: str, queue: str, request_id: str) -> Answer:
        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        method = request.method
        admitted = await self._admit(name, request.headers, signed_path(request), method,
                                     request.client.host if request.client else None, request_id)
        if isinstance(admitted, Answer):
            return admitted
        if method == "POST" and not wire.flag(query, "_eos_"):
            return await self._put(request, name, queue, query, request_id, admitted)
        if admitted is not None:  # a signed request without a body: the MD5 of nothing
            try:
                check_body_md5(admitted, await body_md5(b""))
            except AuthError as exc:
                return error_answer(401, str(exc), request_id)
        if method == "POST":  # _eos_: the end of a stream of puts; nothing to close here
            return _text("OK")
        if method == "GET":
            if wire.flag(query, "_attrs_"):
                return await self._attributes(request, name, queue)
            if wire.flag(query, "_search_"):
                found = await self.service.run(self.service.queues.position, queue,
                                               wire.integer(query, "_index_", 0, 1))
                return _json(found) if found is not None else \
                    error_answer(404, f"index {query.get('_index_')} is not in queue '{queue}'", request_id)
            if wire.flag(query, "_watch_"):
                return self._http_watch(queue, query)
            return await self._get(queue, query)
        if method == "DELETE":
            if wire.flag(query, "_trunc_"):
                below = wire.integer(query, "_index_", 0, 0)
                await self.service.run(self.service.queues.truncate, queue, below)
                return _text("OK")
            await self.service.run(self.service.queues.delete, queue, wire.indexes(query))
            return _text("OK")
        if method == "PUT":
            chosen = wire.indexes(query)
            if wire.flag(query, "_negative_"):  # not done: deliver them again, whichever watcher holds them
                await self.service.run(self.service.queues.release, self.service.taker(""), queue, chosen)
                self.service.changed(queue)
            else:
                await self.service.run(self.service.queues.delete, queue, chosen)
                self.service.changed(queue)  # a watcher whose window was full sends the next
            return _text("OK")
        return error_answer(405, f"{method} is not a queue operation", request_id)

    async def _put(self, request: Request, name: str, queue: str, query: dict[str, str], request_id: str,
                   expected_md5: str | None) -> Answer:
        spec = self.service.specs[name]
        side = spec.queues.sink if queue != name else spec.queues.source
        limit = min(self.gateway.max_body_bytes,
                    side.max_payload_size_kb * 1024 if side.max_payload_size_kb else self.gateway.max_body_bytes)
        body = await read_body(request, limit)
        if body is None:
            return error_answer(413, f"request body over {limit} bytes", request_id, {"Connection": "close"})
        if expected_md5 is not None:
            try:
                check_body_md5(expected_md5, await body_md5(body))
            except AuthError as exc:
                return error_answer(401, str(exc), request_id)
        priority = wire.integer(request.headers, wire.PRIORITY_HEADER.lower(), 0, 0, 1_000_000) \
            if wire.PRIORITY_HEADER.lower() in request.headers else 0
        entry = await self.service.run(self.service.queues.put, queue, body, wire.tags_of(query), priority=priority,
                                       max_length=side.max_length, evict=side.auto_evict)
        self.service.changed(queue)
        route = self.gateway.routes.get(name)
        if queue == name and (route is None or not route.endpoints):
            # No instance to take it: wake the service now (a reconcile pass; the backlog
            # scales a running service at the controller's next pass anyway).
            self.service.on_put(name)
        return Answer(200, str(entry.index).encode(), {wire.REQUEST_ID_HEADER: entry.request_id,
                                                       "Content-Type": "text/plain"})

    async def _get(self, queue: str, query: dict[str, str]) -> Answer:
        index = wire.integer(query, "_index_", 0, 0)
        length = wire.integer(query, "_length_", 1, 1, wire.MAX_LENGTH)
        wait_s = wire.duration_s(query.get("_timeout_"))
        delete = wire.flag(query, "_auto_delete_", True)
        request_id = query.get(wire.REQUEST_ID_TAG) or None
        tags = {k: v for k, v in wire.tags_of(query).items() if k != wire.REQUEST_ID_TAG}
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            entries = await self.service.run(self.service.queues.get, queue, index=index, length=length,
                                             request_id=request_id, tags=tags, delete=delete)
            left = deadline - asyncio.get_running_loop().time()
            if entries or left <= 0:
                break
            await self.service.wait_change(queue, min(left, POLL_S))
        return Answer(200, wire.encode_list([(e.index, e.data, e.tags, e.message) for e in entries]),
                      {"Content-Type": wire.PROTOBUF})

    async def _attributes(self, request: Request, name: str, queue: str) -> Answer:
        stats = await self.service.run(self.service.queues.stats, queue)
        spec = self.service.specs[name]
        side = spec.queues.sink if queue != name else spec.queues.source
        attrs = {
            "meta.name": queue, "meta.backend": self.service.store.kind, "meta.state": "Normal",
            "meta.maxPayloadBytes": str(side.max_payload_size_kb * 1024 if side.max_payload_size_kb
                                        else self.gateway.max_body_bytes),
            "meta.header.user": wire.USER_HEADER, "meta.header.group": wire.GROUP_HEADER,
            "meta.header.priority": wire.PRIORITY_HEADER,
            "stream.length": str(stats.length), "stream.approxMaxLength": str(side.max_length),
            "stream.lastEntry": str(stats.last), "stream.firstEntry": str(stats.first),
            "stream.pending": str(stats.taken), "consumers.status.total": "1",
            "meta.maxDelivery": str(spec.queues.max_delivery),
        }
        if wire.PROTOBUF in request.headers.get("accept", ""):
            return Answer(200, wire.encode_attributes(attrs), {"Content-Type": wire.PROTOBUF})
        return _json(attrs)

    # -- WebSocket watch ----------------------------------------------------------------

    async def _watch(self, ws: WebSocket, name: str, queue: str) -> None:
        query = dict(parse_qsl(ws.url.query, keep_blank_values=True))
        request_id = uuid.uuid4().hex
        admitted = await self._admit(name, ws.headers, signed_path(ws), "GET",  # type: ignore[arg-type]
                                     ws.client.host if ws.client else None, request_id)
        if isinstance(admitted, Answer):
            await _refuse(ws, admitted)
            return
        try:
            if not wire.flag(query, "_watch_"):
                raise wire.QueueRequestError("a WebSocket on a queue is a watch: add _watch_=true")
            watch = Watch.of(query, queue, self.service)
        except wire.QueueRequestError as exc:
            await _refuse(ws, error_answer(400, str(exc), request_id))
            return
        await ws.accept()
        gone = asyncio.ensure_future(_until_closed(ws))

        async def send_all() -> None:
            async for frame in watch.frames():
                await ws.send_bytes(frame)

        feed = asyncio.ensure_future(send_all())
        try:
            await asyncio.wait({feed, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (feed, gone):
                task.cancel()
            await asyncio.gather(feed, gone, return_exceptions=True)  # the feed's finally hands back
            with contextlib.suppress(Exception):
                await ws.close()

    def _http_watch(self, queue: str, query: dict[str, str]) -> Answer:
        """The Go SDK's watch over plain HTTP (`WebsocketWatch = false`): the same frames
        as a WebSocket's, each after its length (4 bytes, big-endian), in one streamed answer."""
        watch = Watch.of(query, queue, self.service)

        async def body() -> AsyncIterator[bytes]:
            async for frame in watch.frames():
                yield struct.pack(">I", len(frame)) + frame

        return Answer(200, b"", {"Content-Type": wire.PROTOBUF}, body())


@dataclass
class Watch:
    """One watcher: sends entries as they come, at most `window` sent and not committed
    (with auto-commit, each is committed as it is taken, just before it is sent); when it ends, what it was sent
    and did not commit is handed back, to be delivered to the next watcher."""

    service: QueueService
    queue: str
    index: int
    window: int
    index_only: bool
    auto_commit: bool
    tags: dict[str, str]
    taker: str

    @classmethod
    def of(cls, query: Mapping[str, str], queue: str, service: QueueService) -> Watch:
        return cls(service, queue, wire.integer(query, "_index_", 0, 0),
                   wire.integer(query, "_window_", 1, 1, wire.MAX_WINDOW), wire.flag(query, "_index_only_"),
                   wire.flag(query, "_auto_commit_"), wire.tags_of(query),
                   service.taker(f"watch-{uuid.uuid4().hex[:12]}"))

    async def frames(self) -> AsyncIterator[bytes]:
        """Encoded `DataFrameProto`s, forever (the transport stops it when the client leaves)."""
        queues, queue = self.service.queues, self.queue
        try:
            while True:
                held = 0 if self.auto_commit else await self.service.run(queues.held, self.taker, queue)
                entries: list[QueueEntry] = []
                if held < self.window:
                    entries = await self.service.run(queues.take, queue, self.taker, index=self.index,
                                                     limit=self.window - held, tags=self.tags)
                if self.auto_commit and entries:
                    # Committed before they are sent: a client that closes the moment it has
                    # its frames cancels this generator wherever it is, and a commit after the
                    # send could be cut off, handing the entries back to be delivered twice.
                    # Auto-commit is at most once by choice (what is in flight when the
                    # connection breaks is gone); watch without it to have every entry acked.
                    await self.service.run(queues.delete, queue, [e.index for e in entries])
                for e in entries:
                    yield wire.encode_frame(e.index, b"" if self.index_only else e.data, e.tags, e.message)
                if entries and (self.auto_commit or held + len(entries) < self.window):
                    continue
                await self.service.wait_change(queue, WATCH_POLL_S)
        finally:
            with contextlib.suppress(Exception):
                if await self.service.run(queues.release, self.taker, queue):
                    self.service.changed(queue)


async def _refuse(ws: WebSocket, answer: Answer) -> None:
    try:
        await ws.send_denial_response(to_response(answer))
    except RuntimeError:
        await ws.close(1008, answer.body[:120].decode("utf-8", "replace"))


async def _until_closed(ws: WebSocket) -> None:
    """Reads the client's side until it closes (a watcher sends nothing but pings and
    the close; the WebSocket server answers pings itself)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


def _text(text: str) -> Answer:
    return Answer(200, text.encode(), {"Content-Type": "text/plain"})


def _json(data: Any) -> Answer:
    return Answer(200, json.dumps(data).encode(), {"Content-Type": "application/json"})
