"""Request authentication: EAS service tokens (raw or signed) and admin credentials.

Signing follows the EAS SDKs (docs/api.md, docs/client.md): the client signs
`POST\\n{md5}\\n{content_type}\\n{date}\\n{path}` with HMAC-SHA1 keyed by the token,
`path` being the path exactly as sent (eas/protocols/http.py `signed_path`), with its
query string when it has one (the Java SDK's `CallConfig.setQueryParams` signs it) or
without (what the other SDKs and older servers sign).

The `Date` window: the Python and Go SDKs write the client's *local* time and label it
GMT, so a correct client east or west of UTC sends a Date hours off. A signed Date is
accepted from `now - 12 h - skew` to `now + 14 h + skew` (every zone from UTC-12 to
UTC+14, plus `MAX_CLOCK_SKEW_S` of clock error); docs/security.md weighs the replay
window this opens.

Both sides live here so the gateway, the instances and our client can never drift apart.
Servers check in two steps: `check_service_head` before the body is read (the raw
token, or a signature's Date and HMAC, which covers the Content-MD5 header), then
`check_body_md5` once it is; `check_service_auth` does both for a body in hand.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Mapping

#: How far a client's clock may be from ours, in seconds, on top of its time zone.
MAX_CLOCK_SKEW_S = 900
#: The SDKs that sign local time labelled GMT are off by their zone's offset: zones run
#: from UTC-12 (Date that far behind) to UTC+14 (that far ahead).
ZONE_BEHIND_S = 12 * 3600
ZONE_AHEAD_S = 14 * 3600
#: What the Java and Go SDKs put in the string they sign, whatever Content-Type they send.
SIGNED_DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Bodies from this size on are hashed on a worker thread (hashlib lets go of the GIL),
#: so a large signed request never stalls the event loop (64 MiB is about 0.1 s of MD5).
MD5_THREAD_BYTES = 256 * 1024


def generate_token() -> str:
    """A fresh service token: 40 url-safe characters, as long as EAS's."""
    return secrets.token_urlsafe(30)


def content_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


async def body_md5(body: bytes) -> str:
    """`content_md5` for an event loop: large bodies are hashed on a worker thread."""
    if len(body) < MD5_THREAD_BYTES:
        return content_md5(body)
    return await asyncio.to_thread(content_md5, body)


def date_window(now: float) -> tuple[float, float]:
    """The earliest and latest signed `Date` accepted at `now` (seconds since the epoch):
    a client in any time zone whose clock is within MAX_CLOCK_SKEW_S of ours."""
    return now - ZONE_BEHIND_S - MAX_CLOCK_SKEW_S, now + ZONE_AHEAD_S + MAX_CLOCK_SKEW_S


def signed_paths(path: str) -> tuple[str, ...]:
    """The paths a signature over request target `path` may cover: the target as sent,
    and, when it has a query, the path alone."""
    bare, mark, _ = path.partition("?")
    return (path, bare) if mark else (path,)


def signature(token: str, method: str, md5_hex: str, content_type: str, date: str, path: str) -> str:
    message = f"{method}\n{md5_hex}\n{content_type}\n{date}\n{path}"
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sign_headers(
    token: str, path: str, body: bytes, content_type: str = "application/octet-stream"
) -> dict[str, str]:
    """Headers for a signed predict request, as the official SDKs send them."""
    date = formatdate(usegmt=True)
    md5_hex = content_md5(body)
    sig = signature(token, "POST", md5_hex, content_type, date, path)
    return {
        "Date": date,
        "Content-MD5": md5_hex,
        "Content-Type": content_type,
        "Authorization": f"EAS {sig}",
    }


class AuthError(Exception):
    """Why a request was refused; the text goes back to the client with a 401."""


def check_service_auth(
    token: str,
    headers: Mapping[str, str],
    path: str,
    body: bytes,
    now: float | None = None,
    method: str = "POST",
) -> None:
    """Accept `Authorization: <token>` or `Authorization: EAS <sig>`; raise AuthError otherwise.

    `headers` must be case-insensitive (Starlette's are). Comparisons are constant-time.
    The two steps below in one call, for a body already read.
    """
    expected_md5 = check_service_head(token, headers, path, now, method)
    if expected_md5 is not None:
        check_body_md5(expected_md5, content_md5(body))


