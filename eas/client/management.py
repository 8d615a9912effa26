"""The management API of eas-server (docs/api.md), as a Python client.

Every call is signed with the AccessKey pair of eascmd.conf the way Alibaba's SDKs
sign (ACS3-HMAC-SHA256, eas/protocols/acs.py); `eascmd` is a thin shell over it, so
scripts get the same behaviour and the same error texts as the CLI.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Collection
from typing import Any, Iterator
from urllib.parse import quote, urlencode, urlsplit

import httpx

from eas.client import config
from eas.protocols import acs

#: How often the wait helpers poll a service, in seconds.
POLL_INTERVAL_S = 0.5
#: Consecutive 5xx / network errors a wait rides out (a server restarting) before giving up.
POLL_TRANSIENT_ERRORS = 3
#: Items asked for per page when the client reads a whole list.
PAGE_SIZE = 100

ProgressCallback = Callable[[dict[str, Any]], None]


class EasApiError(Exception):
    """The management API refused a call, or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        details = [f"HTTP {self.status}" if self.status else "", self.code]
        if self.request_id:
            details.append(f"RequestId: {self.request_id}")
        detail = ", ".join(d for d in details if d)
        return f"{self.message} [{detail}]" if detail else self.message


class ServiceFailedError(Exception):
    """A service we were waiting on reached status Failed; the text is the server's reason."""

    def __init__(self, message: str, service: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.service = service or {}


def error_fields(response: httpx.Response) -> tuple[str, str, str]:
    """(code, message, request_id) from an error answer, whichever casing the server used.

    The management API answers PascalCase (`Code`, `Message`, `RequestId`), the predict
    gateway lower-case (`code`, `message`, `request_id`); a proxy in between may answer HTML.
    """
    request_id = response.headers.get("x-request-id", "")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("Code") or body.get("code") or body.get("error_code") or "")
        message = str(body.get("Message") or body.get("message") or body.get("error_msg") or "")
        request_id = str(body.get("RequestId") or body.get("request_id") or request_id)
    else:
        code, message = "", response.text.strip()[:300]
    return code or response.reason_phrase.replace(" ", ""), message or response.reason_phrase, request_id


