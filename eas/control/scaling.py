"""How many instances each service gets now, and the load numbers that decide it.

- `Scraper` reads every routed instance's `/stats` on its own thread and interval, so
  a slow or hung instance never lengthens a reconcile pass; it turns the cumulative
  counters into per-service loads (for the autoscaler) and instance stats (for metrics).
- `Scaling` keeps what the decisions need between passes (recent requests, the last
  count per service, who sleeps) and asks the pure policy (eas/control/autoscale.py)
  for the count a service should have now.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx

from eas.control.autoscale import Load, LoadTracker, Scaler
from eas.control.backend import AppState
from eas.gateway.metrics import InstanceStats
from eas.gateway.route_table import Endpoint, RouteTable
from eas.ratelog import BurstLog
from eas.spec import ServiceSpec

log = logging.getLogger("eas.scaling")
failures = BurstLog(log)

#: Instances read at once; each read waits at most SCRAPE_TIMEOUT_S.
SCRAPE_CONCURRENCY = 8
SCRAPE_TIMEOUT_S = 0.5


class Scaling:
    """Per-service scaling state; the controller calls `scaled_spec` once per pass."""

    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes
        self.scaler = Scaler()
        self.loads: dict[str, Load] = {}
        self.cpus: dict[str, float] = {}
        """`metadata.cpu` per service, kept by the controller (the scraper's CPU share base)."""
        self.sleeping: set[str] = set()
        self.backlogs: dict[str, int] = {}
        """Requests waiting in each Async service's input queue (the controller reads them per pass)."""
        self._activity: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def demand(self, name: str) -> None:
        """A request arrived for a service with no instance."""
        self._activity[name] = time.monotonic()

    def saw_traffic(self, names: set[str]) -> None:
        """These services answered requests since the last scrape (also DIRECT calls)."""
        now = time.monotonic()
        for name in names:
            self._activity[name] = now

    def idle_s(self, name: str) -> float:
        # Requests held while the service wakes keep it awake: an instance that takes
        # longer to start than idle_seconds must not be put back to sleep before it answers.
        if self.routes.waiting(name):
            return 0.0
        now = time.monotonic()
        last = max(self._activity.setdefault(name, now), self.routes.last_seen(name))
        return now - last

    def desired_count(self, name: str, default: int) -> int:
        """Instances the service should have now (autoscaler, cron, sleep), else `default`."""
        return self._counts.get(name, default)

    def scaled_spec(self, name: str, spec: ServiceSpec, app: AppState | None) -> tuple[ServiceSpec, str | None]:
        """The spec with the instance count autoscaler, cron scaler and sleep ask for now,
        and the event to record when the count changed."""
        self.cpus[name] = spec.metadata.cpu
        if not (spec.autoscaler or spec.cron_scaler or spec.sleep):
            self.scaler.forget(name)
            self.sleeping.discard(name)
            self._counts.pop(name, None)  # metadata.instance decides again (what desc shows)
            return spec, None
        current = app.running if app is not None else 0
        load = self.loads.get(name, Load())
        backlog = self.backlogs.get(name, 0)
        if backlog:  # waiting requests are demand: no scale-down to zero, a wake from zero
            self.demand(name)
            load = replace(load, backlog=backlog / max(current, 1))
        decision = self.scaler.decide(name, time.time(), current, spec.metadata.instance,
                                      load, spec.autoscaler, spec.cron_scaler,
                                      spec.sleep, self.idle_s(name))
        previous = self._counts.get(name)
        event = None
        if previous is not None and previous != decision.desired:
            event = f"{previous} -> {decision.desired} instances: {decision.reason}"
        self._counts[name] = decision.desired
        if decision.desired == 0:
            self.sleeping.add(name)
        else:
            self.sleeping.discard(name)
        meta = spec.metadata.model_copy(update={"instance": decision.desired})
        return spec.model_copy(update={"metadata": meta}), event

    def forget(self, name: str) -> None:
        self.scaler.forget(name)
        self.sleeping.discard(name)
        self._counts.pop(name, None)
        self.cpus.pop(name, None)


class Scraper:
    """Reads instances' `/stats` every `interval_s` on its own thread."""

    def __init__(self, routes: RouteTable, scaling: Scaling, interval_s: float = 1.0,
                 fetch: Callable[[Endpoint], dict | None] | None = None) -> None:
        self.routes = routes
        self.scaling = scaling
        self.interval_s = interval_s
        self.instance_stats: dict[str, InstanceStats] = {}
        """The last `/stats` of every routed instance, by instance name (metrics read it)."""
        self._tracker = LoadTracker()
        self._http = httpx.Client(timeout=SCRAPE_TIMEOUT_S)
        self._fetch = fetch or self._get
        self._pool = ThreadPoolExecutor(max_workers=SCRAPE_CONCURRENCY, thread_name_prefix="eas-scrape")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eas-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.scrape()
            except Exception:
                failures.exception("scrape", "reading instance stats failed; retrying")

    def _get(self, endpoint: Endpoint) -> dict | None:
        try:
            resp = self._http.get(f"{endpoint.url}/stats")
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None  # an instance going away; the next pass will not route to it

    def scrape(self) -> None:
        """One round: every routed instance's counters, then loads per service."""
        targets = [(name, ep) for name, route in self.routes.items() for ep in route.endpoints]
        fresh: dict[str, InstanceStats] = {}
        for (name, ep), data in zip(targets, self._pool.map(lambda t: self._fetch(t[1]), targets)):
            if data is not None:
                fresh[ep.instance] = InstanceStats(name, ep.instance, data)
        self.instance_stats = fresh
        loads, active = self._tracker.update(
            [(x.service, x.instance, x.data, x.at) for x in fresh.values()], dict(self.scaling.cpus))
        self.scaling.loads = loads
        self.scaling.saw_traffic(active)
