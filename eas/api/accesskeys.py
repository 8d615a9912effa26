"""AccessKey pairs of the management API (ours: `/api/v2/ext/accesskeys`, docs/api.md).

The admin pair of eascmd.conf is the first AccessKey and always listed; more pairs are
created here, each an `admin` or a `readonly` one, and revoked by id. A secret is
shown once, in the answer that creates it: the store keeps it (signatures are checked
with it) but no call gives it back.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.routing import Route

from eas.api.base import ApiContext, ApiError, ApiRequest, body_json, endpoint, iso_time
from eas.api.signature import ROLE_ADMIN, ROLES
from eas.control import store as st

#: Descriptions are for people: a line, not a document.
MAX_DESCRIPTION = 256


class AccessKeysApi:
    """Create, list and revoke AccessKey pairs."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def create(self, request: ApiRequest) -> dict[str, Any]:
        body = body_json(request, '{"Role": "admin" | "readonly", "Description": "..."}') if request.body.strip() \
            else {}
        role = body.get("Role", ROLE_ADMIN)
        if role not in ROLES:
            raise ApiError(400, "InvalidParameter", f"Role: {' or '.join(ROLES)}")
        description = body.get("Description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise ApiError(400, "InvalidParameter", f"Description: text of at most {MAX_DESCRIPTION} characters")
        # Shaped like Alibaba's: an `LTAI`-style id is not claimed, so ours say what they are.
        key = st.AccessKeyRecord(f"EAS{secrets.token_hex(10).upper()}", secrets.token_urlsafe(24), role, description)
        self.ctx.store.create_access_key(key)
        return {**_shown(key), "AccessKeySecret": key.secret}

    def list_keys(self, request: ApiRequest) -> dict[str, Any]:
        keys = [_shown(self.ctx.auth.admin, builtin=True), *(_shown(k) for k in self.ctx.store.access_keys())]
        return {"TotalCount": len(keys), "AccessKeys": keys}

    def revoke(self, request: ApiRequest) -> dict[str, Any]:
        key_id = request.path_params["id"]
        if key_id == self.ctx.auth.admin.id:
            raise ApiError(400, "InvalidParameter", "the admin pair of eascmd.conf cannot be revoked here: set "
                           "EAS_ACCESS_ID / EAS_ACCESS_KEY in eas-server's environment to replace it")
        if not self.ctx.store.delete_access_key(key_id):
            raise ApiError(404, "AccessKeyNotFound", f"no AccessKey {key_id!r}: list them with 'eascmd accesskey ls'")
        return {"Message": f"AccessKey {key_id} revoked"}

    def routes(self) -> list[Route]:
        return [
            Route("/api/v2/ext/accesskeys", endpoint(self.ctx, self.list_keys), methods=["GET"]),
            Route("/api/v2/ext/accesskeys", endpoint(self.ctx, self.create), methods=["POST"]),
            Route("/api/v2/ext/accesskeys/{id}", endpoint(self.ctx, self.revoke), methods=["DELETE"]),
        ]


def _shown(key: st.AccessKeyRecord, builtin: bool = False) -> dict[str, Any]:
    return {"AccessKeyId": key.id, "Role": key.role, "Description": key.description,
            "CreateTime": iso_time(key.created_at) if key.created_at else "", "Builtin": builtin}