class ManagementClient:
    """The management REST API of eas-server (docs/api.md), one method per call."""

    def __init__(
        self,
        endpoint: str,
        access_id: str,
        access_key: str,
        region: str = "local",
        timeout: float = 30,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.access_id = access_id
        self._access_key = access_key
        self.last_request_id = ""
        """The RequestId of the last answer (what eascmd prints as `[RequestId]: ...`)."""
        self._http = httpx.Client(base_url=self.endpoint, timeout=timeout,
                                  headers={"User-Agent": "eascmd (eas-serving)"})

    @classmethod
    def from_config(cls, path: str | None = None, timeout: float = 30) -> ManagementClient:
        """Build from an eascmd.conf (default: $EASCMD_CONFIG or ~/.eascmd/eascmd.conf)."""
        cfg = config.read(path)
        return cls(cfg.endpoint, cfg.access_id, cfg.access_key, cfg.region, timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- services ---------------------------------------------------------------------

    def create_service(self, spec: dict[str, Any], blue_green: bool = False) -> dict[str, Any]:
        """CreateService; with blue_green, a partner of the existing service of that name
        (ours: `POST /api/v2/ext/services/{region}/{name}/partners`)."""
        if blue_green:
            name = str(spec.get("name") or (spec.get("metadata") or {}).get("name") or "")
            return self._call("POST", self._ext_service_path(name, "/partners"), body=spec, action="CreateService")
        return self._call("POST", "/api/v2/services", body=spec, action="CreateService")

    def list_services(self, labels: dict[str, str] | None = None, **filters: str) -> list[dict[str, Any]]:
        """ListServices, every page: all services; with `labels`, those carrying all of them
        (EAS's `Label` filter); `filters` are more of ListServices' query (Filter, ServiceStatus, ...)."""
        params = {"Label": json.dumps(labels, separators=(",", ":"))} if labels else {}
        return self._all_pages("/api/v2/services", "Services", {**params, **filters}, "ListServices")

    def describe_service(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name), action="DescribeService")

    def update_service(self, name: str, partial: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """UpdateService: a partial spec the server deep-merges into the current one, or
        with `replace` the whole new one (`UpdateType=replace`)."""
        params = {"UpdateType": "replace"} if replace else None
        return self._call("PUT", self._service_path(name), body=partial, params=params, action="UpdateService")

    def restart_service(self, name: str) -> dict[str, Any]:
        """RestartService: every instance drains and is replaced."""
        return self._call("PUT", self._service_path(name, "/restart"), action="RestartService")

    def describe_endpoints(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name, "/endpoints"), action="DescribeServiceEndpoints")

    def service_logs(self, name: str, instance: str | None = None, keyword: str | None = None,
                     page_size: int = 500, page_num: int = 1) -> dict[str, Any]:
        """DescribeServiceLog: one page of log lines (page 1: the latest), the whole answer."""
        params = {"PageSize": str(page_size), "PageNum": str(page_num)}
        if instance:
            params["InstanceName"] = instance
        if keyword:
            params["Keyword"] = keyword
        return self._call("GET", self._service_path(name, "/logs"), params=params, action="DescribeServiceLog")

    # -- autoscaler and cron scaler ---------------------------------------------------

    def describe_autoscaler(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name, "/autoscaler"), action="DescribeServiceAutoScaler")

    def set_autoscaler(self, name: str, block: dict[str, Any]) -> dict[str, Any]:
        """UpdateServiceAutoScaler with EAS's body `{min, max, scaleStrategies, behavior}`."""
        return self._call("PUT", self._service_path(name, "/autoscaler"), body=block,
                          action="UpdateServiceAutoScaler")

    def delete_autoscaler(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name, "/autoscaler"), action="DeleteServiceAutoScaler")

    def describe_cron_scaler(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name, "/cronscaler"), action="DescribeServiceCronScaler")

    def set_cron_scaler(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateServiceCronScaler with EAS's body `{ScaleJobs, ExcludeDates, TimeZone}`."""
        return self._call("PUT", self._service_path(name, "/cronscaler"), body=body,
                          action="UpdateServiceCronScaler")

    def delete_cron_scaler(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name, "/cronscaler"), action="DeleteServiceCronScaler")

    # -- AccessKeys (ours) --------------------------------------------------------------

    def list_access_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v2/ext/accesskeys").get("AccessKeys") or [])

    def create_access_key(self, role: str = "admin", description: str = "") -> dict[str, Any]:
        """A new pair; its AccessKeySecret is in this answer only."""
        return self._call("POST", "/api/v2/ext/accesskeys", body={"Role": role, "Description": description})

    def revoke_access_key(self, access_key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v2/ext/accesskeys/{quote(access_key_id, safe='')}")

    # -- data backflow and batch prediction jobs (ours: /api/v2/ext/...) -------------

    def backflow(self, name: str, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of a service's captured request/answer records (oldest first, ids > after)."""
        return self._call("GET", f"/api/v2/ext/services/{quote(name, safe='')}/backflow",
                          params={"After": str(after), "Limit": str(limit)})

    def backflow_record(self, name: str, record_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v2/ext/services/{quote(name, safe='')}/backflow/{int(record_id)}")

    def iter_backflow(self, name: str, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every captured record of a service, oldest first, page by page."""
        after = 0
        while True:
            records = self.backflow(name, after, page).get("Records") or []
            yield from records
            if len(records) < page:
                return
            after = records[-1]["id"]

    def clear_backflow(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v2/ext/services/{quote(name, safe='')}/backflow")

    def create_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v2/ext/jobs", body=spec)

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v2/ext/jobs").get("Jobs") or [])

    def describe_job(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v2/ext/jobs/{quote(name, safe='')}")

    def stop_job(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v2/ext/jobs/{quote(name, safe='')}/stop")

    def delete_job(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v2/ext/jobs/{quote(name, safe='')}")

    def delete_service(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name), action="DeleteService")

    def start_service(self, name: str) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/start"), action="StartService")

    def stop_service(self, name: str) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/stop"), action="StopService")

    def list_instances(self, name: str) -> list[dict[str, Any]]:
        """ListServiceInstances, every page."""
        return self._all_pages(self._service_path(name, "/instances"), "Instances", {}, "ListServiceInstances")

    def restart_instances(self, name: str, instances: list[str]) -> dict[str, Any]:
        """DeleteServiceInstances: the instances drain and Ray Serve replaces them."""
        params = {"InstanceList": ",".join(instances)}
        return self._call("DELETE", self._service_path(name, "/instances"), params=params,
                          action="DeleteServiceInstances")

    def list_events(self, name: str) -> list[dict[str, Any]]:
        """DescribeServiceEvent, every page: newest first."""
        return self._all_pages(self._service_path(name, "/events"), "Events", {}, "DescribeServiceEvent",
                               number_key="PageNum")

    # -- releases and traffic --------------------------------------------------------

    def release(self, partner: str, weight: int) -> dict[str, Any]:
        """ReleaseService: move `weight` % of the original endpoint's traffic to a blue-green partner."""
        return self._call("PUT", self._service_path(partner, "/release"), body={"Weight": weight},
                          action="ReleaseService")

    def set_traffic(self, name: str, backends: dict[str, int]) -> dict[str, Any]:
        """Ours: A/B weights inside one endpoint."""
        body = {"Backends": [{"Service": s, "Weight": w} for s, w in backends.items()]}
        return self._call("PUT", self._ext_service_path(name, "/traffic"), body=body)

    def set_mirror(self, name: str, target: str, percent: int) -> dict[str, Any]:
        """UpdateServiceMirror: copy `percent` % of the requests to `target`."""
        body = {"Ratio": percent, "Target": [target]}
        return self._call("PUT", self._service_path(name, "/mirror"), body=body, action="UpdateServiceMirror")

    def describe_mirror(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name, "/mirror"), action="DescribeServiceMirror")

    def drop_mirror(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name, "/mirror"), action="DeleteServiceMirror")

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """ListServiceVersions, every page, oldest first (`ImageId` is the version)."""
        return self._all_pages(self._service_path(name, "/versions"), "Versions", {}, "ListServiceVersions")

    def switch_version(self, name: str, version: int) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/version"), body={"Version": version},
                          action="UpdateServiceVersion")

    # -- groups -------------------------------------------------------------------------

    def create_group(self, name: str, members: dict[str, int]) -> dict[str, Any]:
        """Ours: a group endpoint over services by weight."""
        body = {"Name": name, "Members": [{"Service": s, "Weight": w} for s, w in members.items()]}
        return self._call("POST", "/api/v2/ext/groups", body=body)

    def list_groups(self) -> list[dict[str, Any]]:
        """ListGroups, every page."""
        return self._all_pages("/api/v2/groups", "Groups", {}, "ListGroups")

    def describe_group(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._group_path(name), action="DescribeGroup")

    def update_group(self, name: str, members: dict[str, int]) -> dict[str, Any]:
        body = {"Members": [{"Service": s, "Weight": w} for s, w in members.items()]}
        return self._call("PUT", "/api/v2/ext" + self._group_path(name)[len("/api/v2"):], body=body)

    def delete_group(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", "/api/v2/ext" + self._group_path(name)[len("/api/v2"):])

    def _group_path(self, name: str) -> str:
        return f"/api/v2/groups/{quote(self.region, safe='')}/{quote(name, safe='')}"

    # -- waiting ----------------------------------------------------------------------

    def wait_until_running(
        self,
        name: str,
        on_progress: ProgressCallback | None = None,
        timeout: float = 600,
        interval: float = POLL_INTERVAL_S,
    ) -> dict[str, Any]:
        """Poll until Status is Running; ServiceFailedError on Failed, TimeoutError on timeout.

        Sleeping counts as up: a service with `sleep` may doze off before it was ever
        seen Running, and its first request wakes it.
        """
        return self.wait_for_status(name, {"Running", "Sleeping"}, on_progress, timeout, interval)

    def wait_for_status(
        self,
        name: str,
        targets: Collection[str],
        on_progress: ProgressCallback | None = None,
        timeout: float = 600,
        interval: float = POLL_INTERVAL_S,
    ) -> dict[str, Any]:
        """Poll describe until Status is one of `targets` (start/stop/create/modify share this)."""

        def done(service: dict[str, Any] | None) -> bool:
            assert service is not None  # describe raises a 404 rather than returning None
            if service.get("Status") in targets:
                return True
            if service.get("Status") == "Failed":
                raise ServiceFailedError(service.get("Message") or "no reason given", service)
            return False

        goal = " or ".join(sorted(targets))
        fetch = functools.partial(self.describe_service, name)
        result = self._poll(fetch, done, on_progress, timeout, interval, name, goal)
        assert result is not None
        return result

    def wait_until_deleted(
        self,
        name: str,
        on_progress: ProgressCallback | None = None,
        timeout: float = 600,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        """Poll until describe answers 404: the server has released everything."""
        fetch = functools.partial(self._describe_or_none, name)
        self._poll(fetch, lambda s: s is None, on_progress, timeout, interval, name, "deleted")

    def _describe_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self.describe_service(name)
        except EasApiError as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def _poll(
        fetch: Callable[[], dict[str, Any] | None],
        done: Callable[[dict[str, Any] | None], bool],
        on_progress: ProgressCallback | None,
        timeout: float,
        interval: float,
        name: str,
        goal: str,
    ) -> dict[str, Any] | None:
        """The one polling loop: fetch, report, stop when done, give up at the deadline.

        A few consecutive 5xx or connection errors are ridden out, since a long deployment
        should not be reported as failed because the server restarted once meanwhile.
        """
        deadline = time.monotonic() + timeout
        errors = 0
        last = "no answer"
        while True:
            try:
                service = fetch()
            except EasApiError as exc:
                errors += 1
                if (exc.status and exc.status < 500) or errors >= POLL_TRANSIENT_ERRORS:
                    raise
            else:
                errors = 0
                last = f"status {service.get('Status')}" if service is not None else "gone"
                if service is not None and on_progress is not None:
                    on_progress(service)
                if done(service):
                    return service
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"service {name} is not {goal} after {timeout:g} s (last seen: {last})")
            time.sleep(min(interval, remaining))

    # -- plumbing ---------------------------------------------------------------------

    def _service_path(self, name: str, suffix: str = "") -> str:
        return f"/api/v2/services/{quote(self.region, safe='')}/{quote(name, safe='')}{suffix}"

    def _ext_service_path(self, name: str, suffix: str = "") -> str:
        return f"/api/v2/ext/services/{quote(self.region, safe='')}/{quote(name, safe='')}{suffix}"

    def _all_pages(self, path: str, key: str, params: dict[str, str], action: str,
                   number_key: str = "PageNumber") -> list[dict[str, Any]]:
        """Every item of a paged list: pages of PAGE_SIZE until one comes back short."""
        items: list[dict[str, Any]] = []
        number = 1
        while True:
            answer = self._call("GET", path, params={**params, number_key: str(number), "PageSize": str(PAGE_SIZE)},
                                action=action)
            got = list(answer.get(key) or [])
            items += got
            if len(got) < PAGE_SIZE:
                return items
            number += 1

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        action: str = "",
    ) -> dict[str, Any]:
        """One API call; every failure comes out as EasApiError with a message a person can act on."""
        try:
            response = self._http.send(self._signed(method, path, body, params or {}, action))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise EasApiError(
                0,
                "InvalidEndpoint",
                f"{self.endpoint!r} is not a server URL: write it like http://127.0.0.1:8080 "
                "('eascmd config -e <url>' or the endpoint line of eascmd.conf)",
            ) from None
        except httpx.TimeoutException:
            raise EasApiError(
                0, "Timeout", f"the EAS server at {self.endpoint} did not answer in time: check it is healthy"
            ) from None
        except httpx.TransportError as exc:
            raise EasApiError(
                0,
                "ConnectionError",
                f"the EAS server at {self.endpoint} is not reachable ({exc or type(exc).__name__}): "
                "check it is running (eas-server) and that the endpoint in your eascmd config is right",
            ) from None
        if response.status_code >= 400:
            code, message, request_id = error_fields(response)
            raise EasApiError(response.status_code, code, message, request_id)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            self.last_request_id = str(answer.get("RequestId") or "")
        if not isinstance(answer, dict):
            raise EasApiError(
                response.status_code,
                "BadResponse",
                f"the server at {self.endpoint} answered {method} {path} with something that is not a JSON "
                "object: is the endpoint an eas-server?",
                response.headers.get("x-request-id", ""),
            )
        return answer

    def _signed(self, method: str, path: str, body: dict[str, Any] | None, params: dict[str, str],
                action: str) -> httpx.Request:
        """The request, signed with ACS3-HMAC-SHA256 over exactly the bytes sent: the
        path as written, the query, the host, the body's SHA-256 (eas/protocols/acs.py)."""
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {"host": urlsplit(self.endpoint).netloc, "x-acs-version": acs.API_VERSION,
                   "accept": "application/json"}
        if action:
            headers["x-acs-action"] = action
        if body is not None:
            headers["content-type"] = "application/json; charset=utf-8"
        prefix = urlsplit(self.endpoint).path.rstrip("/")
        signed = acs.sign_acs3(method, prefix + path, params, headers, content, self.access_id, self._access_key,
                               time.time())
        url = path + ("?" + urlencode(params) if params else "")
        return self._http.build_request(method, url, content=content if body is not None else None, headers=signed)
