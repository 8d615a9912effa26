"""HTTP/1.1 by hand over a socket, for clients no library would be: a body that streams
without end, a head sent one byte at a time, a Content-Length never honoured.

Every wait here is bounded by a deadline; nothing sleeps a fixed time unless the
client it plays is meant to be slow.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes
    closed: bool = False
    """The server closed the connection after this answer."""
    sent: int = 0
    """Body bytes the client had sent when the answer came."""
    seconds: float = 0.0
    """From the first byte sent to the answer."""


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], max(0.0, timeout))[0])


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer | None:
    """One whole answer (Content-Length framed), or None if none came within `timeout`.
    `closed` says whether the server then closed the connection (checked briefly)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        if not readable(sock, deadline - time.monotonic()):
            return None
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return None
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        if not readable(sock, deadline - time.monotonic()):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = headers.get("connection", "").lower() == "close" and _closes(sock, 2.0)
    return Answer(int(status_line.split()[1]), headers, body, closed)


def _closes(sock: socket.socket, timeout: float) -> bool:
    """The server closes the connection within `timeout` (EOF or reset)."""
    deadline = time.monotonic() + timeout
    while readable(sock, deadline - time.monotonic()):
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def closed_within(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `timeout`, and what it sent first."""
    deadline = time.monotonic() + timeout
    got = b""
    while readable(sock, deadline - time.monotonic()):
        try:
            chunk = sock.recv(65536)
        except OSError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def stream_until_answer(sock: socket.socket, request_head: bytes, *, chunked: bool = True,
                        chunk_bytes: int = 64 * 1024, max_bytes: int = 1 << 30, timeout: float = 30.0,
                        pause_s: float = 0.0) -> Answer | None:
    """Send `request_head`, then body chunks (chunked encoding, or raw bytes for a
    declared Content-Length) until the server answers, `max_bytes` are sent or
    `timeout` passes; never the end of the body. None: no answer came."""
    started = time.monotonic()
    deadline = started + timeout
    sock.sendall(request_head)
    piece = b"x" * chunk_bytes
    frame = (b"%x\r\n" % chunk_bytes + piece + b"\r\n") if chunked else piece
    sent = 0
    sock.settimeout(2.0)
    try:
        while sent < max_bytes and time.monotonic() < deadline and not readable(sock, 0):
            sock.sendall(frame)
            sent += chunk_bytes
            if pause_s:
                time.sleep(pause_s)
    except OSError:  # the server stopped reading or closed: its answer may be waiting
        pass
    sock.settimeout(10.0)
    answer = read_answer(sock, max(0.5, deadline - time.monotonic()))
    if answer is not None:
        answer.sent = sent
        answer.seconds = time.monotonic() - started
    return answer
