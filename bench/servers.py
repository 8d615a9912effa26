"""Servers the benchmark compares against: a bare ASGI echo, and Ray Serve's HTTP echo."""

from __future__ import annotations

import sys
import time


async def echo_app(scope, receive, send):  # noqa: ANN001, ANN201 - raw ASGI, the floor
    """Echo the request body; nothing between uvicorn and the bytes."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/health":
        body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body})


def serve_echo(port: int) -> None:
    """Bare Ray Serve: its HTTP proxy on 127.0.0.1 in front of one echo replica."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})

    @serve.deployment(max_ongoing_requests=64)
    class Echo:
        async def __call__(self, request: Request) -> Response:
            return Response(await request.body(), media_type="application/octet-stream")

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "serve-echo":
        serve_echo(int(sys.argv[2]))
