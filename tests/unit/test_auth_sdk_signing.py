"""What the official SDKs send: the Java and Go SDKs always sign application/octet-stream, and
the Java SDK drops the leading zeros of Content-MD5."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from eas.protocols.auth import AuthError, check_service_auth, content_md5, sign_headers, signature

TOKEN = "t0ken"
PATH = "/api/predict/svc"
BODY = b'{"x": 1}'


def _java_style(content_type_sent: str, content_type_signed: str) -> Headers:
    headers = sign_headers(TOKEN, PATH, BODY, content_type_signed)
    headers["Authorization"] = "EAS " + signature(TOKEN, "POST", content_md5(BODY), content_type_signed,
                                                  headers["Date"], PATH)
    headers["Content-Type"] = content_type_sent
    return Headers(headers)


def test_sent_type_or_octet_stream_signed_is_accepted() -> None:
    check_service_auth(TOKEN, Headers(sign_headers(TOKEN, PATH, BODY, "application/json")), PATH, BODY)
    check_service_auth(TOKEN, _java_style("application/json", "application/octet-stream"), PATH, BODY)


def test_any_other_signed_type_or_token_is_refused() -> None:
    with pytest.raises(AuthError, match="signature does not match"):
        check_service_auth(TOKEN, _java_style("application/json", "text/plain"), PATH, BODY)
    with pytest.raises(AuthError, match="signature does not match"):
        check_service_auth("other", _java_style("application/json", "application/octet-stream"), PATH, BODY)


def test_content_md5_without_leading_zeros_is_accepted() -> None:
    body = next(b for b in (f"body-{i}".encode() for i in range(1000)) if content_md5(b).startswith("0"))
    short_md5 = content_md5(body).lstrip("0")
    headers = sign_headers(TOKEN, PATH, body)
    headers["Content-MD5"] = short_md5  # as the Java SDK writes it, and signs it
    headers["Authorization"] = "EAS " + signature(TOKEN, "POST", short_md5, headers["Content-Type"],
                                                  headers["Date"], PATH)
    check_service_auth(TOKEN, Headers(headers), PATH, body)
    with pytest.raises(AuthError, match="Content-MD5 does not match"):
        check_service_auth(TOKEN, Headers(headers), PATH, body + b"!")
    with pytest.raises(AuthError, match="Content-MD5 does not match"):
        check_service_auth(TOKEN, Headers({**headers, "Content-MD5": ""}), PATH, body)
