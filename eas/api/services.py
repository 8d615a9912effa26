"""The service lifecycle of the management REST API (`/api/v2/services...`, docs/api.md).

Each call validates at the edge, writes the store and wakes the controller; it never
waits for Ray. Answers use EAS's PascalCase fields so EAS tooling reads them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.routing import Route

from eas import spec as specs
from eas.api.base import ApiContext, ApiError, ApiRequest, body_json, endpoint, iso_time, path_name
from eas.control import store as st
from eas.control.backend import Replica
from eas.control.store import Status
from eas.control.traffic import add_partner, partner_name
from eas.protocols.auth import generate_token
from eas.sources import plain_http_allowed, redact_data, redact_text
from processors import registry


class ServicesApi:
    """The service endpoints: create, describe, modify, stop/start, delete, instances, events, scalers."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def region_ok(self, request: ApiRequest) -> str:
        return path_name(self.ctx, request)

    def create(self, request: ApiRequest) -> dict[str, Any]:
        data = body_json(request)
        blue_green = request.query_params.get("BlueGreen", "").lower() in ("1", "true", "yes")
        original = None
        if blue_green:
            # `eascmd create f.json -r`: a partner of the existing service of that name.
            original = self.ctx.store.get(str(data.get("name")))
            data = {**data, "name": partner_name(original.name)}
        spec = specs.parse(data)
        _check_processor(spec)
        _check_sources(spec)
        if (row := self.ctx.store.traffic().get(spec.name)) is not None and row.kind == "group":
            raise ApiError(409, "NameTaken", f"'{spec.name}' is a group name: pick another service name")
        token = spec.token if spec.token and not blue_green else generate_token()
        try:
            rec = self.ctx.store.create_service(spec.name, _stored_spec(spec), token)
        except st.AlreadyExists:
            raise ApiError(409, "ServiceAlreadyExists",
                           f"service '{spec.name}' already exists: change it with 'eascmd modify' "
                           "or pick another name") from None
        if original is not None:
            add_partner(self.ctx.store, original, rec.name)
        self.ctx.controller.wake()
        return {
            "ServiceId": rec.service_id,
            "ServiceName": rec.name,
            "Region": self.ctx.region,
            "Status": rec.status,
            "InternetEndpoint": self.ctx.endpoint,
            "IntranetEndpoint": self.ctx.endpoint,
        }

    def list_services(self, request: ApiRequest) -> dict[str, Any]:
        services = [self.describe(r) for r in self.ctx.store.list()]
        return {"TotalCount": len(services), "Services": services}

    def get_service(self, request: ApiRequest) -> dict[str, Any]:
        return self.describe(self.ctx.store.get(self.region_ok(request)))

    def update(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), body_json(request))

    def apply_patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge a partial service JSON, validate, store; a model change makes a version."""
        rec = self.ctx.store.get(name)
        if patch.get("name", name) != name:
            raise ApiError(400, "InvalidParameter", "name: a service cannot be renamed; create a new one")
        patch = _unredacted(patch, rec.spec)
        old = specs.parse({**rec.spec, "token": rec.token})
        new = specs.parse(specs.merge({**rec.spec, "token": rec.token}, patch))
        _check_processor(new)
        _check_sources(new)
        new_version = new.model_version_fields() != old.model_version_fields()
        if new.to_dict() == old.to_dict():
            return {"Message": f"service '{name}' unchanged"}
        if new.code_version() == old.code_version() and new.metadata.instance != old.metadata.instance:
            event = f"scaled from {old.metadata.instance} to {new.metadata.instance} instances"
        else:
            event = "service updated" + (" (new version)" if new_version else "")
        self.ctx.store.update_spec(name, _stored_spec(new), new_version, event,
                              token=new.token if new.token != rec.token else None)
        if rec.desired == st.RUNNING:
            # Visible at once, so a client waiting for Running cannot see the old state.
            self.ctx.store.set_status(name, Status.UPDATING, "")
        self.ctx.controller.retry(name)
        return {"Message": f"service '{name}' is updating: {event}"}

    def get_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        name = self.region_ok(request)
        rec = self.ctx.store.get(name)
        decision = self.ctx.controller.scaler.last.get(name)
        return {
            "Autoscaler": rec.spec.get("autoscaler"),
            "CronScaler": rec.spec.get("cron_scaler"),
            "Sleep": rec.spec.get("sleep"),
            "LastScaling": _decision(decision),
        }

    def put_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        """EAS's /autoscaler: the body is the service JSON's `autoscaler` block."""
        return self.apply_patch(self.region_ok(request), {"autoscaler": body_json(request, "the autoscaler block")})

    def delete_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), {"autoscaler": None})

    def put_cronscaler(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), {"cron_scaler": body_json(request, "the cron_scaler block")})

    def delete_cronscaler(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), {"cron_scaler": None})

    def change_desired(self, request: ApiRequest, desired: st.Desired, status: Status, verb: str) -> dict[str, Any]:
        """Record a new desired state and show its transition status at once."""
        name = self.region_ok(request)
        rec = self.ctx.store.get(name)
        if rec.desired == st.DELETED:
            raise ApiError(409, "ServiceDeleting", f"service '{name}' is being deleted")
        self.ctx.store.set_desired(name, desired, f"{verb} requested")
        if rec.status != {st.RUNNING: Status.RUNNING, st.STOPPED: Status.STOPPED}.get(desired):
            self.ctx.store.set_status(name, status, "")
        self.ctx.controller.retry(name)
        return {"Message": f"service '{name}' in region {self.ctx.region} is {status.lower()}"}

    def delete(self, request: ApiRequest) -> dict[str, Any]:
        return self.change_desired(request, st.DELETED, Status.DELETING, "delete")

    def stop(self, request: ApiRequest) -> dict[str, Any]:
        return self.change_desired(request, st.STOPPED, Status.STOPPING, "stop")

    def start(self, request: ApiRequest) -> dict[str, Any]:
        return self.change_desired(request, st.RUNNING, Status.CREATING, "start")

    def instances(self, request: ApiRequest) -> dict[str, Any]:
        rec = self.ctx.store.get(self.region_ok(request))
        app = self.ctx.controller.view(rec).app
        items = [_instance(rec.name, r) for r in (app.replicas if app else [])]
        return {"TotalCount": len(items), "Instances": items}

    def restart_instances(self, request: ApiRequest) -> dict[str, Any]:
        rec = self.ctx.store.get(self.region_ok(request))
        wanted = [i for i in request.query_params.get("InstanceList", "").split(",") if i]
        if not wanted:
            raise ApiError(400, "InvalidParameter", "InstanceList: name at least one instance (see 'eascmd w')")
        ids = [_replica_id(rec.name, i) for i in wanted]
        missing = self.ctx.controller.restart_instances(rec.name, ids)
        if missing:
            raise ApiError(404, "InstanceNotFound",
                           f"no such instance of '{rec.name}': {', '.join(f'{rec.name}-{m}' for m in missing)}"
                           " (list them with 'eascmd w')")
        self.ctx.store.add_event(rec.name, "Restart", f"restarting instances {', '.join(wanted)}")
        return {"Message": f"instances {', '.join(wanted)} of '{rec.name}' are restarting"}

    def events(self, request: ApiRequest) -> dict[str, Any]:
        rec = self.ctx.store.get(self.region_ok(request))
        items = [{"Time": iso_time(e["at"]), "Type": e["type"], "Message": e["message"]}
                 for e in self.ctx.store.events(rec.name)]
        return {"TotalCount": len(items), "Events": items}

    def describe(self, rec: st.ServiceRecord) -> dict[str, Any]:
        spec = rec.spec
        meta = spec.get("metadata", {})
        view = self.ctx.controller.view(rec)
        running = view.app.running if view.app else 0
        pending = view.app.pending if view.app else 0
        total = view.desired
        return {
            "ServiceName": rec.name,
            "ServiceId": rec.service_id,
            "Region": self.ctx.region,
            "Status": rec.status,
            "Message": redact_text(rec.message),
            "AccessToken": rec.token,
            "TotalInstance": total,
            "RunningInstance": running,
            "PendingInstance": pending,
            "CPU": meta.get("cpu", 1),
            "GPU": meta.get("gpu", 0),
            "Memory": meta.get("memory", 0),
            "Weight": self.ctx.store.weight_of(rec.name),
            "DesiredInstance": total,
            "LastScaling": _decision(self.ctx.controller.scaler.last.get(rec.name)),
            "LatestVersion": self.ctx.store.latest_version(rec.name),
            "CurrentVersion": rec.version,
            "CreateTime": iso_time(rec.created_at),
            "UpdateTime": iso_time(rec.updated_at),
            "IntranetEndpoint": self.ctx.endpoint,
            "InternetEndpoint": self.ctx.endpoint,
            "ServicePath": f"/api/predict/{rec.name}",
            # Credentials inside model URLs are used to fetch, never shown (eas/sources/redact.py).
            "ServiceConfig": json.dumps(redact_data(spec), sort_keys=True),
        }

    def routes(self) -> list[Route]:
        svc = "/api/v2/services/{region}/{name}"
        return [
            Route("/api/v2/services", endpoint(self.ctx, self.create), methods=["POST"]),
            Route("/api/v2/services", endpoint(self.ctx, self.list_services), methods=["GET"]),
            Route(svc, endpoint(self.ctx, self.get_service), methods=["GET"]),
            Route(svc, endpoint(self.ctx, self.update), methods=["PUT"]),
            Route(svc, endpoint(self.ctx, self.delete), methods=["DELETE"]),
            Route(svc + "/stop", endpoint(self.ctx, self.stop), methods=["PUT", "POST"]),
            Route(svc + "/start", endpoint(self.ctx, self.start), methods=["PUT", "POST"]),
            Route(svc + "/instances", endpoint(self.ctx, self.instances), methods=["GET"]),
            Route(svc + "/instances", endpoint(self.ctx, self.restart_instances), methods=["DELETE"]),
            Route(svc + "/events", endpoint(self.ctx, self.events), methods=["GET"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.get_autoscaler), methods=["GET"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.put_autoscaler), methods=["PUT", "POST"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.delete_autoscaler), methods=["DELETE"]),
            Route(svc + "/cronscaler", endpoint(self.ctx, self.put_cronscaler), methods=["PUT", "POST"]),
            Route(svc + "/cronscaler", endpoint(self.ctx, self.delete_cronscaler), methods=["DELETE"]),
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


def _unredacted(patch: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A value sent back exactly as `desc` showed it (credentials as ***) means "unchanged":
    keep the stored one, so `desc` output fed to `modify` does not break the model URL."""
    out = dict(patch)
    for key, value in patch.items():
        stored = current.get(key)
        if isinstance(value, str) and isinstance(stored, str) and value != stored and value == redact_text(stored):
            out[key] = stored
    return out


def _check_sources(spec: specs.ServiceSpec) -> None:
    """Plain http:// sources only when the server opted in (eas/sources/fetch.py)."""
    for field in ("model_path", "processor_path", "warm_up_data_path"):
        value = getattr(spec, field)
        if value and not plain_http_allowed(value):
            raise specs.SpecError([(field, "plain http:// sources are off on this server (the bytes could be "
                                    "changed on the way): use https://, or set EAS_ALLOW_HTTP_SOURCES=1 in "
                                    "eas-server's environment")])


def _check_processor(spec: specs.ServiceSpec) -> None:
    try:
        registry.resolve(spec.processor, spec.processor_type)
    except ValueError as exc:
        raise specs.SpecError([("processor", str(exc))]) from None


def _instance(service: str, replica: Replica) -> dict[str, Any]:
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
