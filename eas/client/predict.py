"""Call a service the way the official EAS SDKs do (docs/client.md).

Signed requests, retry of 5xx and connection errors (never 4xx), and a DIRECT mode
that calls the instances themselves, so our own tools exercise the server exactly
like real users.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import httpx

from eas.client.management import error_fields
from eas.protocols import auth

#: PredictClient endpoint types, named as in the official SDKs.
ENDPOINT_DEFAULT = "DEFAULT"
ENDPOINT_DIRECT = "DIRECT"
#: How often DIRECT mode re-reads the instance list (the official SDKs' period).
DISCOVERY_INTERVAL_S = 3.0
#: Where DIRECT mode reads it: the Python SDK's path on eas-server.
DISCOVERY_PATH = "/api/v1/servicediscovery/upstreams/{service}"


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
            _code, message, request_id = error_fields(response)
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
                _code, message, _rid = error_fields(response)
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
        # Percent-encoded here, so the path signed is the path sent (the server checks the
        # signature against the path as it arrives, still encoded).
        return quote(f"/api/predict/{self.service_name}{sub}", safe="/:@!$&'()*+,;=%~")

    def _headers(self, path: str, body: bytes, content_type: str) -> dict[str, str]:
        if self.token is None:
            return {"Content-Type": content_type}
        if self.signed:
            return auth.sign_headers(self.token, path, body, content_type)
        return {"Content-Type": content_type, "Authorization": self.token}
