"""The release and traffic endpoints: versions, blue-green, A/B weights, groups, mirrors.

The rules themselves (what a release does to the weights, how a partner joins) live
in eas/control/traffic.py; these handlers validate requests and write the store.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from eas import spec as specs
from eas.api.base import ApiContext, ApiError, ApiRequest, body_json, endpoint, path_name
from eas.control import store as st
from eas.control.store import Status
from eas.control.traffic import release_shares
from eas.protocols.auth import generate_token
from eas.sources import redact_data


def _weights(raw: Any, field: str) -> list[tuple[str, int]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "InvalidParameter", f"{field}: a non-empty list of {{'Service', 'Weight'}}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("Service"), str):
            raise ApiError(400, "InvalidParameter", f"{field}[{i}].Service: a service name is required")
        weight = item.get("Weight", 100)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ApiError(400, "InvalidParameter", f"{field}[{i}].Weight: an integer from 0 to 100")
        out.append((item["Service"], weight))
    if len({s for s, _ in out}) != len(out):
        raise ApiError(400, "InvalidParameter", f"{field}: each service may appear once")
    return out


class TrafficApi:
    """The release and traffic endpoints."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def live(self, name: str) -> st.ServiceRecord:
        rec = self.ctx.store.get(name)
        if rec.desired == st.DELETED:
            raise ApiError(409, "ServiceDeleting", f"service '{name}' is being deleted")
        return rec

    def release(self, request: ApiRequest) -> dict[str, Any]:
        """`eascmd release <partner> -w N`: move N % of the original endpoint to the partner."""
        partner = path_name(self.ctx, request)
        self.live(partner)
        body = body_json(request, '{"Weight": 0..100}')
        weight = body.get("Weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ApiError(400, "InvalidParameter", "Weight: an integer from 0 to 100")
        row = self.ctx.store.shared_row(partner)
        if row is None:
            raise ApiError(400, "NotAPartner", f"'{partner}' is not a blue-green partner of another service: "
                           "create one with 'eascmd create <file> -r'")
        row.backends = release_shares(row.backends, partner, weight)
        self.ctx.store.put_traffic(row, partner, f"released into '{row.name}' at weight {weight}")
        self.live(partner)
        self.ctx.store.put_traffic(st.TrafficRecord(partner, "closed", "", [(row.name, 100)]),
                          partner, f"own endpoint closed; traffic comes through '{row.name}'")
        self.ctx.controller.wake()
        return {"Message": f"'{partner}' now takes {weight}% of '{row.name}'"}

    def set_traffic(self, request: ApiRequest) -> dict[str, Any]:
        """A/B inside one endpoint: any services, any weights (BML style)."""
        name = path_name(self.ctx, request)
        self.live(name)
        body = body_json(request, '{"Backends": [{"Service": ..., "Weight": ...}]}')
        backends = _weights(body.get("Backends"), "Backends")
        for svc, _ in backends:
            self.live(svc)
        # The endpoint keeps answering to `name`'s own token (no copy on the row).
        row = self.ctx.store.traffic().get(name) or st.TrafficRecord(name, "service", "", [])
        row.backends = backends
        text = ", ".join(f"{s} {w}" for s, w in backends)
        self.ctx.store.put_traffic(row, name, f"traffic of '{name}' set to {text}")
        self.ctx.controller.wake()
        return {"Message": f"traffic of '{name}': {text}"}

    def set_mirror(self, request: ApiRequest) -> dict[str, Any]:
        name = path_name(self.ctx, request)
        self.live(name)
        body = body_json(request, '{"Target": <service>, "Percentage": 0..100}')
        target, percent = body.get("Target"), body.get("Percentage", 100)
        if not isinstance(target, str) or target == name:
            raise ApiError(400, "InvalidParameter", "Target: another service to copy requests to")
        self.live(target)
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ApiError(400, "InvalidParameter", "Percentage: an integer from 0 to 100")
        row = self.ctx.store.traffic().get(name) or st.TrafficRecord(name, "service", "", [(name, 100)])
        row.mirror = (target, percent)
        self.ctx.store.put_traffic(row, name, f"mirroring {percent}% of requests to '{target}'")
        self.ctx.controller.wake()
        return {"Message": f"{percent}% of '{name}' requests are copied to '{target}'"}

    def drop_mirror(self, request: ApiRequest) -> dict[str, Any]:
        name = path_name(self.ctx, request)
        row = self.ctx.store.traffic().get(name)
        if row is None or row.mirror is None:
            raise ApiError(404, "MirrorNotFound", f"'{name}' has no mirror")
        row.mirror = None
        self.ctx.store.put_traffic(row, name, "mirror removed")
        self.ctx.controller.wake()
        return {"Message": f"'{name}' is no longer mirrored"}

    def versions(self, request: ApiRequest) -> dict[str, Any]:
        name = path_name(self.ctx, request)
        rec = self.ctx.store.get(name)
        items = [{"Version": v["version"], "Current": v["version"] == rec.version,
                  "ServiceConfig": redact_data(v["spec"])} for v in self.ctx.store.versions(name)]
        return {"Versions": items, "CurrentVersion": rec.version}

    def switch_version(self, request: ApiRequest) -> dict[str, Any]:
        """`eascmd version <svc> <id>`: roll to a recorded version (back or forward)."""
        name = path_name(self.ctx, request)
        rec = self.live(name)
        body = body_json(request, '{"Version": <id>}')
        version = body.get("Version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(400, "InvalidParameter", "Version: a version number from 'eascmd desc'")
        try:
            spec = self.ctx.store.version_spec(name, version)
        except st.NotFound:
            raise ApiError(404, "VersionNotFound", f"'{name}' has no version {version} "
                           f"(latest is {self.ctx.store.latest_version(name)})") from None
        # Keep today's instance count: a rollback changes the model, not the capacity.
        spec = specs.merge(spec, {"metadata": {"instance": rec.spec["metadata"]["instance"]}})
        self.ctx.store.set_current_version(name, version, f"switched from version {rec.version} to {version}", spec)
        if rec.desired == st.RUNNING:
            self.ctx.store.set_status(name, Status.UPDATING, "")
        self.ctx.controller.retry(name)
        return {"Message": f"'{name}' is rolling to version {version}"}

    def create_group(self, request: ApiRequest) -> dict[str, Any]:
        body = body_json(request, '{"Name": ..., "Members": [{"Service": ..., "Weight": ...}]}')
        name = body.get("Name")
        if not isinstance(name, str) or not specs.NAME_RE.fullmatch(name):  # the service name rule
            raise ApiError(400, "InvalidParameter", "Name: lower-case letters, digits and '_', starting with a letter")
        if name in self.ctx.store.traffic() or _exists(self.ctx.store, name):
            raise ApiError(409, "NameTaken", f"'{name}' is already a service or group name")
        members = _weights(body.get("Members"), "Members")
        for svc, _ in members:
            self.live(svc)
        token = body.get("Token") or generate_token()
        self.ctx.store.put_traffic(st.TrafficRecord(name, "group", token, members), name,
                          f"group created: {', '.join(f'{s} {w}' for s, w in members)}")
        self.ctx.controller.wake()
        return _group(self.ctx, self.ctx.store.traffic()[name])

    def list_groups(self, request: ApiRequest) -> dict[str, Any]:
        groups = [_group(self.ctx, r) for r in self.ctx.store.traffic().values() if r.kind == "group"]
        return {"TotalCount": len(groups), "Groups": groups}

    def group_row(self, request: ApiRequest) -> st.TrafficRecord:
        name = path_name(self.ctx, request)
        row = self.ctx.store.traffic().get(name)
        if row is None or row.kind != "group":
            raise ApiError(404, "GroupNotFound", f"group '{name}' does not exist: list them with 'eascmd group ls'")
        return row

    def get_group(self, request: ApiRequest) -> dict[str, Any]:
        return _group(self.ctx, self.group_row(request))

    def update_group(self, request: ApiRequest) -> dict[str, Any]:
        row = self.group_row(request)
        body = body_json(request, '{"Members": [{"Service": ..., "Weight": ...}]}')
        row.backends = _weights(body.get("Members"), "Members")
        for svc, _ in row.backends:
            self.live(svc)
        self.ctx.store.put_traffic(row, row.name, f"group weights: {', '.join(f'{s} {w}' for s, w in row.backends)}")
        self.ctx.controller.wake()
        return _group(self.ctx, row)

    def delete_group(self, request: ApiRequest) -> dict[str, Any]:
        row = self.group_row(request)
        self.ctx.store.delete_traffic(row.name, row.name, "group deleted")
        self.ctx.controller.wake()
        return {"Message": f"group '{row.name}' deleted"}

    def routes(self) -> list[Route]:
        svc = "/api/v2/services/{region}/{name}"
        grp = "/api/v2/groups/{region}/{name}"
        return [
            Route(svc + "/release", endpoint(self.ctx, self.release), methods=["PUT", "POST"]),
            Route(svc + "/traffic", endpoint(self.ctx, self.set_traffic), methods=["PUT"]),
            Route(svc + "/mirror", endpoint(self.ctx, self.set_mirror), methods=["PUT", "POST"]),
            Route(svc + "/mirror", endpoint(self.ctx, self.drop_mirror), methods=["DELETE"]),
            Route(svc + "/versions", endpoint(self.ctx, self.versions), methods=["GET"]),
            Route(svc + "/version", endpoint(self.ctx, self.switch_version), methods=["PUT", "POST"]),
            Route("/api/v2/groups", endpoint(self.ctx, self.create_group), methods=["POST"]),
            Route("/api/v2/groups", endpoint(self.ctx, self.list_groups), methods=["GET"]),
            Route(grp, endpoint(self.ctx, self.get_group), methods=["GET"]),
            Route(grp, endpoint(self.ctx, self.update_group), methods=["PUT"]),
            Route(grp, endpoint(self.ctx, self.delete_group), methods=["DELETE"]),
        ]


def _exists(store: st.Store, name: str) -> bool:
    try:
        store.get(name)
        return True
    except st.NotFound:
        return False


def _group(ctx: ApiContext, row: st.TrafficRecord) -> dict[str, Any]:
    return {
        "GroupName": row.name,
        "Region": ctx.region,
        "AccessToken": row.token,
        "Members": [{"Service": s, "Weight": w} for s, w in row.backends],
        "GroupPath": f"/api/predict/{row.name}",
        "IntranetEndpoint": ctx.endpoint,
    }
