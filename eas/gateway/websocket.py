"""WebSocket pass-through: a client's session relayed frame by frame to an instance.

Web UIs served by instances (container services with `enable_webservice`) and the
queue watch hold WebSockets at the service's predict path. The gateway admits the
upgrade like any request (eas/gateway/core.py `Gateway.websocket`: the token is checked
from the upgrade's headers, before anything is relayed), opens a WebSocket of its own to
an instance (`connect`, with the route's internal key), accepts the client with the
subprotocol the instance chose, then relays (`relay`, eas/protocols/websocket.py, which
container instances use for their next hop too): text and binary frames both
ways, in order, each side's pings answered on its own hop; a close from either side
is passed to the other with its code and reason (an instance that vanishes closes the
client with 1011).

Bounded: a frame is at most `MAX_FRAME_BYTES` (the client side's limit is uvicorn's
`ws_max_size`, the same 16 MiB), each direction buffers a bounded number of frames, and
a side that does not read slows the other one down (each send waits for its
connection to drain). A session has no time limit: web apps hold them open.

The transport's side is `StarletteSide` (eas/protocols/websocket.py); everything here
is free of Starlette.
"""

from __future__ import annotations

from typing import Mapping, Sequence
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from eas.gateway.upstream import UpstreamRefused
# The relay itself is shared with instances that pass WebSockets on to a container.
from eas.protocols.websocket import (MAX_FRAME_BYTES, MAX_QUEUED_FRAMES, ClientSide, Closed, Ended,  # noqa: F401
                                     relay, sendable)

_PATH_SAFE = "/:@!$&'()*+,;=-._~"


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
