"""Console sessions: sign in once with the admin AccessKey pair, then a signed cookie.

Why a cookie and not the key in the browser: the key never reaches JavaScript after
the sign-in form is sent (the cookie is HttpOnly), never lands in a URL, localStorage
or sessionStorage, and a reload keeps the session without asking again. The cookie is

- signed (HMAC-SHA256) with a key derived from the admin access key and a random
  secret kept in the store, so nothing needs to be remembered per session, servers
  sharing a store accept each other's sessions, and changing the access key (env
  `EAS_ACCESS_KEY`) signs everyone out;
- `HttpOnly`, `SameSite=Strict`, `Path=/console` (the management API itself never
  accepts it: `/api/v2` stays Basic-auth only), `Secure` when served over https, and
  valid for `SESSION_TTL_S`;
- paired with a CSRF token (an HMAC of the session id, never stored) that every
  console call other than the sign-in must echo in `X-CSRF-Token`: a cross-site page
  can make the browser send the cookie (SameSite already stops that in modern
  browsers), but it can neither read the token nor send that header without CORS.

Signing out revokes the session id in this process (kept until it would expire) and
clears the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "eas_console"
CSRF_HEADER = "x-csrf-token"
#: How long a console session lasts (a working day).
SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True)
class Session:
    sid: str
    access_id: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks console session cookies for one admin AccessKey pair."""

    def __init__(self, access_id: str, access_key: str, secret: str, ttl_s: float = SESSION_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.access_id = access_id
        self._access_key = access_key
        self._key = hmac.new(access_key.encode(), b"eas-console-session\0" + secret.encode(), hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self.clock = clock
        self._revoked: dict[str, float] = {}  # sid -> when it would have expired
        self._lock = threading.Lock()

    def credentials_ok(self, access_id: str, access_key: str) -> bool:
        """Both compared in constant time, both always compared."""
        id_ok = hmac.compare_digest(access_id.encode(), self.access_id.encode())
        key_ok = hmac.compare_digest(access_key.encode(), self._access_key.encode())
        return id_ok and key_ok

    def issue(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), self.access_id, float(int(self.clock() + self.ttl_s)))
        payload = _b64(json.dumps({"sid": session.sid, "sub": session.access_id, "exp": int(session.expires)},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None (missing, forged, expired, revoked, other admin)."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, sig = cookie.split(".")
        if not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["sid"]), str(data["sub"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= self.clock() or session.access_id != self.access_id:
            return None
        with self._lock:
            if session.sid in self._revoked:
                return None
        return session

    def csrf(self, session: Session) -> str:
        return _b64(hmac.new(self._key, b"csrf\0" + session.sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf(session).encode())  # type: ignore[union-attr]

    def revoke(self, session: Session) -> None:
        now = self.clock()
        with self._lock:
            for sid in [s for s, exp in self._revoked.items() if exp <= now]:
                del self._revoked[sid]  # past expiry the signature check refuses them anyway
            self._revoked[session.sid] = session.expires

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
