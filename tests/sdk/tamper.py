"""A man in the middle on 127.0.0.1: relays HTTP requests to eas-server, flipping one body bit.

The official SDKs sign the body they send; to prove the gateway notices a body changed
in transit, the SDK is pointed at this relay instead of the server. One request per
connection (`Connection: close` both ways), so the relay never has to parse a stream.
With `tamper=False` it relays faithfully, which shows the 401 comes from the flipped bit.
"""

from __future__ import annotations

import socket
import threading

MAX_HEAD = 64 * 1024


class TamperProxy:
    def __init__(self, upstream_port: int, tamper: bool = True) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.tamper = tamper
        self.relayed = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tamper-proxy", daemon=True)

    def __enter__(self) -> "TamperProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    self._relay(conn)
                except OSError:
                    pass

    def _relay(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk or len(data) > MAX_HEAD:
                return
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        headers = [line for line in lines[1:] if not line.lower().startswith((b"connection:", b"keep-alive:"))]
        length = next((int(line.split(b":", 1)[1]) for line in headers
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        payload = bytearray(body)
        if self.tamper and payload:
            payload[-1] ^= 0x01  # one bit of one byte: same length, different MD5
        request = b"\r\n".join([lines[0], *headers, b"Connection: close"]) + b"\r\n\r\n" + bytes(payload)
        with socket.create_connection(self.upstream, timeout=30) as upstream:
            upstream.sendall(request)
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
        self.relayed += 1
