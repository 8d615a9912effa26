"""The gateway's instance client against real sockets on loopback: a scripted server
answers each request the way an instance (or a broken one) would."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable

import pytest

from eas.gateway import upstream
from eas.gateway.upstream import UpstreamFailed, UpstreamPool, UpstreamRefused, UpstreamTimeout
from eas.protocols.http import to_response
from eas.protocols.wire import Answer

# request bytes -> raw answer (None: hang up), or a coroutine giving it (a late answer)
Reply = Callable[[bytes], "bytes | None | Awaitable[bytes | None]"]


async def serve(reply: Reply) -> tuple[asyncio.Server, int, list[bytes], list[int]]:
    """A server that reads one whole request at a time and writes `reply(request)`."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                seen.append(request)
                answer = reply(request)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is None:
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen, connections


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Eas-Instance: i-1\r\n" + extra + \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def test_repeated_answer_headers_reach_the_client_one_line_each() -> None:
    """A web app's two Set-Cookie lines (one holding a comma, in its Expires) come back as
    two lines, not one joined line; other repeated headers are comma-joined as HTTP allows."""
    async def go() -> None:
        extra = (b"Set-Cookie: session=abc; Path=/\r\n"
                 b"Set-Cookie: theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\n"
                 b"Vary: Accept\r\nVary: Origin\r\n")
        server, port, _, _ = await serve(lambda _: ok(b"{}", extra))
        pool = UpstreamPool()
        try:
            answer = await pool.request("GET", "127.0.0.1", port, "/p", {}, b"", 5)
        finally:
            pool.close()
            server.close()
        assert answer.headers["vary"] == "Accept, Origin"
        raw = to_response(Answer(200, answer.body, dict(answer.headers))).raw_headers
        assert [v for k, v in raw if k == b"set-cookie"] == [
            b"session=abc; Path=/", b"theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT"]
        assert [v for k, v in raw if k == b"vary"] == [b"Accept, Origin"]

    asyncio.run(go())


def test_keep_alive_chunked_and_connection_close() -> None:
    async def go() -> None:
        answers = iter([
            ok(b'{"a":1}'),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            ok(b"bye", b"Connection: close\r\n"),
            ok(b"again"),
        ])
        server, port, seen, connections = await serve(lambda _: next(answers))
        pool = UpstreamPool()
        try:
            first = await pool.request("POST", "127.0.0.1", port, "/api/predict/s", {"X-A": "1"}, b"{}", 5)
            assert (first.status, first.body, first.headers["x-eas-instance"]) == (200, b'{"a":1}', "i-1")
            assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5)).body == b"abcde"
            assert len(connections) == 1, "the second request reused the first connection"
            assert (await pool.request("GET", "127.0.0.1", port, "/p", {}, b"", 5)).body == b"bye"
            assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"x", 5)).body == b"again"
            assert len(connections) == 2, "an answer with Connection: close is not reused"
            assert seen[0].startswith(b"POST /api/predict/s HTTP/1.1\r\n") and b"\r\nX-A: 1\r\n" in seen[0]
            assert seen[0].endswith(b"Content-Length: 2\r\nX-A: 1\r\n\r\n{}")
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_failures_are_told_apart() -> None:
    async def go() -> None:
        def reply(request: bytes) -> bytes | None:
            if b"/hangup" in request:
                return None
            if b"/garbage" in request:
                return b"NOT HTTP AT ALL\r\n\r\n"
            if b"/slow" in request:
                return b""  # never answers
            return ok(b"fine")

        server, port, seen, _ = await serve(reply)
        pool = UpstreamPool()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        try:
            with pytest.raises(UpstreamRefused):
                await pool.request("POST", "127.0.0.1", dead, "/p", {}, b"", 5)
            with pytest.raises(UpstreamFailed, match="closed the connection"):
                await pool.request("POST", "127.0.0.1", port, "/hangup", {}, b"", 5)
            with pytest.raises(UpstreamFailed, match="malformed"):
                await pool.request("POST", "127.0.0.1", port, "/garbage", {}, b"", 5)
            with pytest.raises(UpstreamTimeout):
                await pool.request("POST", "127.0.0.1", port, "/slow", {}, b"", 0.2)
            assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5)).body == b"fine"
            with pytest.raises(UpstreamFailed, match="line break"):
                await pool.request("POST", "127.0.0.1", port, "/p", {"X-Bad": "a\r\nX-Injected: 1"}, b"", 5)
            # A decoded path with a line break is escaped, never sent raw.
            await pool.request("POST", "127.0.0.1", port, "/p/a\r\nX-Injected: 1", {}, b"", 5)
            assert seen[-1].startswith(b"POST /p/a%0D%0AX-Injected:%201 HTTP/1.1\r\n"), seen[-1][:60]
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


