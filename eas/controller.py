"""The controller: a reconcile loop from the store's desired state onto the backend.

Every second (and at once after a change) it reads every service from the store,
asks the backend what is running, acts on the difference and writes the observed
status back. It keeps no state that cannot be rebuilt: after a restart the first
pass redeploys whatever the store says should run, which is how `kill -9` of the
server or of Ray loses nothing.

With a `leader` (eas/leader.py) only the lease holder acts; the others follow: each
pass they rebuild their routes from the store and what Ray runs, and write nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from eas import modelsource, spec as specs, store as st
from eas.autoscale import Load, LoadTracker, Scaler
from eas.metrics import InstanceStats, ServiceCounts
from eas.routes import Endpoint, Entry, Route, RouteTable

log = logging.getLogger("eas.controller")


class Backend(Protocol):
    """What the controller needs from the platform hosting instances (Ray Serve)."""

    def deploy(self, name: str, spec: specs.ServiceSpec, cache_dir: str, secrets: dict[str, str],
               code_dir: str | None = None) -> None: ...
    def delete(self, name: str) -> None: ...
    def observe(self) -> dict[str, Any]: ...
    def restart_instances(self, name: str, replica_ids: list[str], internal_key: str) -> list[str]: ...


@dataclass(frozen=True)
class _Applied:
    """What was last handed to the backend for a service: code digest, instances, token."""

    code: str
    instances: int
    token: str


class Controller:
    def __init__(self, store: st.Store, backend: Backend, routes: RouteTable, cache_dir: str,
                 internal_key: str, interval_s: float = 1.0, leader: Any = None) -> None:
        self.store = store
        self.leader = leader
        """A LeaderLease, or None to always act (one server, tests)."""
        self.leading = leader is None
        self.backend = backend
        self.routes = routes
        self.cache_dir = cache_dir
        self.internal_key = internal_key
        self.interval_s = interval_s
        self._applied: dict[str, _Applied] = {}
        self._failed: dict[str, _Applied] = {}
        self._preparing: dict[str, Future[None]] = {}
        self._deleting: set[str] = set()
        self._ever_running: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="eas-deploy")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_observed: dict[str, Any] = {}
        self.instance_stats: dict[str, InstanceStats] = {}
        self._http = httpx.Client(timeout=0.5)
        self.scaler = Scaler()
        self._tracker = LoadTracker()
        self.loads: dict[str, Load] = {}
        self._activity: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.sleeping: set[str] = set()
        routes.on_demand = self.demand

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eas-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        if self.leader is not None:
            self.leader.release()

    def wake(self) -> None:
        """Reconcile now instead of at the next tick (called after every API change)."""
        self._wake.set()

    def retry(self, name: str) -> None:
        """Forget a recorded failure so the next pass deploys again (start, modify)."""
        with self._lock:
            self._failed.pop(name, None)
            self._applied.pop(name, None)
        self.wake()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile pass failed; retrying")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    # -- one pass -----------------------------------------------------------------

    def reconcile(self) -> None:
        self._elect()
        observed = self.backend.observe()
        self.last_observed = observed
        records = self.store.list()
        for rec in records:
            if not self.leading:
                try:
                    self._follow_one(rec, observed.get(rec.name))
                except Exception:
                    log.exception("following %s failed", rec.name)
                continue
            try:
                self._reconcile_one(rec, observed.get(rec.name))
            except Exception as exc:
                log.exception("reconciling %s failed", rec.name)
                self.store.set_status(rec.name, "Failed", f"internal error: {exc}")
        known = {r.name for r in records}
        for name in list(self.routes.names()):
            if name not in known:
                self.routes.drop(name)
        self.routes.set_entries(self._entries(records))
        self._scrape()

    def _elect(self) -> None:
        """Renew or take the lease; on a change of role start from the store afresh.

        A new leader forgets what it applied before, so its first pass redeploys every
        running service (the same versions: Serve changes nothing that already runs).
        """
        if self.leader is None:
            return
        leading = self.leader.check()
        if leading != self.leading:
            with self._lock:
                self._applied.clear()
                self._failed.clear()
            self._deleting.clear()
            self.leading = leading

    def _follow_one(self, rec: st.ServiceRecord, app: Any) -> None:
        """A follower's pass over one service: its route from what runs, no writes."""
        if rec.desired != st.RUNNING:
            self.routes.set(Route(rec.name, rec.token, (), f"service is {rec.desired.lower()}",
                                  _keepalive(rec.spec)))
            return
        spec = specs.ServiceSpec.model_validate(rec.spec)
        reason = "service failed: " + rec.message if rec.status == "Failed" else "no instance is ready yet"
        self.routes.set(self._route(rec, spec, app, reason))

    def _entries(self, records: list[st.ServiceRecord]) -> dict[str, Entry]:
        """Endpoint names clients may call: every live service's own, then shared ones."""
        live = {r.name: r for r in records if r.desired != st.DELETED}
        entries = {name: Entry(name, r.token, ((name, 100),)) for name, r in live.items()}
        for t in self.store.traffic().values():
            backends = tuple((svc, w) for svc, w in t.backends if svc in live)
            if not backends:
                if self.leading and not any(svc in {r.name for r in records} for svc, _ in t.backends):
                    self.store.delete_traffic(t.name, t.name, "removed: no service left behind it")
                continue
            if t.kind == "closed":
                if t.name in entries:
                    target = backends[0][0]
                    entries[t.name] = Entry(t.name, t.token, (), closed=(
                        f"'{t.name}' was released into '{target}': call /api/predict/{target}"))
                continue
            mirror = t.mirror if t.mirror and t.mirror[0] in live else None
            entries[t.name] = Entry(t.name, t.token, backends, mirror)
        return entries

    def _scrape(self) -> None:
        """Read every routed instance's /stats (for metrics now, for autoscaling next)."""
        fresh: dict[str, InstanceStats] = {}
        for name in self.routes.names():
            route = self.routes.get(name)
            for ep in route.endpoints if route else ():
                try:
                    resp = self._http.get(f"{ep.url}/stats")
                    if resp.status_code == 200:
                        fresh[ep.instance] = InstanceStats(name, ep.instance, resp.json())
                except httpx.HTTPError:
                    continue  # an instance going away; the next pass will not route to it
        self.instance_stats = fresh
        cpus = {}
        for name in {st_.service for st_ in fresh.values()}:
            try:
                cpus[name] = float(self.store.get(name).spec["metadata"].get("cpu", 1))
            except (st.NotFound, KeyError):
                cpus[name] = 1.0
        self.loads, active = self._tracker.update(
            [(x.service, x.instance, x.data, x.at) for x in fresh.values()], cpus)
        now = time.monotonic()
        for name in active:
            self._activity[name] = now

    def desired_count(self, name: str, default: int) -> int:
        """Instances the service should have now (autoscaler, cron, sleep), else `default`."""
        return self._counts.get(name, default)

    def demand(self, name: str) -> None:
        """A request arrived for a service with no instance (the gateway calls this)."""
        self._activity[name] = time.monotonic()
        self.wake()

    def _idle_s(self, name: str) -> float:
        # Requests held while the service wakes keep it awake: an instance that takes
        # longer to start than idle_seconds must not be put back to sleep before it answers.
        if self.routes.waiting(name):
            return 0.0
        now = time.monotonic()
        last = max(self._activity.setdefault(name, now), self.routes.last_seen.get(name, 0.0))
        return now - last

    def _effective(self, rec: st.ServiceRecord, spec: specs.ServiceSpec, app: Any) -> specs.ServiceSpec:
        """The spec with the instance count autoscaler, cron scaler and sleep ask for now."""
        if not (spec.autoscaler or spec.cron_scaler or spec.sleep):
            self.scaler.forget(rec.name)
            self.sleeping.discard(rec.name)
            return spec
        current = app.running if app is not None else 0
        decision = self.scaler.decide(rec.name, time.time(), current, spec.metadata.instance,
                                      self.loads.get(rec.name, Load()), spec.autoscaler, spec.cron_scaler,
                                      spec.sleep, self._idle_s(rec.name))
        previous = self._counts.get(rec.name)
        if previous is not None and previous != decision.desired:
            self.store.add_event(rec.name, "Scaled",
                                 f"{previous} -> {decision.desired} instances: {decision.reason}")
        self._counts[rec.name] = decision.desired
        if decision.desired == 0:
            self.sleeping.add(rec.name)
        else:
            self.sleeping.discard(rec.name)
        meta = spec.metadata.model_copy(update={"instance": decision.desired})
        return spec.model_copy(update={"metadata": meta})

    def service_counts(self) -> dict[str, ServiceCounts]:
        out = {}
        for rec in self.store.list():
            app = self.last_observed.get(rec.name)
            desired = rec.spec.get("metadata", {}).get("instance", 0) if rec.desired == st.RUNNING else 0
            out[rec.name] = ServiceCounts(desired, len(app.replicas) if app else 0, app.running if app else 0)
        return out

    def _reconcile_one(self, rec: st.ServiceRecord, app: Any) -> None:
        name = rec.name
        if rec.desired == st.DELETED:
            self._take_down(rec, app, "Deleting")
            if app is None:
                self.store.remove(name)
                self.routes.drop(name)
                self._forget(name)
            return
        if rec.desired == st.STOPPED:
            self._take_down(rec, app, "Stopping")
            if app is None:
                self.store.set_status(name, "Stopped", "")
                self._forget(name)
            return
        spec = self._effective(rec, specs.ServiceSpec.model_validate(rec.spec), app)
        if spec.metadata.instance == 0:
            self._zero(rec, spec, app)
            return
        self._deleting.discard(name)
        want = _Applied(spec.code_version(), spec.metadata.instance, rec.token)
        with self._lock:
            failed = self._failed.get(name) == want
            preparing = name in self._preparing
            applied = self._applied.get(name)
        if failed:
            self.routes.set(self._route(rec, spec, app, "service failed: " + rec.message))
            return
        if applied != want and not preparing:
            self._submit_deploy(rec, spec, want, first=applied is None)
        self._observe(rec, spec, app, preparing or applied != want)

    def _zero(self, rec: st.ServiceRecord, spec: specs.ServiceSpec, app: Any) -> None:
        """No instance wanted (asleep, or metadata.instance 0): release the app entirely.

        Serve wants at least one replica per app, so zero is "no app"; waking deploys
        again from the store like any first deploy.
        """
        name = rec.name
        if app is not None and name not in self._deleting:
            self.backend.delete(name)
            self._deleting.add(name)
        elif app is None:
            self._deleting.discard(name)
        with self._lock:
            self._applied.pop(name, None)
        asleep = name in self.sleeping
        if app is None:  # "Sleeping" only once every instance is gone
            self.store.set_status(name, "Sleeping" if asleep else "Running", "" if asleep else "0 instances requested")
        reason = "service is waking up" if asleep else "service has 0 instances (set metadata.instance)"
        self.routes.set(self._route(rec, spec, None, reason))

    def _take_down(self, rec: st.ServiceRecord, app: Any, status: str) -> None:
        self.routes.set(Route(rec.name, rec.token, (), f"service is {rec.desired.lower()}",
                              _keepalive(rec.spec)))
        if app is not None:
            if rec.name not in self._deleting:
                self.backend.delete(rec.name)
                self._deleting.add(rec.name)
            self.store.set_status(rec.name, status, "")

    def _forget(self, name: str) -> None:
        self._deleting.discard(name)
        self._ever_running.discard(name)
        with self._lock:
            self._applied.pop(name, None)
            self._failed.pop(name, None)

    def _submit_deploy(self, rec: st.ServiceRecord, spec: specs.ServiceSpec, want: _Applied, first: bool) -> None:
        def task() -> None:
            try:
                # Fetch here first: a bad path or archive fails in a second, with a clear
                # reason, instead of after several instance start attempts.
                modelsource.resolve(spec.model_path, f"{self.cache_dir}/models", spec.oss_endpoint)
                code_dir = modelsource.resolve(spec.processor_path, f"{self.cache_dir}/code", spec.oss_endpoint)
                self.backend.deploy(rec.name, spec, self.cache_dir,
                                    {"token": rec.token, "internal_key": self.internal_key}, code_dir)
            except Exception as exc:
                known = (modelsource.ModelSourceError, ValueError)  # ValueError: bad requirements.txt
                reason = str(exc) if isinstance(exc, known) else f"deploy failed: {exc}"
                with self._lock:
                    self._failed[rec.name] = want
                self.store.set_status(rec.name, "Failed", reason)
                log.warning("service %s failed: %s", rec.name, reason)
            else:
                with self._lock:
                    self._applied[rec.name] = want
            finally:
                with self._lock:
                    self._preparing.pop(rec.name, None)
                self.wake()

        with self._lock:
            self._preparing[rec.name] = self._pool.submit(task)
        if rec.status in ("Failed", "Stopped"):
            self.store.set_status(rec.name, "Creating" if rec.status == "Stopped" else "Updating", "")

    def _observe(self, rec: st.ServiceRecord, spec: specs.ServiceSpec, app: Any, changing: bool) -> None:
        name = rec.name
        if app is None:
            status = "Creating" if name not in self._ever_running else "Updating"
            self.store.set_status(name, status, "")
            self.routes.set(self._route(rec, spec, None, "service is deploying"))
            return
        if app.status == "DEPLOY_FAILED" and not changing:
            reason = app.message
            with self._lock:
                self._failed[name] = _Applied(spec.code_version(), spec.metadata.instance, rec.token)
            self.store.set_status(name, "Failed", reason)
            self.routes.set(self._route(rec, spec, app, "service failed: " + reason))
            return
        if name in self.sleeping and not changing and app.running == 0:
            self.store.set_status(name, "Sleeping", "")
        elif app.status == "RUNNING" and not changing and app.running >= spec.metadata.instance:
            self._ever_running.add(name)
            self.store.set_status(name, "Running", "")
        else:
            status = "Updating" if name in self._ever_running or rec.status == "Running" else "Waiting"
            self.store.set_status(name, status, "")
        self.routes.set(self._route(rec, spec, app, "no instance is ready yet"))

    def _route(self, rec: st.ServiceRecord, spec: specs.ServiceSpec, app: Any, reason: str) -> Route:
        """A route serves when at least one instance runs, whatever the app's status."""
        endpoints = tuple(
            Endpoint(f"{rec.name}-{r.replica_id}", *r.endpoint)
            for r in (app.replicas if app is not None else [])
            if r.state == "RUNNING" and r.endpoint
        )
        rpc = spec.metadata.rpc
        # Requests wait (up to the keepalive) for an instance that is on its way rather
        # than fail: deploys, restarts and rollovers are invisible to callers.
        coming = rec.desired == st.RUNNING and not reason.startswith("service failed")
        hold = rpc.keepalive / 1000 if coming else 0.0
        asleep = rec.name in self.sleeping
        max_held = Route.max_held
        if asleep and spec.sleep is not None:
            hold, max_held = spec.sleep.wake_timeout_seconds, spec.sleep.max_held_requests
        elif asleep:
            hold = max(hold, 60.0)  # waking from autoscaler min 0 takes an instance start
        return Route(rec.name, rec.token, endpoints, reason, rpc.keepalive / 1000, rpc.rate_limit, hold,
                     wake_on_demand=asleep, max_held=max_held)


def _keepalive(spec: dict[str, Any]) -> float:
    return float(spec.get("metadata", {}).get("rpc", {}).get("keepalive", 5000)) / 1000
