"""Releases and traffic: versions, blue-green partners, A/B weights, groups, mirrors.

All of them are one idea: an endpoint name that clients call (and whose token they
hold) sends each request to one of several services, picked at random by weight, and
may copy a share to a shadow. The store keeps that as a `traffic` row; the controller
turns rows into gateway entries. The original endpoint of a service never changes.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from starlette.requests import Request
from starlette.routing import Route as HttpRoute

from eas import spec as specs
from eas import store as st
from eas.apibase import ApiContext, ApiError, body_json, endpoint, path_name
from eas.auth import generate_token


def partner_name(original: str) -> str:
    """`<name>_<6 letters>`: a blue-green partner keeps its origin visible in its name."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))
    return f"{original}_{suffix}"[:63]


def add_partner(store: st.Store, original: st.ServiceRecord, partner: str) -> None:
    """Blue-green step one: the partner joins the original endpoint at weight 0."""
    row = store.traffic().get(original.name) or st.TrafficRecord(
        original.name, "service", original.token, [(original.name, 100)])
    row.backends = [b for b in row.backends if b[0] != partner] + [(partner, 0)]
    store.put_traffic(row, original.name, f"blue-green partner {partner} created (weight 0)")


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


def routes(ctx: ApiContext) -> list[HttpRoute]:
    store = ctx.store

    def live(name: str) -> st.ServiceRecord:
        rec = store.get(name)
        if rec.desired == st.DELETED:
            raise ApiError(409, "ServiceDeleting", f"service '{name}' is being deleted")
        return rec

    async def release(request: Request, request_id: str) -> dict[str, Any]:
        """`eascmd release <partner> -w N`: move N % of the original endpoint to the partner."""
        partner = path_name(ctx, request)
        live(partner)
        body = await body_json(request, '{"Weight": 0..100}')
        weight = body.get("Weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ApiError(400, "InvalidParameter", "Weight: an integer from 0 to 100")
        row = store.shared_row(partner)
        if row is None:
            raise ApiError(400, "NotAPartner", f"'{partner}' is not a blue-green partner of another service: "
                           "create one with 'eascmd create <file> -r'")
        others = [(s, w) for s, w in row.backends if s != partner]
        rest = 100 - weight
        total = sum(w for _, w in others)
        if total:
            shares = [(s, round(rest * w / total)) for s, w in others]
        else:
            shares = [(s, rest // len(others)) for s, _ in others]
        row.backends = shares + [(partner, weight)]
        store.put_traffic(row, partner, f"released into '{row.name}' at weight {weight}")
        store.put_traffic(st.TrafficRecord(partner, "closed", live(partner).token, [(row.name, 100)]),
                          partner, f"own endpoint closed; traffic comes through '{row.name}'")
        ctx.controller.wake()
        return {"Message": f"'{partner}' now takes {weight}% of '{row.name}'"}

    async def set_traffic(request: Request, request_id: str) -> dict[str, Any]:
        """A/B inside one endpoint: any services, any weights (BML style)."""
        name = path_name(ctx, request)
        rec = live(name)
        body = await body_json(request, '{"Backends": [{"Service": ..., "Weight": ...}]}')
        backends = _weights(body.get("Backends"), "Backends")
        for svc, _ in backends:
            live(svc)
        row = store.traffic().get(name) or st.TrafficRecord(name, "service", rec.token, [])
        row.backends = backends
        text = ", ".join(f"{s} {w}" for s, w in backends)
        store.put_traffic(row, name, f"traffic of '{name}' set to {text}")
        ctx.controller.wake()
        return {"Message": f"traffic of '{name}': {text}"}

    async def set_mirror(request: Request, request_id: str) -> dict[str, Any]:
        name = path_name(ctx, request)
        rec = live(name)
        body = await body_json(request, '{"Target": <service>, "Percentage": 0..100}')
        target, percent = body.get("Target"), body.get("Percentage", 100)
        if not isinstance(target, str) or target == name:
            raise ApiError(400, "InvalidParameter", "Target: another service to copy requests to")
        live(target)
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ApiError(400, "InvalidParameter", "Percentage: an integer from 0 to 100")
        row = store.traffic().get(name) or st.TrafficRecord(name, "service", rec.token, [(name, 100)])
        row.mirror = (target, percent)
        store.put_traffic(row, name, f"mirroring {percent}% of requests to '{target}'")
        ctx.controller.wake()
        return {"Message": f"{percent}% of '{name}' requests are copied to '{target}'"}

    async def drop_mirror(request: Request, request_id: str) -> dict[str, Any]:
        name = path_name(ctx, request)
        row = store.traffic().get(name)
        if row is None or row.mirror is None:
            raise ApiError(404, "MirrorNotFound", f"'{name}' has no mirror")
        row.mirror = None
        store.put_traffic(row, name, "mirror removed")
        ctx.controller.wake()
        return {"Message": f"'{name}' is no longer mirrored"}

    async def versions(request: Request, request_id: str) -> dict[str, Any]:
        name = path_name(ctx, request)
        rec = store.get(name)
        items = [{"Version": v["version"], "Current": v["version"] == rec.version,
                  "ServiceConfig": v["spec"]} for v in store.versions(name)]
        return {"Versions": items, "CurrentVersion": rec.version}

    async def switch_version(request: Request, request_id: str) -> dict[str, Any]:
        """`eascmd version <svc> <id>`: roll to a recorded version (back or forward)."""
        name = path_name(ctx, request)
        rec = live(name)
        body = await body_json(request, '{"Version": <id>}')
        version = body.get("Version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(400, "InvalidParameter", "Version: a version number from 'eascmd desc'")
        try:
            spec = store.version_spec(name, version)
        except st.NotFound:
            raise ApiError(404, "VersionNotFound", f"'{name}' has no version {version} "
                           f"(latest is {store.latest_version(name)})") from None
        # Keep today's instance count: a rollback changes the model, not the capacity.
        spec = specs.merge(spec, {"metadata": {"instance": rec.spec["metadata"]["instance"]}})
        store.set_current_version(name, version, f"switched from version {rec.version} to {version}", spec)
        if rec.desired == st.RUNNING:
            store.set_status(name, "Updating", "")
        ctx.controller.retry(name)
        return {"Message": f"'{name}' is rolling to version {version}"}

    async def create_group(request: Request, request_id: str) -> dict[str, Any]:
        body = await body_json(request, '{"Name": ..., "Members": [{"Service": ..., "Weight": ...}]}')
        name = body.get("Name")
        if not isinstance(name, str) or not specs.NAME_RE.match(name):
            raise ApiError(400, "InvalidParameter", "Name: lower-case letters, digits and '_', starting with a letter")
        if name in store.traffic() or _exists(store, name):
            raise ApiError(409, "NameTaken", f"'{name}' is already a service or group name")
        members = _weights(body.get("Members"), "Members")
        for svc, _ in members:
            live(svc)
        token = body.get("Token") or generate_token()
        store.put_traffic(st.TrafficRecord(name, "group", token, members), name,
                          f"group created: {', '.join(f'{s} {w}' for s, w in members)}")
        ctx.controller.wake()
        return _group(ctx, store.traffic()[name])

    async def list_groups(request: Request, request_id: str) -> dict[str, Any]:
        groups = [_group(ctx, r) for r in store.traffic().values() if r.kind == "group"]
        return {"TotalCount": len(groups), "Groups": groups}

    def group_row(request: Request) -> st.TrafficRecord:
        name = path_name(ctx, request)
        row = store.traffic().get(name)
        if row is None or row.kind != "group":
            raise ApiError(404, "GroupNotFound", f"group '{name}' does not exist: list them with 'eascmd group ls'")
        return row

    async def get_group(request: Request, request_id: str) -> dict[str, Any]:
        return _group(ctx, group_row(request))

    async def update_group(request: Request, request_id: str) -> dict[str, Any]:
        row = group_row(request)
        body = await body_json(request, '{"Members": [{"Service": ..., "Weight": ...}]}')
        row.backends = _weights(body.get("Members"), "Members")
        for svc, _ in row.backends:
            live(svc)
        store.put_traffic(row, row.name, f"group weights: {', '.join(f'{s} {w}' for s, w in row.backends)}")
        ctx.controller.wake()
        return _group(ctx, row)

    async def delete_group(request: Request, request_id: str) -> dict[str, Any]:
        row = group_row(request)
        store.delete_traffic(row.name, row.name, "group deleted")
        ctx.controller.wake()
        return {"Message": f"group '{row.name}' deleted"}

    svc = "/api/v2/services/{region}/{name}"
    grp = "/api/v2/groups/{region}/{name}"
    return [
        HttpRoute(svc + "/release", endpoint(ctx, release), methods=["PUT", "POST"]),
        HttpRoute(svc + "/traffic", endpoint(ctx, set_traffic), methods=["PUT"]),
        HttpRoute(svc + "/mirror", endpoint(ctx, set_mirror), methods=["PUT", "POST"]),
        HttpRoute(svc + "/mirror", endpoint(ctx, drop_mirror), methods=["DELETE"]),
        HttpRoute(svc + "/versions", endpoint(ctx, versions), methods=["GET"]),
        HttpRoute(svc + "/version", endpoint(ctx, switch_version), methods=["PUT", "POST"]),
        HttpRoute("/api/v2/groups", endpoint(ctx, create_group), methods=["POST"]),
        HttpRoute("/api/v2/groups", endpoint(ctx, list_groups), methods=["GET"]),
        HttpRoute(grp, endpoint(ctx, get_group), methods=["GET"]),
        HttpRoute(grp, endpoint(ctx, update_group), methods=["PUT"]),
        HttpRoute(grp, endpoint(ctx, delete_group), methods=["DELETE"]),
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
