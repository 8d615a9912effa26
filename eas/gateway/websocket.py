"""WebSocket pass-through: a client's session relayed frame by frame to an instance.

Web UIs served by instances (container services with `enable_webservice`) and the
queue watch hold WebSockets at the service's predict path. The gateway admits the
upgrade like any request (eas/gateway/core.py `Gateway.websocket`: the token is checked
from the upgrade's headers, before anything is relayed), opens a WebSocket of its own to
an instance (`connect`, with the route's internal key), accepts the client with the
subprotocol the instance chose, then relays (`relay`): text and binary frames both
ways, in order, each side's pings answered on its own hop; a close from either side
is passed to the other with its code and reason (an instance that vanishes closes the
client with 1011).

Bounded: a frame is at most `MAX_FRAME_BYTES` (the client side's limit is uvicorn's
`ws_max_size`, the same 16 MiB), each direction buffers a bounded number of frames, and
a side that does not read slows the other one down (each send waits for its
connection to drain). A session has no time limit: web apps hold them open.

An adapter of the transport (eas/gateway/http.py) implements `ClientSide`; everything
here is free of Starlette.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from eas.gateway.upstream import UpstreamRefused
from eas.protocols.wire import Answer

MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame relayed either way (uvicorn's default `ws_max_size` on the client side)."""
MAX_QUEUED_FRAMES = 16
"""Frames from the instance buffered before reading from it pauses."""
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Closed:
    """One side closed the session (or went away: 1006)."""

    code: int
    reason: str = ""


class ClientSide(Protocol):
    """The client's end of a session, as the transport offers it."""

    async def accept(self, subprotocol: str | None) -> None: ...

    async def refuse(self, answer: Answer) -> None:
        """Answer the upgrade with an HTTP error instead (401, 404, 503, ...)."""

    async def receive(self) -> str | bytes | Closed: ...

    async def send(self, message: str | bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class UpgradeRefused(Exception):
    """The instance answered the upgrade with HTTP instead of switching protocols."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"the instance answered the upgrade with {status}")
        self.status = status
        self.body = body


async def connect(host: str, port: int, path: str, query: str, headers: Mapping[str, str],
                  subprotocols: Sequence[str], timeout: float) -> ClientConnection:
    """A WebSocket to an instance at `path` (decoded: escaped here) and `query` (as the
    client sent it). Raises UpstreamRefused when no connection could be made (the
    session may go to another instance), UpgradeRefused when the instance answered with
    an HTTP status, TimeoutError when the handshake took longer than `timeout`."""
    url = f"ws://{host}:{port}{quote(path, safe=_PATH_SAFE)}" + (f"?{query}" if query else "")
    try:
        return await ws_connect(url, additional_headers=dict(headers), subprotocols=list(subprotocols) or None,
                                open_timeout=timeout, max_size=MAX_FRAME_BYTES, max_queue=MAX_QUEUED_FRAMES,
                                compression=None, proxy=None, user_agent_header=None)
    except InvalidStatus as exc:
        raise UpgradeRefused(exc.response.status_code, exc.response.body or b"") from None
    except InvalidHandshake as exc:
        raise UpgradeRefused(502, f"the instance's WebSocket handshake failed: {exc}".encode()) from None
    except OSError as exc:  # refused, reset: nothing was relayed yet
        raise UpstreamRefused(f"cannot open a WebSocket to {host}:{port}: {exc or type(exc).__name__}") from None


def sendable(code: int | None, fallback: int) -> int:
    """A close code one may put in a close frame: 1005/1006/1015 only describe a close,
    and codes outside the registered and application ranges are refused by peers."""
    if code is None or code in (1004, 1005, 1006, 1015) or not (1000 <= code < 1016 or 3000 <= code < 5000):
        return fallback
    return code


@dataclass(frozen=True)
class Ended:
    """How a relayed session ended."""

    by: str
    """"client" or "instance": who closed first (or went away)."""
    code: int
    reason: str


async def relay(client: ClientSide, upstream: ClientConnection, on_frame: Callable[[str], None]) -> Ended:
    """Relay frames both ways until one side closes, then close the other with the same
    code and reason. `on_frame("in")` / `on_frame("out")` counts each frame relayed
    from / to the client."""

    async def inbound() -> Ended:
        while True:
            message = await client.receive()
            if isinstance(message, Closed):
                return Ended("client", message.code, message.reason)
            try:
                await upstream.send(message)
            except ConnectionClosed:
                return Ended("instance", upstream.close_code or 1006, upstream.close_reason or "")
            on_frame("in")

    async def outbound() -> Ended:
        while True:
            try:
                message = await upstream.recv()
            except ConnectionClosed:
                return Ended("instance", upstream.close_code or 1006, upstream.close_reason or "")
            try:
                await client.send(message)
            except Exception:  # the client went away (uvicorn raises once its socket is gone)
                return Ended("client", 1006, "")
            on_frame("out")

    loop = asyncio.get_running_loop()
    tasks = (loop.create_task(inbound()), loop.create_task(outbound()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    exc = first.exception()
    ended = first.result() if exc is None else Ended("client", 1006, f"{type(exc).__name__}: {exc}")
    if ended.by == "client":
        await upstream.close(sendable(ended.code, 1000), ended.reason if ended.code != 1006 else "client went away")
    else:
        gone = ended.code == 1006
        await client.close(sendable(ended.code, 1011 if gone else 1000),
                           "the instance closed the connection" if gone else ended.reason)
    return ended
