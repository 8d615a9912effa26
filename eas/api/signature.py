"""Who is calling the management API: AccessKey signatures (and HTTP Basic), checked
before a byte of the body is read.

Alibaba's own tools (the generated `alibabacloud-eas20210701` SDK in Python, Go and
Java, the PAI SDK `alipai`, Terraform) sign every call with an AccessKey pair; the
strings they sign are rebuilt in eas/protocols/acs.py. Accepted here:

- `ACS3-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=...` (the SDKs' default);
  `x-acs-date`, `x-acs-signature-nonce` and `x-acs-content-sha256` must be among the
  signed headers, so time, nonce and body are all bound to the signature;
- `acs <AccessKeyId>:<signature>` (ROA HMAC-SHA1, `signature_algorithm="v2"`, what
  `alipai` sends); `Date` and `x-acs-signature-nonce` are signed, the body only when a
  `Content-MD5` is sent (the SDKs send none: use TLS in front of the API);
- `Basic base64(id:secret)` of the same pairs, kept for scripts and the console.

A signature is refused when its time is more than MAX_SKEW_S from ours (stale, or
from the future) or its nonce was seen before within that window (a replay): the seen
nonces are kept in memory per server (see docs/security.md for what that means with
several servers).

The pairs: the admin pair of eascmd.conf (eas-server's `access_id`/`access_key`) is the
first, always an admin and never revoked here; more pairs live in the store's
`access_keys` table, each with a role: `admin` may do anything, `readonly` only GET.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool

from eas.control.store import AccessKeyRecord, Store
from eas.protocols import acs

#: How far a signed request's time may be from our clock, in seconds (Alibaba's 15 minutes).
MAX_SKEW_S = 900
#: Nonces remembered per server; past this the oldest are forgotten first.
NONCE_CAPACITY = 200_000

ROLE_ADMIN = "admin"
ROLE_READONLY = "readonly"
ROLES = (ROLE_ADMIN, ROLE_READONLY)
#: The only methods a read-only pair may use.
READ_METHODS = frozenset({"GET", "HEAD"})


class SignatureError(Exception):
    """A refused credential: HTTP `status` with an Alibaba-style `code` and what to do."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    access_key_id: str
    role: str
    scheme: str
    """"ACS3-HMAC-SHA256", "HMAC-SHA1" or "Basic"."""


#: Checks the body once it is read (the signed body hash); raises SignatureError.
BodyCheck = Callable[[bytes], None]


def _no_body_check(body: bytes) -> None:
    return None


