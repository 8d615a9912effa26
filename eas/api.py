"""The management REST API (`/api/v2/services...`, docs/api.md).

Each call validates at the edge, writes the store and wakes the controller; it never
waits for Ray. Answers use EAS's PascalCase fields so EAS tooling reads them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route as HttpRoute

from eas import spec as specs
from eas import store as st
from eas.apibase import ApiContext, ApiError, body_json, endpoint, iso_time, path_name
from eas.auth import generate_token
from eas.traffic import add_partner, partner_name
from processors import registry


def routes(ctx: ApiContext) -> list[HttpRoute]:
    """Starlette routes for the API, closed over the server's context."""

    def region_ok(request: Request) -> str:
        return path_name(ctx, request)

    async def create(request: Request, request_id: str) -> dict[str, Any]:
        data = await body_json(request)
        blue_green = request.query_params.get("BlueGreen", "").lower() in ("1", "true", "yes")
        original = None
        if blue_green:
            # `eascmd create f.json -r`: a partner of the existing service of that name.
            original = ctx.store.get(str(data.get("name")))
            data = {**data, "name": partner_name(original.name)}
        spec = specs.parse(data)
        _check_processor(spec)
        if (row := ctx.store.traffic().get(spec.name)) is not None and row.kind == "group":
            raise ApiError(409, "NameTaken", f"'{spec.name}' is a group name: pick another service name")
        token = spec.token if spec.token and not blue_green else generate_token()
        try:
            rec = ctx.store.create_service(spec.name, _stored_spec(spec), token)
        except st.AlreadyExists:
            raise ApiError(409, "ServiceAlreadyExists",
                           f"service '{spec.name}' already exists: change it with 'eascmd modify' "
                           "or pick another name") from None
        if original is not None:
            add_partner(ctx.store, original, rec.name)
        ctx.controller.wake()
        return {
            "ServiceId": rec.service_id,
            "ServiceName": rec.name,
            "Region": ctx.region,
            "Status": rec.status,
            "InternetEndpoint": ctx.endpoint,
            "IntranetEndpoint": ctx.endpoint,
        }

    async def list_services(request: Request, request_id: str) -> dict[str, Any]:
        services = [describe(r) for r in ctx.store.list()]
        return {"TotalCount": len(services), "Services": services}

    async def get_service(request: Request, request_id: str) -> dict[str, Any]:
        return describe(ctx.store.get(region_ok(request)))

    async def update(request: Request, request_id: str) -> dict[str, Any]:
        return apply_patch(region_ok(request), await body_json(request))

    def apply_patch(name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge a partial service JSON, validate, store; a model change makes a version."""
        rec = ctx.store.get(name)
        if patch.get("name", name) != name:
            raise ApiError(400, "InvalidParameter", "name: a service cannot be renamed; create a new one")
        old = specs.parse({**rec.spec, "token": rec.token})
        new = specs.parse(specs.merge({**rec.spec, "token": rec.token}, patch))
        _check_processor(new)
        new_version = new.model_version_fields() != old.model_version_fields()
        if new.to_dict() == old.to_dict():
            return {"Message": f"service '{name}' unchanged"}
        if new.code_version() == old.code_version() and new.metadata.instance != old.metadata.instance:
            event = f"scaled from {old.metadata.instance} to {new.metadata.instance} instances"
        else:
            event = "service updated" + (" (new version)" if new_version else "")
        ctx.store.update_spec(name, _stored_spec(new), new_version, event,
                              token=new.token if new.token != rec.token else None)
        if rec.desired == st.RUNNING:
            # Visible at once, so a client waiting for Running cannot see the old state.
            ctx.store.set_status(name, "Updating", "")
        ctx.controller.retry(name)
        return {"Message": f"service '{name}' is updating: {event}"}

    async def get_autoscaler(request: Request, request_id: str) -> dict[str, Any]:
        name = region_ok(request)
        rec = ctx.store.get(name)
        decision = ctx.controller.scaler.last.get(name)
        return {
            "Autoscaler": rec.spec.get("autoscaler"),
            "CronScaler": rec.spec.get("cron_scaler"),
            "Sleep": rec.spec.get("sleep"),
            "LastScaling": _decision(decision),
        }

    async def put_autoscaler(request: Request, request_id: str) -> dict[str, Any]:
        """EAS's /autoscaler: the body is the service JSON's `autoscaler` block."""
        return apply_patch(region_ok(request), {"autoscaler": await body_json(request, "the autoscaler block")})

    async def delete_autoscaler(request: Request, request_id: str) -> dict[str, Any]:
        return apply_patch(region_ok(request), {"autoscaler": None})

    async def put_cronscaler(request: Request, request_id: str) -> dict[str, Any]:
        return apply_patch(region_ok(request), {"cron_scaler": await body_json(request, "the cron_scaler block")})

    async def delete_cronscaler(request: Request, request_id: str) -> dict[str, Any]:
        return apply_patch(region_ok(request), {"cron_scaler": None})

    def change_desired(request: Request, desired: str, status: str, verb: str) -> dict[str, Any]:
        """Record a new desired state and show its transition status at once."""
        name = region_ok(request)
        rec = ctx.store.get(name)
        if rec.desired == st.DELETED:
            raise ApiError(409, "ServiceDeleting", f"service '{name}' is being deleted")
        ctx.store.set_desired(name, desired, f"{verb} requested")
        if rec.status != {st.RUNNING: "Running", st.STOPPED: "Stopped"}.get(desired):
            ctx.store.set_status(name, status, "")
        ctx.controller.retry(name)
        return {"Message": f"service '{name}' in region {ctx.region} is {status.lower()}"}

    async def delete(request: Request, request_id: str) -> dict[str, Any]:
        return change_desired(request, st.DELETED, "Deleting", "delete")

    async def stop(request: Request, request_id: str) -> dict[str, Any]:
        return change_desired(request, st.STOPPED, "Stopping", "stop")

    async def start(request: Request, request_id: str) -> dict[str, Any]:
        return change_desired(request, st.RUNNING, "Creating", "start")

    async def instances(request: Request, request_id: str) -> dict[str, Any]:
        rec = ctx.store.get(region_ok(request))
        app = ctx.controller.last_observed.get(rec.name)
        items = [_instance(rec.name, r) for r in (app.replicas if app else [])]
        return {"TotalCount": len(items), "Instances": items}

    async def restart_instances(request: Request, request_id: str) -> dict[str, Any]:
        rec = ctx.store.get(region_ok(request))
        wanted = [i for i in request.query_params.get("InstanceList", "").split(",") if i]
        if not wanted:
            raise ApiError(400, "InvalidParameter", "InstanceList: name at least one instance (see 'eascmd w')")
        ids = [_replica_id(rec.name, i) for i in wanted]
        missing = await run_in_threadpool(ctx.controller.backend.restart_instances, rec.name, ids,
                                          ctx.controller.internal_key)
        if missing:
            raise ApiError(404, "InstanceNotFound",
                           f"no such instance of '{rec.name}': {', '.join(f'{rec.name}-{m}' for m in missing)}"
                           " (list them with 'eascmd w')")
        ctx.store.add_event(rec.name, "Restart", f"restarting instances {', '.join(wanted)}")
        ctx.controller.wake()
        return {"Message": f"instances {', '.join(wanted)} of '{rec.name}' are restarting"}

    async def events(request: Request, request_id: str) -> dict[str, Any]:
        rec = ctx.store.get(region_ok(request))
        items = [{"Time": iso_time(e["at"]), "Type": e["type"], "Message": e["message"]}
                 for e in ctx.store.events(rec.name)]
        return {"TotalCount": len(items), "Events": items}

    def describe(rec: st.ServiceRecord) -> dict[str, Any]:
        spec = rec.spec
        meta = spec.get("metadata", {})
        app = ctx.controller.last_observed.get(rec.name)
        running = app.running if app else 0
        pending = app.pending if app else 0
        total = ctx.controller.desired_count(rec.name, meta.get("instance", 0)) if rec.desired == st.RUNNING else 0
        return {
            "ServiceName": rec.name,
            "ServiceId": rec.service_id,
            "Region": ctx.region,
            "Status": rec.status,
            "Message": rec.message,
            "AccessToken": rec.token,
            "TotalInstance": total,
            "RunningInstance": running,
            "PendingInstance": pending,
            "CPU": meta.get("cpu", 1),
            "GPU": meta.get("gpu", 0),
            "Memory": meta.get("memory", 0),
            "Weight": ctx.store.weight_of(rec.name),
            "DesiredInstance": total,
            "LastScaling": _decision(ctx.controller.scaler.last.get(rec.name)),
            "LatestVersion": ctx.store.latest_version(rec.name),
            "CurrentVersion": rec.version,
            "CreateTime": iso_time(rec.created_at),
            "UpdateTime": iso_time(rec.updated_at),
            "IntranetEndpoint": ctx.endpoint,
            "InternetEndpoint": ctx.endpoint,
            "ServicePath": f"/api/predict/{rec.name}",
            "ServiceConfig": json.dumps(spec, sort_keys=True),
        }

    svc = "/api/v2/services/{region}/{name}"
    return [
        HttpRoute("/api/v2/services", endpoint(ctx, create), methods=["POST"]),
        HttpRoute("/api/v2/services", endpoint(ctx, list_services), methods=["GET"]),
        HttpRoute(svc, endpoint(ctx, get_service), methods=["GET"]),
        HttpRoute(svc, endpoint(ctx, update), methods=["PUT"]),
        HttpRoute(svc, endpoint(ctx, delete), methods=["DELETE"]),
        HttpRoute(svc + "/stop", endpoint(ctx, stop), methods=["PUT", "POST"]),
        HttpRoute(svc + "/start", endpoint(ctx, start), methods=["PUT", "POST"]),
        HttpRoute(svc + "/instances", endpoint(ctx, instances), methods=["GET"]),
        HttpRoute(svc + "/instances", endpoint(ctx, restart_instances), methods=["DELETE"]),
        HttpRoute(svc + "/events", endpoint(ctx, events), methods=["GET"]),
        HttpRoute(svc + "/autoscaler", endpoint(ctx, get_autoscaler), methods=["GET"]),
        HttpRoute(svc + "/autoscaler", endpoint(ctx, put_autoscaler), methods=["PUT", "POST"]),
        HttpRoute(svc + "/autoscaler", endpoint(ctx, delete_autoscaler), methods=["DELETE"]),
        HttpRoute(svc + "/cronscaler", endpoint(ctx, put_cronscaler), methods=["PUT", "POST"]),
        HttpRoute(svc + "/cronscaler", endpoint(ctx, delete_cronscaler), methods=["DELETE"]),
    ]


def _decision(decision: Any) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {"Time": iso_time(decision.at), "DesiredInstance": decision.desired, "Reason": decision.reason}


def _stored_spec(spec: specs.ServiceSpec) -> dict[str, Any]:
    """The spec as kept in the store: the token lives in its own column, never in ServiceConfig."""
    data = spec.to_dict()
    data.pop("token", None)
    data.pop("generate_token", None)
    return data


def _check_processor(spec: specs.ServiceSpec) -> None:
    try:
        registry.resolve(spec.processor, spec.processor_type)
    except ValueError as exc:
        raise specs.SpecError([("processor", str(exc))]) from None


def _instance(service: str, replica: Any) -> dict[str, Any]:
    ready = 1 if replica.state == "RUNNING" else 0
    status = {"RUNNING": "Running", "STOPPING": "Terminating"}.get(replica.state, "Pending")
    return {
        "InstanceName": f"{service}-{replica.replica_id}",
        "InstanceIp": replica.node_ip,
        "HostIp": replica.node_ip,
        "StartAt": iso_time(replica.start_time),
        "Restarts": 0,
        "Status": status,
        "ReadyProcesses": ready,
        "TotalProcesses": 1,
        "Reason": "" if ready else replica.state.title(),
        "LastState": "",
        "Pid": replica.pid,
    }


def _replica_id(service: str, instance: str) -> str:
    prefix = f"{service}-"
    return instance[len(prefix):] if instance.startswith(prefix) else instance
