"""WebSocket relaying shared by the gateway (client -> instance) and by instances of
container services (gateway -> container): a session relayed frame by frame, both
ways, in order, closes passed on with their code and reason.

`relay` runs a session between a `ClientSide` (the accepting end, as a transport offers
it: `StarletteSide` for Starlette's WebSocket) and a `websockets` client connection to
the next hop. Bounded: a frame is at most `MAX_FRAME_BYTES`, each direction buffers a
bounded number of frames, and a side that does not read slows the other one down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, Protocol

from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from eas.protocols.http import to_response
from eas.protocols.wire import Answer

MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame relayed either way (uvicorn's default `ws_max_size` on the client side)."""
MAX_QUEUED_FRAMES = 16
"""Frames from the next hop buffered before reading from it pauses."""


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


class StarletteSide:
    """The client's end of a relayed WebSocket session (eas/gateway/websocket.py `ClientSide`)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def accept(self, subprotocol: str | None) -> None:
        await self.ws.accept(subprotocol=subprotocol)

    async def refuse(self, answer: Answer) -> None:
        """The HTTP answer to the upgrade (uvicorn's WebSocket denial extension); a server
        without it can only close, which clients see as 403."""
        try:
            await self.ws.send_denial_response(to_response(answer))
        except RuntimeError:
            await self.ws.close(1008, answer.body[:120].decode("utf-8", "replace"))

    async def receive(self) -> str | bytes | Closed:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return Closed(message.get("code") or 1005, message.get("reason") or "")
        text = message.get("text")
        return text if text is not None else (message.get("bytes") or b"")

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_text(message)
        else:
            await self.ws.send_bytes(message)

    async def close(self, code: int, reason: str) -> None:
        try:  # a close frame's reason is at most 123 bytes of UTF-8
            await self.ws.close(code, reason.encode()[:123].decode("utf-8", "ignore"))
        except (RuntimeError, OSError):  # already closed, or the client is gone
            pass
