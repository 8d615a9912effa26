"""The controller: a reconcile loop from the store's desired state onto the backend.

Every second (and at once after a change) it reads every service from the store,
asks the backend what is running, acts on the difference and writes the observed
status back. It keeps no state that cannot be rebuilt: after a restart the first
pass redeploys whatever the store says should run, which is how `kill -9` of the
server or of Ray loses nothing.

Each concern has its own small part, as in Ray Serve's controller: routes and
entries are built by routing.py (pure), instance counts by scaling.py (whose scraper
reads instances on its own thread), and leadership by leader.py: with a leader lease
only the holder acts; the others follow, rebuilding their routes from the store and
what Ray runs, and write nothing.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from eas import sources, spec as specs
from eas.control import routing
from eas.control.backend import AppState, Backend
from eas.control.leader import LeaderLease
from eas.control.autoscale import Scaler
from eas.control.scaling import Scaling, Scraper
from eas.control.store import DELETED, RUNNING, STOPPED, ServiceRecord, Status, Store
from eas.gateway.metrics import InstanceStats, ServiceCounts
from eas.gateway.route_table import RouteTable

log = logging.getLogger("eas.controller")


@dataclass(frozen=True)
class AppliedVersion:
    """What was last handed to the backend for a service: code digest, instances, token."""

    code: str
    instances: int
    token: str


@dataclass(frozen=True)
class ServiceView:
    """What the controller knows of one service beyond the store (for `desc` and `w`)."""

    app: AppState | None
    desired: int


class Controller:
    def __init__(self, store: Store, backend: Backend, routes: RouteTable, cache_dir: str,
                 internal_key: str, interval_s: float = 1.0, leader: LeaderLease | None = None) -> None:
        self.store = store
        self.leader = leader
        """None to always act (one server, tests)."""
        self.leading = leader is None
        self.backend = backend
        self.routes = routes
        self.cache_dir = cache_dir
        self.internal_key = internal_key
        self.interval_s = interval_s
        self._applied: dict[str, AppliedVersion] = {}
        self._failed: dict[str, AppliedVersion] = {}
        self._fail_reasons: dict[str, str] = {}
        """Why each `_failed` version failed: the pass writes it as the service's status."""
        self._preparing: dict[str, Future[None]] = {}
        self._deleting: set[str] = set()
        self._ever_running: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="eas-deploy")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_observed: dict[str, AppState] = {}
        self.counts: dict[str, ServiceCounts] = {}
        """Instances per service as of the last pass (what /metrics reports; no store read)."""
        self.scaling = Scaling(routes)
        self.scraper = Scraper(routes, self.scaling, interval_s)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.scraper.start()
        self._thread = threading.Thread(target=self._loop, name="eas-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.scraper.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.leader is not None:
            self.leader.release()

    def wake(self) -> None:
        """Reconcile now instead of at the next tick (called after every API change)."""
        self._wake.set()

    def retry(self, name: str) -> None:
        """Forget a recorded failure so the next pass deploys again (start, modify)."""
        with self._lock:
            self._failed.pop(name, None)
            self._fail_reasons.pop(name, None)
            self._applied.pop(name, None)
        self.wake()

    def demand(self, name: str) -> None:
        """A request arrived for a service with no instance (the gateway calls this)."""
        self.scaling.demand(name)
        self.wake()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile pass failed; retrying")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    # -- what the API and metrics read ----------------------------------------------

    @property
    def scaler(self) -> Scaler:
        return self.scaling.scaler

    @property
    def instance_stats(self) -> dict[str, InstanceStats]:
        return self.scraper.instance_stats

    def view(self, rec: ServiceRecord) -> ServiceView:
        default = rec.spec.get("metadata", {}).get("instance", 0)
        desired = self.scaling.desired_count(rec.name, default) if rec.desired == RUNNING else 0
        return ServiceView(self.last_observed.get(rec.name), desired)

    def service_counts(self) -> dict[str, ServiceCounts]:
        return self.counts

    def restart_instances(self, name: str, replica_ids: list[str]) -> list[str]:
        """Drain and restart instances (blocks while they drain); returns the ids not found."""
        missing = self.backend.restart_instances(name, replica_ids, self.internal_key)
        self.wake()
        return missing

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
                self.store.set_status(rec.name, Status.FAILED, f"internal error: {exc}")
        known = {r.name for r in records}
        for name in list(self.routes.names()):
            if name not in known:
                self.routes.drop(name)
        entries, orphans = routing.entries(records, self.store.traffic().values())
        if self.leading:
            for name in orphans:
                self.store.delete_traffic(name, name, "removed: no service left behind it")
        self.routes.set_entries(entries)
        self.counts = _counts(records, observed)

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
                self._fail_reasons.clear()
            self._deleting.clear()
            self.leading = leading

    def _follow_one(self, rec: ServiceRecord, app: AppState | None) -> None:
        """A follower's pass over one service: its route from what runs, no writes."""
        if rec.desired != RUNNING:
            self.routes.set(routing.closed_route(rec))
            return
        spec = specs.ServiceSpec.model_validate(rec.spec)
        reason = "service failed: " + rec.message if rec.status == Status.FAILED else "no instance is ready yet"
        self.routes.set(self._route(rec, spec, app, reason))

    def _route(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None, reason: str):  # noqa: ANN202
        return routing.service_route(rec, spec, app, reason, asleep=rec.name in self.scaling.sleeping)

    def _scaled_spec(self, rec: ServiceRecord, app: AppState | None) -> specs.ServiceSpec:
        spec, event = self.scaling.scaled_spec(rec.name, specs.ServiceSpec.model_validate(rec.spec), app)
        if event is not None:
            self.store.add_event(rec.name, "Scaled", event)
        return spec

    def _reconcile_one(self, rec: ServiceRecord, app: AppState | None) -> None:
        name = rec.name
        if rec.desired == DELETED:
            self._take_down(rec, app, Status.DELETING)
            if app is None:
                self.store.remove(name)
                self.routes.drop(name)
                self._forget(name)
            return
        if rec.desired == STOPPED:
            self._take_down(rec, app, Status.STOPPING)
            if app is None:
                self.store.set_status(name, Status.STOPPED, "")
                self._forget(name)
            return
        spec = self._scaled_spec(rec, app)
        if spec.metadata.instance == 0:
            self._release_all_instances(rec, spec, app)
            return
        self._deleting.discard(name)
        want = AppliedVersion(spec.code_version(), spec.metadata.instance, rec.token)
        with self._lock:
            failed = self._failed.get(name) == want
            reason = self._fail_reasons.get(name, rec.message)
            preparing = name in self._preparing
            applied = self._applied.get(name)
        if failed:
            # Written by the pass, not the deploy task: a pass that began before the task
            # failed would overwrite it (with Creating) and no later pass would fix it.
            if rec.status != Status.FAILED or rec.message != reason:
                self.store.set_status(name, Status.FAILED, reason)
            self.routes.set(self._route(rec, spec, app, "service failed: " + reason))
            return
        if applied != want and not preparing:
            self._submit_deploy(rec, spec, want)
        self._observe(rec, spec, app, preparing or applied != want)

    def _release_all_instances(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None) -> None:
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
        asleep = name in self.scaling.sleeping
        if app is None:  # "Sleeping" only once every instance is gone
            self.store.set_status(name, Status.SLEEPING if asleep else Status.RUNNING,
                                  "" if asleep else "0 instances requested")
        reason = "service is waking up" if asleep else "service has 0 instances (set metadata.instance)"
        self.routes.set(self._route(rec, spec, None, reason))

    def _take_down(self, rec: ServiceRecord, app: AppState | None, status: Status) -> None:
        self.routes.set(routing.closed_route(rec))
        if app is not None:
            if rec.name not in self._deleting:
                self.backend.delete(rec.name)
                self._deleting.add(rec.name)
            self.store.set_status(rec.name, status, "")

    def _forget(self, name: str) -> None:
        self._deleting.discard(name)
        self._ever_running.discard(name)
        self.scaling.forget(name)
        with self._lock:
            self._applied.pop(name, None)
            self._failed.pop(name, None)
            self._fail_reasons.pop(name, None)

    def _submit_deploy(self, rec: ServiceRecord, spec: specs.ServiceSpec, want: AppliedVersion) -> None:
        def task() -> None:
            try:
                # Fetch here first: a bad path or archive fails in a second, with a clear
                # reason, instead of after several instance start attempts.
                sources.resolve(spec.model_path, f"{self.cache_dir}/models", spec.oss_endpoint)
                code_dir = sources.resolve(spec.processor_path, f"{self.cache_dir}/code", spec.oss_endpoint)
                self.backend.deploy(rec.name, spec, self.cache_dir,
                                    {"token": rec.token, "internal_key": self.internal_key}, code_dir)
            except Exception as exc:
                known = (sources.ModelSourceError, ValueError)  # ValueError: bad requirements.txt
                reason = str(exc) if isinstance(exc, known) else f"deploy failed: {exc}"
                with self._lock:
                    self._failed[rec.name] = want
                    self._fail_reasons[rec.name] = reason
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
        if rec.status in (Status.FAILED, Status.STOPPED):
            self.store.set_status(rec.name, Status.CREATING if rec.status == Status.STOPPED else Status.UPDATING, "")

    def _observe(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None, changing: bool) -> None:
        name = rec.name
        if app is None:
            status = Status.CREATING if name not in self._ever_running else Status.UPDATING
            self.store.set_status(name, status, "")
            self.routes.set(self._route(rec, spec, None, "service is deploying"))
            return
        if app.status == "DEPLOY_FAILED" and not changing:
            reason = app.message
            with self._lock:
                self._failed[name] = AppliedVersion(spec.code_version(), spec.metadata.instance, rec.token)
                self._fail_reasons[name] = reason
            self.store.set_status(name, Status.FAILED, reason)
            self.routes.set(self._route(rec, spec, app, "service failed: " + reason))
            return
        if name in self.scaling.sleeping and not changing and app.running == 0:
            self.store.set_status(name, Status.SLEEPING, "")
        elif app.status == "RUNNING" and not changing and app.running >= spec.metadata.instance:
            self._ever_running.add(name)
            self.store.set_status(name, Status.RUNNING, "")
        else:
            running_before = name in self._ever_running or rec.status == Status.RUNNING
            self.store.set_status(name, Status.UPDATING if running_before else Status.WAITING, "")
        self.routes.set(self._route(rec, spec, app, "no instance is ready yet"))


def _counts(records: list[ServiceRecord], observed: dict[str, AppState]) -> dict[str, ServiceCounts]:
    out = {}
    for rec in records:
        app = observed.get(rec.name)
        desired = rec.spec.get("metadata", {}).get("instance", 0) if rec.desired == RUNNING else 0
        out[rec.name] = ServiceCounts(desired, len(app.replicas) if app else 0, app.running if app else 0)
    return out
