"""What the official SDKs send: the Java and Go SDKs always sign application/octet-stream, and
the Java SDK drops the leading zeros of Content-MD5."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from eas.protocols import auth
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


# -- Date: local time labelled GMT (the Python and Go SDKs) --------------------------------------

NOW = 1_800_000_000.0  # a fixed server clock: these tests never read the wall clock


def _signed_at(offset_s: float, path: str = PATH) -> Headers:
    """Headers as an SDK on a host `offset_s` east of UTC writes them: its local time, labelled GMT."""
    from email.utils import formatdate

    date = formatdate(NOW + offset_s, usegmt=True)
    headers = {"Date": date, "Content-MD5": content_md5(BODY), "Content-Type": "application/octet-stream",
               "Authorization": "EAS " + signature(TOKEN, "POST", content_md5(BODY), "application/octet-stream",
                                                   date, path)}
    return Headers(headers)


@pytest.mark.parametrize("zone_h", [-12, -5, -3.5, 0, 5.75, 8, 9.5, 12.75, 14])
def test_a_date_from_any_time_zone_is_accepted(zone_h: float) -> None:
    """Asia/Shanghai (+8), America/New_York (-5), India (+5.5), Nepal (+5:45), Kiribati (+14) ..."""
    for clock_error in (-auth.MAX_CLOCK_SKEW_S + 1, 0, auth.MAX_CLOCK_SKEW_S - 1):
        check_service_auth(TOKEN, _signed_at(zone_h * 3600 + clock_error), PATH, BODY, now=NOW)


@pytest.mark.parametrize("offset_s", [-auth.ZONE_BEHIND_S - auth.MAX_CLOCK_SKEW_S - 1,
                                      auth.ZONE_AHEAD_S + auth.MAX_CLOCK_SKEW_S + 1, -86400, 86400 * 365])
def test_a_date_beyond_every_zone_is_refused(offset_s: float) -> None:
    with pytest.raises(AuthError, match="from server time in every time zone"):
        check_service_auth(TOKEN, _signed_at(offset_s), PATH, BODY, now=NOW)


def test_the_date_window_is_the_zones_plus_the_skew() -> None:
    assert auth.date_window(NOW) == (NOW - 12 * 3600 - 900, NOW + 14 * 3600 + 900)


# -- the query string (Java SDK 2.0.x CallConfig.setQueryParams signs it) -----------------------


def test_a_signature_over_the_path_with_its_query_is_accepted() -> None:
    target = PATH + "?uid=1168&tag=a%2Bb"
    check_service_auth(TOKEN, _signed_at(0, target), target, BODY, now=NOW)
    # A client that signs the path alone while sending a query (every other SDK) still passes.
    check_service_auth(TOKEN, _signed_at(0, PATH), target, BODY, now=NOW)
    # A signed query binds: a different query, or a query signed but not sent, is refused.
    for sent in (PATH + "?uid=1169&tag=a%2Bb", PATH):
        with pytest.raises(AuthError, match="signature does not match"):
            check_service_auth(TOKEN, _signed_at(0, target), sent, BODY, now=NOW)


def test_signed_paths() -> None:
    assert auth.signed_paths("/p") == ("/p",)
    assert auth.signed_paths("/p?a=1?b") == ("/p?a=1?b", "/p")
    assert auth.signed_paths("/p?") == ("/p?", "/p")