class LateInstance:
    """An instance that answers `/slow` only when the test says so, and `ok` at once to the rest.

    Each interleaving below is driven by events and patched hooks, never by sleeping:
    the client leaves (the request task is cancelled) at one exact moment, then the
    late answer to the cancelled request is let out, and the next request must get its
    own answer on a connection of its own.
    """

    def __init__(self) -> None:
        self.got_slow = asyncio.Event()
        self.release = asyncio.Event()

    async def reply(self, request: bytes) -> bytes:
        if b"/slow" in request:
            self.got_slow.set()
            await self.release.wait()
            return ok(b"late answer to /slow")
        return ok(b"ok")


async def _next_request_is_clean(pool: UpstreamPool, port: int, late: LateInstance, connections: list[int]) -> None:
    late.release.set()  # the answer to the cancelled request goes out now, if its connection lives
    assert not pool._idle, "a cancelled request's connection went back to the pool"
    assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"", 5)).body == b"ok"
    assert len(connections) == 2, "the next request must use a connection of its own"


def test_a_request_cancelled_while_waiting_drops_its_connection() -> None:
    async def go() -> None:
        late = LateInstance()
        server, port, _, connections = await serve(late.reply)
        pool = UpstreamPool()
        try:
            task = asyncio.create_task(pool.request("POST", "127.0.0.1", port, "/slow", {}, b"", 5))
            await late.got_slow.wait()  # sent and received: the answer is pending
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _next_request_is_clean(pool, port, late, connections)
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_a_request_cancelled_as_its_connection_opens_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of the flaky test: the client left in the loop turn where the connection
    to the instance completed. asyncio.wait_for (Python < 3.12) then returned the
    connection and swallowed the cancel: the request went on, and `await task` got an
    UpstreamTimeout instead of CancelledError. Driven here by cancelling from inside the
    connect, right as it returns."""

    async def go() -> None:
        late = LateInstance()
        server, port, _, connections = await serve(late.reply)
        pool = UpstreamPool()
        loop = asyncio.get_running_loop()
        real_connect = loop.create_connection
        tasks: list[asyncio.Task[upstream.UpstreamAnswer]] = []

        async def connect_then_client_leaves(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            made = await real_connect(*args, **kwargs)
            tasks[0].cancel()  # the client goes away in this very turn
            return made

        monkeypatch.setattr(loop, "create_connection", connect_then_client_leaves)
        try:
            tasks.append(asyncio.create_task(pool.request("POST", "127.0.0.1", port, "/slow", {}, b"", 2)))
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            monkeypatch.setattr(loop, "create_connection", real_connect)
            await _next_request_is_clean(pool, port, late, connections)
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_a_request_cancelled_as_its_answer_arrives_drops_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is complete (the connection looks reusable) and the client leaves in
    the same turn: the caller sees CancelledError and the connection is not pooled."""

    async def go() -> None:
        late = LateInstance()
        server, port, _, connections = await serve(late.reply)
        pool = UpstreamPool()
        tasks: list[asyncio.Task[upstream.UpstreamAnswer]] = []
        real_complete = upstream._Connection.on_message_complete

        def complete_then_client_leaves(conn: upstream._Connection) -> None:
            real_complete(conn)
            if tasks and not tasks[0].done():
                tasks[0].cancel()

        monkeypatch.setattr(upstream._Connection, "on_message_complete", complete_then_client_leaves)
        try:
            tasks.append(asyncio.create_task(pool.request("POST", "127.0.0.1", port, "/slow", {}, b"", 5)))
            await late.got_slow.wait()
            late.release.set()
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            monkeypatch.setattr(upstream._Connection, "on_message_complete", real_complete)
            await _next_request_is_clean(pool, port, late, connections)
        finally:
            pool.close()
            server.close()

    asyncio.run(go())


def test_a_reused_connection_closed_by_the_instance_is_retried_once_on_a_fresh_one() -> None:
    async def go() -> None:
        calls = {"n": 0}

        def reply(request: bytes) -> bytes | None:
            calls["n"] += 1
            return None if calls["n"] == 2 else ok(b"ok")  # the 2nd request finds the instance closing

        server, port, seen, connections = await serve(reply)
        pool = UpstreamPool()
        try:
            assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"1", 5)).body == b"ok"
            assert (await pool.request("POST", "127.0.0.1", port, "/p", {}, b"2", 5)).body == b"ok"
            assert len(connections) == 2 and [r[-1:] for r in seen] == [b"1", b"2", b"2"]
            server.close()
            await server.wait_closed()
            calls["n"] = 1  # the next request is closed on again, and the instance is gone
            with pytest.raises(UpstreamFailed, match="is gone"):
                await pool.request("POST", "127.0.0.1", port, "/p", {}, b"3", 5)
        finally:
            pool.close()
            server.close()

    asyncio.run(go())
