"""Baidu BML's API face: answers `{"log_id": ..., "result": ...}`, errors
`{"log_id", "error_code", "error_msg"}` with BML's codes, and `?access_token=`.

A service in BML mode (the service JSON's `bml` block) gets every answer through
`to_bml` at the gateway, whoever made it: the instance's processor (which already
follows BML's dict/list/other rule, processors/bml.py) or the gateway itself (401,
429, 503 while waking). The log id is derived from the request id, so the log line of
a request and the id a BML client reports are the same request.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eas.protocols.wire import REQUEST_ID_HEADER, Answer

#: BML's error codes (its API documents' 错误码 tables) for what went wrong here.
INTERNAL_ERROR = 336000
INVALID_ARGUMENT = 336001
INVALID_JSON = 336002
BAD_SIZE = 336004
MODEL_UNAVAILABLE = 336100
NO_METHOD = 3
QPS_LIMIT = 18
SERVICE_UNAVAILABLE = 2
INVALID_TOKEN_PARAMETER = 100
TOKEN_INVALID = 110

MESSAGES = {
    INTERNAL_ERROR: "Internal error", INVALID_ARGUMENT: "Invalid Argument", INVALID_JSON: "Invalid JSON",
    BAD_SIZE: "Invalid input size", MODEL_UNAVAILABLE: "model temporarily unavailable",
    NO_METHOD: "Unsupported openapi method", QPS_LIMIT: "Open api qps request limit reached",
    SERVICE_UNAVAILABLE: "Service temporarily unavailable", INVALID_TOKEN_PARAMETER: "Invalid parameter",
    TOKEN_INVALID: "Access token invalid or no longer valid",
}

ACCESS_TOKEN_PARAM = "access_token"


def log_id(request_id: str) -> int:
    """BML's numeric log id for a request id: 63 bits of its hash, stable everywhere."""
    return int.from_bytes(hashlib.blake2b(request_id.encode("utf-8", "replace"), digest_size=8).digest(), "big") >> 1


def error_code_for(status: int, code: Any, message: str) -> int:
    """The BML error code of an EAS error: the user's own CustomException code when it
    is a number, else BML's code for what the status means."""
    if isinstance(code, int) and not isinstance(code, bool) and code != status:
        return code
    if isinstance(code, str) and code.isdigit() and int(code) != status:
        return int(code)
    if status == 400:
        return INVALID_JSON if "not valid JSON" in message else INVALID_ARGUMENT
    if status == 401:
        return INVALID_TOKEN_PARAMETER if message.startswith("missing Authorization") else TOKEN_INVALID
    if status == 404:
        return NO_METHOD
    if status == 413:
        return BAD_SIZE
    if status == 429:
        return QPS_LIMIT
    if status == 503:
        waking = "not available" in message or "waiting" in message or "coming" in message
        return MODEL_UNAVAILABLE if waking else SERVICE_UNAVAILABLE
    return INTERNAL_ERROR


def error_json(request_id: str, error_code: int, error_msg: str) -> bytes:
    return json.dumps({"log_id": log_id(request_id), "error_code": error_code, "error_msg": error_msg},
                      ensure_ascii=False, separators=(",", ":")).encode()


def to_bml(answer: Answer, request_id: str, nest: bool = False) -> Answer:
    """An EAS answer as BML's: the log id added to a JSON object, an error rewritten.

    `nest`: the answer of a built-in processor, whose body BML puts under `result`
    (`{"log_id", "result": {"predictions": ...}}`), except the tabular API's
    `batch_results`, which BML answers beside the log id. User code's answers are
    already shaped by BML's rule (processors/bml.py) and only get the log id.
    A streamed answer passes as it is (BML has no streamed API); so does a success
    whose body is not JSON (bytes a PyModel returned on purpose).
    """
    if answer.stream is not None:
        return answer
    headers = {**answer.headers, REQUEST_ID_HEADER: request_id}
    ident = log_id(request_id)
    if answer.status >= 400:
        try:
            payload = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        message = str(payload.get("message") or payload.get("error_msg") or answer.body[:200].decode("utf-8", "replace"))
        if "error_code" in payload and "log_id" in payload:
            return answer
        code = error_code_for(answer.status, payload.get("code"), message)
        headers["Content-Type"] = "application/json"
        return Answer(answer.status, error_json(request_id, code, message), headers)
    body = answer.body.lstrip()
    if nest and not body.startswith(b'{"batch_results"'):
        if not answer.headers.get("Content-Type", "").startswith("application/json"):
            return answer
        return Answer(answer.status, b'{"log_id":%d,"result":%s}' % (ident, body), headers)
    if body.startswith(b"{"):
        rest = body[1:].lstrip()
        glue = b"" if rest.startswith(b"}") else b","
        return Answer(answer.status, b'{"log_id":%d%s%s' % (ident, glue, rest), headers)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return answer
    wrapped = json.dumps({"log_id": ident, "result": value}, ensure_ascii=False, separators=(",", ":")).encode()
    headers["Content-Type"] = "application/json"
    return Answer(answer.status, wrapped, headers)
