"""Token and EAS-signature checks, byte for byte as the official SDKs sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from starlette.datastructures import Headers

from eas.protocols import auth

PATH = "/api/predict/svc"
TOKEN = "secret-token-value"


def test_signature_matches_the_contract_formula():
    body = b'{"instances": [[1, 2]]}'
    date = "Mon, 23 Nov 2026 09:00:00 GMT"
    md5_hex = hashlib.md5(body).hexdigest()
    msg = f"POST\n{md5_hex}\napplication/octet-stream\n{date}\n{PATH}"
    expected = base64.b64encode(hmac.new(TOKEN.encode(), msg.encode(), hashlib.sha1).digest()).decode()
    assert auth.signature(TOKEN, "POST", md5_hex, "application/octet-stream", date, PATH) == expected


def test_raw_and_signed_tokens_accepted():
    body = b"payload"
    auth.check_service_auth(TOKEN, Headers({"Authorization": TOKEN}), PATH, body)
    auth.check_service_auth(TOKEN, Headers(auth.sign_headers(TOKEN, PATH, body)), PATH, body)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda h, b: ({**h, "Authorization": "wrong"}, b), "wrong token"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "Authorization"}, b), "missing"),
        (lambda h, b: (h, b + b"!"), "Content-MD5"),
        # Signed as JSON, sent as text: refused. (Signed as the default octet-stream, any
        # Content-Type passes: the Java and Go SDKs sign that whatever they send.)
        (lambda h, b: ({**auth.sign_headers(TOKEN, PATH, b, "application/json"), "Content-Type": "text/plain"}, b),
         "signature"),
        (lambda h, b: ({**h, "Date": "not a date"}, b), "Date"),
    ],
)
def test_tampering_is_refused(mutate, words):
    body = b"payload"
    headers, sent = mutate(auth.sign_headers(TOKEN, PATH, body), body)
    with pytest.raises(auth.AuthError, match=words):
        auth.check_service_auth(TOKEN, Headers(headers), PATH, sent)


def test_stale_date_outside_skew_is_refused():
    """A Date further off than the farthest time zone plus the skew is refused (both ways)."""
    body = b"x"
    headers = auth.sign_headers(TOKEN, PATH, body)
    for off in (auth.ZONE_BEHIND_S + auth.MAX_CLOCK_SKEW_S + 60, -(auth.ZONE_AHEAD_S + auth.MAX_CLOCK_SKEW_S + 60)):
        with pytest.raises(auth.AuthError, match="server time in every time zone"):
            auth.check_service_auth(TOKEN, Headers(headers), PATH, body, now=time.time() + off)


def test_admin_basic_auth():
    good = auth.basic_auth_header("id", "key")
    auth.check_admin_auth(good, "id", "key")
    for header in (None, "Bearer x", "Basic !!!", auth.basic_auth_header("id", "nope")):
        with pytest.raises(auth.AuthError):
            auth.check_admin_auth(header, "id", "key")
