"""The Open Inference Protocol's REST face, shared by the gateway and the instances:
answers in v2 form and the server-level health paths."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eas import __version__
from eas.protocols.oip import EXTENSIONS, SERVER_NAME, with_error_field
from eas.protocols.wire import OIP_HEADER_LENGTH, REQUEST_ID_HEADER, Answer, error_body


def v2_response(answer: Answer) -> Response:
    """An answer in v2 form: errors carry `"error"`, binary answers their header length.

    Instances mark a binary answer in its content type (`...; inference-header-content-length=N`)
    so it survives any hop; here it becomes the header v2 clients read.
    """
    out = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
    content_type = next((v for k, v in answer.headers.items() if k.lower() == "content-type"), "application/json")
    if answer.status != 200:
        return Response(with_error_field(answer.body), answer.status, headers=out, media_type="application/json")
    marker = f"; {OIP_HEADER_LENGTH.lower()}="
    if marker in content_type:
        content_type, split = content_type.split(marker, 1)
        out[OIP_HEADER_LENGTH] = split
    return Response(answer.body, answer.status, headers=out, media_type=content_type)


def v2_error(status: int, message: str, request_id: str = "") -> Response:
    return Response(with_error_field(error_body(status, message, request_id)), status,
                    media_type="application/json", headers={REQUEST_ID_HEADER: request_id} if request_id else None)


def health_routes() -> list[Route]:
    """`/v2/health/live`, `/v2/health/ready` and `/v2` (server metadata)."""

    async def live(http: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(http: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    async def server_metadata(http: Request) -> JSONResponse:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
    ]
