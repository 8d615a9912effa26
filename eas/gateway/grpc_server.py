"""The gRPC face of the gateway (`eas-server --grpc-port`, default 8081).

Two services and a pass-through on one grpc.aio server, running on the same event loop
as the HTTP gateway (it is started from the app's lifespan), so both share one
`Gateway`: its route table, token checks, rate limits, pooled connections to instances
and metrics. An adapter only: each RPC of its own services becomes a `Call` to
`Gateway.handle` (eas/gateway/core.py).

- `inference.GRPCInferenceService` (KServe's Open Inference Protocol, what `tritonclient`
  and KServe clients call): ServerLive, ServerReady, ServerMetadata, ModelReady,
  ModelMetadata, ModelInfer, and Triton's ModelStreamInfer (many calls on one
  bidirectional stream: each request runs as a ModelInfer would, up to
  `STREAM_CONCURRENCY` at once per stream, and is answered when ready; an error answers
  its request alone in `error_message`). The service token goes in the `authorization`
  metadata. ModelInfer bytes are never decoded here: only the model name (and, on a
  stream, the request id) is read off the wire, and the serialized request is forwarded
  to an instance's `/v2/models/{name}/infer`, whose answer (a serialized
  ModelInferResponse) is handed back as is.
- `eas.Predict/Predict`: an EAS predict call as bytes (`PredictRequest{service, body,
  token, content_type}`), answered with `PredictReply{status, body, content_type,
  request_id}` exactly as `POST /api/predict/{service}` would answer. The RPC itself
  succeeds whatever the EAS status; the status is in the reply.
- Any other method: relayed as bytes to a container service with `metadata.enable_grpc`
  (grpc_relay.py), the call named by `:authority` or the `x-eas-service` metadata.

HTTP statuses from the data plane map to gRPC codes (401 UNAUTHENTICATED, 404
NOT_FOUND, 503 UNAVAILABLE, ...); the EAS status and request id also travel in the
trailing metadata (`eas-status`, `x-request-id`).

Bounds: gRPC core refuses a message over `max_body_bytes` + 1 MiB as it arrives (its
length prefix says so: RESOURCE_EXHAUSTED, nothing buffered), at most `max_concurrent_rpcs`
calls run at once (RESOURCE_EXHAUSTED beyond), and a connection must finish its HTTP/2
handshake within `handshake_timeout_s`. The token travels in the message for these
services, so unlike HTTP the message is read before the credentials are checked:
memory in flight is bounded by the two limits together.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from starlette.datastructures import Headers

from eas import __version__
from eas.gateway.core import Call, Gateway
from eas.gateway.grpc_relay import RelayHandler
from eas.protocols import grpc_messages as messages
from eas.protocols.oip import EXTENSIONS, INFER_PATH, INFER_REQUEST_TYPE, METADATA_PATH, SERVER_NAME
from eas.protocols.wire import REQUEST_ID_HEADER, Answer

log = logging.getLogger("eas.grpc")

#: EAS/HTTP status -> gRPC status code.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    450: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
INFER_METHOD = f"/{messages.INFERENCE_SERVICE}/ModelInfer"
STREAM_INFER_METHOD = f"/{messages.INFERENCE_SERVICE}/ModelStreamInfer"
#: Requests of one ModelStreamInfer stream running or answered but not yet sent at once;
#: past it the stream's next request is read only when one is sent (bounded memory).
STREAM_CONCURRENCY = 16
#: Room for the message around a body of `max_body_bytes` (the gateway answers 413 past it).
MESSAGE_SLACK_BYTES = 1 << 20


def grpc_code(status: int) -> grpc.StatusCode:
    if status in GRPC_CODES:
        return GRPC_CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.UNKNOWN


def string_fields(message: bytes, numbers: frozenset[int]) -> dict[int, str]:
    """The top-level string fields `numbers` of a serialized message, read without
    decoding the rest (tensors): walk the fields, skipping each by its wire type, and stop
    once every wanted field is found."""
    found: dict[int, str] = {}
    pos, end = 0, len(message)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = message[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < end and len(found) < len(numbers):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length = varint()
            if number in numbers:
                if pos + length > end:
                    raise ValueError("truncated string field")
                found[number] = message[pos:pos + length].decode("utf-8")
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
    return found


_NAME = frozenset({1})
_NAME_AND_ID = frozenset({1, 3})


def model_name_of(message: bytes) -> str:
    """Field 1 (`model_name`) of a serialized ModelInferRequest (how a call is routed)."""
    return string_fields(message, _NAME).get(1, "")


def name_and_id_of(message: bytes) -> tuple[str, str]:
    """Fields 1 (`model_name`) and 3 (`id`) of a serialized ModelInferRequest (what a
    stream's error answer must carry to be matched)."""
    found = string_fields(message, _NAME_AND_ID)
    return found.get(1, ""), found.get(3, "")


def _as_stream_response(infer_response: bytes) -> bytes:
    """A serialized ModelInferResponse as the `infer_response` (field 2) of a serialized
    ModelStreamInferResponse, without decoding it."""
    size, head = len(infer_response), bytearray(b"\x12")
    while True:
        byte = size & 0x7F
        size >>= 7
        head.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(head) + infer_response


def _metadata(context: grpc.aio.ServicerContext) -> Headers:
    """The call's metadata as case-insensitive headers (what the auth checks read)."""
    items = [(k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in (context.invocation_metadata() or ())]
    return Headers(raw=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items])


def _message_of(answer: Answer) -> str:
    try:
        payload = json.loads(answer.body)
        return str(payload.get("error") or payload.get("message") or "")
    except (ValueError, AttributeError):
        return answer.body.decode("utf-8", "replace")[:1000]


class GrpcGateway:
    def __init__(self, gateway: Gateway, host: str, port: int, max_concurrent_rpcs: int | None = 1000,
                 handshake_timeout_s: float = 10.0) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self.max_concurrent_rpcs = max_concurrent_rpcs or None
        self.handshake_timeout_s = handshake_timeout_s
        self.server: grpc.aio.Server | None = None
        self.relay: RelayHandler | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the port (useful with port 0)."""
        limit = self.gateway.max_body_bytes + MESSAGE_SLACK_BYTES
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
            ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout_s * 1000)),
        ], maximum_concurrent_rpcs=self.max_concurrent_rpcs)
        # Last: any other method is relayed to a container service with enable_grpc (grpc_relay.py).
        self.relay = RelayHandler(self.gateway, limit)
        self.server.add_generic_rpc_handlers((self._inference_handler(), self._predict_handler(), self.relay))
        try:
            self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise SystemExit(f"eas-server: cannot listen for gRPC on {self.host}:{self.port} ({exc}); "
                             "stop what uses it or pick another --grpc-port (0 turns gRPC off)") from None
        await self.server.start()
        log.info("gRPC (inference.GRPCInferenceService, eas.Predict) listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        if self.relay is not None:
            await self.relay.close()
            self.relay = None

    # ------------------------------------------------------------------ wiring

    def _inference_handler(self) -> grpc.GenericRpcHandler:
        p = messages

        def unary(fn: Callable[..., Awaitable[Any]], request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request.FromString if request else None,
                response_serializer=response.SerializeToString if response else None)

        return grpc.method_handlers_generic_handler(p.INFERENCE_SERVICE, {
            "ServerLive": unary(self.server_live, p.ServerLiveRequest, p.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, p.ServerReadyRequest, p.ServerReadyResponse),
            "ServerMetadata": unary(self.server_metadata, p.ServerMetadataRequest, p.ServerMetadataResponse),
            "ModelReady": unary(self.model_ready, p.ModelReadyRequest, p.ModelReadyResponse),
            "ModelMetadata": unary(self.model_metadata, p.ModelMetadataRequest, p.ModelMetadataResponse),
            # Bytes in, bytes out: the instance decodes and encodes the tensors.
            "ModelInfer": unary(self.model_infer, None, None),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
        })

    def _predict_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(messages.PREDICT_SERVICE, {
            "Predict": grpc.unary_unary_rpc_method_handler(
                self.predict, request_deserializer=messages.PredictRequest.FromString,
                response_serializer=messages.PredictReply.SerializeToString),
        })

    # ------------------------------------------------------------------ inference.GRPCInferenceService

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerReadyResponse(ready=True)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status, why = await self.gateway.ready(request.name, _metadata(context),
                                               f"/{messages.INFERENCE_SERVICE}/ModelReady", context.peer())
        if status == 503:  # a known model without an instance is "not ready", not an error
            return messages.ModelReadyResponse(ready=False)
        if status != 200:
            await self._abort(context, status, why, "")
        return messages.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        answer = await self.gateway.handle(Call(
            service=request.name, headers=_metadata(context), path=f"/{messages.INFERENCE_SERVICE}/ModelMetadata",
            method="GET", instance_path=METADATA_PATH, client=context.peer()))
        await self._fail_unless_ok(context, answer)
        meta = json.loads(answer.body)
        reply = messages.ModelMetadataResponse(name=meta["name"], versions=meta.get("versions", []),
                                              platform=meta.get("platform", ""))
        for kind in ("inputs", "outputs"):
            for tensor in meta.get(kind, []):
                getattr(reply, kind).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        return reply

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            name = model_name_of(request)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._abort(context, 400, f"request is not a serialized inference.ModelInferRequest: {exc}", "")
        if not name:
            await self._abort(context, 400, "model_name is empty: say which model (service) to call", "")
        answer = await self.gateway.handle(Call(
            service=name, headers=_metadata(context), path=INFER_METHOD, body=request, instance_path=INFER_PATH,
            content_type=INFER_REQUEST_TYPE, client=context.peer()))
        await self._fail_unless_ok(context, answer)
        return answer.body

    async def model_stream_infer(self, requests: AsyncIterator[bytes],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """Triton's streaming inference: each serialized ModelInferRequest read from the
        stream goes through `Gateway.handle` as a ModelInfer would (token, routing,
        limits, failover, metrics), concurrently up to `STREAM_CONCURRENCY`; each answer
        is written when ready, an error as `error_message` with the request's model name
        and id. The client closing its side ends the stream once every answer is out;
        a cancelled stream cancels the requests still running (499 at the instances)."""
        headers, peer = _metadata(context), context.peer()
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        ready: asyncio.Queue[bytes | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def one(request: bytes) -> None:
            try:
                name, request_id = name_and_id_of(request)
            except (ValueError, UnicodeDecodeError) as exc:
                await ready.put(self._stream_error("", "", f"request is not a serialized inference.ModelInferRequest: "
                                                   f"{exc}"))
                return
            if not name:
                await ready.put(self._stream_error("", request_id, "model_name is empty: say which model (service) "
                                                   "to call"))
                return
            try:
                answer = await self.gateway.handle(Call(
                    service=name, headers=headers, path=STREAM_INFER_METHOD, body=request, instance_path=INFER_PATH,
                    content_type=INFER_REQUEST_TYPE, client=peer))
            except Exception as exc:  # every request gets its answer, whatever happened to it
                log.exception("stream request %s to %s failed", request_id, name)
                await ready.put(self._stream_error(name, request_id, f"{type(exc).__name__}: {exc}"))
                return
            if answer.status == 200:
                await ready.put(_as_stream_response(answer.body))
            else:
                await ready.put(self._stream_error(name, request_id, _message_of(answer)))

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()  # released once an answer is written
                    task = loop.create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
            finally:
                await ready.put(None)

        reader = loop.create_task(read())
        try:
            while (answer := await ready.get()) is not None:
                yield answer
                slots.release()
            await reader  # a failure reading the stream fails the RPC
        finally:
            for task in (reader, *running):
                task.cancel()

    @staticmethod
    def _stream_error(name: str, request_id: str, message: str) -> bytes:
        return messages.ModelStreamInferResponse(
            error_message=message, infer_response=messages.ModelInferResponse(model_name=name, id=request_id),
        ).SerializeToString()

    # ------------------------------------------------------------------ eas.Predict

    async def predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name, _, sub_path = request.service.partition("/")
        headers = dict(_metadata(context).items())
        if request.token:
            headers["authorization"] = request.token
        if request.content_type:
            headers["content-type"] = request.content_type
        call = Call(service=name, headers=Headers(headers), path=f"/api/predict/{request.service}",
                    body=request.body, sub_path=sub_path, content_type=request.content_type or None,
                    client=context.peer())
        answer = await self.gateway.handle(call)
        return messages.PredictReply(status=answer.status, body=answer.body,
                                     content_type=answer.headers.get("Content-Type", ""), request_id=call.request_id)

    # ------------------------------------------------------------------ errors

    async def _fail_unless_ok(self, context: grpc.aio.ServicerContext, answer: Answer) -> None:
        if answer.status != 200:
            await self._abort(context, answer.status, _message_of(answer), answer.headers.get(REQUEST_ID_HEADER, ""))

    async def _abort(self, context: grpc.aio.ServicerContext, status: int, message: str, request_id: str) -> None:
        trailing = [("eas-status", str(status))]
        if request_id:
            trailing.append(("x-request-id", request_id))
        await context.abort(grpc_code(status), message, tuple(trailing))
