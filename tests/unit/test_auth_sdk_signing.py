"""What the official SDKs sign: the Java and Go SDKs always sign application/octet-stream."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from eas.auth import AuthError, check_service_auth, content_md5, sign_headers, signature

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
