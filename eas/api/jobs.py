"""Batch prediction jobs (ours: `/api/v2/ext/jobs`, docs/api.md; eas/control/jobs.py runs them)."""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.routing import Route

from eas.api.base import ApiContext, ApiError, ApiRequest, endpoint
from eas.api.services import ServicesApi
from eas.control import jobs as jb
from eas.control import store as st
from eas import spec as specs


class JobsApi:
    def __init__(self, ctx: ApiContext, wake: Callable[[], None] = lambda: None) -> None:
        self.ctx, self.wake = ctx, wake

    def create(self, request: ApiRequest) -> dict[str, Any]:
        try:
            raw = json.loads(request.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "InvalidParameter", f"request body is not JSON: {exc}") from None
        try:
            spec = jb.check_spec(raw)
        except jb.JobError as exc:
            raise ApiError(400, "InvalidParameter", str(exc)) from None
        if spec["OwnsService"]:
            # The job's own service: deployed now (so a failing model fails the create), run
            # by the job, stopped between scheduled runs and deleted when the job is done.
            config = raw["ServiceConfig"]
            spec["Service"] = specs.service_name(config) or spec["Service"]
            try:
                self.ctx.store.job(spec["Name"])
            except st.NotFound:
                pass
            else:
                raise ApiError(409, "JobAlreadyExists", f"job '{spec['Name']}' already exists")
            ServicesApi(self.ctx).create_service(specs.with_name(config, spec["Service"]))
        else:
            try:
                self.ctx.store.get(spec["Service"])
            except st.NotFound:
                raise ApiError(404, "ServiceNotFound", f"service '{spec['Service']}' does not exist") from None
        schedule = spec["Schedule"]
        state, next_run = (jb.SCHEDULED, jb.next_time(schedule, schedule["Start"] - 1)) if schedule \
            else (jb.PENDING, None)
        try:
            self.ctx.store.create_job(spec["Name"], spec, state, next_run)
        except st.AlreadyExists as exc:
            raise ApiError(409, "JobAlreadyExists", str(exc)) from None
        self.wake()
        return {"Name": spec["Name"], "State": state, "Message": f"job '{spec['Name']}' created"}

    def list_jobs(self, request: ApiRequest) -> dict[str, Any]:
        rows = self.ctx.store.jobs()
        return {"TotalCount": len(rows), "Jobs": [
            {"Name": j["name"], "Service": j["spec"]["Service"], "State": j["state"], "Run": j["run"],
             "Message": j["message"], "NextRun": j["next_run"], "CreateTime": j["created_at"]} for j in rows]}

    def _job(self, request: ApiRequest) -> str:
        name = request.path_params["name"]
        try:
            self.ctx.store.job(name)
        except st.NotFound:
            raise ApiError(404, "JobNotFound", f"job '{name}' does not exist") from None
        return name

    def describe(self, request: ApiRequest) -> dict[str, Any]:
        return jb.describe(self.ctx.store, self._job(request))

    def stop(self, request: ApiRequest) -> dict[str, Any]:
        name = self._job(request)
        self.ctx.store.update_job(name, state=jb.STOPPED, message="stopped by request")
        return {"Name": name, "State": jb.STOPPED, "Message": f"job '{name}' stopped"}

    def delete(self, request: ApiRequest) -> dict[str, Any]:
        name = self._job(request)
        job = self.ctx.store.job(name)
        self.ctx.store.delete_job(name)
        if job["spec"].get("OwnsService"):
            service = job["spec"]["Service"]
            try:
                if self.ctx.store.get(service).desired != st.DELETED:
                    self.ctx.store.set_desired(service, st.DELETED, f"batch job '{name}' deleted")
                    self.ctx.controller.retry(service)
            except st.NotFound:
                pass
        return {"Name": name, "Message": f"job '{name}' deleted"}

    def routes(self) -> list[Route]:
        return [
            Route("/api/v2/ext/jobs", endpoint(self.ctx, self.list_jobs), methods=["GET"]),
            Route("/api/v2/ext/jobs", endpoint(self.ctx, self.create), methods=["POST"]),
            Route("/api/v2/ext/jobs/{name}", endpoint(self.ctx, self.describe), methods=["GET"]),
            Route("/api/v2/ext/jobs/{name}", endpoint(self.ctx, self.delete), methods=["DELETE"]),
            Route("/api/v2/ext/jobs/{name}/stop", endpoint(self.ctx, self.stop), methods=["POST"]),
        ]
