"""Per-service internal keys, derived from the server's master key.

The gateway proves to an instance that a request was already admitted by presenting an
internal key. One key for every instance would let code running in one service (a
leaked or hostile replica) call or drain every other service's instances; so each
service gets its own key, HMAC-SHA256(master key, service name), its instances get only
that, and the gateway presents the key of the route it forwards on. Every server
sharing a store derives the same keys from the same master key (the `internal_key`
setting), so followers route like the leader without storing a key per service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_CONTEXT = b"eas-internal-key/v1:"


def service_key(master: str, service: str) -> str:
    """The internal key of `service`'s instances (43 URL-safe characters)."""
    digest = hmac.new(master.encode(), _CONTEXT + service.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
