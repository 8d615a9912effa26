"""The release and traffic endpoints: versions, blue-green, A/B weights, groups, mirrors.

The rules themselves (what a release does to the weights, how a partner joins) live
in eas/control/traffic.py; these handlers validate requests and write the store.
EAS's actions (ListServiceVersions, UpdateServiceVersion, ReleaseService, the mirror
actions, ListGroups, DescribeGroup, DescribeGroupEndpoints) take and give EAS's fields;
A/B weights inside one endpoint and group membership by weight are ours, under
`/api/v2/ext/` (docs/api.md).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.routing import Route

from eas import spec as specs
from eas.api.base import ApiContext, ApiError, ApiRequest, body_json, endpoint, iso_time, page, path_name, query_int
from eas.control import store as st
from eas.control.store import Status
from eas.control.traffic import AUTO, release_shares
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
        """Create/UpdateServiceMirror: `{"Ratio": 0..100, "Target": ["<service>"]}` (one
        target here; a bare string is taken too)."""
        name = path_name(self.ctx, request)
        self.live(name)
        body = body_json(request, '{"Ratio": 0..100, "Target": ["<service>"]}')
        targets, percent = body.get("Target"), body.get("Ratio", 100)
        if isinstance(targets, str):
            targets = [t for t in targets.split(",") if t]
        if not isinstance(targets, list) or len(targets) != 1:
            raise ApiError(400, "InvalidParameter", "Target: a list with the one service to copy requests to")
        target = targets[0]
        if not isinstance(target, str) or target == name:
            raise ApiError(400, "InvalidParameter", "Target: another service to copy requests to")
        self.live(target)
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ApiError(400, "InvalidParameter", "Ratio: an integer from 0 to 100")
        row = self.ctx.store.traffic().get(name) or st.TrafficRecord(name, "service", "", [(name, 100)])
        row.mirror = (target, percent)
        self.ctx.store.put_traffic(row, name, f"mirroring {percent}% of requests to '{target}'")
        self.ctx.controller.wake()
        return {"Message": f"{percent}% of '{name}' requests are copied to '{target}'"}

    def get_mirror(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceMirror: Ratio and Target as text, as EAS answers them."""
        name = path_name(self.ctx, request)
        self.ctx.store.get(name)
        row = self.ctx.store.traffic().get(name)
        mirror = row.mirror if row is not None else None
        return {"ServiceName": name, "Ratio": str(mirror[1]) if mirror else "", "Target": mirror[0] if mirror else ""}

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
        """ListServiceVersions: oldest first; `ImageId` is the version number (what
        UpdateServiceVersion takes), `ServiceConfig` its service JSON as text."""
        name = path_name(self.ctx, request)
        rec = self.ctx.store.get(name)
        items = [{"ImageId": v["version"], "BuildTime": iso_time(v["created_at"]), "ImageAvailable": "true",
                  "ServiceRunnable": "true", "Message": "current" if v["version"] == rec.version else "",
                  "ServiceConfig": json.dumps(redact_data(v["spec"]), sort_keys=True)}
                 for v in self.ctx.store.versions(name)]
        number = query_int(request, "PageNumber", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", 100, 1, 1000)
        return {"PageNumber": number, "PageSize": size, "TotalCount": len(items), "Versions": page(items, number, size),
                "Ext": {"CurrentVersion": rec.version}}

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
        """ListGroups: `Filter` keeps names containing it; pages of PageSize."""
        groups = [_group(self.ctx, r) for r in self.ctx.store.traffic().values() if r.kind == "group"]
        if text := request.query_params.get("Filter", "").strip():
            groups = [g for g in groups if text in g["Name"]]
        number = query_int(request, "PageNumber", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", 100, 1, 1000)
        return {"PageNumber": number, "PageSize": size, "TotalCount": len(groups), "Groups": page(groups, number, size)}

    def group_row(self, request: ApiRequest) -> st.TrafficRecord:
        name = path_name(self.ctx, request)
        row = self.ctx.store.traffic().get(name)
        if row is None or row.kind != "group":
            raise ApiError(404, "GroupNotFound", f"group '{name}' does not exist: list them with 'eascmd group ls'")
        return row

    def get_group(self, request: ApiRequest) -> dict[str, Any]:
        return _group(self.ctx, self.group_row(request))

    def group_endpoints(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeGroupEndpoints: the group's one endpoint and its token."""
        row = self.group_row(request)
        url = self.ctx.predict_url(row.name)
        return {"AccessToken": row.token, "Message": "",
                "Endpoints": [{"EndpointType": "DEFAULT", "BackendId": "", "PathType": "", "Port": self.ctx.port,
                               "InternetEndpoints": [url], "IntranetEndpoints": [url]}]}

    def update_group(self, request: ApiRequest) -> dict[str, Any]:
        """Members and weights (TrafficMode customized), or `"TrafficMode": "auto"`: weights
        follow the members' running instances (what a group formed by metadata.group starts with)."""
        row = self.group_row(request)
        body = body_json(request, '{"Members": [{"Service": ..., "Weight": ...}], "TrafficMode": "customized"|"auto"}')
        mode = body.get("TrafficMode")
        if mode not in (None, AUTO, "customized"):
            raise ApiError(400, "InvalidParameter", "TrafficMode: auto (weights follow running instances) or customized")
        if mode != AUTO or body.get("Members") is not None:
            row.backends = _weights(body.get("Members"), "Members")
        row.mode = AUTO if mode == AUTO else ("" if mode == "customized" or body.get("Members") is not None
                                              else row.mode)
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
        ext_grp = "/api/v2/ext/groups/{region}/{name}"
        return [
            Route(svc + "/release", endpoint(self.ctx, self.release), methods=["PUT", "POST"]),
            Route(svc + "/mirror", endpoint(self.ctx, self.get_mirror), methods=["GET"]),
            Route(svc + "/mirror", endpoint(self.ctx, self.set_mirror), methods=["PUT", "POST"]),
            Route(svc + "/mirror", endpoint(self.ctx, self.drop_mirror), methods=["DELETE"]),
            Route(svc + "/versions", endpoint(self.ctx, self.versions), methods=["GET"]),
            Route(svc + "/version", endpoint(self.ctx, self.switch_version), methods=["PUT", "POST"]),
            Route("/api/v2/groups", endpoint(self.ctx, self.list_groups), methods=["GET"]),
            Route(grp, endpoint(self.ctx, self.get_group), methods=["GET"]),
            Route(grp + "/endpoints", endpoint(self.ctx, self.group_endpoints), methods=["GET"]),
            # Ours alone: A/B weights inside one endpoint, groups made of services by weight.
            Route("/api/v2/ext/services/{region}/{name}/traffic", endpoint(self.ctx, self.set_traffic),
                  methods=["PUT"]),
            Route("/api/v2/ext/groups", endpoint(self.ctx, self.create_group), methods=["POST"]),
            Route(ext_grp, endpoint(self.ctx, self.update_group), methods=["PUT"]),
            Route(ext_grp, endpoint(self.ctx, self.delete_group), methods=["DELETE"]),
        ]


def _exists(store: st.Store, name: str) -> bool:
    try:
        store.get(name)
        return True
    except st.NotFound:
        return False


def _member_weights(ctx: ApiContext, row: st.TrafficRecord) -> list[tuple[str, int]]:
    """The weights a group splits by now: as set, or (TrafficMode auto) the members'
    running instances as the controller last observed them."""
    if row.mode != AUTO:
        return row.backends
    observed = ctx.controller.last_observed
    return [(s, observed[s].running if s in observed else 0) for s, _ in row.backends]


def _group(ctx: ApiContext, row: st.TrafficRecord) -> dict[str, Any]:
    """EAS's `Group`; its members and their weights (ours) in `Ext`."""
    url = ctx.predict_url(row.name)
    return {
        "Name": row.name,
        "ClusterId": ctx.region,
        "AccessToken": row.token,
        "TrafficMode": "auto" if row.mode == AUTO else "customized",
        "QueueService": "",
        "InternetEndpoint": url,
        "IntranetEndpoint": url,
        "CreateTime": iso_time(row.created_at),
        "UpdateTime": iso_time(row.created_at),
        "Ext": {"Members": [{"Service": s, "Weight": w} for s, w in _member_weights(ctx, row)]},
    }
