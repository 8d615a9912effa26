"""The service lifecycle of the management REST API (`/api/v2/services...`, docs/api.md).

Each call validates at the edge, writes the store and wakes the controller; it never
waits for Ray. Requests and answers are EAS's OpenAPI (2021-07-01) field for field, so
the generated SDKs (`alibabacloud-eas20210701` and its twins) and `alipai` read them;
a field we cannot fill is there with EAS's empty value. What is ours alone sits under
`Ext` in an answer and under `/api/v2/ext/` in a path, names EAS cannot take.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.routing import Route

from eas import spec as specs
from eas.api.base import (
    ApiContext,
    ApiError,
    ApiRequest,
    body_json,
    endpoint,
    iso_time,
    page,
    pages,
    path_name,
    query_int,
    query_time,
)
from eas.control import store as st
from eas.control.queues import sink_of
from eas.control.backend import Replica
from eas.control.store import Status
from eas.control.traffic import add_partner, group_conflict, join_group, partner_name
from eas.protocols.auth import generate_token
from eas.sources import plain_http_allowed, redact_data, redact_text, unredacted
from processors import registry

#: Page sizes: EAS's default, and the most one page holds.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: DescribeServiceLog: lines per page by default, and the most read back per instance.
DEFAULT_LOG_PAGE_SIZE = 500
MAX_LOG_LINES = 10_000
#: Event types (our own words) that EAS would call a Warning.
WARNING_EVENTS = ("Failed", "Deleted")
#: How the statuses of an instance read, from Serve's replica states.
INSTANCE_STATUS = {"RUNNING": "Running", "STOPPING": "Terminating"}


class ServicesApi:
    """The service endpoints: create, describe, list, update, scale, restart, stop/start,
    delete, instances, events, logs, endpoints, autoscaler and cron scaler."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def region_ok(self, request: ApiRequest) -> str:
        return path_name(self.ctx, request)

    # -- create, describe, list --------------------------------------------------------------

    def create(self, request: ApiRequest) -> dict[str, Any]:
        """CreateService: the body is the service JSON."""
        return self._create(body_json(request), None)

    def create_partner(self, request: ApiRequest) -> dict[str, Any]:
        """Ext (`eascmd create f.json -r`): a blue-green partner of an existing service."""
        original = self.ctx.store.get(self.region_ok(request))
        data = body_json(request)
        if (specs.service_name(data) or original.name) != original.name:
            raise ApiError(400, "InvalidParameter", f"name: a partner's JSON names the service it joins "
                           f"('{original.name}') or no name at all")
        return self._create(specs.with_name(data, partner_name(original.name)), original)

    def create_service(self, data: dict[str, Any]) -> dict[str, Any]:
        """CreateService from a parsed service JSON (a batch job's own service, eas/api/jobs.py)."""
        return self._create(data, None)

    def _create(self, data: dict[str, Any], original: st.ServiceRecord | None) -> dict[str, Any]:
        spec = specs.parse(data)
        _check_processor(spec)
        _check_sources(spec)
        if (row := self.ctx.store.traffic().get(spec.name)) is not None and row.kind == "group":
            raise ApiError(409, "NameTaken", f"'{spec.name}' is a group name: pick another service name")
        _check_group(self.ctx.store, spec)
        token = spec.token if spec.token and original is None else generate_token()
        try:
            rec = self.ctx.store.create_service(spec.name, _stored_spec(spec), token)
        except st.AlreadyExists:
            raise ApiError(409, "ServiceAlreadyExists",
                           f"service '{spec.name}' already exists: change it with 'eascmd modify' "
                           "or pick another name") from None
        if original is not None:
            add_partner(self.ctx.store, original, rec.name)
        _after_write(self.ctx.store, rec.name, spec, None)
        self.ctx.controller.wake()
        return {
            "ServiceId": rec.service_id,
            "ServiceName": rec.name,
            "Region": self.ctx.region,
            "Status": rec.status,
            "InternetEndpoint": self.ctx.predict_url(rec.name),
            "IntranetEndpoint": self.ctx.predict_url(rec.name),
        }

    def list_services(self, request: ApiRequest) -> dict[str, Any]:
        """ListServices: filters, then sort, then one page."""
        q = request.query_params
        records = self.ctx.store.list()
        if text := q.get("Filter", "").strip():
            records = [r for r in records if text in r.name]
        if name := q.get("ServiceName", "").strip():
            records = [r for r in records if r.name == name]
        if status := q.get("ServiceStatus", "").strip():
            records = [r for r in records if r.status.lower() == status.lower()]
        if uid := q.get("ServiceUid", "").strip():
            records = [r for r in records if r.service_id == uid]
        if resource := q.get("ResourceName", "").strip():
            records = [r for r in records if r.spec.get("metadata", {}).get("resource") == resource]
        if group := q.get("GroupName", "").strip():
            row = self.ctx.store.traffic().get(group)
            members = {s for s, _ in row.backends} if row is not None and row.kind == "group" else set()
            records = [r for r in records if r.name in members]
        if labels := label_filter(q.get("Label", "")):
            records = [r for r in records if all((r.spec.get("labels") or {}).get(k) == v for k, v in labels.items())]
        records = _sorted(records, q.get("Sort", ""), q.get("Order", ""))
        number = query_int(request, "PageNumber", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        services = [self.describe(r) for r in page(records, number, size)]
        return {"PageNumber": number, "PageSize": size, "TotalCount": len(records), "Services": services}

    def get_service(self, request: ApiRequest) -> dict[str, Any]:
        return self.describe(self.ctx.store.get(self.region_ok(request)))

    # -- update, scale --------------------------------------------------------------------------

    def update(self, request: ApiRequest) -> dict[str, Any]:
        """UpdateService: `UpdateType=merge` (default) deep-merges a partial service JSON,
        `replace` takes the body as the whole new one."""
        name = self.region_ok(request)
        kind = request.query_params.get("UpdateType", "merge").strip().lower() or "merge"
        if kind not in ("merge", "replace"):
            raise ApiError(400, "InvalidParameter", "UpdateType: merge (the default) or replace")
        return self.apply_patch(name, body_json(request), replace=kind == "replace")

    def scale(self, request: ApiRequest) -> dict[str, Any]:
        """ScaleService (older SDKs): `{"Instance": n}`, the count alone (no new version)."""
        body = body_json(request, '{"Instance": <count>}')
        count = body.get("Instance")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ApiError(400, "InvalidParameter", "Instance: the number of instances, 0 or more")
        return self.apply_patch(self.region_ok(request), {"metadata": {"instance": count}})

    def apply_patch(self, name: str, patch: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """Merge (or replace with) a service JSON, validate, store; a model change makes a version."""
        rec = self.ctx.store.get(name)
        if (specs.service_name(patch) or name) != name:
            raise ApiError(400, "InvalidParameter", "name: a service cannot be renamed; create a new one")
        patch = _unredacted(patch, rec.spec)
        old = specs.parse({**rec.spec, "token": rec.token})
        if replace:
            new = specs.parse(specs.with_name({"token": rec.token, **patch}, name))
        else:
            new = specs.parse(specs.merge({**rec.spec, "token": rec.token}, patch))
        _check_processor(new)
        _check_sources(new)
        _check_group(self.ctx.store, new)
        new_version = new.model_version_fields() != old.model_version_fields()
        if new.to_dict() == old.to_dict():
            return {"Message": f"service '{name}' unchanged"}
        if new.code_version() == old.code_version() and new.metadata.instance != old.metadata.instance:
            event = f"scaled from {old.metadata.instance} to {new.metadata.instance} instances"
        else:
            event = "service updated" + (" (new version)" if new_version else "")
        self.ctx.store.update_spec(name, _stored_spec(new), new_version, event,
                                   token=new.token if new.token != rec.token else None)
        _after_write(self.ctx.store, name, new, old)
        if rec.desired == st.RUNNING:
            # Visible at once, so a client waiting for Running cannot see the old state.
            self.ctx.store.set_status(name, Status.UPDATING, "")
        self.ctx.controller.retry(name)
        return {"Message": f"service '{name}' is updating: {event}"}

    # -- autoscaler and cron scaler ---------------------------------------------------------------

    def get_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceAutoScaler; `Ext` adds the sleep block and the last decision."""
        name = self.region_ok(request)
        rec = self.ctx.store.get(name)
        block = rec.spec.get("autoscaler") or {}
        load = self.ctx.controller.scaling.loads.get(name)
        strategies = block.get("scaleStrategies") or []
        metrics = [{"metricName": s["metricName"], "service": s.get("service") or "",
                    "value": float(getattr(load, s["metricName"], 0.0)) if load is not None else 0.0}
                   for s in strategies]
        return {
            "ServiceName": name,
            "MinReplica": block.get("min", 0),
            "MaxReplica": block.get("max", 0),
            "Behavior": block.get("behavior") or {},
            "ScaleStrategies": [{"metricName": s["metricName"], "threshold": s["threshold"],
                                 "service": s.get("service") or ""} for s in strategies],
            "CurrentMetrics": metrics,
            "Ext": {"Enabled": bool(block), "Sleep": rec.spec.get("sleep"),
                    "LastScaling": _decision(self.ctx.controller.scaler.last.get(name))},
        }

    def put_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        """Create/UpdateServiceAutoScaler: the body is EAS's `{min, max, scaleStrategies, behavior}`."""
        return self.apply_patch(self.region_ok(request), {"autoscaler": body_json(request, "the autoscaler block")})

    def delete_autoscaler(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), {"autoscaler": None})

    def get_cronscaler(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceCronScaler: the jobs in EAS's form (6-field schedules, seconds first)."""
        name = self.region_ok(request)
        rec = self.ctx.store.get(name)
        block = rec.spec.get("cron_scaler") or {}
        zone = block.get("timezone", "UTC")
        jobs = []
        for i, job in enumerate(block.get("jobs") or []):
            jobs.append({"Name": job.get("name") or f"job-{i + 1}", "Schedule": f"0 {job['schedule']}",
                         "TargetSize": job["target"], "State": "", "Message": "", "CreateTime": "",
                         "LastProbeTime": _last_fired(job["schedule"], zone, block.get("exclude_dates"))})
        return {"ServiceName": name, "ScaleJobs": jobs,
                "ExcludeDates": [f"* {e}" for e in block.get("exclude_dates") or []],
                "TimeZone": zone if block else "", "Ext": {"Enabled": bool(block)}}

    def put_cronscaler(self, request: ApiRequest) -> dict[str, Any]:
        """Create/UpdateServiceCronScaler: `{ScaleJobs: [{Name, Schedule, TargetSize}],
        ExcludeDates, TimeZone}`, kept as the service JSON's `cron_scaler` block."""
        body = body_json(request, '{"ScaleJobs": [{"Name", "Schedule", "TargetSize"}]}')
        return self.apply_patch(self.region_ok(request), {"cron_scaler": cron_block(body)})

    def delete_cronscaler(self, request: ApiRequest) -> dict[str, Any]:
        return self.apply_patch(self.region_ok(request), {"cron_scaler": None})

    # -- start, stop, delete, restart -----------------------------------------------------------------

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
        answer = self.change_desired(request, st.DELETED, Status.DELETING, "delete")
        name = self.region_ok(request)
        # A service leaves its metadata.group at once: a later service of that name starts outside it.
        join_group(self.ctx.store, name, None, self.ctx.store.get(name).spec.get("metadata", {}).get("group"))
        return answer

    def stop(self, request: ApiRequest) -> dict[str, Any]:
        return self.change_desired(request, st.STOPPED, Status.STOPPING, "stop")

    def start(self, request: ApiRequest) -> dict[str, Any]:
        return self.change_desired(request, st.RUNNING, Status.CREATING, "start")

    def restart(self, request: ApiRequest) -> dict[str, Any]:
        """RestartService: every instance drains and is replaced (requests meanwhile are held
        by the gateway, as while a service deploys)."""
        rec = self.ctx.store.get(self.region_ok(request))
        if rec.desired != st.RUNNING:
            raise ApiError(409, "ServiceNotRunning", f"service '{rec.name}' is {rec.status.lower()}: "
                           f"start it with 'eascmd start {rec.name}' instead")
        app = self.ctx.controller.view(rec).app
        ids = [r.replica_id for r in (app.replicas if app else [])]
        if ids:
            self.ctx.controller.restart_instances(rec.name, ids)
        self.ctx.store.add_event(rec.name, "Restart", f"restarting the service ({len(ids)} instances)")
        return {"Message": f"service '{rec.name}' is restarting its {len(ids)} instances"}

    # -- instances --------------------------------------------------------------------------------------

    def instances(self, request: ApiRequest) -> dict[str, Any]:
        """ListServiceInstances: filters, sort, one page."""
        rec = self.ctx.store.get(self.region_ok(request))
        app = self.ctx.controller.view(rec).app
        items = [_instance(rec.name, r, self.ctx.port) for r in (app.replicas if app else [])]
        q = request.query_params
        for key, field in (("InstanceName", "InstanceName"), ("InstanceStatus", "Status"), ("InstanceIP", "InnerIP"),
                           ("HostIP", "HostIP")):
            if wanted := q.get(key, "").strip():
                items = [i for i in items if (wanted in i[field] if key == "InstanceName"
                                              else i[field].lower() == wanted.lower())]
        if sort := q.get("Sort", "").strip():
            if sort not in ("StartAt", "InstanceName", "Status", "RestartCount"):
                raise ApiError(400, "InvalidParameter", "Sort: StartAt, InstanceName, Status or RestartCount")
            items.sort(key=lambda i: i[sort], reverse=q.get("Order", "").lower() == "desc")
        number = query_int(request, "PageNumber", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        return {"PageNumber": number, "PageSize": size, "TotalCount": len(items),
                "Instances": page(items, number, size)}

    def restart_instances(self, request: ApiRequest) -> dict[str, Any]:
        """DeleteServiceInstances: the named instances drain and are replaced (always the
        soft way: `SoftRestart` is accepted and changes nothing)."""
        rec = self.ctx.store.get(self.region_ok(request))
        wanted = [i.strip() for i in request.query_params.get("InstanceList", "").split(",") if i.strip()]
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

    # -- events, logs, endpoints ------------------------------------------------------------------------

    def events(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceEvent: newest first, filtered by EventType (Normal, Warning),
        InstanceName, StartTime and EndTime, in pages of PageSize (PageNum from 1)."""
        rec = self.ctx.store.get(self.region_ok(request))
        start, end = query_time(request, "StartTime"), query_time(request, "EndTime")
        kind = request.query_params.get("EventType", "").strip().lower()
        instance = request.query_params.get("InstanceName", "").strip()
        items = []
        for e in reversed(self.ctx.store.events(rec.name, limit=self.ctx.store.max_events)):
            event = _event(e)
            if (start is not None and e["at"] < start) or (end is not None and e["at"] > end):
                continue
            if (kind and event["Type"].lower() != kind) or (instance and instance not in e["message"]):
                continue
            items.append(event)
        number = query_int(request, "PageNum", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        return {"PageNum": number, "TotalCount": len(items), "TotalPageNum": pages(len(items), size),
                "Events": page(items, number, size)}

    def logs(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceLog: an instance's own log lines (its stdout, then its stderr),
        read from where the instance runs. Page 1 is the most recent PageSize lines, in
        order; `Keyword` keeps the lines that contain it. Without InstanceName, every
        instance's lines, each prefixed with `[<instance>] `."""
        rec = self.ctx.store.get(self.region_ok(request))
        app = self.ctx.controller.view(rec).app
        replicas = app.replicas if app else []
        wanted = request.query_params.get("InstanceName", "").strip()
        if wanted:
            chosen = [r for r in replicas if r.replica_id == _replica_id(rec.name, wanted)]
            if not chosen:
                raise ApiError(404, "InstanceNotFound", f"no such instance of '{rec.name}': {wanted} "
                               "(list them with 'eascmd w')")
        else:
            chosen = list(replicas)
        lines: list[str] = []
        for replica in chosen:
            found = self.ctx.controller.backend.logs(rec.name, replica.replica_id, MAX_LOG_LINES)
            own = found or []
            lines += own if wanted else [f"[{rec.name}-{replica.replica_id}] {line}" for line in own]
        if keyword := request.query_params.get("Keyword", ""):
            lines = [line for line in lines if keyword in line]
        number = query_int(request, "PageNum", 1, 1, 1_000_000)
        size = query_int(request, "PageSize", DEFAULT_LOG_PAGE_SIZE, 1, MAX_LOG_LINES)
        end = max(0, len(lines) - (number - 1) * size)
        return {"PageNum": number, "TotalCount": len(lines), "TotalPageNum": pages(len(lines), size),
                "Logs": redact_lines(lines[max(0, end - size):end])}

    def endpoints(self, request: ApiRequest) -> dict[str, Any]:
        """DescribeServiceEndpoints: where to call the service, and its token."""
        rec = self.ctx.store.get(self.region_ok(request))
        url = self.ctx.predict_url(rec.name)
        return {"AccessToken": rec.token, "Message": "",
                "Endpoints": [{"EndpointType": "DEFAULT", "BackendId": "", "PathType": "",
                               "Port": self.ctx.port, "InternetEndpoints": [url], "IntranetEndpoints": [url]}]}

    # -- the description ---------------------------------------------------------------------------------

    def describe(self, rec: st.ServiceRecord) -> dict[str, Any]:
        """EAS's `Service` object, every field there; what only we know is in `Ext`."""
        spec = rec.spec
        meta = spec.get("metadata", {})
        view = self.ctx.controller.view(rec)
        running = view.app.running if view.app else 0
        pending = view.app.pending if view.app else 0
        cpu = meta.get("cpu", 1)
        url = self.ctx.predict_url(rec.name)
        return {
            "ServiceName": rec.name,
            "ServiceId": rec.service_id,
            "ServiceUid": rec.service_id,
            "Region": self.ctx.region,
            "Status": rec.status,
            "Message": redact_text(rec.message),
            "Reason": _reason(rec),
            "AccessToken": rec.token,
            "TotalInstance": view.desired,
            "RunningInstance": running,
            "PendingInstance": pending,
            # EAS counts whole cores: a fractional cpu reads rounded up here, exact in Ext.
            "Cpu": math.ceil(cpu),
            "Gpu": int(meta.get("gpu", 0) or 0),
            "Memory": int(meta.get("memory", 0) or 0),
            "Weight": self.ctx.store.weight_of(rec.name),
            "LatestVersion": self.ctx.store.latest_version(rec.name),
            "CurrentVersion": rec.version,
            "CreateTime": iso_time(rec.created_at),
            "UpdateTime": iso_time(rec.updated_at),
            "IntranetEndpoint": url,
            "InternetEndpoint": url,
            "SecondaryIntranetEndpoint": "",
            "SecondaryInternetEndpoint": "",
            "Resource": str(meta.get("resource") or ""),
            "ResourceAlias": "",
            "Image": "",
            "Labels": _labels(spec),
            "ServiceGroup": str(meta.get("group") or ""),
            "TrafficState": "",
            "Role": "",
            "RoleAttrs": "",
            "SafetyLock": "",
            "Source": "",
            "Gateway": "",
            "Namespace": "",
            "ParentUid": "",
            "QuotaId": "",
            "WorkspaceId": str(meta.get("workspace_id") or ""),
            "CallerUid": "",
            "ExtraData": "",
            "AppConfig": "",
            "AppSpecName": "",
            "AppType": "",
            "AppVersion": "",
            # Credentials inside model URLs are used to fetch, never shown (eas/sources/redact.py).
            "ServiceConfig": json.dumps(redact_data(spec), sort_keys=True),
            "Ext": {
                "Cpu": cpu,
                "DesiredInstance": view.desired,
                "LastScaling": _decision(self.ctx.controller.scaler.last.get(rec.name)),
                **({"Queue": self._queues(rec.name)} if specs.is_async(spec) else {}),
            },
        }

    def _queues(self, name: str) -> dict[str, Any]:
        """An Async service's queues: entries held, taken (running or sent, not committed)
        and the last index given out, for the input queue and the sink."""
        out = {}
        for key, queue in (("Source", name), ("Sink", sink_of(name))):
            stats = self.ctx.controller.queues.stats(queue)
            out[key] = {"Length": stats.length, "Pending": stats.taken, "LastIndex": stats.last}
        return out

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
            Route(svc + "/restart", endpoint(self.ctx, self.restart), methods=["PUT", "POST"]),
            Route(svc + "/scale", endpoint(self.ctx, self.scale), methods=["PUT"]),
            Route(svc + "/instances", endpoint(self.ctx, self.instances), methods=["GET"]),
            Route(svc + "/instances", endpoint(self.ctx, self.restart_instances), methods=["DELETE"]),
            Route(svc + "/events", endpoint(self.ctx, self.events), methods=["GET"]),
            Route(svc + "/logs", endpoint(self.ctx, self.logs), methods=["GET"]),
            Route(svc + "/endpoints", endpoint(self.ctx, self.endpoints), methods=["GET"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.get_autoscaler), methods=["GET"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.put_autoscaler), methods=["PUT", "POST"]),
            Route(svc + "/autoscaler", endpoint(self.ctx, self.delete_autoscaler), methods=["DELETE"]),
            Route(svc + "/cronscaler", endpoint(self.ctx, self.get_cronscaler), methods=["GET"]),
            Route(svc + "/cronscaler", endpoint(self.ctx, self.put_cronscaler), methods=["PUT", "POST"]),
            Route(svc + "/cronscaler", endpoint(self.ctx, self.delete_cronscaler), methods=["DELETE"]),
            Route("/api/v2/ext/services/{region}/{name}/partners", endpoint(self.ctx, self.create_partner),
                  methods=["POST"]),
        ]


def cron_block(body: dict[str, Any]) -> dict[str, Any]:
    """EAS's cron scaler body as the service JSON's `cron_scaler` block. EAS schedules have
    six fields, seconds first (`0 0 8 * * *`); instances change on the minute here, so
    the seconds field is dropped (a five-field schedule is taken as it is)."""
    jobs = body.get("ScaleJobs")
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(400, "InvalidParameter", "ScaleJobs: a non-empty list of {Name, Schedule, TargetSize}")
    out_jobs = []
    for i, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise ApiError(400, "InvalidParameter", f"ScaleJobs[{i}]: an object {{Name, Schedule, TargetSize}}")
        entry: dict[str, Any] = {"schedule": _five_fields(job.get("Schedule"), f"ScaleJobs[{i}].Schedule"),
                                 "target": job.get("TargetSize")}
        if job.get("Name"):
            entry["name"] = str(job["Name"])
        out_jobs.append(entry)
    block: dict[str, Any] = {"jobs": out_jobs}
    if body.get("TimeZone"):
        block["timezone"] = body["TimeZone"]
    excluded = body.get("ExcludeDates")
    if excluded:
        if not isinstance(excluded, list):
            raise ApiError(400, "InvalidParameter", "ExcludeDates: a list of cron expressions")
        block["exclude_dates"] = [_five_fields(e, f"ExcludeDates[{i}]", any_second=True)
                                  for i, e in enumerate(excluded)]
    return block


def _five_fields(value: Any, field: str, any_second: bool = False) -> str:
    """A six-field EAS cron expression (seconds first) as five fields; five are kept as
    they are. An exclusion may have any seconds (`* * * * * 0,6`: all weekend)."""
    if not isinstance(value, str) or len(value.split()) not in (5, 6):
        raise ApiError(400, "InvalidParameter", f"{field}: a cron expression (second minute hour day month "
                       "weekday, e.g. '0 0 8 * * *')")
    parts = value.split()
    if len(parts) == 6:
        if not (any_second and parts[0] == "*") and (not parts[0].isdigit() or int(parts[0]) > 59):
            raise ApiError(400, "InvalidParameter", f"{field}: the seconds field must be one number (0-59): "
                           "instances change on the minute")
        parts = parts[1:]
    return " ".join(parts)


def _last_fired(schedule: str, zone: str, excluded: list[str] | None) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from croniter import croniter

    try:
        times = croniter(schedule, datetime.now(ZoneInfo(zone)))
        for _ in range(1000):
            fired = times.get_prev(datetime)
            if not any(croniter.match(e, fired) for e in excluded or []):
                return iso_time(fired.timestamp())
    except (ValueError, KeyError):
        pass
    return ""


def _sorted(records: list[st.ServiceRecord], sort: str, order: str) -> list[st.ServiceRecord]:
    keys = {"CreateTime": lambda r: r.created_at, "UpdateTime": lambda r: r.updated_at,
            "ServiceName": lambda r: r.name, "Status": lambda r: r.status}
    sort = sort.strip()
    if not sort:
        return records
    if sort not in keys:
        raise ApiError(400, "InvalidParameter", f"Sort: one of {', '.join(keys)}")
    return sorted(records, key=keys[sort], reverse=order.strip().lower() == "desc")


def _reason(rec: st.ServiceRecord) -> str:
    """EAS's one-word `Reason` for a status that needs one."""
    return {"Failed": "DeployFailed", "Sleeping": "Idle"}.get(rec.status, "")


def _event(e: dict[str, Any]) -> dict[str, Any]:
    """An event as EAS shows one: Type Normal or Warning, Reason the kind of change."""
    warning = e["type"] in WARNING_EVENTS or (e["type"] == "Status" and "-> Failed" in e["message"])
    return {"Time": iso_time(e["at"]), "Type": "Warning" if warning else "Normal", "Reason": e["type"],
            "Message": e["message"]}


def redact_lines(lines: list[str]) -> list[str]:
    """Log lines with credentials inside URLs hidden, like every other text we show."""
    return [redact_text(line) for line in lines]


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
    keep the stored one, at any depth (a git mount's password too), so `desc` output fed
    to `modify` does not break the model URL."""
    return unredacted(patch, current)


def _check_group(store: st.Store, spec: specs.ServiceSpec) -> None:
    """metadata.group must not name a service (eas/control/traffic.py)."""
    if spec.metadata.group and (why := group_conflict(store, spec.metadata.group, spec.name)):
        raise specs.SpecError([("metadata.group", why.removeprefix("metadata.group: "))])


def _after_write(store: st.Store, name: str, new: specs.ServiceSpec, old: specs.ServiceSpec | None) -> None:
    """What a stored service JSON implies beyond the service: its group membership
    (`metadata.group`), and one event naming the EAS fields kept without effect here
    (when they are new or changed)."""
    join_group(store, name, new.metadata.group, old.metadata.group if old else None)
    kept = new.kept_fields()
    if kept and (old is None or kept != old.kept_fields()):
        store.add_event(name, "Config", specs.kept_message(kept))


def _labels(spec: dict[str, Any]) -> list[dict[str, str]]:
    """`labels` as EAS's Service object lists them."""
    return [{"LabelKey": k, "LabelValue": v} for k, v in sorted((spec.get("labels") or {}).items())]


def label_filter(value: str) -> dict[str, str]:
    """ListServices `Label`: EAS's JSON map (`{"k": "v"}`, what its SDKs send), or
    comma-separated `k=v` pairs; a malformed one is a 400 naming it."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ApiError(400, "InvalidParameter", f"Label: {text!r} is not a JSON object of strings")
        return data
    wanted: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, eq, val = pair.partition("=")
        if not eq or not key.strip():
            raise ApiError(400, "InvalidParameter", f"Label: {pair!r} is not key=value")
        wanted[key.strip()] = val.strip()
    return wanted


def _check_sources(spec: specs.ServiceSpec) -> None:
    """Plain http:// sources only when the server opted in (eas/sources/fetch.py)."""
    for field in ("model_path", "processor_path", "warm_up_data_path"):
        value = getattr(spec, field)
        if value and not plain_http_allowed(value):
            raise specs.SpecError([(field, "plain http:// sources are off on this server (the bytes could be "
                                    "changed on the way): use https://, or set EAS_ALLOW_HTTP_SOURCES=1 in "
                                    "eas-server's environment")])


def _check_processor(spec: specs.ServiceSpec) -> None:
    if spec.serving_container is not None:  # the image serves: no processor to resolve
        return
    try:
        registry.resolve(spec.processor, spec.processor_type)
    except ValueError as exc:
        raise specs.SpecError([("processor", str(exc))]) from None


def _instance(service: str, replica: Replica, port: int) -> dict[str, Any]:
    """EAS's `Instance`: every field there; `Ext` has the process id and Serve's state."""
    ready = 1 if replica.state == "RUNNING" else 0
    started = iso_time(replica.start_time)
    return {
        "InstanceName": f"{service}-{replica.replica_id}",
        "InnerIP": replica.node_ip,
        "HostIP": replica.node_ip,
        "HostName": "",
        "InstancePort": replica.endpoint[1] if replica.endpoint else 0,
        "ExternalIP": "",
        "ExternalInstancePort": 0,
        "TenantHostIP": "",
        "TenantInstanceIP": "",
        "StartAt": started,
        "StartTime": started,
        # Serve replaces a crashed replica with a new one (a new name): a name never restarts.
        "RestartCount": 0,
        "LastState": [],
        "Status": INSTANCE_STATUS.get(replica.state, "Pending"),
        "ReadyProcesses": ready,
        "TotalProcesses": 1,
        "Reason": "" if ready else replica.state.title(),
        "Role": "",
        "Namespace": "",
        "Zone": "",
        "InstanceType": "",
        "ResourceType": "",
        "IsSpot": False,
        "Isolated": False,
        "CurrentAmount": 0.0,
        "OriginalAmount": 0.0,
        "Ext": {"Pid": replica.pid, "ReplicaState": replica.state,
                **({"ContainerState": replica.container} if replica.container is not None else {})},
    }


def _replica_id(service: str, instance: str) -> str:
    prefix = f"{service}-"
    return instance[len(prefix):] if instance.startswith(prefix) else instance
