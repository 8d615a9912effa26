"""HTTP plumbing shared by the gateway and the instances (Starlette/ASGI).

- `PredictFastPath`: the one route that carries traffic, `POST /api/predict/{service}[/...]`,
  matched by prefix and handed straight to its handler. Starlette's middleware stack and
  router cost more than the rest of a gateway hop for small requests (profiled: about a
  fifth of the event loop's time); everything else still goes through the Starlette app.
- `until_disconnect`: cancel work whose client went away (answered 499).
- `read_body`: the request body, or None when it is over the limit (413).
- `to_response`: a data-plane `Answer` as a Starlette response.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from eas.protocols.wire import Answer

PREFIX = "/api/predict/"
Handler = Callable[[Request], Awaitable[Response]]
ASGIApp = Callable[..., Awaitable[None]]
T = TypeVar("T")

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
    return Response(answer.body, answer.status, headers=answer.headers)


async def read_body(http: Request, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than `limit` bytes (answer 413)."""
    length = http.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        return None
    body = await http.body()
    return body if len(body) <= limit else None


class ClientGone(Exception):
    """The caller closed the connection before the answer (logged as 499)."""


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
    """The request path a client's EAS signature covers: the path as routed, without
    building Starlette's whole URL object (scheme, host, query) on the hot path."""
    return http.scope.get("root_path", "") + http.scope["path"]
