"""The management API of eas-server (docs/api.md), as a Python client.

HTTP Basic with the admin credentials of eascmd.conf; `eascmd` is a thin shell over
it, so scripts get the same behaviour and the same error texts as the CLI.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import quote

import httpx

from eas.client import config
from eas.protocols import auth

#: How often the wait helpers poll a service, in seconds.
POLL_INTERVAL_S = 0.5
#: Consecutive 5xx / network errors a wait rides out (a server restarting) before giving up.
POLL_TRANSIENT_ERRORS = 3

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
        self._http = httpx.Client(
            base_url=self.endpoint,
            timeout=timeout,
            headers={
                "Authorization": auth.basic_auth_header(access_id, access_key),
                "User-Agent": "eascmd (eas-serving)",
            },
        )

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
        """Create a service; with blue_green, a partner of the existing service of that name."""
        params = {"BlueGreen": "true"} if blue_green else None
        return self._call("POST", "/api/v2/services", body=spec, params=params)

    def list_services(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v2/services").get("Services") or [])

    def describe_service(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._service_path(name))

    def update_service(self, name: str, partial: dict[str, Any]) -> dict[str, Any]:
        """PUT a partial spec; the server deep-merges it into the current one."""
        return self._call("PUT", self._service_path(name), body=partial)

    def delete_service(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name))

    def start_service(self, name: str) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/start"))

    def stop_service(self, name: str) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/stop"))

    def list_instances(self, name: str) -> list[dict[str, Any]]:
        answer = self._call("GET", self._service_path(name, "/instances"))
        return list(answer.get("Instances") or [])

    def restart_instances(self, name: str, instances: list[str]) -> dict[str, Any]:
        params = {"InstanceList": ",".join(instances)}
        return self._call("DELETE", self._service_path(name, "/instances"), params=params)

    def list_events(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", self._service_path(name, "/events")).get("Events") or [])

    # -- releases and traffic --------------------------------------------------------

    def release(self, partner: str, weight: int) -> dict[str, Any]:
        """Move `weight` % of the original endpoint's traffic to a blue-green partner."""
        return self._call("PUT", self._service_path(partner, "/release"), body={"Weight": weight})

    def set_traffic(self, name: str, backends: dict[str, int]) -> dict[str, Any]:
        body = {"Backends": [{"Service": s, "Weight": w} for s, w in backends.items()]}
        return self._call("PUT", self._service_path(name, "/traffic"), body=body)

    def set_mirror(self, name: str, target: str, percent: int) -> dict[str, Any]:
        body = {"Target": target, "Percentage": percent}
        return self._call("PUT", self._service_path(name, "/mirror"), body=body)

    def drop_mirror(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._service_path(name, "/mirror"))

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", self._service_path(name, "/versions")).get("Versions") or [])

    def switch_version(self, name: str, version: int) -> dict[str, Any]:
        return self._call("PUT", self._service_path(name, "/version"), body={"Version": version})

    # -- groups -------------------------------------------------------------------------

    def create_group(self, name: str, members: dict[str, int]) -> dict[str, Any]:
        body = {"Name": name, "Members": [{"Service": s, "Weight": w} for s, w in members.items()]}
        return self._call("POST", "/api/v2/groups", body=body)

    def list_groups(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v2/groups").get("Groups") or [])

    def describe_group(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._group_path(name))

    def update_group(self, name: str, members: dict[str, int]) -> dict[str, Any]:
        body = {"Members": [{"Service": s, "Weight": w} for s, w in members.items()]}
        return self._call("PUT", self._group_path(name), body=body)

    def delete_group(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", self._group_path(name))

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

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; every failure comes out as EasApiError with a message a person can act on."""
        try:
            response = self._http.request(method, path, json=body, params=params)
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
        if not isinstance(answer, dict):
            raise EasApiError(
                response.status_code,
                "BadResponse",
                f"the server at {self.endpoint} answered {method} {path} with something that is not a JSON "
                "object: is the endpoint an eas-server?",
                response.headers.get("x-request-id", ""),
            )
        return answer