class Authenticator:
    """The management API's door: one per server (eas/api/base.py ApiContext)."""

    def __init__(self, store: Store, admin_id: str, admin_secret: str,
                 clock: Callable[[], float] = time.time, max_skew_s: float = MAX_SKEW_S,
                 nonce_capacity: int = NONCE_CAPACITY) -> None:
        self.store = store
        self.admin = AccessKeyRecord(admin_id, admin_secret, ROLE_ADMIN, "the admin pair of eascmd.conf", 0.0)
        self.clock = clock
        self.max_skew_s = max_skew_s
        self.nonce_capacity = nonce_capacity
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    async def authenticate(self, scope: dict[str, Any]) -> tuple[Principal, BodyCheck]:
        """Check the request's credentials (never its body); the principal and the check
        its body must pass once read. Raises SignatureError."""
        headers = _headers(scope)
        auth = (headers.get("authorization") or [""])[0].strip()
        if not auth:
            raise SignatureError("Unauthorized", "missing admin credentials: sign the request with an AccessKey "
                                 "(access_id and access_key of eascmd.conf), as eascmd and the Alibaba Cloud SDKs do")
        if auth.startswith("Basic "):
            return await self._basic(auth), _no_body_check
        if auth.startswith(acs.ACS3 + " "):
            return await self._acs3(scope, headers, auth)
        if auth.startswith(acs.ROA_PREFIX):
            return await self._roa(scope, headers, auth)
        raise SignatureError("Unauthorized", "missing admin credentials: the Authorization header is neither an "
                             "AccessKey signature (ACS3-HMAC-SHA256, acs <id>:<signature>) nor Basic")

    @staticmethod
    def allowed(principal: Principal, method: str) -> None:
        """A read-only pair may only read: anything else is 403."""
        if principal.role != ROLE_ADMIN and method.upper() not in READ_METHODS:
            raise SignatureError("Forbidden", f"AccessKey {principal.access_key_id} is read-only: it may only read "
                                 "(GET); use an admin AccessKey to change anything", 403)

    # -- the pairs ----------------------------------------------------------------------------

    async def key(self, access_key_id: str) -> AccessKeyRecord | None:
        if hmac.compare_digest(access_key_id.encode(), self.admin.id.encode()):
            return self.admin
        # The store may be a database across a network: never on the event loop.
        return await run_in_threadpool(self.store.access_key, access_key_id)

    async def _known(self, access_key_id: str) -> AccessKeyRecord:
        record = await self.key(access_key_id)
        if record is None:
            raise SignatureError("InvalidAccessKeyId.NotFound",
                                 f"AccessKey {access_key_id[:64]!r} does not exist on this server: use the access_id "
                                 "of eascmd.conf or a pair from 'eascmd accesskey ls'")
        return record

    # -- the schemes --------------------------------------------------------------------------

    async def _basic(self, auth: str) -> Principal:
        try:
            given = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise SignatureError("Unauthorized", "malformed Basic credentials") from None
        access_key_id, sep, secret = given.partition(":")
        record = await self.key(access_key_id) if sep else None
        # Compared even for an unknown id, so timing does not tell ids apart.
        expected = record.secret if record is not None else "\x00" + secret
        if record is None or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise SignatureError("Unauthorized", "wrong access id or key")
        return Principal(record.id, record.role, "Basic")

    async def _acs3(self, scope: dict[str, Any], headers: dict[str, list[str]],
                    auth: str) -> tuple[Principal, BodyCheck]:
        try:
            access_key_id, signed, signature = acs.parse_acs3(auth)
        except ValueError as exc:
            raise SignatureError("InvalidAuthorization", f"malformed ACS3-HMAC-SHA256 Authorization: {exc}") from None
        for needed in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
            if needed not in signed or not headers.get(needed):
                raise SignatureError("InvalidAuthorization", f"{needed} must be sent and signed (SignedHeaders)")
        record = await self._known(access_key_id)
        path, query = _target(scope)
        payload = headers["x-acs-content-sha256"][0].strip().lower()
        canonical = acs.acs3_canonical_request(scope.get("method", "GET"), path, query, headers, signed, payload)
        if not hmac.compare_digest(signature.lower().encode(), acs.acs3_signature(record.secret, canonical).encode()):
            raise _mismatch(access_key_id)
        self._fresh(_iso_time(headers["x-acs-date"][0]), "x-acs-date")
        self._first_use(record.id, headers["x-acs-signature-nonce"][0])

        def body_check(body: bytes) -> None:
            if not hmac.compare_digest(acs.sha256_hex(body).encode(), payload.encode()):
                raise SignatureError("SignatureDoesNotMatch",
                                     "the body does not match its signed x-acs-content-sha256")

        return Principal(record.id, record.role, acs.ACS3), body_check

    async def _roa(self, scope: dict[str, Any], headers: dict[str, list[str]],
                   auth: str) -> tuple[Principal, BodyCheck]:
        try:
            access_key_id, signature = acs.parse_roa(auth)
        except ValueError as exc:
            raise SignatureError("InvalidAuthorization", f"malformed ROA Authorization: {exc}") from None
        for needed in ("date", "x-acs-signature-nonce"):
            if not headers.get(needed):
                raise SignatureError("InvalidAuthorization", f"a signed request carries a {needed} header")
        record = await self._known(access_key_id)
        path, query = _target(scope)
        single = {name: values[0] for name, values in headers.items()}
        expected = acs.roa_signature(record.secret, acs.roa_string_to_sign(scope.get("method", "GET"), path, query,
                                                                           single))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise _mismatch(access_key_id)
        self._fresh(_http_time(single["date"]), "Date")
        self._first_use(record.id, single["x-acs-signature-nonce"])
        md5 = single.get("content-md5", "").strip()

        def body_check(body: bytes) -> None:
            if md5 and not hmac.compare_digest(base64.b64encode(hashlib.md5(body).digest()).decode().encode(),
                                               md5.encode()):
                raise SignatureError("SignatureDoesNotMatch", "the body does not match its signed Content-MD5")

        return Principal(record.id, record.role, "HMAC-SHA1"), body_check

    # -- time and nonces ----------------------------------------------------------------------

    def _fresh(self, sent_at: float | None, header: str) -> None:
        if sent_at is None:
            raise SignatureError("InvalidTimeStamp.Format", f"unreadable {header} header")
        if abs(self.clock() - sent_at) > self.max_skew_s:
            raise SignatureError("InvalidTimeStamp.Expired", f"the signed {header} is more than {self.max_skew_s:g} s "
                                 "from the server's clock: check the client's clock, then sign again")

    def _first_use(self, access_key_id: str, nonce: str) -> None:
        """Remember a nonce for the skew window; a second use inside it is a replay."""
        now = self.clock()
        key = (access_key_id, nonce.strip())
        with self._lock:
            while self._nonces and (next(iter(self._nonces.values())) < now
                                    or len(self._nonces) >= self.nonce_capacity):
                self._nonces.popitem(last=False)
            if key in self._nonces:
                raise SignatureError("SignatureNonceUsed", "this x-acs-signature-nonce was used already (a replayed "
                                     "request): sign each request with a new nonce")
            # Kept past the skew on either side: a request stays replayable only while fresh.
            self._nonces[key] = now + 2 * self.max_skew_s


def _mismatch(access_key_id: str) -> SignatureError:
    return SignatureError("SignatureDoesNotMatch", f"the signature does not match for AccessKey "
                          f"{access_key_id[:64]!r}: check the AccessKey secret (access_key of eascmd.conf)")


def _headers(scope: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in scope.get("headers") or []:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


def _target(scope: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The path exactly as sent (percent-encoding kept: the SDKs sign it so) and the
    query's (key, value) pairs decoded (the SDKs sign the values before encoding)."""
    raw = scope.get("raw_path") or scope.get("path", "/").encode()
    path = raw.decode("latin-1").partition("?")[0]
    query = parse_qsl((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
    return path, query


def _iso_time(text: str) -> float | None:
    """`x-acs-date`: ISO 8601 in UTC (a time without a zone is read as UTC too)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        return None


def _http_time(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None