def check_service_head(
    token: str,
    headers: Mapping[str, str],
    path: str,
    now: float | None = None,
    method: str = "POST",
) -> str | None:
    """Everything that can be checked before the body is read: a raw token in full; for
    a signed request its Date and its signature (which covers the Content-MD5 header,
    not the body). Raises AuthError; returns None for a raw token, else the MD5 the body
    must have (`check_body_md5`). So a caller without the token is refused before a
    byte of its body is read, and only a signed request has its body hashed.
    """
    if not token:  # a secret not set yet (or lost) must never match an empty one
        raise AuthError("this service has no token set yet: retry in a moment")
    auth = headers.get("authorization")
    if not auth:
        raise AuthError("missing Authorization header: send the service token or an EAS signature")
    if auth.startswith("EAS "):
        return _check_signature(token, auth[4:].strip(), headers, path, now, method)
    if not hmac.compare_digest(auth.strip().encode(), token.encode()):
        raise AuthError("wrong token for this service")
    return None


def check_body_md5(expected_md5: str, body_md5: str) -> None:
    """The body's MD5 (hex, `content_md5`) is the one the signed Content-MD5 header names."""
    if not hmac.compare_digest(expected_md5.encode(), body_md5.encode()):
        raise AuthError("Content-MD5 does not match the body")


def is_signed(headers: Mapping[str, str]) -> bool:
    return headers.get("authorization", "").startswith("EAS ")


def _check_signature(
    token: str,
    sig: str,
    headers: Mapping[str, str],
    path: str,
    now: float | None,
    method: str,
) -> str:
    date = headers.get("date")
    if not date:
        raise AuthError("signed request without a Date header")
    try:
        sent_at = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        # A year past 9999, or a number too large for C: a client error, never a 500.
        raise AuthError(f"unreadable Date header: {date[:100]!r}") from None
    earliest, latest = date_window(now if now is not None else time.time())
    if not earliest <= sent_at <= latest:
        raise AuthError(f"Date header is more than {MAX_CLOCK_SKEW_S} s from server time in every time zone "
                        "(UTC-12 to UTC+14): check the client's clock")
    md5_hex = headers.get("content-md5", "")
    # The Java SDK writes the md5 as a number (BigInteger.toString(16)), dropping leading
    # zeros, so 1 body in 16 arrives with fewer than 32 digits: pad before comparing.
    # The signature covers the header exactly as sent.
    expected_md5 = md5_hex.strip().lower().rjust(32, "0")
    if not md5_hex.strip() or len(expected_md5) != 32 or any(c not in "0123456789abcdef" for c in expected_md5):
        raise AuthError("Content-MD5 does not match the body: a signed request carries the hex MD5 of its body")
    content_type = headers.get("content-type", "")
    # The Python SDK signs the Content-Type it sends; the Java and Go SDKs always sign
    # SIGNED_DEFAULT_CONTENT_TYPE whatever they send. Accept both, over the path with or
    # without its query (each compared in full, so timing does not tell which one was
    # tried); body, path and Date stay bound.
    matches = [hmac.compare_digest(sig.encode(), signature(token, method, md5_hex, ct, date, p).encode())
               for ct in dict.fromkeys((content_type, SIGNED_DEFAULT_CONTENT_TYPE)) for p in signed_paths(path)]
    if not any(matches):
        raise AuthError("signature does not match: check the service token")
    return expected_md5


def basic_auth_header(access_id: str, access_key: str) -> str:
    return "Basic " + base64.b64encode(f"{access_id}:{access_key}".encode()).decode()


def check_admin_auth(header: str | None, access_id: str, access_key: str) -> None:
    """Management API credentials: HTTP Basic with the admin id and key."""
    if not header or not header.startswith("Basic "):
        raise AuthError("missing admin credentials: use the access id and key from eascmd.conf")
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("malformed Basic credentials") from None
    if not hmac.compare_digest(given, f"{access_id}:{access_key}".encode()):
        raise AuthError("wrong access id or key")
