"""Python clients for eas-server: the management API and the predict gateway.

`ManagementClient` speaks the control plane of docs/api.md (HTTP Basic with the admin
credentials of eascmd.conf); `eascmd` is a thin shell over it, so scripts get the same
behaviour and the same error texts as the CLI. `PredictClient` calls a service the way
the official EAS SDKs do (signed requests, retry 5xx and connection errors, never 4xx,
and a DIRECT mode that calls the instances themselves), so our own tools exercise the
server exactly like real users. docs/client.md documents both.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import quote

import httpx

from eas import auth, config

#: How often the wait helpers poll a service, in seconds.
POLL_INTERVAL_S = 0.5
#: Consecutive 5xx / network errors a wait rides out (a server restarting) before giving up.
POLL_TRANSIENT_ERRORS = 3

#: PredictClient endpoint types, named as in the official SDKs.
ENDPOINT_DEFAULT = "DEFAULT"
ENDPOINT_DIRECT = "DIRECT"
#: How often DIRECT mode re-reads the instance list (the official SDKs' period).
DISCOVERY_INTERVAL_S = 3.0
#: Where DIRECT mode reads it: the Python SDK's path on eas-server.
DISCOVERY_PATH = "/api/v1/servicediscovery/upstreams/{service}"

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


class PredictError(Exception):
    """A predict call failed for good (a 4xx, or a 5xx / network error after all retries)."""

    def __init__(self, status: int, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        rid = f", RequestId: {self.request_id}" if self.request_id else ""
        status = f"HTTP {self.status}" if self.status else "no answer"
        return f"{self.message} [{status}{rid}]"


def _error_fields(response: httpx.Response) -> tuple[str, str, str]:
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
            code, message, request_id = _error_fields(response)
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


class WeightedRoundRobin:
    """Smooth weighted round robin (nginx's): in every run of sum(weights) picks each
    endpoint gets exactly its weight's share, interleaved rather than in bursts.

    Not thread-safe by itself; PredictClient holds a lock around it.
    """

    def __init__(self) -> None:
        self._items: list[list[Any]] = []  # [url, weight, current]

    def update(self, endpoints: list[tuple[str, int]]) -> None:
        """Replace the endpoint list; endpoints still present keep their place in the cycle."""
        current = {item[0]: item[2] for item in self._items}
        self._items = [[url, weight, current.get(url, 0)] for url, weight in endpoints if weight > 0]

    def endpoints(self) -> list[tuple[str, int]]:
        return [(url, weight) for url, weight, _ in self._items]

    def next(self) -> str | None:
        if not self._items:
            return None
        total = 0
        best = self._items[0]
        for item in self._items:
            item[2] += item[1]
            total += item[1]
            if item[2] > best[2]:
                best = item
        best[2] -= total
        return best[0]


class PredictClient:
    """Call one service as the official EAS SDKs do.

    Requests are signed with the token (`signed=True`, the SDK default) or carry it raw.
    5xx answers and connection errors are retried `retries` times with a short
    exponential backoff; 4xx answers are final. Each attempt asks `_next_endpoint()` for
    a base URL:

    - `endpoint_type="DEFAULT"`: always `endpoint`, the gateway;
    - `endpoint_type="DIRECT"`: `endpoint` is only asked which instances serve the
      service (DISCOVERY_PATH, re-read every `discovery_interval` seconds by a background
      thread); calls go to the instances themselves, weighted round robin, so a retry
      after a refused connection lands on the next instance.
    """

    #: First backoff in seconds; doubled after each retry, capped at BACKOFF_MAX_S.
    BACKOFF_S = 0.05
    BACKOFF_MAX_S = 1.0

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        token: str | None = None,
        timeout: float = 10,
        retries: int = 3,
        signed: bool = True,
        endpoint_type: str = ENDPOINT_DEFAULT,
        discovery_interval: float = DISCOVERY_INTERVAL_S,
    ) -> None:
        endpoint_type = endpoint_type.upper()
        if endpoint_type not in (ENDPOINT_DEFAULT, ENDPOINT_DIRECT):
            raise ValueError(f"endpoint_type must be {ENDPOINT_DEFAULT!r} or {ENDPOINT_DIRECT!r}, "
                             f"not {endpoint_type!r}")
        self.endpoint = endpoint.rstrip("/")
        if "://" not in self.endpoint:
            self.endpoint = "http://" + self.endpoint  # the SDKs take host:port as well
        self.service_name = service_name
        self.token = token
        self.retries = max(0, retries)
        self.signed = signed
        self.endpoint_type = endpoint_type
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, headers={"User-Agent": "eas-serving-predict-client"})
        self._balancer = WeightedRoundRobin()
        self._lock = threading.Lock()
        self._listed = threading.Event()  # set once discovery has answered at least once
        self._closed = threading.Event()
        self._discovery_error = ""
        self._discovery: threading.Thread | None = None
        if endpoint_type == ENDPOINT_DIRECT:
            self.discovery_interval = discovery_interval
            self._discovery = threading.Thread(
                target=self._discover_forever, name=f"eas-discovery-{service_name}", daemon=True)
            self._discovery.start()

    def close(self) -> None:
        self._closed.set()
        if self._discovery is not None:
            self._discovery.join(timeout=self.timeout + 1)
        self._http.close()

    def __enter__(self) -> PredictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(
        self,
        body: bytes | str,
        content_type: str = "application/octet-stream",
        sub_path: str = "",
    ) -> bytes:
        """POST the body to the service and return the processor's bytes."""
        data = body.encode() if isinstance(body, str) else body
        path = self._path(sub_path)
        last_error: PredictError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.BACKOFF_S * 2 ** (attempt - 1), self.BACKOFF_MAX_S))
            try:
                base = self._next_endpoint()
            except PredictError as exc:  # DIRECT mode with no instance listed (yet): retryable
                last_error = exc
                continue
            try:
                response = self._http.post(base + path, content=data, headers=self._headers(path, data, content_type))
            except httpx.TransportError as exc:
                last_error = PredictError(0, f"cannot reach {base}: {exc or type(exc).__name__}")
                continue
            if response.status_code < 400:
                return response.content
            _code, message, request_id = _error_fields(response)
            last_error = PredictError(response.status_code, message, request_id)
            if response.status_code < 500:
                break
        assert last_error is not None
        raise last_error

    def upstreams(self) -> list[tuple[str, int]]:
        """DIRECT mode: the instances (base URL, weight) the client currently spreads calls over."""
        with self._lock:
            return self._balancer.endpoints()

    def _next_endpoint(self) -> str:
        """Base URL for the next attempt: the gateway, or in DIRECT mode the next instance."""
        if self.endpoint_type != ENDPOINT_DIRECT:
            return self.endpoint
        if not self._listed.wait(self.timeout):
            raise PredictError(0, f"no instance list for '{self.service_name}' from {self.endpoint} "
                               f"within {self.timeout:g} s: {self._discovery_error or 'no answer'}")
        with self._lock:
            chosen = self._balancer.next()
        if chosen is None:
            raise PredictError(503, f"discovery at {self.endpoint} lists no instance of '{self.service_name}'"
                               + (f" (last error: {self._discovery_error})" if self._discovery_error else ""))
        return chosen

    def refresh_upstreams(self) -> None:
        """Read the instance list once (the DIRECT-mode thread calls this every interval).

        A failed read keeps the previous list: a restarting server must not stop traffic
        to instances that are still up.
        """
        url = self.endpoint + DISCOVERY_PATH.format(service=quote(self.service_name, safe=""))
        try:
            response = self._http.get(url)
            if response.status_code != 200:
                _code, message, _rid = _error_fields(response)
                raise ValueError(f"HTTP {response.status_code}: {message}")
            items = response.json()["endpoints"]["items"]
            endpoints = [(f"http://{item['ip']}:{int(item['port'])}", int(item.get("weight", 100)))
                         for item in items]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._discovery_error = f"{url}: {exc or type(exc).__name__}"
            return
        with self._lock:
            self._balancer.update(endpoints)
        self._discovery_error = ""
        self._listed.set()

    def _discover_forever(self) -> None:
        while not self._closed.is_set():
            self.refresh_upstreams()
            self._closed.wait(self.discovery_interval)

    def _path(self, sub_path: str) -> str:
        sub = sub_path.strip()
        if sub and not sub.startswith("/"):
            sub = "/" + sub
        return f"/api/predict/{self.service_name}{sub}"

    def _headers(self, path: str, body: bytes, content_type: str) -> dict[str, str]:
        if self.token is None:
            return {"Content-Type": content_type}
        if self.signed:
            return auth.sign_headers(self.token, path, body, content_type)
        return {"Content-Type": content_type, "Authorization": self.token}
